"""`igsearch demo`: the main job on the embedded synthetic default, end to end.

world (+ BM25 index) -> SFT warm start (nano) -> GRPO and IG-Search from the same checkpoint, seed,
data order and step count -> greedy evaluation of SFT, GRPO and IG-Search on the world's test split
-> `report.md` with the results table and PNG plots. Every stage writes its output under the run
folder and is skipped when that output is complete (`--fresh` starts over); an interrupted stage
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from igsearch.config import POLICY_INFO, TrainConfig, WorldConfig, from_dict, load_config
from igsearch.errors import IGSearchError

console = Console()
METHODS = {"grpo": "GRPO", "ig_grpo": "IG-Search"}


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and budgets of one demo flavour."""

    world_size: str
    """Synthetic world size."""
    sft_overrides: tuple[str, ...]
    """SftConfig overrides for the warm start."""
    rl_steps: int
    """RL steps per method."""
    batch_size: int
    """Rollouts per RL step."""
    group_size: int
    """Rollouts per question."""
    eval_per_type: int
    """Test questions evaluated per question type."""
    dev_limit: int
    """Dev questions of the EM-by-step curve."""
    eval_steps: int
    """Dev evaluation every this many RL steps."""
    learning_rate: float = 1e-4
    """RL learning rate (a 1M-parameter policy moves slowly at the paper's 1e-6; at 3e-4 it loses
    dev EM: benchmarks/results/rl_recipe.md, section 7)."""
    temperature: float = 0.6
    """RL sampling temperature. Evaluation is greedy, and at 1.0 a nano policy's samples are half
    as accurate as its greedy answers, so RL mostly sharpens; at 0.6 samples stay near the greedy
    path and differ where it is undecided (rl_recipe.md, section 7)."""
    world_overrides: tuple[str, ...] = ()
    """WorldConfig overrides (key=value) for the world, e.g. ("early_answer_share=0.6",)."""
    rename_entities: bool = False
    """RL respells the world's names afresh every step (`data.rename_entities`), so that RL cannot
    learn its own questions' names (rl_recipe.md, section 14)."""
    rollout: dict[str, Any] = field(
        default_factory=lambda: {
            "prompt_style": "bare",
            "max_turns": 4,
            "max_new_tokens_per_turn": 128,
            "max_response_tokens": 1280,
            "max_context_tokens": 1536,
        }
    )
    """RolloutConfig fields for training and evaluation."""


PLANS = {
    "full": DemoPlan(
        "small",
        (),
        rl_steps=40,
        batch_size=40,
        group_size=5,
        eval_per_type=50,
        dev_limit=60,
        eval_steps=10,
    ),
    "quick": DemoPlan(
        "tiny",
        ("max_steps=40", "batch_size=16", "save_steps=20"),
        rl_steps=2,
        batch_size=8,
        group_size=4,
        eval_per_type=4,
        dev_limit=8,
        eval_steps=1,
    ),
}


def _stage(name: str, done: bool) -> bool:
    if done:
        console.print(f"[green]✓[/green] {name} [dim](already done, reused)[/dim]")
    else:
        console.rule(f"[bold]{name}")
    return done


def world_config(plan: DemoPlan, seed: int) -> WorldConfig:
    """The settings of the plan's world; a wrong `--world` override fails here."""
    return load_config(
        WorldConfig, None, [f"seed={seed}", f"size={plan.world_size}", *plan.world_overrides]
    )


def build_world_stage(root: Path, plan: DemoPlan, seed: int) -> Path:
    """The demo's world (`ensure_world`): built in a child process when missing, since the build's
    parallel BM25 searches would otherwise slow every later training step of this process; checked
    against this demo's world settings when present."""
    from igsearch.data.world import ensure_world

    world = root / "world"
    cfg = world_config(plan, seed)
    _stage("world + BM25 index + tokenizer", (world / "world.json").exists())
    ensure_world(cfg, world, fix=f"everything in {root} was trained on it: delete {root}")
    return world


