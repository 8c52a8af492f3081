"""Statistics of the experiment report: ROC AUC with ties, and a paired bootstrap over seeds and
questions. Pure functions on plain arrays (numpy), no model or file access.

The bootstrap (docs/design.md, "What the testbed must show"): results are a (K, N) array of
per-question scores (K seeds, N test questions, each question with a type). One replicate draws K
seeds with replacement and, within every question type separately, as many questions as the type
has, with replacement; its statistic is the unweighted mean over types of the mean score over the
drawn seeds and drawn questions of that type. The same draws serve every method and every
difference of methods, which makes differences paired: seed k of two methods shares warm start,
data order and sampling seed, and question q is the same question. The interval is the
percentile interval (2.5th and 97.5th percentiles, linear interpolation) of the replicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(score of a positive > score of a negative) + 0.5 · P(tie), over all (positive, negative)
    pairs: the Mann-Whitney U statistic divided by n_pos · n_neg, with tied scores given their
    mid-rank. None when either class is empty (the AUC is undefined).

    scores, labels: (n,).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    start = 0
    while start < s.size:  # mid-ranks (1-based) for runs of equal scores
        end = start
        while end + 1 < s.size and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pooled_auc(
    aucs: Sequence[float], n_pos: Sequence[float], n_neg: Sequence[float]
) -> float | None:
    """AUC over the (positive, negative) pairs of the same batch, pooled over batches: the mean of
    per-batch AUCs weighted by their pair counts n_pos · n_neg. None when there is no pair.

    aucs, n_pos, n_neg: (n_batches,).
    """
    w = np.asarray(n_pos, dtype=np.float64) * np.asarray(n_neg, dtype=np.float64)
    if w.sum() <= 0:
        return None
    return float((np.asarray(aucs, dtype=np.float64) * w).sum() / w.sum())


@dataclass(frozen=True)
class BootstrapDraws:
    """Resampling indices shared by every method and difference of one report (what pairs them)."""

    seeds: np.ndarray
    """(B, K) int: the seeds drawn by each replicate."""
    questions: dict[str, np.ndarray]
    """type -> (B, n_type) int: the question columns drawn within that type by each replicate."""

    def __post_init__(self) -> None:
        if self.seeds.ndim != 2 or any(
            q.shape[0] != self.seeds.shape[0] for q in self.questions.values()
        ):
            raise ValueError(
                "BootstrapDraws: seeds (B, K) and every questions[type] (B, n) need the same B"
            )


def type_columns(types: Sequence[str]) -> dict[str, np.ndarray]:
    """type -> the column indices of its questions, types in first-seen order."""
    out: dict[str, list[int]] = {}
    for i, t in enumerate(types):
        out.setdefault(str(t), []).append(i)
    return {t: np.asarray(cols, dtype=np.int64) for t, cols in out.items()}


def draw_bootstrap(
    n_seeds: int, types: Sequence[str], n_boot: int = 10_000, seed: int = 0
) -> BootstrapDraws:
    """B = n_boot replicates: K seeds with replacement, and each type's questions with replacement
    within that type (the type mix stays fixed). Deterministic for a given seed."""
    if n_seeds < 1 or n_boot < 1 or not len(types):
        raise ValueError(
            f"need >= 1 seed, replicate and question (got {n_seeds}, {n_boot}, {len(types)})"
        )
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    questions = {
        t: cols[rng.integers(0, cols.size, size=(n_boot, cols.size))]
        for t, cols in type_columns(types).items()
    }
    return BootstrapDraws(seeds, questions)


def replicate_means(
    values: np.ndarray, draws: BootstrapDraws
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each replicate's statistic: overall (B,) = unweighted mean over types, and per type (B,) =
    mean of values[drawn seeds][:, drawn questions of that type].

    values: (K, N) per-seed, per-question scores (or differences of two methods' scores).
    """
    values = np.asarray(values, dtype=np.float64)
    k = values.shape[0]
    weights = np.zeros((draws.seeds.shape[0], k))
    np.add.at(weights, (np.arange(draws.seeds.shape[0])[:, None], draws.seeds), 1.0 / k)
    by_seed_mix = weights @ values  # (B, N): each question's mean over the drawn seeds
    by_type = {
        t: np.take_along_axis(by_seed_mix, cols, axis=1).mean(axis=1)
        for t, cols in draws.questions.items()
    }
    overall = np.mean(np.stack(list(by_type.values())), axis=0)
    return overall, by_type


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (linear interpolation between order
    statistics)."""
    tail = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1 - tail])
    return float(lo), float(hi)


def _point(values: np.ndarray, cols: np.ndarray) -> tuple[float, list[float]]:
    per_seed = values[:, cols].mean(axis=1)
    return float(per_seed.mean()), [float(v) for v in per_seed]


def summarize(
    values: np.ndarray,
    types: Sequence[str],
    draws: BootstrapDraws,
    level: float = 0.95,
    groups: dict[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """{"mean", "lo", "hi", "per_seed", "by_type": {type: {...}}, and one {...} per group}, each
    {...} = {"mean", "lo", "hi", "per_seed"}.

    values: (K, N), columns ordered like `types`. `mean` is the plain estimate (mean over seeds;
    overall = unweighted mean over types), `per_seed` its value for each seed, `lo`/`hi` the
    bootstrap percentile interval from `draws`. groups: name -> types, summarized as the
    unweighted mean over those types (e.g. "multi_hop"); a group with no type is left out.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(types):
        raise ValueError(f"values of shape {values.shape} for {len(types)} question types")
    overall, reps = replicate_means(values, draws)
    by_type: dict[str, Any] = {}
    for t, cols in type_columns(types).items():
        mean, per_seed = _point(values, cols)
        lo, hi = interval(reps[t], level)
        by_type[t] = {"mean": mean, "lo": lo, "hi": hi, "per_seed": per_seed}

    def combine(names: Sequence[str], replicates: np.ndarray) -> dict[str, Any]:
        per_seed = np.mean([by_type[t]["per_seed"] for t in names], axis=0)
        lo, hi = interval(replicates, level)
        return {
            "mean": float(per_seed.mean()),
            "lo": lo,
            "hi": hi,
            "per_seed": [float(v) for v in per_seed],
        }

    out = {**combine(list(by_type), overall), "by_type": by_type}
    for name, names in (groups or {}).items():
        names = [t for t in names if t in by_type]
        if names:
            out[name] = combine(names, np.mean([reps[t] for t in names], axis=0))
    return out
