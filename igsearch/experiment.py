"""`igsearch experiment`: every registered estimator over K seeds from one warm start, compared
with paired intervals.

world -> SFT warm start (the demo's full plan, so both stay in step) -> for each seed, one RL run
per estimator from the same checkpoint; seed s gives every method the same data order and
sampling seeds -> greedy evaluation of SFT and every run on the whole test split ->
`experiment.md`, `experiment.json` and PNG plots (igsearch.eval.experiment_report). Stages reuse
the demo's stage functions: each writes under the run folder and is skipped when its output is
complete (`--fresh` starts over), and an interrupted RL run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from igsearch.algo.advantages import ESTIMATORS, get_estimator
from igsearch.demo import (
    PLANS,
    DemoPlan,
    build_world_stage,
    console,
    eval_stage,
    rl_stage,
    sft_stage,
)
from igsearch.errors import IGSearchError

QUICK_ROLLOUT = {"max_turns": 2, "max_new_tokens_per_turn": 24, "max_response_tokens": 160}
"""The quick flavour's rollout limits (tests): a barely trained policy writes to every limit."""
QUICK_SFT = ("max_steps=8", "batch_size=8", "save_steps=8")
"""The quick flavour's warm start: a few steps, enough to exercise the stage."""


@dataclass(frozen=True)
class ExperimentSpec:
    """What one `igsearch experiment` trains and evaluates."""

    plan: DemoPlan
    """World size, warm start, RL steps and batch, learning rate, rollout limits (the demo's)."""
    seeds: tuple[int, ...]
    """RL seeds; seed s gives every method the same data order and sampling seeds."""
    methods: tuple[str, ...]
    """Registered estimators to train (igsearch.algo.advantages.ESTIMATORS)."""
    whole_test: bool = True
    """Evaluate on the whole test split (False: the plan's questions per type)."""
    n_boot: int = 10_000
    """Bootstrap replicates of the intervals."""
    world_seed: int = 0
    """Seed of the world and of the warm start every method starts from."""
    warm_start: str | None = None
    """A finished demo run folder (`--warm-start runs/demo`) whose world and warm start, built with
    this plan and seed, are used where they are instead of being built again; None builds both
    under the run folder."""

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise IGSearchError(f"seeds {list(self.seeds)}: give one or more distinct seeds")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise IGSearchError(
                f"methods {list(self.methods)}: give distinct estimators from: {', '.join(ESTIMATORS)}"
            )
        for m in self.methods:
            get_estimator(m)  # unknown names fail listing the valid ones
        if self.n_boot < 100:
            raise IGSearchError(f"n_boot={self.n_boot}: use at least 100 bootstrap replicates")


def experiment_spec(
    quick: bool = False,
    seeds: int = 3,
    steps: int | None = None,
    methods: str | None = None,
    warm_start: str | Path | None = None,
) -> ExperimentSpec:
    """The spec of `igsearch experiment`: the demo's full plan (or, with quick, its quick plan with
    2 steps, tighter rollouts and few evaluation questions), `seeds` seeds from 0, `steps` RL steps
    when given, `methods` (comma list, default every registered estimator), and the demo run
    folder whose warm start to reuse."""
    if seeds < 1:
        raise IGSearchError(f"--seeds {seeds}: run at least one seed")
    if steps is not None and steps < 1:
        raise IGSearchError(f"--steps {steps}: run at least one RL step")
    plan = PLANS["quick" if quick else "full"]
    if quick:
        plan = replace(
            plan,
            sft_overrides=QUICK_SFT,
            rl_steps=2,
            eval_steps=2,
            dev_limit=4,
            eval_per_type=3,
            rollout={**plan.rollout, **QUICK_ROLLOUT},
        )
    plan = replace(plan, rl_steps=steps or plan.rl_steps)
    names = [m.strip() for m in (methods or ",".join(ESTIMATORS)).split(",") if m.strip()]
    return ExperimentSpec(
        plan,
        tuple(range(seeds)),
        tuple(names),
        whole_test=not quick,
        n_boot=2000 if quick else 10_000,
        warm_start=str(warm_start) if warm_start is not None else None,
    )


class StageClock:
    """Wall seconds of each stage as it ran (kept in the run folder across resumed runs), and
    progress lines with an estimate of the time left."""

    def __init__(self, root: Path, total: int):
        self.path = root / "stage_seconds.json"
        self.seconds: dict[str, float] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )
        self.total, self.done, self.t0 = total, 0, time.time()

    def _left(self, kinds: dict[str, int]) -> str:
        est = 0.0
        for kind, n in kinds.items():
            past = [v for k, v in self.seconds.items() if k.startswith(kind)]
            if n and not past:
                return "unknown until one stage of each kind has run"
            est += n * (sum(past) / len(past) if past else 0.0)
        return f"~{est / 60:.1f} min"

    def run(self, key: str, fn: Any, left: dict[str, int]) -> Any:
        """Run one stage `fn()`, printing progress first and recording its time when it ran."""
        self.done += 1
        console.print(
            f"[bold]\\[{self.done}/{self.total}][/bold] {(time.time() - self.t0) / 60:.1f} min "
            f"elapsed; still to run after this stage: {self._left(left)}",
            highlight=False,
        )
        t0 = time.time()
        out = fn()
        if key not in self.seconds:
            self.seconds[key] = time.time() - t0
            self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")
        return out

    @property
    def minutes(self) -> float:
        return sum(self.seconds.values()) / 60