def retrieval_stage(world: Path, n: int = 3) -> None:
    """Serve the world's index over HTTP (Search-R1's /retrieve) and show what a few dev questions get."""
    from igsearch.data.qa import read_qa
    from igsearch.retrieval.client import HttpRetriever
    from igsearch.retrieval.index import load_index
    from igsearch.retrieval.server import ServerThread, create_app

    console.rule("[bold]retrieval server check")
    questions = [ex.question for ex in read_qa(world / "dev.jsonl")[:n]]
    with ServerThread(create_app(load_index(world / "index"))) as server:
        with HttpRetriever(server.url) as client:
            hits = client.search(questions, 2)
        console.print(
            f"served {world / 'index'} at {server.url}/retrieve; top passages of {n} dev questions:"
        )
    for q, top in zip(questions, hits, strict=True):
        console.print(f"  [cyan]{q}[/cyan]")
        for h in top:
            console.print(
                f"    [green]{h.title}[/green] ({h.score:.2f}) {h.text[:90]}", highlight=False
            )


def sft_stage(root: Path, world: Path, plan: DemoPlan) -> Path:
    from igsearch.config import SftConfig
    from igsearch.train.sft import run_sft

    out = root / "sft"
    if not _stage("SFT warm start (nano)", (out / POLICY_INFO).exists()):
        cfg = load_config(SftConfig, None, list(plan.sft_overrides))
        run_sft(world, out, cfg, resume=(out / "checkpoints").exists())
    return out


