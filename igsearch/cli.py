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
from rich.markup import escape

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
err_console = Console(
    stderr=True, soft_wrap=True
)  # one error, one line, however narrow the terminal


def _version(value: bool) -> None:
    if value:
        console.print(f"igsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """igsearch: IG-Search training, retrieval and evaluation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


_OS_HINTS: dict[type, str] = {
    FileExistsError: "a file is in the way of a folder; give another path or move the file",
    NotADirectoryError: "a file is in the way of a folder; give another path or move the file",
    IsADirectoryError: "this is a folder; give the path of a file",
    PermissionError: "check the permissions, or give a path you can write",
}


def _os_error_message(e: OSError) -> str:
    """`path: what happened; what to do` for the system errors users cause with paths."""
    where = e.filename if e.filename is not None else ""
    return f"{where}: {e.strerror or e}; {_OS_HINTS[type(e)]}"


def run_cli() -> None:
    """Entry point: usage errors print as usual; igsearch's own errors and the system's (a missing
    file, a full disk, a port in use) print one red line on stderr and exit 2."""
    try:
        app()
    except (IGSearchError, OSError) as e:
        message = _os_error_message(e) if type(e) in _OS_HINTS else str(e)
        message = " ".join(message.split()) or type(e).__name__
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        raise SystemExit(2) from None


@app.command()
def index(
    corpus: Annotated[
        Path, typer.Option(help='Corpus jsonl: one {"id", "contents": "Title\\ntext"} a line.')
    ],
    out: Annotated[Path, typer.Option(help="Index folder to write.")],
    kind: Annotated[str, typer.Option(help="bm25 or dense.")] = "bm25",
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Dense only: sentence-transformers name or path (default: bundled all-MiniLM-L6-v2)."
        ),
    ] = None,
    query_prefix: Annotated[
        str | None, typer.Option(help="Dense only: prefix for queries, e.g. 'query: ' for E5.")
    ] = None,
    passage_prefix: Annotated[
        str | None, typer.Option(help="Dense only: prefix for passages, e.g. 'passage: ' for E5.")
    ] = None,
    faiss: Annotated[
        str, typer.Option(help="Dense only: faiss index type, Flat or HNSW.")
    ] = "Flat",
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
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="Index folder (in process).")
    ] = None,
    retriever_url: Annotated[
        str | None, typer.Option(help="A /retrieve server, e.g. http://127.0.0.1:8000/retrieve.")
    ] = None,
    k: Annotated[int, typer.Option("--topk", "-k", help="Passages per query.")] = 3,
) -> None:
    """Search an index or a retrieval server and print the top passages of each query."""
    if k < 1:
        raise typer.BadParameter(f"--topk must be at least 1, got {k}")
    retriever = open_retriever(index_dir, retriever_url)
    for query, hits in zip(queries, retriever.search(list(queries), k), strict=True):
        console.print(f"[bold cyan]query:[/bold cyan] {query}")
        for i, hit in enumerate(hits, 1):
            console.print(
                f"  [green]{i}.[/green] [bold]{hit.title}[/bold] ({hit.id}, score {hit.score:.3f})"
            )
            console.print(f"     {hit.text}", highlight=False)


