"""The experiment's numbers: test EM with paired bootstrap intervals, training curves and IG's
premise, gathered from the run folder into `experiment.json` (the markdown and plots are in
igsearch.eval.experiment_md).

Inputs: `eval/<name>/predictions.jsonl` (one record per test question: benchmark = question type,
id, em) and `<method>-s<seed>/metrics.jsonl` (the trainer's per-step log).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igsearch.errors import IGSearchError
from igsearch.eval.benchmarks import hops_of
from igsearch.eval.demo_report import _series, read_metrics
from igsearch.eval.stats import draw_bootstrap, pooled_auc, summarize

PAIRS = (("ig_grpo", "grpo"), ("ig_grpo", "ig_grpo_empty"), ("ig_grpo_empty", "grpo"))
"""Differences between estimators reported when both ran (each estimator − sft always is)."""
SUPPORT_KEYS = ("all", "step1", "step2", "step3", "step4", "step5")


def read_predictions(eval_dir: Path) -> dict[tuple[str, str], float]:
    """(question type, question id) -> EM of one evaluation folder."""
    path = eval_dir / "predictions.jsonl"
    if not path.exists():
        raise IGSearchError(f"missing {path}: rerun the experiment to evaluate this model")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["benchmark"], str(r["id"])): float(r["em"]) for r in rows}


def em_matrices(
    evals: dict[str, list[Path]], n_seeds: int
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Question types (one per column) and, per method, a (K, N) EM array: row k = seed k, columns
    in the order of the warm start's predictions. `sft` (one model shared by every seed) is
    repeated K times; every other method needs K evaluations of the same questions."""
    sft = read_predictions(evals["sft"][0])
    keys = list(sft)
    out = {"sft": np.tile(np.array([sft[k] for k in keys]), (n_seeds, 1))}
    for method, dirs in evals.items():
        if method == "sft":
            continue
        if len(dirs) != n_seeds:
            raise IGSearchError(f"{method}: {len(dirs)} evaluations for {n_seeds} seeds")
        rows = []
        for d in dirs:
            em = read_predictions(d)
            if set(em) != set(keys):
                raise IGSearchError(f"{d}: not the questions the warm start was evaluated on")
            rows.append([em[k] for k in keys])
        out[method] = np.array(rows)
    return [t for t, _ in keys], out


def _shape(s: dict[str, Any], types: Sequence[str]) -> dict[str, Any]:
    """summarize()'s output as a report entry: test_em, by_type and multi_hop."""
    multi = [t for t in dict.fromkeys(types) if hops_of(t) == "multi"]
    entry = {
        "test_em": {k: s[k] for k in ("mean", "lo", "hi", "per_seed")},
        "by_type": s["by_type"],
    }
    if multi:
        entry["multi_hop"] = s["multi_hop"]
    return entry