def rl_config(
    root: Path, world: Path, sft: Path, plan: DemoPlan, estimator: str, seed: int, threads: int = 2
) -> TrainConfig:
    """The TrainConfig of one demo RL run (identical for both methods but the estimator); `threads`
    torch threads (2: the whole 2-core machine; 1 per run when runs share it)."""
    return from_dict(
        TrainConfig,
        {
            "model": str(sft),
            "data": {
                "train": [str(world / "rl.jsonl")],
                "dev": str(world / "dev.jsonl"),
                "dev_limit": plan.dev_limit,
                "rename_entities": plan.rename_entities,
            },
            "retriever": {"index": str(world / "index")},
            "rollout": {**plan.rollout, "temperature": plan.temperature},
            "algo": {"estimator": estimator},
            "train": {
                "output_dir": str(root / f"{estimator}-s{seed}"),
                "steps": plan.rl_steps,
                "group_size": plan.group_size,
                "batch_size": plan.batch_size,
                "learning_rate": plan.learning_rate,
                "beta": 0.0,  # as in the recipe's runs: no reference forward
                "seed": seed,
                "save_steps": max(plan.rl_steps // 3, 1),
                "eval_steps": plan.eval_steps,
                "report_to": [],
                "num_threads": threads,
            },
        },
    )


def _training_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """A saved TrainConfig without its thread count, which does not change what is trained (a run
    saved before `data.rename_entities` existed trained without it)."""
    return {
        **cfg,
        "data": {"rename_entities": False, **cfg["data"]},
        "train": {k: v for k, v in cfg["train"].items() if k != "num_threads"},
    }


def rl_stage(
    root: Path, world: Path, sft: Path, plan: DemoPlan, estimator: str, seed: int, threads: int = 2
) -> Path:
    """One RL run (any registered estimator); a finished or interrupted run is reused only with
    the same settings (the thread count aside)."""
    from igsearch.algo.advantages import get_estimator
    from igsearch.config import to_dict
    from igsearch.train.rl import run_training

    cfg = rl_config(root, world, sft, plan, estimator, seed, threads)
    out = Path(cfg.train.output_dir)
    saved = out / "config.json"
    if saved.exists() and _training_settings(json.loads(saved.read_text())) != _training_settings(
        json.loads(json.dumps(to_dict(cfg)))
    ):
        raise IGSearchError(
            f"{out} was trained with other settings (e.g. steps): delete it, or pass --fresh"
        )
    if not _stage(
        f"RL: {get_estimator(estimator).display} (seed {seed}, {plan.rl_steps} steps)",
        (out / "final" / POLICY_INFO).exists(),
    ):
        started = any(out.glob("checkpoint-*"))
        if not started:
            shutil.rmtree(
                out, ignore_errors=True
            )  # a run that died before its first checkpoint starts over
        run_training(cfg, resume=started)
    return out / "final"


def eval_folder(split: str) -> str:
    """The folder under a run's root that holds the evaluations on `split`: eval for the test
    split, eval-SPLIT for another (the experiment's replication on dev)."""
    return "eval" if split == "test" else f"eval-{split}"


def eval_results(root: Path, name: str, split: str = "test") -> Path:
    """The results.json of NAME's evaluation on `split`; it exists once that evaluation is done."""
    return root / eval_folder(split) / name / "results.json"


def eval_stage(
    root: Path,
    world: Path,
    plan: DemoPlan,
    name: str,
    model: Path,
    whole_split: bool = False,
    split: str = "test",
) -> dict[str, Any]:
    """Greedy evaluation on the world's `split` (test by default): `plan.eval_per_type` questions
    per type, or all of them; written to ROOT/eval_folder(split)/NAME."""
    from igsearch.eval.benchmarks import resolve_sets
    from igsearch.eval.evaluate import evaluate_sets, policy_rollout_config
    from igsearch.eval.report import write_results
    from igsearch.retrieval.index import load_index
    from igsearch.rollout.engine import hf_generator
    from igsearch.train.models import load_policy

    done = eval_results(root, name, split)
    out = done.parent
    if not _stage(f"evaluate {name} on the {split} split", done.exists()):
        sets = resolve_sets(
            world=world, limit=None if whole_split else plan.eval_per_type, world_split=split
        )
        cfg = policy_rollout_config(
            model, **{k: v for k, v in plan.rollout.items() if k != "prompt_style"}
        )
        policy, tok = load_policy(model, device="cpu")
        results, records = evaluate_sets(
            sets, hf_generator(policy, tok), load_index(world / "index"), cfg
        )
        results["config"] = {"model": str(model)}
        write_results(out, results, records, title=name)
    return json.loads(done.read_text())


def rl_runs(
    root: Path, world: Path, sft: Path, plan: DemoPlan, todo: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    """Every RL run (estimator, seed) and its evaluation (eval/ESTIMATOR-sSEED). On a machine with
    several CPUs the runs train side by side, each in its own process pinned to its share of the
    CPUs with one torch thread per core: a nano policy's rollouts use a second thread poorly, and
    two one-thread runs on 2 cores take about 0.7-0.8x the time of running them in turn (sections 8
    and 10 of benchmarks/results/rl_recipe.md). Each run's output goes to logs/ESTIMATOR-sSEED.log;
    the runs' results do not depend on how they were scheduled. Returns each run's test results,
    in `todo` order."""
    from igsearch.experiment import StageClock, machine_cpus, run_side_by_side

    pending = [(est, s) for est, s in todo if not eval_results(root, f"{est}-s{s}").exists()]
    jobs = min(len(pending), len(machine_cpus()))
    side_by_side = pending if jobs > 1 else []
    for est, s in todo:
        if (est, s) not in side_by_side:  # in this process; a finished run is only checked
            eval_stage(root, world, plan, f"{est}-s{s}", rl_stage(root, world, sft, plan, est, s))
    if side_by_side:
        clock = StageClock(root, total=2 * len(side_by_side))
        left = {"rl": len(side_by_side), "eval": len(side_by_side)}
        run_side_by_side(root, world, sft, plan, side_by_side, jobs, False, clock, left)
    return [json.loads(eval_results(root, f"{est}-s{s}").read_text()) for est, s in todo]


def run_demo(
    root: str | Path = "runs/demo",
    quick: bool = False,
    fresh: bool = False,
    seeds: int = 1,
    seed: int = 0,
    world: tuple[str, ...] = (),
    rename_entities: bool | None = None,
) -> Path:
    """Run (or resume) every stage, on the world `world` (WorldConfig overrides) describes, with
    `rename_entities` in RL when given (else the plan's); returns the report's path."""
    from igsearch.eval.demo_report import write_report

    plan = replace(PLANS["quick" if quick else "full"], world_overrides=tuple(world))
    if rename_entities is not None:
        plan = replace(plan, rename_entities=rename_entities)
    world_config(plan, seed)  # a wrong --world fails before the run folder is made
    root = Path(root)
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world = build_world_stage(root, plan, seed)
    retrieval_stage(world)
    sft = sft_stage(root, world, plan)
    results: dict[str, list[dict[str, Any]]] = {"SFT": [eval_stage(root, world, plan, "SFT", sft)]}
    todo = [(est, s) for s in range(seed, seed + seeds) for est in METHODS]
    runs: dict[str, list[Path]] = {}
    for (est, s), tested in zip(todo, rl_runs(root, world, sft, plan, todo), strict=True):
        runs.setdefault(METHODS[est], []).append(root / f"{est}-s{s}")
        results.setdefault(METHODS[est], []).append(tested)
    minutes = (time.time() - t0) / 60
    report, table = write_report(
        root, results, runs, plan_name="quick" if quick else "full", minutes=minutes
    )
    console.print(table, highlight=False)
    console.print(f"[bold green]report:[/bold green] {report}  ({minutes:.1f} min)")
    return report
