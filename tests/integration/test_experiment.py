"""`igsearch experiment --quick`: three estimators x two seeds on the tiny world, paired intervals in
experiment.json, and a rerun that reuses every finished stage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from igsearch.cli import app

METHODS = ("sft", "grpo", "ig_grpo", "ig_grpo_empty")
PAIRS = ("ig_grpo-grpo", "ig_grpo-ig_grpo_empty", "grpo-sft", "ig_grpo-sft", "ig_grpo_empty-sft")
TYPES = {"single_hop", "bridge", "comparison", "compositional"}


def check_entry(entry: dict, seeds: int) -> None:
    for part in (entry["test_em"], entry["multi_hop"], *entry["by_type"].values()):
        assert set(part) == {"mean", "lo", "hi", "per_seed"}
        assert len(part["per_seed"]) == seeds
        assert part["lo"] - 1e-12 <= part["mean"] <= part["hi"] + 1e-12
    assert set(entry["by_type"]) == TYPES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment") / "exp"
    args = ["experiment", "--quick", "--seeds", "2", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    return out, args, first.output


def test_experiment_json_has_every_method_and_pair_with_intervals(run):
    out, _, output = run
    data = json.loads((out / "experiment.json").read_text())
    assert data["seeds"] == [0, 1] and data["steps"] == 2 and data["minutes"] > 0
    assert set(data["methods"]) == set(METHODS) and set(PAIRS) <= set(data["paired"])
    for entry in (*data["methods"].values(), *data["paired"].values()):
        check_entry(entry, seeds=2)
    sft, grpo = data["methods"]["sft"]["test_em"], data["methods"]["grpo"]["test_em"]
    diff = data["paired"]["grpo-sft"]["test_em"]["per_seed"]
    assert diff == pytest.approx(
        [g - s for g, s in zip(grpo["per_seed"], sft["per_seed"], strict=True)]
    )
    assert data["questions"] == {t: 3 for t in TYPES}
    assert "[4/22]" in output  # progress: stage 4 of world, sft, 6 RL runs, 7 x 2 evaluations


def test_every_policy_is_evaluated_again_on_dev_and_pooled_with_test(run):
    out, _, _ = run
    data = json.loads((out / "experiment.json").read_text())
    rep = data["replication"]
    assert rep["dev"]["questions"] == {t: 3 for t in TYPES}
    assert rep["pooled"]["questions"] == {t: 6 for t in TYPES}
    for part in (rep["dev"], rep["pooled"]):
        assert set(part["methods"]) == set(METHODS) and set(PAIRS) <= set(part["paired"])
        for entry in (*part["methods"].values(), *part["paired"].values()):
            check_entry(entry, seeds=2)
    dev_ids = {json.loads(line)["id"] for line in (out / "world" / "dev.jsonl").open()}
    for name in ("sft", "grpo-s0"):
        rows = (out / "eval-dev" / name / "predictions.jsonl").read_text().splitlines()
        assert {json.loads(r)["id"] for r in rows} <= dev_ids
    # types have as many questions on test as on dev, so pooled = the mean of the two, seed by seed
    test, dev = data["paired"]["grpo-sft"], rep["dev"]["paired"]["grpo-sft"]
    pooled = rep["pooled"]["paired"]["grpo-sft"]["test_em"]["per_seed"]
    halves = zip(test["test_em"]["per_seed"], dev["test_em"]["per_seed"], strict=True)
    assert pooled == pytest.approx([(a + b) / 2 for a, b in halves])
    assert "## Replication on the dev split" in (out / "experiment.md").read_text()


def test_experiment_md_says_how_intervals_are_computed_and_has_plots(run):
    out, _, _ = run
    md = (out / "experiment.md").read_text()
    assert "How the intervals are computed" in md and "| IG-Search − GRPO |" in md
    for png in ("paired_differences.png", "dev_em.png", "reward.png", "all_fail.png"):
        assert (out / png).stat().st_size > 1000, png
        assert f"({png})" in md


def test_a_rerun_reuses_every_finished_stage(run):
    out, args, _ = run
    before = (out / "experiment.json").read_text()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("already done, reused") == 22
    assert (
        json.loads((out / "experiment.json").read_text())["methods"]
        == json.loads(before)["methods"]
    )


def test_warm_start_reuses_a_finished_runs_world_and_policy_after_checking_them(run, tmp_path):
    from dataclasses import replace

    from igsearch.errors import IGSearchError
    from igsearch.experiment import experiment_spec, reused_warm_start

    out, _, _ = run
    plan = experiment_spec(quick=True).plan
    assert reused_warm_start(out, plan, 0) == (out / "world", out / "sft")
    with pytest.raises(IGSearchError, match="other SFT settings"):
        reused_warm_start(out, replace(plan, sft_overrides=("max_steps=9",)), 0)
    with pytest.raises(IGSearchError, match="world.json is missing"):
        reused_warm_start(tmp_path, plan, 0)
    info = out / "sft" / "igsearch.json"
    meta = json.loads(info.read_text())
    assert meta["precision"] == "fp32"
    try:  # a bf16 warm start is another policy than the fp32 one this plan trains
        info.write_text(json.dumps({**meta, "precision": "bf16"}))
        with pytest.raises(IGSearchError, match="other SFT settings"):
            reused_warm_start(out, plan, 0)
    finally:
        info.write_text(json.dumps(meta))


def test_a_rerun_with_another_warm_start_is_refused_before_any_work(run):
    out, args, _ = run
    result = CliRunner().invoke(app, [*args, "--warm-start", str(out.parent / "elsewhere")])
    assert result.exit_code != 0
    assert "was started with --warm-start (none" in str(result.exception)


def test_two_jobs_train_new_seeds_side_by_side_and_reuse_finished_runs(run):
    # last in this module: it adds a third seed to the shared run folder
    out, _, _ = run
    before = json.loads((out / "experiment.json").read_text())["methods"]["grpo"]["test_em"]
    args = ["experiment", "--quick", "--seeds", "3", "--jobs", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "started RL + test + dev evaluation of grpo-s2 on CPU" in result.output
    for method in ("grpo", "ig_grpo", "ig_grpo_empty"):  # seed 2 trained here, in a worker
        assert (out / f"{method}-s2" / "final" / "igsearch.json").exists()
        assert "reused" in (out / "logs" / f"{method}-s0.log").read_text()  # trained before
        assert (out / "logs" / f"{method}-s2.log").stat().st_size > 0
    data = json.loads((out / "experiment.json").read_text())
    assert data["seeds"] == [0, 1, 2]
    for entry in (*data["methods"].values(), *data["paired"].values()):
        check_entry(entry, seeds=3)
    assert data["methods"]["grpo"]["test_em"]["per_seed"][:2] == before["per_seed"]