@app.command()
def serve(
    index_dir: Annotated[
        Path, typer.Option("--index", help="Index folder built by `igsearch index`.")
    ],
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server beyond this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    topk: Annotated[int, typer.Option(help="Passages per query when a request gives no topk.")] = 3,
    max_topk: Annotated[int, typer.Option(help="Largest topk a request may ask for.")] = 100,
    max_queries: Annotated[int, typer.Option(help="Most queries one request may hold.")] = 1024,
    max_query_chars: Annotated[
        int, typer.Option(help="Longest query in characters; longer ones are refused (413).")
    ] = 4096,
    max_batch_queries: Annotated[
        int,
        typer.Option(
            help="Most queries one merged search holds; larger requests take turns in slices."
        ),
    ] = 256,
) -> None:
    """Serve an index over HTTP, speaking Search-R1's POST /retrieve contract (igsearch.retrieval.server).

    Search-R1's trainer and verl's SearchTool work against it unchanged: point them at
    http://HOST:PORT/retrieve. GET /health reports the index kind and size.
    """
    from igsearch.retrieval.server import serve as serve_index

    serve_index(
        index_dir,
        host=host,
        port=port,
        default_topk=topk,
        max_topk=max_topk,
        max_queries=max_queries,
        max_query_chars=max_query_chars,
        max_batch_queries=max_batch_queries,
    )


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    model: Annotated[str, typer.Option(help="Policy: a Hugging Face model folder or hub name.")],
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="Index folder (in process).")
    ] = None,
    retriever_url: Annotated[
        str | None, typer.Option(help="A /retrieve server, e.g. http://127.0.0.1:8000/retrieve.")
    ] = None,
    topk: Annotated[int, typer.Option("--topk", "-k", help="Passages per search.")] = 3,
    max_turns: Annotated[
        int,
        typer.Option(
            help="Turn budget (searches plus invalid turns) before the final answer turn."
        ),
    ] = 4,
    tagset: Annotated[
        str, typer.Option(help="Protocol tag set: search-r1 or autorefine.")
    ] = "search-r1",
    prompt_style: Annotated[
        str, typer.Option(help="plain (base models), chat (chat template) or bare (question only).")
    ] = "plain",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per turn.")] = 256,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    ] = None,
) -> None:
    """Run one greedy rollout of a policy on a question and print what it thinks, searches and answers (igsearch.rollout)."""
    from igsearch.config import RolloutConfig
    from igsearch.protocol import build_prompt
    from igsearch.rollout.engine import hf_generator
    from igsearch.rollout.loop import run_rollouts
    from igsearch.rollout.render import print_trajectory
    from igsearch.train.models import check_model_source, load_policy

    check_model_source(model)
    cfg = RolloutConfig(
        tagset=tagset,
        prompt_style=prompt_style,  # type: ignore[arg-type]  # checked in __post_init__
        topk=topk,
        max_turns=max_turns,
        max_new_tokens_per_turn=max_new_tokens,
        temperature=0.0,
    )
    from transformers.utils import logging as hf_logging

    retriever = open_retriever(index_dir, retriever_url)
    hf_logging.disable_progress_bar()  # keep the trajectory the only output
    policy, tokenizer = load_policy(model, device=device)
    prompt = build_prompt(question, cfg.tagset, cfg.prompt_style, tokenizer, cfg.rendering)
    [traj] = run_rollouts([prompt], hf_generator(policy, tokenizer), retriever, cfg)
    print_trajectory(console, traj, tokenizer, cfg.tagset, question=question)


@app.command()
def world(
    out: Annotated[
        Path,
        typer.Option(help="World folder to write (corpus, QA splits, index, demos, tokenizer)."),
    ],
    seed: Annotated[
        int, typer.Option(help="Seed: the same seed and options give the same files.")
    ] = 0,
    size: Annotated[
        str, typer.Option(help="tiny (~400 passages), small (~5k) or medium (~50k).")
    ] = "small",
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="WorldConfig overrides key=value, e.g. n_demos=8000 vague_share=0.2."),
    ] = None,
) -> None:
    """Generate the synthetic multi-hop world, fully determined by the seed (igsearch.data.world)."""
    from rich.table import Table

    from igsearch.config import WorldConfig, load_config
    from igsearch.data.world import build_world

    cfg = load_config(WorldConfig, None, [f"seed={seed}", f"size={size}", *(overrides or [])])
    with console.status("building the world…") as status:
        manifest = build_world(
            cfg, out, progress=lambda stage: status.update(f"building the world: {stage}…")
        )
    counts = manifest["counts"]
    table = Table(title=f"world {out} (seed {seed}, {size})")
    table.add_column("split")
    for qtype in ("total", "single_hop", "bridge", "comparison", "compositional"):
        table.add_column(qtype, justify="right")
    for split, by_type in [*counts["questions"].items(), ("demos", counts["demos"])]:
        table.add_row(
            split,
            *(
                str(by_type[t])
                for t in ("total", "single_hop", "bridge", "comparison", "compositional")
            ),
        )
    console.print(table)
    entities = ", ".join(f"{n} {kind}" for kind, n in counts["entities"].items())
    console.print(
        f"{counts['passages']} passages; entities: {entities}; built in {manifest['build_seconds']:.1f}s"
    )
    console.print(f"content hash {manifest['content_hash'][:16]}…")


