"""Information gain math (pure): counterfactual document sets, answer weights, IG per step.

  C_t^real    = the rollout's own prefix through the end of step t's information block
  C_t^rand,j  = the same prefix with step t's documents replaced by document set j (j = 1..N)
  s(C)        = Σ_k w_k log π_old(a_k | C, a_<k) / Σ_k w_k     (w_k = 3 for k ≤ 3, else 1)
  IG_{i,t}    = s(C_t^real) − (1/N) Σ_j s(C_t^rand,j)

Counterfactual sets are drawn with a seeded RNG from the documents retrieved in the same batch for
*other* questions, each set as large as the real one; when that pool is too small the rest comes
from random corpus documents. The `empty` variant (the paper's ablation) uses one empty set.

Departure from the paper's released fragment: its context keeps only the search, document and
refine blocks; igsearch scores the rollout's natural prefix instead. That is what the policy saw,
and it lets the scorer reuse the trajectory's key/value cache up to the step's documents.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from igsearch.errors import IGSearchError

D = TypeVar("D")
COUNTERFACTUALS = ("random", "empty")
Fallback = Callable[[np.random.Generator, int, frozenset[Hashable]], Sequence[D]]
"""fallback(rng, n, exclude): n distinct random corpus documents, none whose key is in exclude."""


@dataclass(frozen=True)
class StepDocs(Generic[D]):
    """The documents one search step retrieved, and the question (group) it belongs to."""

    question: Hashable
    """Key of the step's question: documents retrieved for it never serve as its counterfactual."""
    docs: Sequence[D]
    """The real documents, in rank order."""


def _doc_key(doc: object) -> Hashable:
    return getattr(doc, "id", doc)  # type: ignore[return-value]


def sample_counterfactuals(
    steps: Sequence[StepDocs[D]],
    n_sets: int = 3,
    seed: int = 0,
    kind: str = "random",
    fallback: Fallback[D] | None = None,
) -> list[list[list[D]]]:
    """Counterfactual document sets for every step: result[s][j] is set j of step s.

    `random`: each set has as many documents as the step's real set, drawn without replacement
    from the batch pool of documents retrieved for other questions (deduplicated by `.id`,
    excluding the step's own documents); when the pool is too small, `fallback(rng, n, exclude)`
    supplies n distinct random corpus documents whose keys are not in `exclude` (the step's own
    documents, every document retrieved for the step's question, and the pool documents already
    in the set). The RNG of step s is seeded by (seed, s), so a step's sets do not depend
    on how many steps precede it in other rows. `empty`: one empty set per step.
    """
    if kind not in COUNTERFACTUALS:
        raise IGSearchError(
            f"unknown counterfactual {kind!r}; choose one of: {', '.join(COUNTERFACTUALS)}"
        )
    if kind == "empty":
        return [[[]] for _ in steps]
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    pool: dict[Hashable, tuple[Hashable, D]] = {}
    for step in steps:
        for doc in step.docs:
            pool.setdefault(_doc_key(doc), (step.question, doc))
    out = []
    for s, step in enumerate(steps):
        rng = np.random.default_rng([seed, s])
        own = {_doc_key(d) for d in step.docs}
        same = {key for key, (q, _) in pool.items() if q == step.question}
        candidates = [d for key, (q, d) in pool.items() if q != step.question and key not in own]
        exclude = frozenset(own | same | {_doc_key(d) for d in candidates})
        out.append(
            [_draw(candidates, len(step.docs), rng, fallback, exclude) for _ in range(n_sets)]
        )
    return out


def _draw(
    candidates: Sequence[D],
    k: int,
    rng: np.random.Generator,
    fallback: Fallback[D] | None,
    exclude: frozenset[Hashable],
) -> list[D]:
    if k == 0:
        return []
    if len(candidates) >= k:
        return [candidates[i] for i in rng.choice(len(candidates), size=k, replace=False)]
    if fallback is None:
        raise IGSearchError(
            f"only {len(candidates)} documents from other questions in this batch but {k} are needed; "
            "pass a corpus fallback or use a larger batch"
        )
    return list(candidates) + list(fallback(rng, k - len(candidates), exclude))


def answer_weights(length: int, first: int = 3, weight: float = 3.0) -> Tensor:
    """(length,) weights w_k: `weight` for the first `first` answer tokens, 1 after."""
    w = torch.ones(length)
    w[:first] = weight
    return w


def weighted_answer_score(token_logprobs: Tensor, weights: Tensor) -> Tensor:
    """s(C) = Σ_k w_k lp_k / Σ_k w_k. token_logprobs, weights: (..., L) -> (...)."""
    return (token_logprobs * weights).sum(-1) / weights.sum(-1)


def information_gain(real: Tensor, counterfactual: Tensor) -> Tensor:
    """IG = s_real − mean_j s_rand_j. real: (S,), counterfactual: (S, N) -> (S,)."""
    return real - counterfactual.mean(dim=-1)


def best_alias(real_scores: Sequence[float]) -> int:
    """Index of the gold alias with the highest real-context score (used for its counterfactuals too)."""
    if not real_scores:
        raise ValueError("no gold alias to score")
    return int(np.argmax(np.asarray(real_scores)))
