"""Per-step training metrics computed from a batch of rollouts (pure; the trainer logs them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from igsearch.rollout.loop import Trajectory


def rollout_metrics(
    trajectories: Sequence[Trajectory], rewards: Sequence[float], group_size: int
) -> dict[str, float]:
    """EM, format validity, turns, searches, query length and the share of all-fail groups."""
    n = max(len(trajectories), 1)
    spans = [s.query_span[1] - s.query_span[0] for t in trajectories for s in t.steps]
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return {
        "em": sum(rewards) / n,
        "well_formed": sum(t.well_formed for t in trajectories) / n,
        "turns": sum(t.num_turns for t in trajectories) / n,
        "searches": sum(t.num_searches for t in trajectories) / n,
        "invalid_turns": sum(t.num_invalid for t in trajectories) / n,
        "query_tokens": sum(spans) / max(len(spans), 1),
        "response_tokens": sum(len(t.response_ids) for t in trajectories) / n,
        "all_fail_groups": sum(all(r == 0 for r in g) for g in groups) / max(len(groups), 1),
    }


def ig_metrics(step_ig: Sequence[Sequence[float]], max_index: int = 5) -> dict[str, float]:
    """IG mean / std / share positive over all steps and by search-step index (1-based)."""
    out: dict[str, float] = {}
    by_index: dict[str, list[float]] = {"all": [v for row in step_ig for v in row]}
    for t in range(max_index):
        by_index[f"step{t + 1}"] = [row[t] for row in step_ig if len(row) > t]
    for key, values in by_index.items():
        if not values:
            continue
        v = torch.tensor(values)
        out[f"ig/{key}/mean"] = v.mean().item()
        out[f"ig/{key}/std"] = v.std(unbiased=False).item()
        out[f"ig/{key}/positive"] = (v > 0).float().mean().item()
    return out


def advantage_metrics(
    advantages: torch.Tensor, loss_mask: torch.Tensor, all_fail_rows: torch.Tensor
) -> dict[str, float]:
    """Share of policy tokens with non-zero advantage, overall and inside all-fail groups.

    advantages, loss_mask: (B, T); all_fail_rows: (B,) bool, rows of groups whose rollouts all failed.
    """
    mask = loss_mask.bool()
    nonzero = (advantages != 0) & mask
    fail = mask & all_fail_rows[:, None]
    return {
        "adv/nonzero_token_share": (nonzero.sum() / mask.sum().clamp(min=1)).item(),
        "adv/all_fail_nonzero_token_share": (
            (nonzero & fail).sum() / fail.sum().clamp(min=1)
        ).item(),
        "adv/all_fail_abs_mean": (advantages.abs() * fail).sum().item() / max(fail.sum().item(), 1),
    }
