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


def support_metrics(
    trajectories: Sequence[Trajectory],
    supporting_ids: Sequence[Sequence[str]],
    step_ig: Sequence[Sequence[float]] | None,
    max_index: int = 5,
) -> dict[str, float]:
    """Does IG tell search steps that retrieved a supporting passage from those that did not?

    A step is "supported" when one of its retrieved documents is among its question's
    `supporting_ids` (QA metadata). Over all steps (`ig_support/all/*`) and by search-step index
    (`ig_support/step{t}/*`, 1-based): `n_support` and `n_other` (step counts), and, when IG was
    computed (step_ig not None), `auc` (ROC AUC of IG for supported vs other, ties counted half;
    absent when a class is empty), `ig_support` and `ig_other` (mean IG of each class).
    Questions without supporting ids contribute nothing. trajectories, supporting_ids, step_ig: (B,).
    """
    from igsearch.eval.stats import roc_auc

    rows: dict[str, tuple[list[float], list[bool]]] = {"all": ([], [])}
    for i, (traj, support) in enumerate(zip(trajectories, supporting_ids, strict=True)):
        if not support:
            continue
        wanted = set(support)
        for t, step in enumerate(traj.steps):
            hit = any(d in wanted for d in step.doc_ids)
            ig = step_ig[i][t] if step_ig is not None else 0.0
            for key in ("all", f"step{t + 1}") if t < max_index else ("all",):
                rows.setdefault(key, ([], []))[0].append(ig)
                rows[key][1].append(hit)
    out: dict[str, float] = {}
    for key, (igs, hits) in rows.items():
        pos = [v for v, h in zip(igs, hits, strict=True) if h]
        neg = [v for v, h in zip(igs, hits, strict=True) if not h]
        out[f"ig_support/{key}/n_support"] = float(len(pos))
        out[f"ig_support/{key}/n_other"] = float(len(neg))
        if step_ig is None:
            continue
        auc = roc_auc(igs, hits)
        if auc is not None:
            out[f"ig_support/{key}/auc"] = auc
        for name, values in (("ig_support", pos), ("ig_other", neg)):
            if values:
                out[f"ig_support/{key}/{name}"] = sum(values) / len(values)
    return out
