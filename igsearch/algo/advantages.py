"""Advantage estimators: trajectory-level GRPO and IG-Search's per-token advantages.

Pure functions on plain tensors (no config objects, no model calls), so users of verl or TRL can
call them directly. Rows are ordered group by group: rows [g*G, (g+1)*G) are the G rollouts of
question g.

  GRPO:       Â_i = (r_i - mean_g r) / (std_g r + eps), std unbiased (as verl and TRL)
  IG-Search:  Ã_{i,p} = Â_i + α · ĨG_{i,t} / |Q_{i,t}|  for p in the query span Q_{i,t} of step t
              Ã_{i,p} = Â_i                            for every other position
The caller multiplies by the loss mask, which zeroes inserted document tokens.

ĨG is the step's information gain after an optional normalisation (`none`, `group`: z-score over
all search steps of the group's rollouts, `batch`: z-score over all steps of the batch) and an
optional symmetric clip. A z-score over fewer than two steps is 0 (the spread is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from igsearch.errors import IGSearchError

IG_NORMS = ("none", "group", "batch")


def _check_groups(n: int, group_size: int) -> None:
    if group_size < 1 or n % group_size:
        raise ValueError(f"batch of {n} rows is not divisible into groups of {group_size}")


def compute_grpo_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """Group-normalised outcome advantages.

    rewards: (B,) with B = n_groups * group_size, ordered group by group. Returns (B,) float32.
    A group whose rewards are all equal (or a group of one) gets 0, never NaN.
    """
    _check_groups(rewards.numel(), group_size)
    r = rewards.detach().to(torch.float32).reshape(-1, group_size)
    if group_size == 1:
        return torch.zeros(rewards.numel())
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=True, keepdim=True)
    return ((r - mean) / (std + eps)).reshape(-1)


def _zscore(values: Tensor, eps: float) -> Tensor:
    if values.numel() < 2:
        return torch.zeros_like(values)
    return (values - values.mean()) / (values.std(unbiased=True) + eps)


def normalize_step_ig(
    step_ig: Sequence[Sequence[float]],
    group_size: int,
    ig_norm: str = "none",
    ig_clip: float | None = None,
    eps: float = 1e-6,
) -> list[list[float]]:
    """Apply the IG normalisation (`none` | `group` | `batch`) and clip to per-rollout step lists.

    step_ig: B lists (one per rollout), each with one IG value per search step (may be empty).
    """
    if ig_norm not in IG_NORMS:
        raise IGSearchError(f"unknown ig_norm {ig_norm!r}; choose one of: {', '.join(IG_NORMS)}")
    _check_groups(len(step_ig), group_size)
    out = [torch.tensor(list(row), dtype=torch.float32) for row in step_ig]
    if ig_norm != "none":
        span = group_size if ig_norm == "group" else max(len(out), 1)
        for start in range(0, len(out), span):
            rows = out[start : start + span]
            flat = _zscore(torch.cat(rows) if rows else torch.zeros(0), eps)
            sizes = [r.numel() for r in rows]
            out[start : start + span] = list(torch.split(flat, sizes)) if sizes else []
    if ig_clip is not None:
        out = [r.clamp(-ig_clip, ig_clip) for r in out]
    return [r.tolist() for r in out]


def _check_rows(step_ig: Sequence, query_spans: Sequence, n: int) -> None:
    if len(step_ig) != n or len(query_spans) != n:
        raise ValueError(
            f"step_ig has {len(step_ig)} rows and query_spans {len(query_spans)}; expected one per rollout ({n})"
        )


def add_ig_to_advantages(
    base: Tensor,
    step_ig: Sequence[Sequence[float]],
    query_spans: Sequence[Sequence[tuple[int, int]]],
    response_len: int,
    alpha: float = 0.3,
) -> Tensor:
    """Broadcast Â_i (base: (B,)) to (B, response_len) and add α·ĨG_{i,t}/|Q_{i,t}| on query tokens.

    step_ig holds the already normalised ĨG values; steps with an empty span add nothing.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    _check_rows(step_ig, query_spans, base.numel())
    adv = base.to(torch.float32)[:, None].repeat(1, response_len)
    for i, (igs, spans) in enumerate(zip(step_ig, query_spans, strict=True)):
        if len(igs) != len(spans):
            raise ValueError(f"rollout {i}: {len(igs)} IG values for {len(spans)} query spans")
        for value, (start, end) in zip(igs, spans, strict=True):
            if not 0 <= start <= end <= response_len:
                raise ValueError(
                    f"rollout {i}: query span ({start}, {end}) outside response of {response_len}"
                )
            if end > start:
                adv[i, start:end] += alpha * value / (end - start)
    return adv


