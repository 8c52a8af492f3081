"""IG vs supporting passages: the per-step trainer metric and its pooling in the experiment report."""

from __future__ import annotations

import json

import pytest

from igsearch.eval.experiment_report import support_share, support_summary
from igsearch.retrieval.base import Doc, Hit
from igsearch.rollout.loop import Step, Trajectory
from igsearch.train.metrics import support_metrics


def _traj(*doc_sets: list[str]) -> Trajectory:
    steps = [
        Step(f"q{t}", (0, 1), (1, 2), [Hit(Doc(d, f"T\n{d}"), 1.0) for d in docs], t)
        for t, docs in enumerate(doc_sets)
    ]
    return Trajectory([0], [1, 2], [1, 0], steps, None, len(steps), False, False, False)


def test_auc_and_class_means_by_search_step_index():
    trajs = [_traj(["p1", "x"], ["y"]), _traj(["z"], ["p2"]), _traj(["p1"])]
    support = [["p1", "p2"], ["p1", "p2"], ["p1"]]
    ig = [[0.9, 0.1], [0.2, 0.5], [0.4]]
    m = support_metrics(trajs, support, ig)
    # all steps: supported 0.9, 0.5, 0.4; other 0.1, 0.2 -> every supported step ranks higher
    assert m["ig_support/all/auc"] == 1.0
    assert m["ig_support/all/n_support"] == 3 and m["ig_support/all/n_other"] == 2
    assert m["ig_support/all/ig_support"] == pytest.approx(0.6)
    assert m["ig_support/all/ig_other"] == pytest.approx(0.15)
    # first searches: supported 0.9, 0.4; other 0.2. second searches: supported 0.5, other 0.1
    assert m["ig_support/step1/auc"] == 1.0 and m["ig_support/step1/n_support"] == 2
    assert m["ig_support/step2/ig_other"] == pytest.approx(0.1)


def test_ig_that_prefers_unsupported_steps_scores_below_a_half():
    trajs = [_traj(["p1"]), _traj(["x"]), _traj(["p1"]), _traj(["y"])]
    m = support_metrics(trajs, [["p1"]] * 4, [[0.1], [0.3], [0.2], [0.2]])
    # pairs (supported, other): (0.1, 0.3) 0, (0.1, 0.2) 0, (0.2, 0.3) 0, (0.2, 0.2) 0.5 -> 0.125
    assert m["ig_support/all/auc"] == pytest.approx(0.125)


def test_without_ig_or_without_both_classes_only_counts_are_logged():
    trajs = [_traj(["p1"]), _traj(["x"])]
    m = support_metrics(trajs, [["p1"], ["p1"]], None)
    assert m == {"ig_support/all/n_support": 1.0, "ig_support/all/n_other": 1.0,
                 "ig_support/step1/n_support": 1.0, "ig_support/step1/n_other": 1.0}  # fmt: skip
    one_class = support_metrics([_traj(["p1"])], [["p1"]], [[0.3]])
    assert "ig_support/all/auc" not in one_class
    assert one_class["ig_support/all/ig_support"] == pytest.approx(0.3)


def test_questions_without_supporting_ids_are_left_out():
    m = support_metrics([_traj(["p1"]), _traj(["p1"])], [[], ["p1"]], [[5.0], [1.0]])
    assert m["ig_support/all/n_support"] == 1 and m["ig_support/all/ig_support"] == 1.0


def test_report_pools_auc_over_training_steps_by_their_pairs(tmp_path):
    rows = [
        {"step": 1, "ig_support/all/auc": 1.0, "ig_support/all/n_support": 2,
         "ig_support/all/n_other": 1, "ig_support/all/ig_support": 0.5,
         "ig_support/all/ig_other": 0.0},
        {"step": 2, "ig_support/all/auc": 0.25, "ig_support/all/n_support": 2,
         "ig_support/all/n_other": 3, "ig_support/all/ig_support": 0.2,
         "ig_support/all/ig_other": 0.4},
        {"step": 3, "ig_support/all/n_support": 0, "ig_support/all/n_other": 4},
    ]  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = support_summary([run])["all"]
    assert s["auc"] == pytest.approx(3.5 / 8)  # (1.0 * 2 + 0.25 * 6) / 8
    assert s["ig_support"] == pytest.approx(0.35)  # (0.5 * 2 + 0.2 * 2) / 4
    assert s["ig_other"] == pytest.approx(1.2 / 4)  # (0.0 * 1 + 0.4 * 3) / 4
    assert (s["n_support"], s["n_other"]) == (4, 8)
    assert support_share([run]) == pytest.approx(4 / 12)
