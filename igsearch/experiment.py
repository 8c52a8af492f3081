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
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from igsearch.algo.advantages import ESTIMATORS, get_estimator
from igsearch.config import POLICY_INFO
from igsearch.demo import (
    PLANS,
    DemoPlan,
    build_world_stage,
    console,
    eval_folder,
    eval_results,
    eval_stage,
    rl_stage,
    sft_stage,
    world_config,
)
from igsearch.errors import IGSearchError

QUICK_ROLLOUT = {"max_turns": 2, "max_new_tokens_per_turn": 24, "max_response_tokens": 160}
"""The quick flavour's rollout limits (tests): a barely trained policy writes to every limit."""
QUICK_SFT = ("max_steps=8", "batch_size=8", "save_steps=8")
"""The quick flavour's warm start: a few steps, enough to exercise the stage."""
EXPERIMENT_STEPS = 120
"""RL steps per run of the full experiment: the demo's plan runs 40 to fit its time budget. From
the small world's warm start every run of both methods ends above it on the test split at 60
steps and further above at 120 (on other held-out questions by about a point at most), and 3
methods x 3 seeds of 120 steps take about 80 min on 2 cores (benchmarks/results/rl_recipe.md,
sections 10 and 12)."""


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
    replicate_on_dev: bool = True
    """Evaluate every policy on the dev split too (as many questions as on test), reported as a
    replication of the test result and pooled with it. Dev questions are about entities of their
    own that no training split mentions; no run trains on them or keeps a checkpoint by them (the
    in-run dev probe only watches the first few)."""
    n_boot: int = 10_000
    """Bootstrap replicates of the intervals."""
    world_seed: int = 0
    """Seed of the world and of the warm start every method starts from."""
    warm_start: str | None = None
    """A finished demo run folder (`--warm-start runs/demo`) whose world and warm start, built with
    this plan and seed, are used where they are instead of being built again; None builds both
    under the run folder."""
    jobs: int = 1
    """RL runs trained at once, each in its own process on its share of the CPUs (one torch thread
    per core). Two one-thread runs side by side on 2 cores take about 0.7-0.8x the time of the same
    runs one after the other with two threads each (benchmarks/results/rl_recipe.md, sections 8
    and 10)."""

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise IGSearchError(f"seeds {list(self.seeds)}: give one or more distinct seeds")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise IGSearchError(
                f"methods {list(self.methods)}: give distinct estimators from: {', '.join(ESTIMATORS)}"
            )
        for m in self.methods:
            get_estimator(m)  # unknown names fail listing the valid ones
        if self.jobs < 1:
            raise IGSearchError(f"--jobs {self.jobs}: run at least one RL run at a time")
        if self.n_boot < 100:
            raise IGSearchError(f"n_boot={self.n_boot}: use at least 100 bootstrap replicates")

    @property
    def splits(self) -> tuple[str, ...]:
        """The world splits every policy is evaluated on."""
        return ("test", "dev") if self.replicate_on_dev else ("test",)


