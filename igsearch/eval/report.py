"""Reports a person reads: results tables in markdown and PNG plots (matplotlib, no display)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from igsearch.data.jsonl import write_jsonl


def _fmt(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def results_table(results_by_method: dict[str, dict[str, Any]], metric: str = "em") -> str:
    """A paper-style table: one row per method, one column per benchmark, then the averages."""
    first = next(iter(results_by_method.values()))
    names = list(first["benchmarks"])
    groups = [g for g in ("single_hop", "multi_hop", "average") if first.get(g)]
    header = [
        "method",
        *names,
        *[f"{g.replace('_', '-')} avg" if g != "average" else "average" for g in groups],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, res in results_by_method.items():
        cells = [_fmt(res["benchmarks"].get(n, {}).get(metric, "-")) for n in names]
        cells += [_fmt(res[g].get(metric, "-")) for g in groups]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def detail_table(results: dict[str, Any]) -> str:
    """Every metric of one method, one row per benchmark."""
    cols = ["n", "em", "f1", "acc", "searches", "turns", "well_formed", "latency_s"]
    lines = ["| benchmark | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in results["benchmarks"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_results(
    out_dir: str | Path,
    results: dict[str, Any],
    records: dict[str, Sequence[dict[str, Any]]],
    title: str,
) -> None:
    """results.json, results.md and predictions.jsonl in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [
        f"# {title}",
        "",
        "Exact match (average = unweighted mean over benchmarks):",
        "",
        results_table({title: results}),
        "",
        "All metrics:",
        "",
        detail_table(results),
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    write_jsonl(
        out / "predictions.jsonl",
        ({"benchmark": n, **r} for n, recs in records.items() for r in recs),
    )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(
    path: str | Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    bands: dict[str, Sequence[float]] | None = None,
) -> Path:
    """A line plot of named (x, y) series, with optional ± bands (same x) per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
        if bands and name in bands:
            lo = [a - b for a, b in zip(y, bands[name], strict=True)]
            hi = [a + b for a, b in zip(y, bands[name], strict=True)]
            ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_bars(
    path: str | Path,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    ylabel: str,
    stacked: bool = False,
) -> Path:
    """Grouped (or stacked) bars: one group per label, one bar per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    n = len(series)
    width = 0.8 if stacked else 0.8 / max(n, 1)
    bottom = [0.0] * len(groups)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (0 if stacked else (i - (n - 1) / 2) * width) for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, bottom=bottom if stacked else None)
        if stacked:
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(groups)), groups)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_intervals(
    path: str | Path,
    rows: dict[str, tuple[float, float, float]],
    title: str,
    xlabel: str,
) -> Path:
    """A forest plot: one row per name, a point at its estimate and a bar from lo to hi; a dashed
    line at 0. rows: name -> (estimate, lo, hi)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) + 1.2), dpi=120)
    names = list(rows)[::-1]
    for y, name in enumerate(names):
        mean, lo, hi = rows[name]
        ax.plot([lo, hi], [y, y], color="tab:blue", lw=2)
        ax.plot([mean], [y], "o", color="tab:blue")
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