@app.command()
def sft(
    world_dir: Annotated[
        Path, typer.Option("--world", help="World folder built by `igsearch world`.")
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder: the policy (save_pretrained), checkpoints, logs.")
    ],
    preset: Annotated[
        str | None, typer.Option(help="Model preset: nano or micro (default: the config's, nano).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest complete checkpoint in OUT/checkpoints.")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="YAML file of SftConfig fields.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="SftConfig overrides key=value, e.g. max_steps=300 learning_rate=2e-3."
        ),
    ] = None,
) -> None:
    """Warm-start a tiny policy on a world's oracle demonstrations (igsearch.train.sft)."""
    from igsearch.config import SftConfig, load_config
    from igsearch.train.sft import run_sft

    cfg = load_config(
        SftConfig, config, [*([f"preset={preset}"] if preset else []), *(overrides or [])]
    )
    summary = run_sft(world_dir, out, cfg, resume=resume)
    console.print(
        f"trained [bold]{summary['preset']}[/bold] ({summary['parameters']:,} parameters) for {summary['steps']} steps "
        f"on {summary['demos']} demonstrations in {summary['train_seconds']:.0f}s; final loss {summary['final_loss']:.3f}"
    )
    console.print(f"policy saved to {out} (load with igsearch.train.models.load_policy)")


@app.command()
def train(
    config: Annotated[
        Path, typer.Option(help="YAML TrainConfig, e.g. configs/nano-synthetic-ig.yaml.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted overrides key=value, e.g. algo.alpha=0.5 train.steps=20."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest complete checkpoint in train.output_dir.")
    ] = False,
) -> None:
    """Train a policy with GRPO or IG-Search (igsearch.train.trainer); runs under `accelerate launch` too."""
    from igsearch.train.rl import load_train_config, run_training

    cfg = load_train_config(config, overrides or [])
    final = run_training(cfg, resume=resume)
    console.print(
        f"trained policy saved to {final}; metrics in {Path(cfg.train.output_dir) / 'metrics.jsonl'}"
    )


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Option(help="Policy folder (save_pretrained) or hub name.")],
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="Index folder (in process).")
    ] = None,
    retriever_url: Annotated[str | None, typer.Option(help="A /retrieve server URL.")] = None,
    benchmarks: Annotated[
        str | None,
        typer.Option(
            help="all, or names: nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="FlashRAG dataset folder: DIR/<name>/<split>.jsonl.")
    ] = None,
    data: Annotated[
        list[str] | None, typer.Option(help="Extra sets as name=path.jsonl (repeatable).")
    ] = None,
    world_dir: Annotated[
        Path | None,
        typer.Option("--world", help="Synthetic world: its test split, by question type."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many questions per set.")] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder: results.json, results.md, predictions.jsonl.")
    ] = Path("runs/eval"),
    batch_size: Annotated[int, typer.Option(help="Questions rolled out together.")] = 64,
    topk: Annotated[
        int | None, typer.Option(help="Passages per search (default: the policy's, else 3).")
    ] = None,
    max_turns: Annotated[int | None, typer.Option(help="Search budget per question.")] = None,
    prompt_style: Annotated[
        str | None, typer.Option(help="plain, chat or bare (default: the policy's).")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens generated per turn.")
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code from the model folder or hub.")
    ] = False,
) -> None:
    """Exact match, F1 and substring match on QA benchmarks with greedy rollouts (igsearch.eval)."""
    from igsearch.eval.benchmarks import resolve_sets
    from igsearch.eval.evaluate import evaluate_sets, policy_rollout_config
    from igsearch.eval.report import results_table, write_results
    from igsearch.rollout.engine import hf_generator
    from igsearch.train.models import check_model_source, load_policy

    sets = resolve_sets(
        benchmarks, data_dir, data or [], world_dir, limit
    )  # fails before any model loads
    check_model_source(model)
    cfg = policy_rollout_config(
        model,
        topk=topk,
        max_turns=max_turns,
        prompt_style=prompt_style,
        max_new_tokens_per_turn=max_new_tokens,
    )
    retriever = open_retriever(index_dir, retriever_url)
    policy, tokenizer = load_policy(model, trust_remote_code=trust_remote_code)
    results, records = evaluate_sets(
        sets, hf_generator(policy, tokenizer), retriever, cfg, batch_size
    )
    from igsearch.config import to_dict

    results["config"] = {
        "model": str(model),
        "retriever": str(index_dir or retriever_url),
        "limit": limit,
        "rollout": to_dict(cfg),
    }
    write_results(out, results, records, title=Path(str(model)).name)
    console.print(results_table({Path(str(model)).name: results}))
    console.print(
        f"results in {out}/results.json, {out}/results.md, predictions in {out}/predictions.jsonl"
    )


WorldOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--world",
        help="WorldConfig override key=value for the world (repeat for more), e.g. "
        "--world early_answer_share=0.6; a run folder keeps the world it was started with.",
    ),
]
"""The `--world` option of `demo` and `experiment`."""

RenameEntities = Annotated[
    bool | None,
    typer.Option(
        "--rename-entities/--no-rename-entities",
        help="RL respells the world's names afresh every step, so that it learns to copy names "
        "rather than its own questions' names (default: the plan's; see docs/rl_recipe).",
        show_default=False,
    ),
]
"""The `--rename-entities` option of `demo` and `experiment` (data.rename_entities)."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder (stages are reused from it).")] = Path(
        "runs/demo"
    ),
    quick: Annotated[
        bool, typer.Option(help="The same pipeline on a tiny slice (about 3 minutes).")
    ] = False,
    fresh: Annotated[bool, typer.Option(help="Delete the run folder and start over.")] = False,
    seeds: Annotated[
        int, typer.Option(help="Repeat the RL runs over this many seeds (mean ± std).")
    ] = 1,
    world: WorldOverrides = None,
    rename_entities: RenameEntities = None,
) -> None:
    """The main job: world -> SFT -> GRPO vs IG-Search -> evaluation -> report (igsearch.demo)."""
    from igsearch.demo import run_demo

    if seeds < 1:
        raise typer.BadParameter("--seeds must be >= 1")
    run_demo(
        out if not (quick and out == Path("runs/demo")) else Path("runs/demo-quick"),
        quick=quick,
        fresh=fresh,
        seeds=seeds,
        world=tuple(world or ()),
        rename_entities=rename_entities,
    )


@app.command()
def experiment(
    out: Annotated[Path, typer.Option(help="Run folder (stages are reused from it).")] = Path(
        "runs/experiment"
    ),
    seeds: Annotated[
        int, typer.Option(help="RL seeds per method (0, 1, …); paired across methods.")
    ] = 3,
    steps: Annotated[
        int | None, typer.Option(help="RL steps per run (default: 120; the demo runs 40).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma list of estimators (default: all, i.e. grpo,ig_grpo,ig_grpo_empty)."
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Tiny world, 2 RL steps, few test questions (a smoke test).")
    ] = False,
    warm_start: Annotated[
        Path | None,
        typer.Option(
            help="A finished `igsearch demo` folder (e.g. runs/demo): use its world and warm start "
            "instead of building and training them again (checked to match the plan)."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Delete the run folder and start over.")] = False,
    jobs: Annotated[
        int,
        typer.Option(
            help="RL runs trained at once, each on its share of the CPUs with one thread per core "
            "(2 on a 2-core machine: about 1.3x the throughput of one run on both cores)."
        ),
    ] = 1,
    dev: Annotated[
        bool,
        typer.Option(
            help="Evaluate every policy on the dev split too, as a replication of the test result "
            "and pooled with it (--no-dev skips it)."
        ),
    ] = True,
    world: WorldOverrides = None,
    rename_entities: RenameEntities = None,
) -> None:
    """Compare the estimators over seeds from one warm start: test EM with paired 95% intervals,
    training curves, IG vs supporting passages -> experiment.md / .json (igsearch.experiment)."""
    from igsearch.experiment import experiment_spec, run_experiment

    spec = experiment_spec(
        quick=quick,
        seeds=seeds,
        steps=steps,
        methods=methods,
        warm_start=warm_start,
        jobs=jobs,
        dev=dev,
        world=tuple(world or ()),
        rename_entities=rename_entities,
    )
    run_experiment(
        out if not (quick and out == Path("runs/experiment")) else Path("runs/experiment-quick"),
        spec,
        fresh=fresh,
    )


if __name__ == "__main__":  # `python -m igsearch.cli`, e.g. under `accelerate launch -m`
    run_cli()
