"""The QA benchmarks igsearch evaluates on, and where their files live.

The paper's seven benchmarks use FlashRAG's release layout, `DIR/<name>/<split>.jsonl`, evaluated
on the split FlashRAG (and Search-R1) report: test where a test set with answers exists, dev
otherwise. The synthetic world registers its question types the same way (its test split,
filtered by `metadata.type`), so one report covers both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from igsearch.data.qa import QAExample, read_qa
from igsearch.errors import IGSearchError


@dataclass(frozen=True)
class Benchmark:
    """One evaluation set."""

    name: str
    """Registry and report name."""
    split: str
    """The split evaluated (its file is `<split>.jsonl`)."""
    hops: str
    """"single" or "multi": the group of the single-hop / multi-hop averages."""
    flashrag_name: str
    """Folder name in FlashRAG's dataset release."""
    qtype: str | None = None
    """For the synthetic world: the `metadata.type` this benchmark keeps."""

    def path(self, data_dir: str | Path) -> Path:
        """Where the benchmark's file is expected under a FlashRAG-style data folder."""
        return Path(data_dir) / self.flashrag_name / f"{self.split}.jsonl"


PAPER_BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("nq", "test", "single", "nq"),
        Benchmark("triviaqa", "test", "single", "triviaqa"),
        Benchmark("popqa", "test", "single", "popqa"),
        Benchmark("hotpotqa", "dev", "multi", "hotpotqa"),
        Benchmark("2wikimultihopqa", "dev", "multi", "2wikimultihopqa"),
        Benchmark("musique", "dev", "multi", "musique"),
        Benchmark("bamboogle", "test", "multi", "bamboogle"),
    ]
}
"""The paper's seven benchmarks (FlashRAG names and evaluation splits)."""

WORLD_BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("single_hop", "test", "single", ".", "single_hop"),
        Benchmark("bridge", "test", "multi", ".", "bridge"),
        Benchmark("comparison", "test", "multi", ".", "comparison"),
        Benchmark("compositional", "test", "multi", ".", "compositional"),
    ]
}
"""The synthetic world's question types, read from `WORLD/test.jsonl`."""


def select(
    names: str | Sequence[str], registry: dict[str, Benchmark] = PAPER_BENCHMARKS
) -> list[Benchmark]:
    """Benchmarks by name ("all" or a comma list); unknown names fail listing the valid ones."""
    if isinstance(names, str):
        names = (
            list(registry) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
        )
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise IGSearchError(
            f"unknown benchmark {unknown[0]!r}; choose from: all, {', '.join(registry)}"
        )
    return [registry[n] for n in names]


def resolve_files(benchmarks: Sequence[Benchmark], data_dir: str | Path) -> dict[str, Path]:
    """The file of every benchmark; fails listing every expected path that is missing."""
    paths = {b.name: b.path(data_dir) for b in benchmarks}
    missing = [f"{name}: {p}" for name, p in paths.items() if not p.exists()]
    if missing:
        raise IGSearchError(
            "missing benchmark files (FlashRAG layout DIR/<name>/<split>.jsonl):\n  "
            + "\n  ".join(missing)
        )
    return paths


def parse_data_args(items: Sequence[str]) -> dict[str, Path]:
    """`name=path.jsonl` pairs (from --data); fails on a bad pair or a missing file."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise IGSearchError(f"--data {item!r}: expected name=path.jsonl")
        out[name] = Path(path)
    missing = [f"{n}: {p}" for n, p in out.items() if not p.exists()]
    if missing:
        raise IGSearchError("missing data files:\n  " + "\n  ".join(missing))
    return out


def load_benchmark(
    path: str | Path, qtype: str | None = None, limit: int | None = None
) -> list[QAExample]:
    """A benchmark's examples, filtered by question type (world benchmarks), at most `limit`."""
    examples = read_qa(path)
    if qtype is not None:
        examples = [ex for ex in examples if ex.metadata.get("type") == qtype]
    return examples[:limit] if limit is not None else examples


def hops_of(name: str) -> str | None:
    """ "single" / "multi" for a registered benchmark or world question type, else None."""
    b = PAPER_BENCHMARKS.get(name) or WORLD_BENCHMARKS.get(name)
    return b.hops if b else None


def resolve_sets(
    benchmarks: str | None = None,
    data_dir: str | Path | None = None,
    data: Sequence[str] = (),
    world: str | Path | None = None,
    limit: int | None = None,
    world_split: str = "test",
) -> dict[str, list[QAExample]]:
    """The evaluation sets a command asked for, every file checked before anything is loaded.

    Sources: `benchmarks` ("all" or names) under `data_dir` (FlashRAG layout); `data` name=path
    pairs; `world` (the synthetic world's `world_split` split, test by default, one set per
    question type).
    """
    files: dict[str, tuple[Path, str | None]] = {}
    if benchmarks:
        if data_dir is None:
            raise IGSearchError("--benchmarks needs --data-dir (the FlashRAG dataset folder)")
        chosen = select(benchmarks)
        files.update({n: (p, None) for n, p in resolve_files(chosen, data_dir).items()})
    files.update({n: (p, None) for n, p in parse_data_args(data).items()})
    if world is not None:
        test = Path(world) / f"{world_split}.jsonl"
        if not test.exists():
            raise IGSearchError(
                f"missing world {world_split} split: {test} (build it with `igsearch world`)"
            )
        files.update({b.name: (test, b.qtype) for b in WORLD_BENCHMARKS.values()})
    if not files:
        raise IGSearchError(
            "nothing to evaluate: give --benchmarks with --data-dir, --data name=path, or --world"
        )
    sets = {name: load_benchmark(p, qtype, limit) for name, (p, qtype) in files.items()}
    return {name: ex for name, ex in sets.items() if ex}
