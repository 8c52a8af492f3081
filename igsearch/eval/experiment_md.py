"""`experiment.md`, `experiment.json` and the PNG plots of `igsearch experiment`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igsearch.algo.advantages import ESTIMATORS
from igsearch.eval.demo_report import _series
from igsearch.eval.experiment_report import SUPPORT_KEYS, experiment_json
from igsearch.eval.report import plot_intervals, plot_lines

METHOD_OF_COMPUTATION = """\
**How the intervals are computed.** Every method is evaluated greedily on the same test
questions; the warm start (`sft`) is one model, shared by every seed. For each method the
per-question EM forms a K × N array (K seeds, N questions). One bootstrap replicate draws K seeds
with replacement and, separately within each question type, as many questions as the type has,
with replacement; its value is the unweighted mean over types (overall; the mean over bridge,
comparison and compositional for multi-hop) of the EM averaged over the drawn seeds and drawn
questions. {replicates} replicates (numpy RNG seed 0); the interval is the 2.5th–97.5th
percentile of the replicates. Differences are paired: the same draws (same seeds, same
questions) are applied to both methods, so seed k of two methods shares the warm start, the
training data order and the sampling seeds. The point value is the plain mean over seeds, and
`per_seed` in experiment.json gives it seed by seed."""


def label(name: str) -> str:
    return ESTIMATORS[name].display if name in ESTIMATORS else "SFT"


def _cell(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def em_table(entries: dict[str, dict[str, Any]], names: dict[str, str]) -> str:
    """Rows: entries (methods or paired differences); columns overall, multi-hop, each type."""
    first = next(iter(entries.values()))
    types = list(first["by_type"])
    head = ["", "overall", *(["multi-hop"] if "multi_hop" in first else []), *types]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, e in entries.items():
        cells = [_cell(e["test_em"]), *([_cell(e["multi_hop"])] if "multi_hop" in e else [])]
        cells += [_cell(e["by_type"][t]) for t in types]
        lines.append("| " + " | ".join([names.get(key, key), *cells]) + " |")
    return "\n".join(lines)


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def training_table(training: dict[str, Any], share: dict[str, Any]) -> str:
    head = [
        "method", "sampled reward by quarter", "dev EM first → last", "all-fail groups",
        "policy tokens moved in all-fail groups", "mean abs advantage there",
        "searches that retrieved support", "entropy", "KL", "step s",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, t in training.items():
        dev = t["dev_em"]["mean"]
        cells = [
            " → ".join(_f(v) for v in t["reward_by_quarter"]) or "-",
            f"{_f(dev[0])} → {_f(dev[-1])}" if dev else "-",
            _f(t["all_fail_groups"], 2),
            _f(t["all_fail_nonzero_token_share"]),
            _f(t["all_fail_abs_advantage"]),
            _f(share.get(m), 2),
            _f(t["entropy"], 2),
            _f(t["kl"], 4),
            _f(t["step_seconds"], 1),
        ]
        lines.append("| " + " | ".join([label(m), *cells]) + " |")
    return "\n".join(lines)


def support_table(support: dict[str, Any]) -> str:
    head = ["method", "search steps", "AUC", "mean IG, support retrieved", "mean IG, none",
            "steps with / without support"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, by_key in support.items():
        for key in SUPPORT_KEYS:
            if key in by_key:
                s = by_key[key]
                which = "all" if key == "all" else f"search {key[4:]}"
                cells = [which, _f(s["auc"]), _f(s["ig_support"]), _f(s["ig_other"])]
                cells.append(f"{s['n_support']:.0f} / {s['n_other']:.0f}")
                lines.append("| " + " | ".join([label(m), *cells]) + " |")
    return "\n".join(lines)


def make_plots(root: Path, data: dict[str, Any]) -> dict[str, Path]:
    """Paired differences, dev EM and sampled reward by step (± sd over seeds), all-fail groups,
    IG's AUC by training step."""
    runs = {m: [root / f"{m}-s{s}" for s in data["seeds"]] for m in data["training"]}
    plots = {
        "paired differences": plot_intervals(
            root / "paired_differences.png",
            {
                f"{' − '.join(label(x) for x in k.split('-'))} "
                f"({part.replace('test_em', 'overall').replace('_', '-')})": (
                    v[part]["mean"],
                    v[part]["lo"],
                    v[part]["hi"],
                )
                for k, v in data["paired"].items()
                for part in ("test_em", "multi_hop")
                if part in v
            },
            "Paired differences in test EM\n(95% bootstrap interval)",
            "EM difference",
        )
    }
    for key, name, title, ylabel in (
        ("dev/em", "dev_em", "Dev EM during RL (mean ± sd over seeds)", "EM"),
        ("em", "reward", "Sampled training reward (EM; mean ± sd over seeds)", "reward"),
        ("all_fail_groups", "all_fail", "Share of groups where every rollout failed", "share"),
        ("ig_support/all/auc", "ig_auc", "IG's AUC: steps that retrieved support vs not", "AUC"),
    ):
        series, bands = {}, {}
        for m, dirs in runs.items():
            x, y, sd = _series(dirs, key)
            if x:
                series[label(m)], bands[label(m)] = (x, y), sd
        if series:
            plots[title] = plot_lines(root / f"{name}.png", series, title, "step", ylabel, bands)
    return plots


