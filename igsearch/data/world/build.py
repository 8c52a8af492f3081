"""Build a world folder: knowledge base, corpus, QA splits, BM25 index, demonstrations, tokenizer.

Layout of DIR: world.json (manifest: seed, sizes, counts per type, content hash), corpus.jsonl,
train/dev/test.jsonl (FlashRAG), demos.jsonl, index/ (BM25), tokenizer/ (Hugging Face folder).
Everything is a function of the seed and the config; `content_hash` covers every generated file
but the index (whose manifest records absolute paths and timings) and is equal across rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igsearch.data.jsonl import iter_jsonl, write_jsonl
from igsearch.data.qa import write_qa_jsonl
from igsearch.data.world.demos import DemoWriter, Noise, sample_demo_questions
from igsearch.data.world.kb import KB, SPLITS, build_kb
from igsearch.data.world.passages import Passage, build_passages
from igsearch.data.world.questions import QUESTION_TYPES, build_questions
from igsearch.errors import IGSearchError

FORMAT_VERSION = 2
"""2: the `rl` split (rl.jsonl), questions about entities no demonstration mentions."""
HASHED_FILES = (
    "corpus.jsonl",
    "train.jsonl",
    "rl.jsonl",
    "dev.jsonl",
    "test.jsonl",
    "demos.jsonl",
    "tokenizer/tokenizer.json",
)


@dataclass(frozen=True)
class WorldSize:
    """Entity counts (the corpus follows: ~2.3 passages per entity) and split sizes."""

    counts: dict[str, int]
    eval_per_type: int
    """Dev and test questions of each type."""
    n_demos: int
    """Default number of demonstrations."""
    vocab_size: int
    """Default tokenizer vocabulary: the fewer demonstrations, the fewer merges their text supports."""


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(dict(country=6, city=24, person=90, org=20, work=30, event=16, award=8), 10, 400, 512),
    "small": WorldSize(dict(country=30, city=200, person=1100, org=250, work=400, event=300, award=100), 100, 12000, 384),
    "medium": WorldSize(dict(country=120, city=2000, person=11000, org=2500, work=4000, event=3000, award=1000), 250, 40000, 1024),
}  # fmt: skip


def get_size(name: str) -> WorldSize:
    if name not in SIZES:
        raise IGSearchError(f"unknown world size {name!r}; choose one of: {', '.join(SIZES)}")
    return SIZES[name]


SIZE_DEFAULTS = ("n_demos", "vocab_size")
"""WorldConfig keys whose None means the size's value."""


def resolved_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """WorldConfig settings (as `to_dict` writes them) with each None of SIZE_DEFAULTS replaced by
    the size's value: what the build actually used."""
    size = get_size(settings["size"])
    return {
        k: getattr(size, k) if k in SIZE_DEFAULTS and v is None else v for k, v in settings.items()
    }


def content_hash(out: Path) -> str:
    """sha256 over the generated files (HASHED_FILES), in a fixed order."""
    h = hashlib.sha256()
    for name in HASHED_FILES:
        h.update(name.encode() + b"\0")
        h.update((out / name).read_bytes())
    return h.hexdigest()


TOKENIZER_DEMOS = 2000
"""Demonstrations (rendered in full) added to the tokenizer's training text."""


def world_texts(passages: list[Passage], questions: list[Any], demos: list[dict]) -> list[str]:
    """The text the tokenizer is trained on: every passage and question, and the first
    demonstrations as the policy will read them (so `Doc 1(Title:` and the tags' surroundings
    get merges of their own, and inserted documents cost fewer tokens)."""
    rendered = [
        d["prompt"] + "".join(s["text"] for s in d["segments"]) for d in demos[:TOKENIZER_DEMOS]
    ]
    return [f"{p.title}\n{p.text}" for p in passages] + [q.question for q in questions] + rendered