def em_stats(
    types: list[str], em: dict[str, np.ndarray], n_boot: int, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """methods[name] and paired["a-b"], each {"test_em", "by_type", "multi_hop"} of
    {"mean", "lo", "hi", "per_seed"}, all from the same bootstrap draws."""
    draws = draw_bootstrap(next(iter(em.values())).shape[0], types, n_boot, seed)
    groups = {"multi_hop": [t for t in dict.fromkeys(types) if hops_of(t) == "multi"]}
    methods = {m: _shape(summarize(x, types, draws, groups=groups), types) for m, x in em.items()}
    pairs = [(m, "sft") for m in em if m != "sft"]
    pairs += [(a, b) for a, b in PAIRS if a in em and b in em]
    paired = {
        f"{a}-{b}": _shape(summarize(em[a] - em[b], types, draws, groups=groups), types)
        for a, b in pairs
    }
    return methods, paired


def _quarters(values: list[float]) -> list[float]:
    n = len(values)
    if n < 4:
        return [statistics.fmean(values)] if values else []
    return [statistics.fmean(values[q * n // 4 : (q + 1) * n // 4]) for q in range(4)]


def training_summary(runs: list[Path]) -> dict[str, Any]:
    """Sampled training reward (EM) by quarter of the run, dev-EM curve, all-fail groups and what
    the advantages gave them; means over seeds."""
    _, reward, _ = _series(runs, "em")
    steps, dev, dev_sd = _series(runs, "dev/em")

    def mean_of(key: str) -> float | None:
        vals = [float(r[key]) for run in runs for r in read_metrics(run) if key in r]
        return statistics.fmean(vals) if vals else None

    return {
        "reward_by_quarter": _quarters(reward),
        "dev_em": {"steps": steps, "mean": dev, "sd": dev_sd},
        "all_fail_groups": mean_of("all_fail_groups"),
        "all_fail_nonzero_token_share": mean_of("adv/all_fail_nonzero_token_share"),
        "all_fail_abs_advantage": mean_of("adv/all_fail_abs_mean"),
        "entropy": mean_of("entropy"),
        "kl": mean_of("kl"),
        "step_seconds": mean_of("time/step"),
    }


def _weighted_mean(rows: list[dict[str, Any]], value: str, count: str) -> float | None:
    pairs = [(r[value], r[count]) for r in rows if value in r]
    total = sum(c for _, c in pairs)
    return sum(v * c for v, c in pairs) / total if total else None


def support_summary(runs: list[Path]) -> dict[str, Any]:
    """IG of search steps that retrieved a supporting passage vs the others, over every step of
    every run: AUC pooled over training steps (weighted by their pairs), class means of IG
    weighted by class counts, step counts; by search-step index. Empty without IG."""
    rows = [r for run in runs for r in read_metrics(run)]
    out: dict[str, Any] = {}
    for key in SUPPORT_KEYS:
        p = f"ig_support/{key}/"
        scored = [r for r in rows if p + "auc" in r]
        if not scored:
            continue
        counted = [r for r in rows if p + "n_support" in r]
        out[key] = {
            "auc": pooled_auc(
                [r[p + "auc"] for r in scored],
                [r[p + "n_support"] for r in scored],
                [r[p + "n_other"] for r in scored],
            ),
            "ig_support": _weighted_mean(rows, p + "ig_support", p + "n_support"),
            "ig_other": _weighted_mean(rows, p + "ig_other", p + "n_other"),
            "n_support": sum(r[p + "n_support"] for r in counted),
            "n_other": sum(r[p + "n_other"] for r in counted),
            "steps_with_auc": len(scored),
        }
    return out


def support_share(runs: list[Path]) -> float | None:
    """Share of search steps that retrieved a supporting passage, over every step of the runs."""
    rows = [r for run in runs for r in read_metrics(run) if "ig_support/all/n_support" in r]
    sup = sum(r["ig_support/all/n_support"] for r in rows)
    tot = sup + sum(r["ig_support/all/n_other"] for r in rows)
    return sup / tot if tot else None


def _split_stats(types: list[str], em: dict[str, np.ndarray], n_boot: int) -> dict[str, Any]:
    methods, paired = em_stats(types, em, n_boot)
    questions = {t: types.count(t) for t in dict.fromkeys(types)}
    return {"methods": methods, "paired": paired, "questions": questions}


def replication(
    test: tuple[list[str], dict[str, np.ndarray]],
    dev: tuple[list[str], dict[str, np.ndarray]],
    n_boot: int,
) -> dict[str, Any]:
    """The same statistics on the dev split alone ("dev") and on test and dev pooled ("pooled":
    one bootstrap over seeds and the questions of both splits, types kept apart), each as
    {"methods", "paired", "questions"}. Dev questions are keyed apart from test ones."""
    types = test[0] + dev[0]
    pooled = {m: np.concatenate([test[1][m], dev[1][m]], axis=1) for m in test[1]}
    return {
        "split": "dev",
        "dev": _split_stats(dev[0], dev[1], n_boot),
        "pooled": _split_stats(types, pooled, n_boot),
    }


def experiment_json(
    root: Path, spec: Any, evals: dict[str, dict[str, list[Path]]], minutes: float
) -> dict[str, Any]:
    """Everything experiment.md shows, as data. `evals` holds, per split evaluated ("test", and
    "dev" when the experiment replicates on it), each method's evaluation folders by seed."""
    from dataclasses import asdict

    test = em_matrices(evals["test"], len(spec.seeds))
    main = _split_stats(*test, spec.n_boot)
    runs = {m: [root / f"{m}-s{s}" for s in spec.seeds] for m in spec.methods}
    return {
        "seeds": list(spec.seeds),
        "steps": spec.plan.rl_steps,
        "minutes": minutes,
        **main,
        "replication": (
            replication(test, em_matrices(evals["dev"], len(spec.seeds)), spec.n_boot)
            if "dev" in evals
            else None
        ),
        "bootstrap": {"replicates": spec.n_boot, "level": 0.95, "seed": 0},
        "training": {m: training_summary(r) for m, r in runs.items()},
        "search_support_share": {m: support_share(r) for m, r in runs.items()},
        "ig_support": {m: s for m, r in runs.items() if (s := support_summary(r))},
        "plan": asdict(spec.plan),
        "warm_start": spec.warm_start,
    }
