"""Greedy evaluation with the training rollout loop: per-question records and their aggregates."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from igsearch.config import RolloutConfig, read_policy_info
from igsearch.data.qa import QAExample
from igsearch.protocol import build_prompt
from igsearch.retrieval.base import Retriever
from igsearch.rewards.outcome import exact_match, f1_score, substring_match
from igsearch.rollout.loop import Trajectory, run_rollouts

METRICS = ("em", "f1", "acc", "searches", "turns", "well_formed", "latency_s")


def question_record(example: QAExample, traj: Trajectory, latency_s: float) -> dict[str, Any]:
    """One evaluated question: prediction, metrics and what the agent did."""
    return {
        "id": example.id,
        "question": example.question,
        "golden_answers": list(example.golden_answers),
        "type": example.metadata.get("type"),
        "prediction": traj.answer,
        "em": exact_match(traj.answer, example.golden_answers),
        "f1": f1_score(traj.answer, example.golden_answers),
        "acc": substring_match(traj.answer, example.golden_answers),
        "searches": traj.num_searches,
        "turns": traj.num_turns,
        "well_formed": float(traj.well_formed),
        "latency_s": latency_s,
        "queries": [s.query for s in traj.steps],
    }


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean of every metric over records, plus their count `n`."""
    n = len(records)
    out: dict[str, float] = {"n": n}
    for m in METRICS:
        out[m] = sum(float(r[m]) for r in records) / n if n else 0.0
    return out


def aggregate_by(
    records: Sequence[dict[str, Any]], key: str = "type"
) -> dict[str, dict[str, float]]:
    """Aggregates per value of `key` (e.g. question type), in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[str(r.get(key))].append(r)
    return {k: aggregate(v) for k, v in groups.items()}


def evaluate_examples(
    examples: Sequence[QAExample],
    generator: Any,
    retriever: Retriever,
    cfg: RolloutConfig,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "eval",
) -> list[dict[str, Any]]:
    """Greedy rollouts (temperature forced to 0) for every example, in batches; one record each."""
    from dataclasses import replace

    cfg = replace(cfg, temperature=0.0)
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(examples), desc=desc, disable=not progress, unit="q")
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompts = [
            build_prompt(
                ex.question, cfg.tagset, cfg.prompt_style, generator.tokenizer, cfg.rendering
            )
            for ex in chunk
        ]
        t0 = time.perf_counter()
        trajs = run_rollouts(prompts, generator, retriever, cfg)
        per_q = (time.perf_counter() - t0) / max(len(chunk), 1)
        records.extend(question_record(ex, tr, per_q) for ex, tr in zip(chunk, trajs, strict=True))
        bar.update(len(chunk))
    bar.close()
    return records


def summarize(records_by_benchmark: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """The results object: per benchmark metrics, and unweighted averages over benchmarks.

    `average` is the unweighted mean over benchmarks (the paper's "average EM"); `single_hop` and
    `multi_hop` average the benchmarks of each group. Question counts are summed, not averaged.
    """
    from igsearch.eval.benchmarks import hops_of

    benches = {
        name: {**aggregate(recs), "hops": hops_of(name)}
        for name, recs in records_by_benchmark.items()
    }

    def mean_of(names: list[str]) -> dict[str, float]:
        if not names:
            return {}
        out = {m: sum(benches[n][m] for n in names) / len(names) for m in METRICS}
        out["n"] = sum(benches[n]["n"] for n in names)
        out["benchmarks"] = len(names)
        return out

    return {
        "benchmarks": benches,
        "average": mean_of(list(benches)),
        "single_hop": mean_of([n for n, b in benches.items() if b["hops"] == "single"]),
        "multi_hop": mean_of([n for n, b in benches.items() if b["hops"] == "multi"]),
    }


def evaluate_sets(
    sets: dict[str, Sequence[QAExample]],
    generator: Any,
    retriever: Retriever,
    cfg: RolloutConfig,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Evaluate every named set; returns (results object without config, records per set)."""
    records = {
        name: evaluate_examples(
            examples, generator, retriever, cfg, batch_size, progress, desc=name
        )
        for name, examples in sets.items()
    }
    return summarize(records), records


def policy_rollout_config(model_dir: str | Path, **overrides: Any) -> RolloutConfig:
    """Greedy rollout settings for a policy: its POLICY_INFO (prompt style, rendering, tag set,
    top-k) when it has one, then the given overrides (None values are ignored)."""
    info = read_policy_info(model_dir)
    fields = {k: info[k] for k in ("prompt_style", "rendering", "tagset", "topk") if k in info}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return RolloutConfig(**{**fields, "temperature": 0.0})
