"""What information gain adds to a training step: one step with `grpo`, one with `ig_grpo`.

For each policy (`--policy` SFT folders, then the untrained `--presets`), group size
(5, 8) and max_turns (2, 4), a trainer is built the way `igsearch train` builds one
(igsearch.train.rl.build_trainer) for each estimator, from the same policy folder, config and
seed, and runs one training step; the two estimators alternate which goes first, `--reps` times in
one process. Every run starts from a freshly built trainer, so weights, optimiser and step seed are
equal and both estimators roll out the same trajectories (checked: identical response ids), and
the ratio of their step times isolates what IG adds. The breakdown comes from the trainer's time/*
metrics: generation (rollout minus retrieval), retrieval, outcome reward, IG scoring, and policy
update (the rest of the step: TRL's reference log-probs, the loss and its backward pass). Step
times are wall seconds and the process' CPU seconds (time/step_cpu, which leaves out time spent
waiting for a CPU); both ratios are reported, with their spread over the pairs.
Untrained policies act through a scripted backend (benchmarks/_ig_common.py): every turn samples
`--free` model tokens, then searches the question, `max_turns` times, then answers.

    python benchmarks/ig_overhead.py            # nano and micro, untrained, scripted turns
    python benchmarks/ig_overhead.py --quick    # smoke run -> benchmarks/results/quick/
    python benchmarks/ig_overhead.py --world runs/demo/world --policy runs/demo/sft --presets micro
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _ig_common as common
import _machine

ROOT = common.ROOT
RESULTS = ROOT / "benchmarks" / "results"
ESTIMATORS = ("grpo", "ig_grpo")
TARGET = 1.03
"""The ratio IG-Search should stay under at nano, group 5, max_turns 4."""
PARTS = ("generation", "retrieval", "outcome_reward", "ig_scoring", "update")
TARGET_SHAPE = (5, 4)
"""(group size, max_turns) of the target."""

import torch  # noqa: E402

from igsearch.config import AlgoConfig, TrainConfig, from_dict, read_policy_info  # noqa: E402
from igsearch.train.models import count_parameters  # noqa: E402
from igsearch.train.rl import build_trainer  # noqa: E402

DEFAULT_SETS = AlgoConfig().n_counterfactuals


def policy_settings(policy: Path) -> dict[str, Any]:
    """Rollout settings a policy folder records (prompt style, top-k), with the nano defaults."""
    meta = read_policy_info(policy)
    return {"prompt_style": meta.get("prompt_style", "bare"), "topk": meta.get("topk", 3)}


def train_config(
    policy: Path,
    world: Path,
    estimator: str,
    group: int,
    turns: int,
    args: Any,
    out: Path,
    sets: int = DEFAULT_SETS,
) -> TrainConfig:
    """One-step TrainConfig of configs/nano-synthetic-*.yaml's shape; only the estimator varies
    (and `sets`, the counterfactual document sets per search step)."""
    return from_dict(
        TrainConfig,
        {
            "model": str(policy),
            "data": {"train": [str(world / "train.jsonl")]},
            "retriever": {"index": str(world / "index")},
            "rollout": {
                **policy_settings(policy),
                "max_turns": turns,
                "max_new_tokens_per_turn": 64,
                "max_response_tokens": 1024,
                "max_context_tokens": 1536,
                "temperature": 1.0,
            },
            "algo": {"estimator": estimator, "n_counterfactuals": sets},
            "train": {
                "output_dir": str(out),
                "steps": 1,
                "group_size": group,
                "batch_size": group * args.questions,
                "learning_rate": 2e-4,
                "seed": args.seed,
                "save_steps": 10**6,
                "logging_steps": 1,
                "report_to": [],
                "num_threads": args.threads,
            },
        },
    )


def one_step(cfg: TrainConfig, factory: Any) -> dict[str, Any]:
    """Build a trainer, train one step; the step's time/* metrics, IG tokens and rollout shape."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = build_trainer(cfg, generator_factory=factory)
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trajs: list = []
    rollout = trainer.rollout_func

    def recording(prompts: Any, t: Any) -> dict[str, Any]:  # keeps the step's trajectories
        out = rollout(prompts, t)
        trajs[:] = out["trajectory"]
        return out

    trainer.rollout_func = recording
    try:
        trainer.train()
        log = next(x for x in trainer.state.log_history if "time/step" in x)
        params = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
    finally:
        shutil.rmtree(cfg.train.output_dir, ignore_errors=True)
    times = {k[5:]: float(v) for k, v in log.items() if k.startswith("time/")}
    times["generation"] = times["rollout"] - times["retrieval"]
    return {
        "times": times,
        "ig_tokens": int(log.get("ig/tokens_encoded", 0)),
        "params": params,
        "rollouts": len(trajs),
        "searches": sum(len(t.steps) for t in trajs),
        "sequence_tokens": sum(len(t.prompt_ids) + len(t.response_ids) for t in trajs),
        "prefix_tokens": sum(_scored_prefix(t) for t in trajs),
        "fingerprint": hash(tuple(tuple(t.response_ids) for t in trajs)),
    }