def experiment_spec(
    quick: bool = False,
    seeds: int = 3,
    steps: int | None = None,
    methods: str | None = None,
    warm_start: str | Path | None = None,
    jobs: int = 1,
    dev: bool = True,
    world: tuple[str, ...] = (),
    rename_entities: bool | None = None,
) -> ExperimentSpec:
    """The spec of `igsearch experiment`: the demo's full plan with EXPERIMENT_STEPS RL steps (or,
    with quick, its quick plan with 2 steps, tighter rollouts and few evaluation questions), `seeds`
    seeds from 0, `steps` RL steps when given, `methods` (comma list, default every registered
    estimator), the demo run folder whose warm start to reuse, `jobs` RL runs at a time, and
    whether every policy is evaluated on the dev split too (`dev`), on the world that the
    WorldConfig overrides `world` describe, with `rename_entities` in RL when given (else the
    plan's)."""
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
    plan = replace(
        plan,
        rl_steps=steps or (plan.rl_steps if quick else EXPERIMENT_STEPS),
        world_overrides=tuple(world),
        rename_entities=plan.rename_entities if rename_entities is None else rename_entities,
    )
    world_config(plan, 0)  # a wrong --world fails here, not after an hour
    names = [m.strip() for m in (methods or ",".join(ESTIMATORS)).split(",") if m.strip()]
    return ExperimentSpec(
        plan,
        tuple(range(seeds)),
        tuple(names),
        whole_test=not quick,
        n_boot=2000 if quick else 10_000,
        warm_start=str(warm_start) if warm_start is not None else None,
        jobs=jobs,
        replicate_on_dev=dev,
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
        self.used: set[str] = set()  # the stages of this run, whether they ran now or before

    def _left(self, kinds: dict[str, int], spent: float) -> str:
        est = 0.0
        for kind, n in kinds.items():
            past = [v for k, v in self.seconds.items() if k.startswith(kind)]
            if n and not past:
                return "unknown until one stage of each kind has run"
            est += n * (sum(past) / len(past) if past else 0.0)
        return f"~{max(est - spent, 0.0) / 60:.1f} min"

    def progress(
        self, left: dict[str, int], stages: int = 1, what: str = "", spent: float = 0.0
    ) -> None:
        """Print the progress line of the next `stages` stages (`what` names them). `left` counts
        the unfinished stages of each kind, these included; `spent` is the time (as recorded,
        a share of the machine) that stages in progress have already run."""
        self.done += stages
        console.print(
            f"[bold]\\[{self.done}/{self.total}][/bold] {(time.time() - self.t0) / 60:.1f} min "
            f"elapsed{what}; time left: {self._left(left, spent)}",
            highlight=False,
        )

    def record(self, key: str, seconds: float) -> None:
        """Keep a stage's time (the first time it ran: a reused stage costs nothing)."""
        self.used.add(key)
        if key not in self.seconds:
            self.seconds[key] = seconds
            self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")

    def run(self, key: str, fn: Any, left: dict[str, int]) -> Any:
        """Run one stage `fn()`, printing progress first and recording its time when it ran;
        the stage then leaves `left` (its kind is the key's first part)."""
        self.progress(left)
        t0 = time.time()
        out = fn()
        self.record(key, time.time() - t0)
        left[key.split("/")[0].split("-")[0]] -= 1  # eval-dev/NAME is an evaluation too
        return out

    @property
    def minutes(self) -> float:
        """Minutes of this run's stages as they first ran, not counting stages of other runs kept
        in the same folder (e.g. seeds a `--seeds 5` run added beside a 3-seed one)."""
        return sum(self.seconds[k] for k in self.used) / 60


SFT_BOOKKEEPING = ("num_threads", "save_steps", "save_total_limit", "logging_steps", "precision")
"""SftConfig fields that do not change the trained policy (a reused warm start may differ in them);
`precision` is compared as resolved (igsearch.json's "precision", fp32 for policies that predate
it), so "auto" matches the precision it chose."""


def reused_warm_start(source: Path, plan: DemoPlan, world_seed: int) -> tuple[Path, Path]:
    """The world and warm start of the finished demo run `source`, checked to be what this plan and
    seed would build: the world's settings, and the warm start's SFT settings and world hash."""
    from igsearch.config import SftConfig, load_config, to_dict
    from igsearch.data.world import read_world
    from igsearch.train.sft import resolve_precision

    world, sft = source / "world", source / "sft"
    for done in (world / "world.json", sft / POLICY_INFO):
        if not done.exists():
            raise IGSearchError(
                f"--warm-start {source}: {done} is missing; finish `igsearch demo --out {source}`"
                " first, or drop --warm-start to build the warm start here"
            )
    build_world_stage(source, plan, world_seed)  # checks the settings; the world exists
    meta = json.loads((sft / POLICY_INFO).read_text())

    def policy_settings(sft_cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sft_cfg.items() if k not in SFT_BOOKKEEPING}

    cfg = load_config(SftConfig, None, list(plan.sft_overrides))
    wanted = policy_settings(to_dict(cfg))
    same_world = meta.get("world_hash") == read_world(world)["content_hash"]
    same_precision = meta.get("precision", "fp32") == resolve_precision(cfg.precision)
    if policy_settings(meta.get("sft") or {}) != wanted or not same_world or not same_precision:
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


def cpu_shares(cpus: list[int], jobs: int) -> list[list[int]]:
    """The CPUs of each of `jobs` runs that train at once: every `jobs`-th CPU, so shares differ by
    at most one; with fewer CPUs than jobs, runs share CPUs."""
    cpus = sorted(cpus)
    return [cpus[i::jobs] or [cpus[i % len(cpus)]] for i in range(jobs)]


def machine_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def exit_with_parent(poll_s: float = 2.0) -> threading.Thread:
    """End this worker process when the process that started it is gone. A worker of a killed
    `igsearch experiment` or `igsearch demo` would otherwise go on training, unseen, beside
    whatever the user starts next (SIGTERM and SIGKILL reach only the parent; Ctrl-C reaches
    the whole process group)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    watcher = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    watcher.start()
    return watcher


def _run_pinned(
    root: Path,
    world: Path,
    sft: Path,
    plan: DemoPlan,
    whole_test: bool,
    method: str,
    seed: int,
    cpus: list[int],
    splits: tuple[str, ...] = ("test",),
) -> dict[str, float]:
    """One RL run and its evaluation on each of `splits` in a worker process, on `cpus` (one torch
    thread each), its output appended to logs/METHOD-sSEED.log; returns the seconds of each stage."""
    import torch

    exit_with_parent()
    name = f"{method}-s{seed}"
    log = root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(len(cpus))
    t0 = time.time()
    final = rl_stage(root, world, sft, plan, method, seed, threads=len(cpus))
    seconds = {f"rl/{name}": time.time() - t0}
    for split in splits:
        t0 = time.time()
        eval_stage(root, world, plan, name, final, whole_test, split)
        seconds[f"{eval_folder(split)}/{name}"] = time.time() - t0
    return seconds


def run_side_by_side(
    root: Path,
    world: Path,
    sft: Path,
    plan: DemoPlan,
    runs: list[tuple[str, int]],
    jobs: int,
    whole_test: bool,
    clock: StageClock,
    left: dict[str, int],
    splits: tuple[str, ...] = ("test",),
) -> None:
    """Every RL run (method, seed) and its evaluation on each of `splits` (eval/METHOD-sSEED for
    test, eval-dev/METHOD-sSEED for dev), `jobs` at a time, each in a process of its own on its
    share of the CPUs. A stage's time is recorded as its share of the machine (seconds / jobs), so
    the stage times still add up to about the wall time."""
    import multiprocessing

    shares = cpu_shares(machine_cpus(), jobs)
    queue = list(runs)
    finished = {  # evaluated on every split before: reused at once, not work left
        (m, s)
        for m, s in runs
        if all(eval_results(root, f"{m}-s{s}", sp).exists() for sp in splits)
    }
    for _ in finished:
        left["rl"] -= 1
        left["eval"] -= len(splits)
    running: dict[Future, tuple[str, int, int, float]] = {}  # job -> method, seed, slot, start
    free = list(range(jobs))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            while queue or running:
                while queue and free:
                    (method, seed), slot = queue.pop(0), free.pop(0)
                    name = f"{method}-s{seed}"
                    clock.progress(
                        left,
                        stages=1 + len(splits),
                        what=f"; started RL + {' + '.join(splits)} evaluation of {name} on CPU "
                        f"{','.join(map(str, shares[slot]))} (log: {root / 'logs' / name}.log)",
                        spent=sum(time.time() - t0 for *_, t0 in running.values()) / jobs,
                    )
                    job = pool.submit(
                        _run_pinned,
                        root,
                        world,
                        sft,
                        plan,
                        whole_test,
                        method,
                        seed,
                        shares[slot],
                        splits,
                    )
                    running[job] = (method, seed, slot, time.time())
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for job in done:
                    method, seed, slot, _ = running.pop(job)
                    free.append(slot)
                    if (method, seed) not in finished:
                        left["rl"] -= 1
                        left["eval"] -= len(splits)
                    seconds = job.result()
                    for key, sec in seconds.items():
                        clock.record(key, sec / jobs)
                    console.print(
                        f"[green]✓[/green] {method}-s{seed}: "
                        + ", ".join(
                            f"{k.split('/')[0]} {sec / 60:.1f} min" for k, sec in seconds.items()
                        ),
                        highlight=False,
                    )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # runs not yet started never start
            raise


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
    splits = spec.splits
    clock = StageClock(root, total=2 + len(runs) + len(splits) * (len(runs) + 1))
    left = {"rl": len(runs), "eval": len(splits) * (len(runs) + 1)}
    if spec.warm_start is None:
        left |= {"world": 1, "sft": 1}
        world = clock.run("world", lambda: build_world_stage(root, plan, spec.world_seed), left)
        sft = clock.run("sft", lambda: sft_stage(root, world, plan), left)
    else:
        world, sft = reused_warm_start(Path(spec.warm_start), plan, spec.world_seed)
    for split in splits:
        clock.run(
            f"{eval_folder(split)}/sft",
            lambda s=split: eval_stage(root, world, plan, "sft", sft, spec.whole_test, s),
            left,
        )
    evals = {split: {"sft": [root / eval_folder(split) / "sft"]} for split in splits}
    for method, seed in runs:
        for split in splits:
            evals[split].setdefault(method, []).append(
                root / eval_folder(split) / f"{method}-s{seed}"
            )
    if spec.jobs > 1:
        run_side_by_side(
            root, world, sft, plan, runs, spec.jobs, spec.whole_test, clock, left, splits
        )
    else:
        for method, seed in runs:
            name = f"{method}-s{seed}"
            final = clock.run(
                f"rl/{name}",
                lambda m=method, s=seed: rl_stage(root, world, sft, plan, m, s),
                left,
            )
            for split in splits:
                clock.run(
                    f"{eval_folder(split)}/{name}",
                    lambda n=name, f=final, s=split: eval_stage(
                        root, world, plan, n, f, spec.whole_test, s
                    ),
                    left,
                )
    report, table = write_experiment(root, spec, evals, clock.minutes)
    console.print(table, highlight=False, soft_wrap=True)
    console.print(f"[bold green]report:[/bold green] {report}  ({clock.minutes:.1f} min of stages)")
    return report