def _write_tokenizer(out: Path, texts: list[str], vocab_size: int) -> None:
    from igsearch.tokenizer import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer(texts, vocab_size=vocab_size), out / "tokenizer")


def build_world(
    cfg: Any, out: str | Path, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Generate the world described by `cfg` (a `WorldConfig`) into `out`; returns the manifest."""
    from igsearch.config import to_dict
    from igsearch.data.corpus import write_corpus
    from igsearch.retrieval.index import build_index, load_index

    out, size, started = Path(out), get_size(cfg.size), time.time()
    settings = resolved_settings(to_dict(cfg))
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").unlink(missing_ok=True)  # an interrupted build must not look finished
    progress("knowledge base and passages")
    kb = build_kb(cfg.seed, size.counts)
    passages = build_passages(kb, cfg.seed)
    write_corpus(out / "corpus.jsonl", (p.doc() for p in passages))
    progress("questions")
    splits = {
        split: build_questions(
            kb, passages, split, size.eval_per_type if split in ("dev", "test") else 10**9, cfg.seed
        )
        for split in SPLITS
    }
    for split, questions in splits.items():
        write_qa_jsonl(out / f"{split}.jsonl", (q.to_qa() for q in questions))
    progress("BM25 index")
    build_index(out / "corpus.jsonl", "bm25", out / "index")
    retriever = load_index(out / "index")
    progress("oracle demonstrations")
    noise = Noise(cfg.vague_share, cfg.redundant_share, cfg.wrong_answer_share, cfg.give_up_share,
                  cfg.early_answer_share, tuple(cfg.habit_types), cfg.drift_share)  # fmt: skip
    writer = DemoWriter(kb, passages, retriever.search, topk=cfg.topk, tags=cfg.tagset, noise=noise,
                        seed=cfg.seed, max_searches=cfg.max_searches)  # fmt: skip
    chosen = sample_demo_questions(
        splits["train"], settings["n_demos"], dict(cfg.demo_weights), writer.rng
    )
    demos, dropped = writer.build(chosen)
    write_jsonl(out / "demos.jsonl", demos)
    progress("tokenizer")
    all_questions = [q for qs in splits.values() for q in qs]
    _write_tokenizer(out, world_texts(passages, all_questions, demos), settings["vocab_size"])
    manifest = _manifest(cfg, kb, passages, splits, demos, dropped)
    manifest["content_hash"] = content_hash(out)
    manifest["build_seconds"] = round(time.time() - started, 2)
    (out / "world.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _build_and_report(cfg: Any, out: str) -> None:
    build_world(cfg, out, progress=lambda s: print(f"  building the world: {s}…", flush=True))


def build_world_apart(cfg: Any, out: str | Path) -> dict[str, Any]:
    """`build_world` in a spawned child process (progress on stdout); returns the manifest.

    For callers that train or time anything afterwards: the build's thousands of parallel BM25
    searches leave numba's OpenMP threads beside torch's, which made every later training step of
    the same process several times slower.
    """
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=_build_and_report, args=(cfg, str(out))
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise IGSearchError(f"building the world into {out} failed (exit {child.exitcode})")
    return read_world(out)


ADDED_LATER = {
    "give_up_share": 0.0,
    "early_answer_share": 0.0,
    "drift_share": 0.0,
    "habit_types": ["compositional"],
}
"""Settings newer than some worlds' manifests, with the value those worlds were built with."""


def ensure_world(cfg: Any, out: str | Path, *, fix: str | None = None) -> dict[str, Any]:
    """The manifest of the world `cfg` describes, in `out`: built there (`build_world_apart`) when
    the folder has none, checked against `cfg` when it has one. A world built with other settings
    (another seed, or an older igsearch's defaults) fails, naming what differs and `fix` (default:
    delete `out`), rather than being trained on silently."""
    from igsearch.config import to_dict

    out = Path(out)
    if not (out / "world.json").exists():
        return build_world_apart(cfg, out)
    manifest = read_world(out)
    wanted = resolved_settings(json.loads(json.dumps(to_dict(cfg))))
    built = {**ADDED_LATER, **manifest.get("config", {})}
    built = resolved_settings(built) if built.get("size") in SIZES else built
    differs = [
        f"{k}={built.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if built.get(k) != v
    ]
    if differs:
        raise IGSearchError(
            f"{out}: this world was built with {', '.join(differs)}; "
            f"{fix or f'delete {out} to rebuild it'}, or choose another folder"
        )
    return manifest


def _manifest(
    cfg: Any, kb: KB, passages, splits, demos: list[dict], dropped: int
) -> dict[str, Any]:
    from igsearch.config import to_dict

    def by_type(items: list[Any], key: Callable[[Any], str]) -> dict[str, int]:
        counts = Counter(key(x) for x in items)
        return {t: counts.get(t, 0) for t in QUESTION_TYPES}

    return {
        "format": "igsearch-world",
        "version": FORMAT_VERSION,
        "seed": cfg.seed,
        "size": cfg.size,
        "config": to_dict(cfg),
        "prompt_style": "bare",
        "tagset": cfg.tagset,
        "topk": cfg.topk,
        "counts": {
            "entities": {k: len(v) for k, v in kb.by_kind.items()},
            "passages": len(passages),
            "questions": {
                s: {"total": len(qs), **by_type(qs, lambda q: q.type)} for s, qs in splits.items()
            },
            "demos": {
                "total": len(demos),
                **by_type(demos, lambda d: d["type"]),
                "dropped": dropped,
                "correct": sum(d["correct"] for d in demos),
                "noise": dict(Counter(n for d in demos for n in d["noise"])),
            },  # fmt: skip
        },
    }


def read_world(path: str | Path) -> dict[str, Any]:
    """Read and check a world folder's manifest."""
    path = Path(path)
    manifest_path = path / "world.json"
    if not manifest_path.exists():
        raise IGSearchError(
            f"{path}: no world.json here (not a world folder, or its build did not finish); "
            "build one with `igsearch world --seed 0 --out DIR`"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != "igsearch-world" or manifest.get("version") != FORMAT_VERSION:
        raise IGSearchError(
            f"{manifest_path}: not an igsearch world manifest of version {FORMAT_VERSION}; rebuild it"
        )
    return manifest


def read_kb(path: str | Path) -> KB:
    """The knowledge base of a world folder, generated again from its manifest's seed and size."""
    manifest = read_world(path)
    return build_kb(manifest["seed"], get_size(manifest["size"]).counts)


def read_demos(path: str | Path) -> list[dict[str, Any]]:
    """The demonstrations of a world folder (or a demos.jsonl path)."""
    path = Path(path)
    return [obj for _, obj in iter_jsonl(path / "demos.jsonl" if path.is_dir() else path)]


def unseen_name_token_share(world: str | Path, split: str = "test") -> float:
    """Share of the tokens of `split`'s subject names (written after a space, as in a query) that
    never occur in the demonstrations' generated segments. Keep it near 0 (docs/design.md, Tiny
    policies), or the policy cannot write a held-out name into a query."""
    from igsearch.data.qa import read_qa_jsonl
    from igsearch.tokenizer import load_tokenizer

    world = Path(world)
    kb = read_kb(world)
    tok = load_tokenizer(world / "tokenizer")
    seen: set[int] = set()
    for demo in read_demos(world):
        for seg in demo["segments"]:
            if seg["generated"]:
                seen.update(tok(seg["text"], add_special_tokens=False)["input_ids"])
    subjects = {
        s for ex in read_qa_jsonl(world / f"{split}.jsonl") for s in ex.metadata["subjects"]
    }
    pieces = [
        i
        for s in sorted(subjects)
        for i in tok(f" {kb[s].name}", add_special_tokens=False)["input_ids"]
    ]
    return sum(i not in seen for i in pieces) / max(1, len(pieces))