def _scored_prefix(traj: Any) -> int:
    """Tokens of a trajectory's longest scored context (prompt through its last scored block)."""
    ends = [s.info_span[1] for s in traj.steps if s.query_span[1] > s.query_span[0]]
    return len(traj.prompt_ids) + max(ends) if ends else 0


def median_times(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r["times"][k] for r in runs) for k in runs[0]["times"]}


def scoring_ratio(grpo: dict[str, float], ig_grpo: dict[str, float]) -> float:
    """1 + IG scoring / GRPO step (median seconds): the ratio the identical rollouts imply when the
    rest of both steps costs the same, free of the two whole steps' noise."""
    return round(1 + ig_grpo["ig_scoring"] / grpo["step"], 4)


def summarise(
    label: str, weights: str, group: int, turns: int, n_cf: int, runs: dict[str, list]
) -> dict[str, Any]:
    """Median step times, the median paired ratio ig_grpo/grpo and the breakdowns of one config."""
    g, ig = runs["grpo"], runs["ig_grpo"]

    def paired(key: str) -> list[float]:
        return [b["times"][key] / a["times"][key] for a, b in zip(g, ig, strict=True)]

    ratios, cpu_ratios = paired("step"), paired("step_cpu")
    times = {"grpo": median_times(g), "ig_grpo": median_times(ig)}
    first = ig[0]
    return {
        "policy": label,
        "weights": weights,
        "params": first["params"],
        "group_size": group,
        "max_turns": turns,
        "batch": first["rollouts"],
        "searches_per_rollout": round(first["searches"] / first["rollouts"], 2),
        "same_rollouts": len({r["fingerprint"] for r in g + ig}) == 1,
        "reps": len(ratios),
        "ratio_median": round(statistics.median(ratios), 4),
        "ratios": [round(r, 4) for r in ratios],
        "cpu_ratio_median": round(statistics.median(cpu_ratios), 4),
        "cpu_ratios": [round(r, 4) for r in cpu_ratios],
        "scoring_ratio": scoring_ratio(times["grpo"], times["ig_grpo"]),
        **{est: {k: round(v, 3) for k, v in t.items()} for est, t in times.items()},
        "ig_tokens": first["ig_tokens"],
        "sequence_tokens": first["sequence_tokens"],
        "counterfactual_sets": n_cf,
        "prefix_tokens": first["prefix_tokens"],
    }


