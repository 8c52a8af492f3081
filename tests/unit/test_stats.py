"""ROC AUC with ties and the paired bootstrap over seeds and questions, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from igsearch.eval.stats import (
    BootstrapDraws,
    draw_bootstrap,
    interval,
    pooled_auc,
    replicate_means,
    roc_auc,
    summarize,
)


def test_auc_of_separated_reversed_and_constant_scores():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert roc_auc([3, 3, 3, 3], [1, 0, 1, 0]) == 0.5


def test_auc_counts_ties_as_half_a_pair():
    # positives 2, 3; negatives 1, 2, 2. Pairs (pos > neg): 2>1 (1), 2=2 (0.5) twice, 3>1, 3>2, 3>2 (3)
    # -> (1 + 0.5 + 0.5 + 3) / 6 = 5 / 6
    assert roc_auc([2, 3, 1, 2, 2], [1, 1, 0, 0, 0]) == pytest.approx(5 / 6)
    # one positive 0.5 among negatives 0.2, 0.5, 0.9: (1 + 0.5 + 0) / 3
    assert roc_auc([0.2, 0.5, 0.9, 0.5], [0, 0, 0, 1]) == pytest.approx(0.5)


def test_auc_is_undefined_without_both_classes():
    assert roc_auc([0.1, 0.4], [1, 1]) is None
    assert roc_auc([], []) is None


def test_pooled_auc_weights_batches_by_their_pairs():
    # batch 1: AUC 1.0 over 2 x 1 pairs; batch 2: AUC 0.25 over 2 x 3 pairs -> (2 + 1.5) / 8
    assert pooled_auc([1.0, 0.25], [2, 2], [1, 3]) == pytest.approx(3.5 / 8)
    assert pooled_auc([0.7], [0], [5]) is None


def test_replicate_means_on_hand_drawn_indices():
    values = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=float)  # 2 seeds, types a a b b
    draws = BootstrapDraws(
        seeds=np.array([[0, 0], [0, 1]]),
        questions={"a": np.array([[0, 0], [0, 1]]), "b": np.array([[2, 3], [3, 3]])},
    )
    overall, by_type = replicate_means(values, draws)
    # replicate 0: seed 0 twice -> [1, 0, 1, 1]; a over q0, q0 = 1; b over q2, q3 = 1; overall 1
    # replicate 1: seeds 0, 1 -> [0.5, 0, 1, 0.5]; a over q0, q1 = 0.25; b over q3, q3 = 0.5
    np.testing.assert_allclose(by_type["a"], [1.0, 0.25])
    np.testing.assert_allclose(by_type["b"], [1.0, 0.5])
    np.testing.assert_allclose(overall, [1.0, 0.375])


def test_interval_is_the_linear_percentile():
    assert interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))


def test_bootstrap_is_deterministic_and_resamples_within_types():
    types = ["a", "a", "a", "b", "b"]
    one, two = draw_bootstrap(3, types, 50, seed=7), draw_bootstrap(3, types, 50, seed=7)
    np.testing.assert_array_equal(one.seeds, two.seeds)
    assert set(np.unique(one.questions["a"])) <= {0, 1, 2}
    assert set(np.unique(one.questions["b"])) <= {3, 4}
    assert one.seeds.shape == (50, 3) and one.questions["b"].shape == (50, 2)


def test_bootstrap_of_one_seed_two_questions_matches_the_exact_distribution():
    # one seed, questions worth 1 and 0: a replicate is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    overall, _ = replicate_means(np.array([[1.0, 0.0]]), draw_bootstrap(1, ["t", "t"], 8000, 0))
    assert abs(np.mean(overall == 0.5) - 0.5) < 0.03
    assert abs(np.mean(overall == 0.0) - 0.25) < 0.03


def test_summary_point_estimates_and_per_seed_values():
    values = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=float)
    types = ["a", "a", "b", "b"]
    s = summarize(values, types, draw_bootstrap(2, types, 500, 0))
    assert s["by_type"]["a"]["per_seed"] == [0.5, 0.0]
    assert s["by_type"]["b"]["per_seed"] == [1.0, 0.5]
    assert s["per_seed"] == [0.75, 0.25] and s["mean"] == 0.5
    assert s["lo"] <= s["mean"] <= s["hi"]


def test_identical_methods_differ_by_exactly_zero():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 40)) < 0.3).astype(float)
    types = ["x"] * 20 + ["y"] * 20
    d = summarize(a - a.copy(), types, draw_bootstrap(3, types, 1000, 0))
    assert d["mean"] == 0.0 and d["lo"] <= 0.0 <= d["hi"]
    assert all(v["mean"] == 0.0 for v in d["by_type"].values())


def test_a_method_better_on_every_question_has_its_interval_above_zero():
    rng = np.random.default_rng(2)
    b = (rng.random((3, 40)) < 0.3).astype(float)
    a = np.maximum(b, (rng.random((3, 40)) < 0.5).astype(float))
    a[0] = 1.0
    b[0] = 0.0  # seed 0: a right, b wrong on every question; other seeds never worse
    types = ["x"] * 20 + ["y"] * 20
    d = summarize(a - b, types, draw_bootstrap(3, types, 2000, 0))
    assert d["lo"] > 0 and d["by_type"]["x"]["lo"] > 0


def test_summary_rejects_values_that_do_not_match_the_types():
    with pytest.raises(ValueError, match="question types"):
        summarize(np.zeros((2, 3)), ["a", "b"], draw_bootstrap(2, ["a", "b"], 10))


def test_a_group_is_the_unweighted_mean_of_its_types():
    values = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=float)
    types = ["a", "a", "b", "b", "c", "c"]
    s = summarize(values, types, draw_bootstrap(2, types, 300, 0), groups={"bc": ["b", "c"]})
    # seed 0: b 1.0, c 0.0 -> 0.5; seed 1: b 0.5, c 1.0 -> 0.75
    assert s["bc"]["per_seed"] == [0.5, 0.75] and s["bc"]["mean"] == 0.625
    assert s["bc"]["lo"] <= 0.625 <= s["bc"]["hi"]
