"""GRPO and IG-Search advantages against hand-computed values and the invariants of
docs/design.md, The algorithm."""

import math

import pytest
import torch

from igsearch.algo.advantages import (
    compute_advantages,
    compute_grpo_advantages,
    compute_ig_advantages,
    get_estimator,
    normalize_step_ig,
)


def test_grpo_hand_computed():
    # group 1: rewards 1,0,0,1 -> mean .5, unbiased std sqrt(1/3)
    adv = compute_grpo_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1]), group_size=4)
    s = math.sqrt(1 / 3)
    expected = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6)] * 1
    assert adv[0].item() == pytest.approx(expected[0], rel=1e-6)
    assert adv[1].item() == pytest.approx(expected[1], rel=1e-6)
    assert adv[4:].tolist() == [0.0] * 4  # equal rewards -> 0, not NaN


def test_grpo_never_nan_and_rejects_bad_groups():
    assert compute_grpo_advantages(torch.tensor([1.0, 0.0]), group_size=1).tolist() == [0.0, 0.0]
    assert not torch.isnan(compute_grpo_advantages(torch.zeros(6), 3)).any()
    with pytest.raises(ValueError, match="not divisible"):
        compute_grpo_advantages(torch.zeros(5), 2)


def test_ig_adds_alpha_ig_over_span_length_on_query_tokens_only():
    rewards = torch.tensor([1.0, 0.0])
    spans = [[(2, 4), (7, 10)], [(1, 2)]]
    step_ig = [[0.6, -0.3], [1.0]]
    adv = compute_ig_advantages(rewards, 2, step_ig, spans, response_len=12, alpha=0.5)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    expected0 = [a] * 12
    for p in (2, 3):
        expected0[p] += 0.5 * 0.6 / 2
    for p in (7, 8, 9):
        expected0[p] += 0.5 * -0.3 / 3
    expected1 = [-a] * 12
    expected1[1] += 0.5 * 1.0 / 1
    assert adv[0].tolist() == pytest.approx(expected0, rel=1e-5)
    assert adv[1].tolist() == pytest.approx(expected1, rel=1e-5)


def test_all_fail_group_still_moves_query_tokens_and_nothing_else():
    rewards = torch.zeros(3)
    spans = [[(0, 2)], [(3, 5), (6, 7)], []]
    adv = compute_ig_advantages(rewards, 3, [[0.2], [-0.4, 0.1], []], spans, response_len=8)
    query = torch.zeros(3, 8, dtype=torch.bool)
    for i, row in enumerate(spans):
        for s, e in row:
            query[i, s:e] = True
    assert (adv[~query] == 0).all()
    assert (adv[query] != 0).all()


def test_zero_ig_or_zero_alpha_equals_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    spans = [[(0, 3)], [(1, 2)], [], [(4, 6)]]
    grpo = compute_advantages("grpo", rewards, 2, response_len=6)
    zero_ig = compute_ig_advantages(rewards, 2, [[0.0], [0.0], [], [0.0]], spans, 6)
    no_alpha = compute_ig_advantages(rewards, 2, [[5.0], [1.0], [], [2.0]], spans, 6, alpha=0.0)
    assert torch.equal(zero_ig, grpo) and torch.equal(no_alpha, grpo)


def test_ig_norm_variants():
    ig = [[1.0, 3.0], [2.0], [10.0], [30.0]]
    assert normalize_step_ig(ig, 2, "none") == ig
    group = normalize_step_ig(ig, 2, "group")
    # group 1 holds steps 1, 3, 2 -> mean 2, std 1; group 2 holds 10, 30 -> mean 20, std sqrt(200)
    assert group[0] == pytest.approx([-1.0, 1.0], rel=1e-5) and group[1] == pytest.approx(
        [0.0], abs=1e-6
    )
    assert group[2][0] == pytest.approx(-10 / (math.sqrt(200) + 1e-6))
    batch = normalize_step_ig(ig, 2, "batch")
    flat = torch.tensor([1.0, 3, 2, 10, 30])
    z = ((flat - flat.mean()) / (flat.std() + 1e-6)).tolist()
    assert [v for row in batch for v in row] == pytest.approx(z, rel=1e-5)
    assert normalize_step_ig([[5.0], []], 2, "group") == [[0.0], []]  # one step: no spread
    assert normalize_step_ig([[5.0, -5.0], [0.5]], 2, "none", ig_clip=1.0) == [[1.0, -1.0], [0.5]]
    with pytest.raises(Exception, match="choose one of"):
        normalize_step_ig(ig, 2, "zscore")


def test_shape_errors_and_registry():
    with pytest.raises(ValueError, match="outside response"):
        compute_ig_advantages(torch.zeros(2), 2, [[1.0], []], [[(3, 9)], []], response_len=5)
    with pytest.raises(ValueError, match="IG values"):
        compute_ig_advantages(torch.zeros(2), 2, [[1.0], []], [[], []], response_len=5)
    with pytest.raises(ValueError, match="alpha"):
        compute_ig_advantages(torch.zeros(2), 2, [[], []], [[], []], 5, alpha=-1)
    assert get_estimator("ig_grpo").counterfactual == "random"
    assert get_estimator("ig_grpo_empty").counterfactual == "empty"
    assert not get_estimator("grpo").needs_ig
    with pytest.raises(Exception, match="grpo, ig_grpo, ig_grpo_empty"):
        get_estimator("ppo")


def test_loop_and_vectorised_agree_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    B, G, T = 12, 4, 40
    rewards = (torch.rand(B, generator=g) > 0.5).float()
    spans, igs = [], []
    for _ in range(B):
        starts = sorted(torch.randperm(T - 4, generator=g)[:3].tolist())
        row = [(s, s + 1 + int(torch.randint(0, 3, (1,), generator=g))) for s in starts][:1]
        spans.append(row)
        igs.append([float(torch.randn(1, generator=g))] * len(row))
    adv = compute_ig_advantages(rewards, G, igs, spans, T, alpha=0.3)
    base = compute_grpo_advantages(rewards, G)
    for i in range(B):
        for p in range(T):
            bonus = sum(
                0.3 * v / (e - s) for v, (s, e) in zip(igs[i], spans[i], strict=True) if s <= p < e
            )
            assert adv[i, p].item() == pytest.approx(base[i].item() + bonus, abs=1e-6)
