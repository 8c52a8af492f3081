"""`igsearch experiment` takes its plan from the demo's, and checks its options before any work."""

from __future__ import annotations

from dataclasses import replace

import pytest

from igsearch.algo.advantages import ESTIMATORS
from igsearch.config import to_dict
from igsearch.demo import PLANS
from igsearch.errors import IGSearchError
from igsearch.experiment import EXPERIMENT_STEPS, StageClock, cpu_shares, experiment_spec


def test_the_full_experiment_runs_the_demos_full_plan_for_every_estimator():
    spec = experiment_spec()
    assert spec.plan == replace(PLANS["full"], rl_steps=EXPERIMENT_STEPS)
    assert spec.methods == tuple(ESTIMATORS) and spec.seeds == (0, 1, 2)
    assert spec.whole_test


def test_steps_and_methods_override_only_themselves():
    spec = experiment_spec(seeds=2, steps=7, methods="ig_grpo, grpo")
    assert spec.plan.rl_steps == 7 and spec.methods == ("ig_grpo", "grpo")
    assert spec.plan.batch_size == PLANS["full"].batch_size and spec.seeds == (0, 1)


def test_quick_is_the_tiny_world_with_two_steps():
    spec = experiment_spec(quick=True)
    assert spec.plan.world_size == "tiny" and spec.plan.rl_steps == 2 and not spec.whole_test


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": "grpo,ppo"}, "choose one of: grpo, ig_grpo, ig_grpo_empty"),
        ({"methods": "grpo,grpo"}, "distinct estimators"),
        ({"seeds": 0}, "--seeds 0"),
        ({"steps": 0}, "--steps 0"),
        ({"jobs": 0}, "--jobs 0"),
    ],
)
def test_bad_options_fail_with_one_line_naming_the_fix(kwargs, message):
    with pytest.raises(IGSearchError, match=message):
        experiment_spec(**kwargs)


@pytest.mark.parametrize(
    ("cpus", "jobs", "shares"),
    [
        ([0, 1], 2, [[0], [1]]),
        ([3, 1, 2, 0], 2, [[0, 2], [1, 3]]),
        ([0, 1, 2], 2, [[0, 2], [1]]),
        ([0], 2, [[0], [0]]),  # more runs than CPUs: they share
        ([0, 1], 1, [[0, 1]]),
    ],
)
def test_runs_side_by_side_get_disjoint_cpu_shares_that_cover_the_machine(cpus, jobs, shares):
    assert cpu_shares(cpus, jobs) == shares


def test_time_left_counts_unfinished_stages_less_what_runs_in_progress_have_spent(tmp_path, capsys):
    clock = StageClock(tmp_path, total=6)

    def line(**kwargs) -> str:
        clock.progress(**kwargs)
        return " ".join(capsys.readouterr().out.split())

    assert "time left: unknown" in line(left={"rl": 2, "eval": 2})
    clock.record("rl/a-s0", 600.0)
    clock.record("eval/a-s0", 60.0)
    # two RL runs and their evaluations unfinished, 5 min of them already run: (1320 - 300) / 60
    assert line(left={"rl": 2, "eval": 2}, spent=300.0).endswith("time left: ~17.0 min")
    # the last run is nearly over: never a negative estimate
    assert line(left={"rl": 1, "eval": 1}, spent=900.0).endswith("time left: ~0.0 min")


def test_a_stage_leaves_the_count_once_it_has_run(tmp_path, capsys):
    clock, left = StageClock(tmp_path, total=2), {"rl": 1, "eval": 1}
    assert clock.run("rl/a-s0", lambda: "done", left) == "done"
    assert left == {"rl": 0, "eval": 1} and "rl/a-s0" in clock.seconds
    assert "time left: unknown" in capsys.readouterr().out


def test_minutes_count_this_runs_stages_only(tmp_path):
    before = StageClock(tmp_path, total=4)
    for key, seconds in (("rl/a-s0", 600.0), ("eval/a-s0", 60.0), ("rl/a-s3", 900.0)):
        before.record(key, seconds)
    clock, left = StageClock(tmp_path, total=3), {"rl": 1, "eval": 2}
    clock.record("rl/a-s0", 1.0)  # reused: keeps the time it first took
    clock.run("eval-dev/a-s0", lambda: None, left)  # an evaluation on dev leaves the eval count
    assert left == {"rl": 1, "eval": 1}
    assert clock.minutes == pytest.approx((600.0 + clock.seconds["eval-dev/a-s0"]) / 60)


@pytest.mark.parametrize(("flag", "splits"), [([], ("test", "dev")), (["--no-dev"], ("test",))])
def test_the_dev_replication_is_on_unless_no_dev(monkeypatch, flag, splits):
    from typer.testing import CliRunner

    import igsearch.experiment as experiment
    from igsearch.cli import app

    seen = {}
    monkeypatch.setattr(
        experiment, "run_experiment", lambda root, spec, fresh: seen.update(spec=spec)
    )
    result = CliRunner().invoke(app, ["experiment", "--quick", *flag])
    assert result.exit_code == 0, result.output
    assert seen["spec"].splits == splits


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    # A killed `igsearch experiment` must not leave its RL workers training (SIGKILL, like
    # SIGTERM, reaches only the parent).
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file, script = tmp_path / "worker.pid", tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from igsearch.experiment import exit_with_parent\n"
        "def work(path):\n"
        "    exit_with_parent(poll_s=0.1)\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    mp.get_context('spawn').Process(target=work, args=(sys.argv[1],)).start()\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            if open(f"/proc/{worker}/stat").read().split()[2] == "Z":
                break  # exited; only the zombie entry is left until init reaps it
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent")
    finally:
        parent.kill()


def test_world_overrides_reach_the_plan_and_bad_ones_fail_at_once():
    spec = experiment_spec(world=("early_answer_share=0.6",))
    assert spec.plan.world_overrides == ("early_answer_share=0.6",)
    assert experiment_spec().plan.world_overrides == ()
    with pytest.raises(IGSearchError, match="early_answer_shar"):
        experiment_spec(world=("early_answer_shar=0.6",))


def test_rename_entities_reaches_every_rl_run_and_an_old_run_still_matches(tmp_path):
    from igsearch.demo import _training_settings, rl_config

    assert experiment_spec().plan.rename_entities is False
    plan = experiment_spec(rename_entities=True).plan
    cfg = rl_config(tmp_path, tmp_path / "world", tmp_path / "sft", plan, "grpo", 0)
    assert cfg.data.rename_entities is True
    # a run saved before the setting existed trained without it, and is reused as such
    saved = to_dict(
        rl_config(tmp_path, tmp_path / "world", tmp_path / "sft", PLANS["full"], "grpo", 0)
    )
    del saved["data"]["rename_entities"]
    plain = to_dict(
        rl_config(tmp_path, tmp_path / "world", tmp_path / "sft", PLANS["full"], "grpo", 0)
    )
    assert _training_settings(saved) == _training_settings(plain)
    assert _training_settings(saved) != _training_settings(to_dict(cfg))