def replication_section(rep: dict[str, Any] | None, names: dict[str, str]) -> list[str]:
    """experiment.md's replication on the dev split, or nothing when the run made none."""
    if not rep:
        return []
    dev, pooled = rep["dev"], rep["pooled"]
    return [
        "## Replication on the dev split",
        "",
        f"Every policy evaluated again, greedily, on the dev split ({sum(dev['questions'].values())}"
        " questions about entities of their own, which no training split mentions; no run trains"
        " on them or keeps a checkpoint by them). A gain that holds on test for the reason we want"
        " holds here as well. Same bootstrap as above.",
        "",
        em_table(dev["methods"], names),
        "",
        em_table(dev["paired"], names),
        "",
        f"Test and dev pooled ({sum(pooled['questions'].values())} questions; one bootstrap over"
        " seeds and the questions of both splits):",
        "",
        em_table(pooled["paired"], names),
        "",
    ]


def write_experiment(
    root: Path, spec: Any, evals: dict[str, dict[str, list[Path]]], minutes: float
) -> tuple[Path, str]:
    """Write experiment.json, experiment.md and the plots under root; returns (md path, EM table)."""
    data = experiment_json(root, spec, evals, minutes)
    (root / "experiment.json").write_text(json.dumps(data, indent=2) + "\n")
    plots = make_plots(root, data)
    names = {m: label(m) for m in data["methods"]}
    names.update({k: " − ".join(label(x) for x in k.split("-")) for k in data["paired"]})
    table = em_table(data["methods"], names)
    p = spec.plan
    n = sum(data["questions"].values())
    lines = [
        "# igsearch experiment",
        "",
        f"Synthetic world ({p.world_size}"
        + (f"; {', '.join(p.world_overrides)}" if p.world_overrides else "")
        + f"), one nano warm start, {len(spec.methods)} estimators × "
        f"{len(spec.seeds)} seeds ({', '.join(map(str, spec.seeds))}); {p.rl_steps} RL steps of "
        f"{p.batch_size} rollouts (groups of {p.group_size}), learning rate {p.learning_rate:g}"
        + (
            ", the world's names respelt afresh at every RL step (`data.rename_entities`). "
            if p.rename_entities
            else ". "
        )
        + f"Test: {n} questions ({', '.join(f'{k} {v}' for k, v in data['questions'].items())}), "
        f"greedy. Stages took {minutes:.1f} min"
        + (
            f", {spec.jobs} RL runs at a time, each on its share of the CPUs"
            if spec.jobs > 1
            else ""
        )
        + (
            f" (the world and warm start reused from {spec.warm_start})."
            if spec.warm_start
            else "."
        ),
        "",
        "## Test exact match (mean over seeds [95% interval])",
        "",
        table,
        "",
        "## Paired differences",
        "",
        em_table(data["paired"], names),
        "",
        METHOD_OF_COMPUTATION.format(replicates=spec.n_boot),
        "",
        *replication_section(data["replication"], names),
        "## Training",
        "",
        training_table(data["training"], data["search_support_share"]),
        "",
        "All-fail groups: groups of a step in which every rollout failed; GRPO gives them zero",
        "advantage, IG-Search gives their query tokens α·IG. Means over every step and seed.",
        "",
        "## Does IG measure query quality?",
        "",
        "A search step retrieved support when one of its documents is among the question's",
        "supporting passages. AUC: the probability that IG ranks a supported step above an",
        "unsupported one of the same training step (ties count half), pooled over training steps",
        "and seeds weighted by their pairs; IG is the raw gain before normalisation.",
        "",
        support_table(data["ig_support"]) if data["ig_support"] else "(no run computed IG)",
        "",
    ]
    lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    path = root / "experiment.md"
    path.write_text("\n".join(lines) + "\n")
    return path, table