def compute_ig_advantages(
    rewards: Tensor,
    group_size: int,
    step_ig: Sequence[Sequence[float]],
    query_spans: Sequence[Sequence[tuple[int, int]]],
    response_len: int,
    alpha: float = 0.3,
    ig_norm: str = "none",
    ig_clip: float | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """IG-Search per-token advantages.

    rewards: (B,); step_ig[i][t] and query_spans[i][t] = [start, end) of step t's query tokens in
    rollout i's response. Returns (B, response_len) float32: Â_i everywhere, plus
    α·ĨG_{i,t}/|Q_{i,t}| on the query tokens of step t. Steps with an empty span add nothing.
    """
    base = compute_grpo_advantages(rewards, group_size, eps)
    ig = (
        normalize_step_ig(step_ig, group_size, ig_norm, ig_clip, eps)
        if len(step_ig) == base.numel()
        else step_ig
    )
    return add_ig_to_advantages(base, ig, query_spans, response_len, alpha)


@dataclass(frozen=True)
class Estimator:
    """A registered advantage estimator."""

    name: str
    """Registry name, used in configs."""
    counterfactual: str | None
    """How IG's counterfactual contexts are built: "random" documents, "empty", or None (no IG)."""
    description: str
    """One line for --help and reports."""
    label: str = ""
    """Short name in report tables and plots (the registry name when empty)."""

    @property
    def needs_ig(self) -> bool:
        return self.counterfactual is not None

    @property
    def display(self) -> str:
        return self.label or self.name


ESTIMATORS: dict[str, Estimator] = {
    "grpo": Estimator("grpo", None, "trajectory-level GRPO on exact match (Search-R1)", "GRPO"),
    "ig_grpo": Estimator(
        "ig_grpo", "random", "GRPO + information gain on query tokens (IG-Search)", "IG-Search"
    ),
    "ig_grpo_empty": Estimator(
        "ig_grpo_empty",
        "empty",
        "IG-Search ablation: counterfactual is an empty document block",
        "IG-Search (empty)",
    ),
}


def get_estimator(name: str) -> Estimator:
    """The registered estimator `name`; unknown names fail listing the valid ones."""
    if name not in ESTIMATORS:
        raise IGSearchError(
            f"unknown advantage estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}"
        )
    return ESTIMATORS[name]


def compute_advantages(
    estimator: str,
    rewards: Tensor,
    group_size: int,
    response_len: int,
    step_ig: Sequence[Sequence[float]] | None = None,
    query_spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    **ig_params: float | str | None,
) -> Tensor:
    """(B, response_len) advantages for any registered estimator (GRPO broadcasts Â_i)."""
    est = get_estimator(estimator)
    if not est.needs_ig:
        return compute_grpo_advantages(rewards, group_size)[:, None].repeat(1, response_len)
    if step_ig is None or query_spans is None:
        raise ValueError(f"estimator {estimator!r} needs step_ig and query_spans")
    return compute_ig_advantages(
        rewards, group_size, step_ig, query_spans, response_len, **ig_params
    )  # type: ignore[arg-type]
