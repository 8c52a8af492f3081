"""`igsearch experiment` takes its plan from the demo's, and checks its options before any work."""

from __future__ import annotations

from dataclasses import replace

import pytest

from igsearch.algo.advantages import ESTIMATORS
from igsearch.demo import PLANS
from igsearch.errors import IGSearchError
from igsearch.experiment import EXPERIMENT_STEPS, cpu_shares, experiment_spec


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
