"""The `igsearch` command line: one entry point, one subcommand per pipeline stage.

Each subcommand only parses its options and calls into the library; the logic lives in the
modules named in its help.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from igsearch import __version__
from igsearch.errors import IGSearchError

app = typer.Typer(
    name="igsearch",
    help="Train search-augmented LLM agents with RL, rewarding every search query by its information gain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"igsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """igsearch: IG-Search training, retrieval and evaluation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_cli() -> None:
    """Entry point: usage errors print as usual; igsearch's own errors print one red line, exit 2."""
    try:
        app()
    except (IGSearchError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise SystemExit(2) from None


@app.command()
def index(
    corpus: Annotated[Path, typer.Option(help="Corpus jsonl: one {\"id\", \"contents\": \"Title\\ntext\"} a line.")],
    out: Annotated[Path, typer.Option(help="Index folder to write.")],
    kind: Annotated[str, typer.Option(help="bm25 or dense.")] = "bm25",
    encoder: Annotated[
        str | None, typer.Option(help="Dense only: sentence-transformers name or path (default: bundled all-MiniLM-L6-v2).")
    ] = None,
    query_prefix: Annotated[str | None, typer.Option(help="Dense only: prefix for queries, e.g. 'query: ' for E5.")] = None,
    passage_prefix: Annotated[str | None, typer.Option(help="Dense only: prefix for passages, e.g. 'passage: ' for E5.")] = None,
    faiss: Annotated[str, typer.Option(help="Dense only: faiss index type, Flat or HNSW.")] = "Flat",
    batch_size: Annotated[int, typer.Option(help="Dense only: passages encoded per batch.")] = 256,
) -> None:
    """Index a corpus jsonl (BM25 or dense) into a folder with a manifest (igsearch.retrieval.index)."""
    from igsearch.retrieval.index import build_index

    options: dict[str, object] = {}
    if kind == "dense":
        options = {"encoder": encoder, "faiss_type": faiss, "batch_size": batch_size}
        if query_prefix is not None:
            options["query_prefix"] = query_prefix
        if passage_prefix is not None:
            options["passage_prefix"] = passage_prefix
    elif any(v is not None for v in (encoder, query_prefix, passage_prefix)):
        raise typer.BadParameter("--encoder and the prefixes apply to --kind dense only")
    manifest = build_index(corpus, kind, out, **options)
    console.print(
        f"indexed [bold]{manifest['doc_count']}[/bold] passages ({kind}) into {out} "
        f"in {manifest['build_seconds']:.1f}s"
    )


def open_retriever(index_dir: Path | None, retriever_url: str | None, timeout: float = 30.0):
    """The retriever a command asked for: an index folder in process, or a `/retrieve` server."""
    if (index_dir is None) == (retriever_url is None):
        raise typer.BadParameter("give exactly one of --index DIR or --retriever-url URL")
    if index_dir is not None:
        from igsearch.retrieval.index import load_index

        return load_index(index_dir)
    from igsearch.retrieval.client import HttpRetriever

    return HttpRetriever(retriever_url, timeout=timeout)


@app.command()
def search(
    queries: Annotated[list[str], typer.Argument(help="One or more queries.")],
    index_dir: Annotated[Path | None, typer.Option("--index", help="Index folder (in process).")] = None,
    retriever_url: Annotated[str | None, typer.Option(help="A /retrieve server, e.g. http://127.0.0.1:8000/retrieve.")] = None,
    k: Annotated[int, typer.Option("--topk", "-k", help="Passages per query.")] = 3,
) -> None:
    """Search an index or a retrieval server and print the top passages of each query."""
    retriever = open_retriever(index_dir, retriever_url)
    for query, hits in zip(queries, retriever.search(list(queries), k), strict=True):
        console.print(f"[bold cyan]query:[/bold cyan] {query}")
        for i, hit in enumerate(hits, 1):
            console.print(f"  [green]{i}.[/green] [bold]{hit.title}[/bold] ({hit.id}, score {hit.score:.3f})")
            console.print(f"     {hit.text}", highlight=False)


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Option("--index", help="Index folder built by `igsearch index`.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server beyond this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    topk: Annotated[int, typer.Option(help="Passages per query when a request gives no topk.")] = 3,
    max_topk: Annotated[int, typer.Option(help="Largest topk a request may ask for.")] = 100,
    max_queries: Annotated[int, typer.Option(help="Most queries one request may hold.")] = 1024,
) -> None:
    """Serve an index over HTTP, speaking Search-R1's POST /retrieve contract (igsearch.retrieval.server).

    Search-R1's trainer and verl's SearchTool work against it unchanged: point them at
    http://HOST:PORT/retrieve. GET /health reports the index kind and size.
    """
    from igsearch.retrieval.server import serve as serve_index

    serve_index(index_dir, host=host, port=port, default_topk=topk, max_topk=max_topk, max_queries=max_queries)