SFT_BOOKKEEPING = ("num_threads", "save_steps", "save_total_limit", "logging_steps")
"""SftConfig fields that do not change the trained policy (a reused warm start may differ in them)."""


def reused_warm_start(source: Path, plan: DemoPlan, world_seed: int) -> tuple[Path, Path]:
    """The world and warm start of the finished demo run `source`, checked to be what this plan and
    seed would build: the world's settings, and the warm start's SFT settings and world hash."""
    from igsearch.config import SftConfig, load_config, to_dict
    from igsearch.data.world import read_world

    world, sft = source / "world", source / "sft"
    for done in (world / "world.json", sft / "igsearch.json"):
        if not done.exists():
            raise IGSearchError(
                f"--warm-start {source}: {done} is missing; finish `igsearch demo --out {source}`"
                " first, or drop --warm-start to build the warm start here"
            )
    build_world_stage(source, plan, world_seed)  # checks the settings; the world exists
    meta = json.loads((sft / "igsearch.json").read_text())

    def policy_settings(sft_cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sft_cfg.items() if k not in SFT_BOOKKEEPING}

    wanted = policy_settings(to_dict(load_config(SftConfig, None, list(plan.sft_overrides))))
    same_world = meta.get("world_hash") == read_world(world)["content_hash"]
    if policy_settings(meta.get("sft") or {}) != wanted or not same_world:
        raise IGSearchError(
            f"--warm-start {source}: {sft} was trained with other SFT settings or on another world"
            " than this experiment's plan; rerun that demo with this igsearch, or drop --warm-start"
        )
    console.print(
        f"[green]✓[/green] world + warm start reused from {source} "
        f"(SFT took {meta.get('train_seconds', 0) / 60:.1f} min there)"
    )
    return world, sft


def _check_same_warm_start(root: Path, spec: ExperimentSpec) -> None:
    """A resumed run keeps the warm start its finished runs started from."""
    old = root / "spec.json"
    if not old.exists():
        return
    before = json.loads(old.read_text()).get("warm_start")
    if before != spec.warm_start:
        raise IGSearchError(
            f"{root} was started with --warm-start {before or '(none: built here)'}; resume it "
            f"with the same, or pass --fresh to start over with {spec.warm_start or 'none'}"
        )


def run_experiment(root: str | Path, spec: ExperimentSpec, fresh: bool = False) -> Path:
    """Run (or resume) every stage and write the report; returns the path of experiment.md."""
    from igsearch.eval.experiment_md import write_experiment

    root = Path(root)
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    _check_same_warm_start(root, spec)
    (root / "spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    plan, runs = spec.plan, [(m, s) for s in spec.seeds for m in spec.methods]
    clock = StageClock(root, total=2 + 2 * len(runs) + 1)
    left = {"rl": len(runs), "eval": len(runs) + 1}
    if spec.warm_start is None:
        world = clock.run("world", lambda: build_world_stage(root, plan, spec.world_seed), left)
        sft = clock.run("sft", lambda: sft_stage(root, world, plan), left)
    else:
        world, sft = reused_warm_start(Path(spec.warm_start), plan, spec.world_seed)
    evals: dict[str, list[Path]] = {}
    left["eval"] -= 1
    clock.run("eval/sft", lambda: eval_stage(root, world, plan, "sft", sft, spec.whole_test), left)
    evals["sft"] = [root / "eval" / "sft"]
    for method, seed in runs:
        left["rl"] -= 1
        final = clock.run(
            f"rl/{method}-s{seed}",
            lambda m=method, s=seed: rl_stage(root, world, sft, plan, m, s),
            left,
        )
        left["eval"] -= 1
        name = f"{method}-s{seed}"
        clock.run(
            f"eval/{name}",
            lambda n=name, f=final: eval_stage(root, world, plan, n, f, spec.whole_test),
            left,
        )
        evals.setdefault(method, []).append(root / "eval" / name)
    report, table = write_experiment(root, spec, evals, clock.minutes)
    console.print(table, highlight=False, soft_wrap=True)
    console.print(f"[bold green]report:[/bold green] {report}  ({clock.minutes:.1f} min of stages)")
    return report
