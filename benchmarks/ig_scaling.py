"""How IG scoring's cost grows with the number of search steps (1-5) and documents (top-k 1, 3, 5).

For each top-k, a batch of rollouts that search five times each is generated once (scripted turns
over the nano policy, benchmarks/_ig_common.py), then the IG of their first T steps (T = 1..5) is
computed with compute_step_ig twice: through the reference path (one full forward per context)
and the fast path (each trajectory's prefix encoded once, rows batched). Both give the same IG
(checked); reported are CPU seconds (this process' CPU time, which other jobs on the machine
disturb less than wall time; the fast path's is the best of `--reps`), tokens run through the
model and forward passes. Scoring T steps of a trajectory means scoring its contexts up to step T,
so the fast path should grow linearly in T (each step adds its own turn, block, counterfactual
blocks and answers), while the reference path re-encodes every step's prefix (quadratic).

    python benchmarks/ig_scaling.py          # -> benchmarks/results/ig_scaling.{json,md,png}
    python benchmarks/ig_scaling.py --quick  # smoke run -> benchmarks/results/quick/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _ig_common as common
import _machine

RESULTS = common.ROOT / "benchmarks" / "results"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from igsearch.config import RolloutConfig  # noqa: E402
from igsearch.data.qa import read_qa  # noqa: E402
from igsearch.protocol import build_prompt  # noqa: E402
from igsearch.retrieval.index import load_index  # noqa: E402
from igsearch.rewards.scorer import AnswerScorer  # noqa: E402
from igsearch.rewards.step_ig import compute_step_ig, corpus_fallback  # noqa: E402
from igsearch.rollout.loop import run_rollouts  # noqa: E402
from igsearch.train.models import count_parameters, load_policy  # noqa: E402


class ReferenceScorer(AnswerScorer):
    """The reference path behind the fast path's interface."""

    def score(self, requests):  # type: ignore[no-untyped-def]
        return self.score_reference(requests)


def rollouts(model: Any, tok: Any, world: Path, topk: int, args: Any) -> tuple[list, list, list]:
    """Trajectories that search `args.max_steps` times each; their gold answers and question ids."""
    questions = read_qa(world / "train.jsonl")[: args.questions]
    cfg = RolloutConfig(
        prompt_style="bare",
        topk=topk,
        max_turns=args.max_steps,
        max_new_tokens_per_turn=64,
        max_response_tokens=1900,
        max_context_tokens=2040,
        temperature=1.0,
    )
    prompts = [
        build_prompt(q.question, "search-r1", "bare") for q in questions for _ in range(args.group)
    ]
    gen = common.ScriptedGenerator(
        model, tok, args.max_steps, args.free, common.gold_answers(world)
    )
    trajs = run_rollouts(prompts, gen, load_index(world / "index"), cfg, seed=args.seed)
    golds = [list(q.golden_answers) for q in questions for _ in range(args.group)]
    qids = [q.id for q in questions for _ in range(args.group)]
    return trajs, golds, qids


def first_steps(trajs: list, steps: int) -> list:
    """The trajectories with only their first `steps` search steps to score."""
    return [dataclasses.replace(t, steps=t.steps[:steps]) for t in trajs]


def measure(scorer: AnswerScorer, trajs: list, golds: list, qids: list, ctx: dict) -> tuple:
    """(CPU seconds, wall seconds, IG) of one compute_step_ig call."""
    c0, w0 = time.process_time(), time.perf_counter()
    ig = compute_step_ig(
        trajs, golds, qids, scorer, ctx["tok"], common.TAGS, seed=0, fallback=ctx["fallback"]
    )
    return time.process_time() - c0, time.perf_counter() - w0, ig