def run_config(
    policy: Path,
    label: str,
    world: Path,
    group: int,
    turns: int,
    args: Any,
    factory: Any,
    sets: int = DEFAULT_SETS,
) -> dict[str, Any]:
    """`args.warmup` untimed IG-Search steps (the process' first step pays one-off costs: JIT
    compilation, allocator growth, threads started), then `args.reps` alternating (grpo, ig_grpo)
    pairs of one-step runs."""
    runs: dict[str, list] = {e: [] for e in ESTIMATORS}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.warmup):
            warm = Path(scratch) / "warm"
            one_step(
                train_config(policy, world, "ig_grpo", group, turns, args, warm, sets),
                factory and factory(turns),
            )
        for rep in range(args.reps):
            for est in ESTIMATORS if rep % 2 == 0 else ESTIMATORS[::-1]:
                cfg = train_config(
                    policy, world, est, group, turns, args, Path(scratch) / est, sets
                )
                runs[est].append(one_step(cfg, factory and factory(turns)))
                print(
                    f"  {label} G={group} T={turns} N={sets} rep {rep} {est}: "
                    f"{runs[est][-1]['times']['step']:.2f}s",
                    flush=True,
                )
    weights = "untrained, scripted" if factory else "SFT"
    return summarise(label, weights, group, turns, sets, runs)


def machine_info() -> dict[str, Any]:
    import trl

    return _machine.torch_machine_info(trl=trl.__version__)


