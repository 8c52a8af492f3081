"""Answer scores s(C) under the rollout policy π_old: the model calls behind information gain.

A `ScoreRequest` is one search step: the shared prefix (prompt + response up to the start of the
step's information block), the candidate blocks (the real one first, then the counterfactuals) and
the answer continuations (answer prefix + alias tokens, one per gold alias). The score of block b
and alias a is the weighted mean log-probability of the alias tokens after prefix + block + answer
prefix, with contexts left-truncated to `max_context` tokens.

Two paths compute the same numbers:
- `score_reference`: one full forward pass per (block, alias) context. Slow and obviously right;
  the tests pin the fast path to it (1e-4).
- `score`: one forward pass over the prefix, then its key/value cache is repeated for all
  (block, alias) continuations, which run as one left-padded batch keeping logits only for the
  answer positions. Rows whose context would exceed `max_context` go through the reference path
  (their truncation shifts positions, so the cache does not apply).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from igsearch.rewards.info_gain import answer_weights, best_alias, weighted_answer_score


@dataclass(frozen=True)
class ScoreRequest:
    """One search step to score."""

    prefix: Sequence[int]
    """Token ids before the step's information block (prompt + response so far)."""
    blocks: Sequence[Sequence[int]]
    """Information blocks: the real one first, then the counterfactuals."""
    answers: Sequence[Sequence[int]]
    """One continuation per gold alias: answer prefix ids + alias ids."""
    alias_starts: Sequence[int]
    """Where the alias tokens start inside each continuation (= answer prefix length)."""


def ig_from_scores(scores: Tensor) -> float:
    """IG of one step from its (n_blocks, n_aliases) scores: the best real alias, real − mean(cf)."""
    a = best_alias(scores[0].tolist())
    return float(scores[0, a] - scores[1:, a].mean())


class AnswerScorer:
    """Computes s(C) for batches of `ScoreRequest`s with a causal LM (no gradient)."""

    def __init__(
        self,
        model: torch.nn.Module,
        max_context: int = 4096,
        first_tokens: int = 3,
        first_weight: float = 3.0,
    ):
        self.model = model
        self.max_context = max_context
        self.first_tokens = first_tokens
        self.first_weight = first_weight
        self.tokens_encoded = 0
        """Tokens run through the model so far (a cost measure for benchmarks)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _alias_score(self, logprobs: Tensor) -> Tensor:
        return weighted_answer_score(
            logprobs,
            answer_weights(logprobs.numel(), self.first_tokens, self.first_weight).to(logprobs),
        )

    @torch.no_grad()
    def score_reference(self, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """(n_blocks, n_aliases) scores per request, one full forward per context."""
        out = []
        for req in requests:
            scores = torch.empty(len(req.blocks), len(req.answers))
            for b, block in enumerate(req.blocks):
                for a, (answer, start) in enumerate(
                    zip(req.answers, req.alias_starts, strict=True)
                ):
                    scores[b, a] = self._score_one(
                        list(req.prefix) + list(block), list(answer), start
                    )
            out.append(scores)
        return out

    def _score_one(self, context: list[int], answer: list[int], alias_start: int) -> Tensor:
        ids = (context + answer)[-self.max_context :]
        n_alias = len(answer) - alias_start
        if n_alias <= 0 or len(ids) <= n_alias:
            raise ValueError(
                f"max_context {self.max_context} leaves no context before the {n_alias} answer tokens"
            )
        x = torch.tensor([ids], device=self.device)
        self.tokens_encoded += len(ids)
        logits = self.model(input_ids=x).logits[0, -n_alias - 1 : -1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[0, -n_alias:, None]).squeeze(-1)
        return self._alias_score(lp).cpu()

    @torch.no_grad()
    def score(self, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """(n_blocks, n_aliases) scores per request; the prefix is encoded once per request."""
        return [self._score_cached(req) for req in requests]

    def _score_cached(self, req: ScoreRequest) -> Tensor:
        prefix = list(req.prefix)
        conts, slots = [], []
        for b, block in enumerate(req.blocks):
            for a, (answer, start) in enumerate(zip(req.answers, req.alias_starts, strict=True)):
                conts.append((list(block) + list(answer), len(answer) - start))
                slots.append((b, a))
        scores = torch.empty(len(req.blocks), len(req.answers))
        fits = [i for i, (c, _) in enumerate(conts) if len(prefix) + len(c) <= self.max_context]
        for i in set(range(len(conts))) - set(fits):
            b, a = slots[i]
            scores[b, a] = self._score_one(
                prefix + list(req.blocks[b]), list(req.answers[a]), req.alias_starts[a]
            )
        if fits and prefix:
            for i, s in zip(
                fits, self._continuations(prefix, [conts[i] for i in fits]), strict=True
            ):
                scores[slots[i]] = s
        elif fits:  # no prefix to cache
            for i in fits:
                b, a = slots[i]
                scores[b, a] = self._score_one(
                    list(req.blocks[b]), list(req.answers[a]), req.alias_starts[a]
                )
        return scores

    def _continuations(self, prefix: list[int], conts: list[tuple[list[int], int]]) -> list[Tensor]:
        """Scores of continuations after one cached prefix, as one left-padded batch."""
        dev, p, m = self.device, len(prefix), len(conts)
        out = self.model(input_ids=torch.tensor([prefix], device=dev), use_cache=True)
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(m)
        width = max(len(c) for c, _ in conts)
        ids = torch.zeros(m, width, dtype=torch.long, device=dev)
        mask = torch.ones(m, p + width, dtype=torch.long, device=dev)
        pos = torch.empty(m, width, dtype=torch.long, device=dev)
        for i, (c, _) in enumerate(conts):
            pad = width - len(c)
            ids[i, pad:] = torch.tensor(c, device=dev)
            mask[i, p : p + pad] = 0
            pos[i] = p + (torch.arange(width, device=dev) - pad).clamp(min=0)
        keep = max(n for _, n in conts) + 1
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            logits_to_keep=keep,
        ).logits.float()
        self.tokens_encoded += p + sum(len(c) for c, _ in conts)
        scores = []
        for i, (_, n) in enumerate(conts):
            lp = torch.log_softmax(logits[i, keep - n - 1 : keep - 1], -1)
            scores.append(
                self._alias_score(lp.gather(-1, ids[i, width - n :, None]).squeeze(-1)).cpu()
            )
        return scores