def bench_cell(model: Any, trajs: list, golds: list, qids: list, ctx: dict, reps: int) -> dict:
    """Reference once, fast path best of `reps`; seconds, tokens, forwards and IG agreement."""
    ref = ReferenceScorer(model)
    ref_cpu, ref_wall, ref_ig = measure(ref, trajs, golds, qids, ctx)
    best = None
    for _ in range(reps):
        fast = AnswerScorer(model)
        cpu, wall, ig = measure(fast, trajs, golds, qids, ctx)
        if best is None or cpu < best[0]:
            best = (cpu, wall, fast)
    cpu, wall, fast = best
    pairs = zip(ig, ref_ig, strict=True)
    diff = max((abs(a - b) for r, s in pairs for a, b in zip(r, s, strict=True)), default=0.0)
    return {
        "scored_steps": sum(len(t.steps) for t in trajs),
        "reference": {
            "cpu_s": round(ref_cpu, 3),
            "wall_s": round(ref_wall, 3),
            "tokens": ref.tokens_encoded,
            "forwards": ref.forward_passes,
        },
        "fast": {
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "tokens": fast.tokens_encoded,
            "padding": fast.padding_tokens,
            "forwards": fast.forward_passes,
        },
        "max_ig_diff": diff,
    }


def linearity(steps: list[int], values: list[float]) -> dict[str, float]:
    """Least-squares line through (steps, values): slope, intercept, R², and the per-step increments'
    largest / mean (1 for exactly linear growth; growing increments mean super-linear)."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    inc = np.diff(y)
    return {
        "slope": round(float(slope), 3),
        "intercept": round(float(intercept), 3),
        "r2": round(float(1 - (resid**2).sum() / total), 5) if total else 1.0,
        "increment_max_over_mean": round(float(inc.max() / inc.mean()), 3) if len(inc) else 1.0,
    }


LINEAR = {"r2": 0.99, "increment_max_over_mean": 1.25}
"""Growth counts as linear when a line fits (R² >= 0.99) and no step adds > 1.25× the mean step."""


def is_linear(fit: dict[str, float]) -> bool:
    return (
        fit["r2"] >= LINEAR["r2"]
        and fit["increment_max_over_mean"] <= LINEAR["increment_max_over_mean"]
    )


def fits(rows: list[dict], topks: list[int]) -> dict[str, dict]:
    """Per top-k: line fits of the fast path's tokens and CPU seconds, and the reference's tokens."""
    out = {}
    for k in topks:
        cells = [r for r in rows if r["topk"] == k]
        steps = [r["steps"] for r in cells]
        out[str(k)] = {
            "fast_tokens": linearity(steps, [r["fast"]["tokens"] for r in cells]),
            "fast_cpu_s": linearity(steps, [r["fast"]["cpu_s"] for r in cells]),
            "reference_tokens": linearity(steps, [r["reference"]["tokens"] for r in cells]),
        }
    return out


def plot(rows: list[dict], topks: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, color in zip(topks, ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=False):
        cells = [r for r in rows if r["topk"] == k]
        steps = [r["steps"] for r in cells]
        for ax, key, scale in ((axes[0], "cpu_s", 1.0), (axes[1], "tokens", 1e-3)):
            ax.plot(
                steps,
                [r["fast"][key] * scale for r in cells],
                "-o",
                color=color,
                label=f"fast, top-{k}",
            )
            ax.plot(
                steps,
                [r["reference"][key] * scale for r in cells],
                "--s",
                color=color,
                alpha=0.6,
                label=f"reference, top-{k}",
            )
    axes[0].set_ylabel("CPU seconds per batch")
    axes[1].set_ylabel("tokens run through the model (thousands)")
    for ax in axes:
        ax.set_xlabel("search steps scored per rollout")
        ax.set_xticks(sorted({r["steps"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "IG scoring cost: fast path (shared prefixes, batched) vs reference (one forward per context)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m, rows = report["machine"], report["results"]
    lines = [
        "# IG scoring cost by search steps and documents",
        "",
        f"{_machine.torch_header(m)} Policy: {report['policy']} ({report['params'] / 1e6:.2f}M "
        f"parameters); {report['rollouts']} rollouts, 3 random counterfactual sets per step. CPU "
        "seconds are this process' CPU time (fast path: best of "
        f"{report['reps']}). See benchmarks/ig_scaling.py for the method.",
        "",
        "![IG scoring cost](ig_scaling.png)",
        "",
        "| top-k | steps | scored steps | reference CPU s | fast CPU s | speed-up | reference tokens "
        "| fast tokens | fast padding | reference forwards | fast forwards | max IG diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, ref = r["fast"], r["reference"]
        lines.append(
            f"| {r['topk']} | {r['steps']} | {r['scored_steps']} | {ref['cpu_s']:.2f} | {f['cpu_s']:.2f} | "
            f"{ref['cpu_s'] / max(f['cpu_s'], 1e-9):.1f}× | {ref['tokens']:,} | {f['tokens']:,} | "
            f"{f['padding']:,} | {ref['forwards']} | {f['forwards']} | {r['max_ig_diff']:.1e} |"
        )
    lines += [
        "",
        "Growth in the number of steps (least-squares line over steps; increment ratio = "
        "largest per-step increase / mean increase, 1 for exactly linear growth):",
        "",
    ]
    lines += [
        "| top-k | fast tokens R² | fast tokens increment ratio | fast CPU s R² "
        "| fast CPU s increment ratio | reference tokens increment ratio | fast linear? |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for k, fit in report["fits"].items():
        ft, fc, rt = fit["fast_tokens"], fit["fast_cpu_s"], fit["reference_tokens"]
        linear = is_linear(ft)
        verdicts.append(linear)
        lines.append(
            f"| {k} | {ft['r2']:.4f} | {ft['increment_max_over_mean']:.2f} | {fc['r2']:.4f} | "
            f"{fc['increment_max_over_mean']:.2f} | {rt['increment_max_over_mean']:.2f} | {'yes' if linear else 'no'} |"
        )
    lines += [
        "",
        (
            "**The fast path's work grows linearly in the number of steps**"
            if all(verdicts)
            else "**The fast path's work does not grow linearly in the number of steps for every top-k**"
        )
        + f" (criterion: tokens fit a line with R² >= {LINEAR['r2']} and no step adds more than "
        f"{LINEAR['increment_max_over_mean']}× the mean step). Each step adds its own turn and "
        "block to the trajectory's one prefix encoding, plus its counterfactual blocks and answers; "
        "the reference path re-encodes every step's whole prefix, so its increments grow with the "
        "step index. Work grows about linearly in top-k too, since counterfactual blocks are as "
        "long as the real ones.",
    ]
    lines += _machine.load_note(m, m["nproc"] / 2, "; token counts are exact, seconds are noisy.")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1-2 steps, top-k 1 and 3, 4 rollouts"
    )
    parser.add_argument("--world", type=Path, help="world folder (default: a tiny one, built)")
    parser.add_argument(
        "--policy",
        type=Path,
        help="policy folder (default: untrained nano); its turns are scripted",
    )
    parser.add_argument("--preset", default="nano", help="untrained preset when no --policy")
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--topk", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--group", type=int, default=4, help="rollouts per question")
    parser.add_argument("--reps", type=int, default=3, help="fast-path repetitions (best kept)")
    common.add_shared_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_steps, args.topk, args.questions, args.group, args.reps = 2, [1, 3], 2, 2, 1
    torch.set_num_threads(args.threads)
    out_dir = args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)
    machine = _machine.torch_machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = common.ensure_world(args.world, Path(tmp))
        policy = args.policy or common.untrained_policy(
            args.preset, world, Path(tmp) / args.preset, args.seed
        )
        model, tok = load_policy(policy, device="cpu")
        ctx = {"tok": tok, "fallback": corpus_fallback(load_index(world / "index"))}
        for k in args.topk:
            trajs, golds, qids = rollouts(model, tok, world, k, args)
            full = sum(len(t.steps) == args.max_steps for t in trajs)
            print(
                f"top-{k}: {full}/{len(trajs)} rollouts reached {args.max_steps} searches",
                flush=True,
            )
            for steps in range(1, args.max_steps + 1):
                row = {"topk": k, "steps": steps} | bench_cell(
                    model, first_steps(trajs, steps), golds, qids, ctx, args.reps
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "machine": machine,
        "policy": str(args.policy) if args.policy else f"untrained {args.preset}, scripted turns",
        "params": count_parameters(model),
        "rollouts": args.questions * args.group,
        "reps": args.reps,
        "results": rows,
        "fits": fits(rows, args.topk),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ig_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out_dir / "ig_scaling.md")
    plot(rows, args.topk, out_dir / "ig_scaling.png")
    print(f"wrote {out_dir}/ig_scaling.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