def bound_text(row: dict[str, Any]) -> list[str]:
    """What the ratio is made of: the tokens IG must encode, against the time a ratio allows."""
    g, ig = row["grpo"]["step"], row["ig_grpo"]["ig_scoring"]
    rate = row["ig_tokens"] / ig if ig else float("nan")
    rows_tokens = max(row["ig_tokens"] - row["prefix_tokens"], 0)
    allowed = (TARGET - 1) * g
    lines = [
        f"IG scoring took {ig:.2f} s, {100 * ig / g:.0f}% of the GRPO step ({g:.2f} s), for "
        f"{row['ig_tokens']:,} tokens ({rate:,.0f} tokens/s): {row['prefix_tokens']:,} of the "
        "trajectories' prefixes (each trajectory encoded once for all its steps; the batch's "
        f"sequences hold {row['sequence_tokens']:,} tokens) and {rows_tokens:,} of counterfactual "
        f"document blocks ({row['counterfactual_sets']} per search step) and answers.",
    ]
    if allowed * rate < rows_tokens:
        floor = 1 + rows_tokens / rate / g
        lines += [
            f"A ratio of {TARGET} leaves IG {allowed:.2f} s, about {allowed * rate:,.0f} tokens at "
            "that rate: fewer than the counterfactual blocks and answers alone, which every exact "
            "IG must encode (each block attends to its own step's prefix, so no cache or other "
            "step can serve it). The ratio is bounded by 1 + (counterfactual + prefix tokens) × "
            "forward cost / step time; what lowers it is fewer counterfactual sets "
            "(algo.n_counterfactuals), shorter documents (rollout.max_obs_tokens), or a step "
            "dominated by generation and update (larger policies, longer answers).",
            f"By how much: even with every prefix free (say, handed over by the generation "
            f"backend's own cache), the counterfactual blocks and answers take "
            f"{rows_tokens / rate:.2f} s at that rate, so the ratio cannot go under {floor:.3f} "
            f"at this shape and {row['counterfactual_sets']} sets: {floor - TARGET:+.3f} against "
            "the target.",
        ]
    else:
        lines.append(
            f"A ratio of {TARGET} leaves IG {allowed:.2f} s, about {allowed * rate:,.0f} tokens at "
            "that rate, more than the counterfactual blocks and answers: the rest of the gap is "
            "the prefix encoding and the scoring rate."
        )
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m, rows = report["machine"], report["results"]
    lines = [
        "# Information gain's cost in a training step (CPU)",
        "",
        f"{_machine.torch_header(m, ', TRL ' + m['trl'])} World: {report['world']}; "
        f"{report['questions']} questions per step, median over {report['reps']} alternating "
        f"repetitions after {report.get('warmup', 0)} untimed step(s). Each step is one "
        "`trainer.train()` of a freshly built trainer (same policy folder, config and seed), so "
        "both estimators roll out identical trajectories. Ratios are IG-Search / GRPO of each "
        "alternating pair, in wall time and in the process' CPU time, as median (lowest–highest). "
        "Two whole steps differ by more than IG's share from one pair "
        "to the next on this machine, so the table also gives 1 + IG/GRPO: the median IG scoring "
        "time over the median GRPO step, which is what IG adds when the rest of both steps (the "
        "same rollouts, the same update) costs the same. See benchmarks/ig_overhead.py for the "
        "method.",
        "",
        "| policy | weights | params | group | max_turns | cf sets | batch | searches/rollout "
        "| same rollouts | GRPO step s | IG-Search step s | wall ratio | CPU ratio "
        "| 1 + IG/GRPO | IG scoring s | IG tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['weights']} | {r['params'] / 1e6:.2f}M | {r['group_size']} | "
            f"{r['max_turns']} | {r['counterfactual_sets']} | {r['batch']} | "
            f"{r['searches_per_rollout']} | "
            f"{'yes' if r['same_rollouts'] else 'NO'} | {r['grpo']['step']:.2f} | "
            f"{r['ig_grpo']['step']:.2f} | {_spread(r['ratio_median'], r['ratios'])} | "
            f"{_spread(r['cpu_ratio_median'], r['cpu_ratios'])} | {r['scoring_ratio']:.3f} | "
            f"{r['ig_grpo']['ig_scoring']:.2f} | {r['ig_tokens']:,} |"
        )
    lines += [
        "",
        "Breakdown (median seconds; generation = rollout minus retrieval; update = the rest of the "
        "step: TRL's reference log-probs, loss and backward pass):",
        "",
        "| policy | weights | group | max_turns | cf sets | estimator | generation | retrieval "
        "| outcome reward | IG scoring | update | step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for est in ESTIMATORS:
            t = r[est]
            lines.append(
                f"| {r['policy']} | {r['weights']} | {r['group_size']} | {r['max_turns']} | "
                f"{r['counterfactual_sets']} | {est} | "
                + " | ".join(f"{t[p]:.3f}" for p in PARTS)
                + f" | {t['step']:.2f} |"
            )
    lines += ["", *target_lines(rows)]
    lines += _machine.load_note(
        m, m["nproc"] / 2, "; ratios of alternating runs suffer less than absolute times."
    )
    path.write_text("\n".join(lines) + "\n")


def _spread(median: float, values: list[float]) -> str:
    return f"**{median:.3f}** ({min(values):.2f}–{max(values):.2f})"


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The verdict on the target (nano, group 5, max_turns 4, the default sets; an SFT policy
    before an untrained one), what bounds it if missed, and what fewer sets measured."""

    def at_target(r: dict[str, Any]) -> bool:
        return r["policy"] == "nano" and (r["group_size"], r["max_turns"]) == TARGET_SHAPE

    match = (
        sorted(
            (r for r in rows if at_target(r) and r["counterfactual_sets"] == DEFAULT_SETS),
            key=lambda r: r["weights"] != "SFT",
        )
        or rows[:1]
    )
    row = match[0]
    where = (
        f"{row['policy']} ({row['weights']}), group {row['group_size']}, "
        f"max_turns {row['max_turns']}"
    )
    ratios = (
        f"wall ratio {row['ratio_median']:.3f}, CPU ratio {row['cpu_ratio_median']:.3f}, "
        f"1 + IG/GRPO {row['scoring_ratio']:.3f}"
    )
    fewer = [
        f"With {r['counterfactual_sets']} counterfactual set(s) per step instead of {DEFAULT_SETS} "
        f"(algo.n_counterfactuals), the same shape measures wall ratio {r['ratio_median']:.3f}, "
        f"CPU ratio {r['cpu_ratio_median']:.3f}, 1 + IG/GRPO {r['scoring_ratio']:.3f} "
        f"(IG scoring {r['ig_grpo']['ig_scoring']:.2f} s, "
        f"{r['ig_tokens']:,} tokens), in exchange for a noisier estimate of the random-document "
        "baseline."
        for r in rows
        if at_target(r)
        and r["weights"] == row["weights"]
        and r["counterfactual_sets"] != DEFAULT_SETS
    ]
    if max(row["ratio_median"], row["cpu_ratio_median"], row["scoring_ratio"]) <= TARGET:
        return [f"Target met: {ratios} <= {TARGET} at {where}.", *fewer]
    return [
        f"Target **not met**: {ratios} against {TARGET} at {where}. What bounds it:",
        "",
        *(f"- {line}" for line in [*bound_text(row), *fewer]),
    ]


def policies(args: Any, world: Path, scratch: Path) -> list[tuple[Path, str, Any]]:
    """(folder, label, scripted-backend factory or None) of every policy to measure: the SFT
    folders, which generate freely, then the untrained presets, whose turns are scripted."""
    out: list[tuple[Path, str, Any]] = [(p, common.policy_preset(p), None) for p in args.policy]
    golds = common.gold_answers(world) if args.presets else {}
    for preset in args.presets:
        folder = common.untrained_policy(preset, world, scratch / preset, seed=args.seed)

        def factory(turns: int) -> Any:
            return common.scripted_factory(turns, args.free, golds)

        out.append((folder, preset, factory))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: nano, group 5, 2 turns, 2 questions, 2 reps",
    )
    parser.add_argument("--world", type=Path, help="world folder (default: a tiny one, built)")
    parser.add_argument(
        "--policy", type=Path, action="append", default=[], help="SFT'd policy folder (repeatable)"
    )
    parser.add_argument(
        "--presets",
        nargs="*",
        help="untrained presets, scripted turns (default: nano micro; none with --policy)",
    )
    parser.add_argument("--groups", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--turns", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--questions", type=int, default=8, help="questions per step")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions (>= 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each config")
    parser.add_argument(
        "--target-sets",
        type=int,
        nargs="*",
        default=[1],
        help="counterfactual sets per step to measure besides the default, at the first policy "
        "and the target shape (group 5, max_turns 4)",
    )
    common.add_shared_args(parser)
    args = parser.parse_args(argv)
    if args.presets is None:
        args.presets = [] if args.policy else ["nano", "micro"]
    if args.quick:
        args.presets, args.groups, args.turns = args.presets[:1], [5], [2]
        args.questions, args.reps, args.target_sets = 2, 2, []
    elif args.reps < 5:
        parser.error("--reps must be >= 5 for a full run (medians of alternating pairs)")
    torch.set_num_threads(args.threads)
    out_dir = args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)
    machine, started = machine_info(), time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        world = common.ensure_world(args.world, Path(tmp))
        for p, (folder, label, factory) in enumerate(policies(args, world, Path(tmp))):
            shapes = [(g, t, DEFAULT_SETS) for g in args.groups for t in args.turns]
            if p == 0:  # the target's policy: the same shape with fewer sets, what they save
                shapes += [(*TARGET_SHAPE, n) for n in args.target_sets]
            for group, turns, sets in shapes:
                row = run_config(folder, label, world, group, turns, args, factory, sets)
                results.append(row)
                keys = ("policy", "group_size", "max_turns", "counterfactual_sets", "ratio_median")
                print(json.dumps({k: row[k] for k in keys}), flush=True)
    report = {
        "machine": machine,
        "world": str(args.world) if args.world else "tiny synthetic world (seed 0)",
        "questions": args.questions,
        "reps": args.reps,
        "warmup": args.warmup,
        "wall_s": round(time.perf_counter() - started, 1),
        "results": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ig_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out_dir / "ig_overhead.md")
    print(f"wrote {out_dir / 'ig_overhead.json'} and {out_dir / 'ig_overhead.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
