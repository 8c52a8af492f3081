"""Answer scores s(C) under the rollout policy π_old: the model calls behind information gain.

A `ScoreRequest` is one search step: the shared prefix (prompt + response up to the start of the
step's information block), the candidate blocks (the real one first, then the counterfactuals) and
the answer continuations (answer prefix + alias tokens, one per gold alias). The score of block b
and alias a is the weighted mean log-probability of the alias tokens after prefix + block + answer
prefix, with contexts left-truncated to `max_context` tokens.

Two paths compute the same numbers:
- `score_reference`: one full forward pass per (block, alias) context, no padding, no cache. Slow
  and obviously right; the tests pin the fast path to it (1e-4).
- `score`: plans every (request, block, alias) row of all requests first (igsearch.rewards.
  score_plan), then runs as few forward passes as the token budget allows:
  1. Prefix sharing. A step's real context (prefix + real block) is a prefix of the next step's
     prefix, so the steps of one trajectory form a chain: one forward over the chain's longest
     context (its root) gives the key/value cache of every step's prefix, cropped per row. A row
     starts after its longest common prefix with the root: a real block is all cached (only the
     answer is encoded), a counterfactual block shares the opening tag with the real one.
  2. Batching. Roots of equal length run together, unpadded, so attention takes its causal
     fast path. The rows' remaining tokens run as left-padded batches over the gathered, cropped
     caches with explicit position ids and attention masks; a batch keeps to one width bucket
     (so little padding is computed) and holds at most `max_batch_tokens` key/value positions
     (rows × (cached + new)), which bounds memory (a longer row or root runs alone). The gathered
     cache has room for the new tokens, written in place. Identical rows run once.
  3. Truncation. A row longer than `max_context` is left-truncated, which shifts its positions,
     so it cannot use its trajectory's cache: its truncated context becomes a root of its own.
  Only the logits of answer positions are computed. Models whose cache is not a plain per-layer
  key/value store (sliding-window or recurrent layers) fall back to the reference path.

`tokens_encoded` counts the real tokens fed through the model, `padding_tokens` the padding beside
them, `forward_passes` the calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from igsearch.rewards.info_gain import answer_weights, best_alias, weighted_answer_score
from igsearch.rewards.score_plan import Job, Row, ScorePlan, plan_scoring


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


KV = list[tuple[Tensor, Tensor]]
"""Per layer (keys, values), each (batch, kv_heads, positions, head_dim)."""


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout, caches allowed under gradient checkpointing), then restore."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _PresizedLayer(DynamicLayer):
    """A cache layer whose buffers already have room for the new tokens: `update` writes them in
    place after the `filled` past positions instead of concatenating (one copy less per layer)."""

    def __init__(self, keys: Tensor, values: Tensor, filled: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values, self.filled = keys, values, filled

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        end = self.filled + key_states.shape[-2]
        self.keys[:, :, self.filled : end] = key_states
        self.values[:, :, self.filled : end] = value_states
        self.filled = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.filled


def _presized_cache(kv: KV, filled: int) -> DynamicCache:
    """A DynamicCache over buffers (R, kv_heads, filled + new, head_dim) whose first `filled`
    positions hold the past."""
    cache = DynamicCache()
    cache.layers.extend(_PresizedLayer(k, v, filled) for k, v in kv)
    return cache


WIDTH_STEP = 16
"""Jobs whose new-token widths fall in the same WIDTH_STEP bucket are batched together."""


def _bucket(job: Job) -> int:
    return len(job.suffix) // WIDTH_STEP


def _equal_length_groups(plan: ScorePlan, roots: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Roots of equal length, in groups of at most `budget` tokens (one root at least)."""
    by_length: dict[int, list[int]] = {}
    for r in roots:
        by_length.setdefault(len(plan.roots[r]), []).append(r)
    for length, group in by_length.items():
        per = max(1, budget // max(length, 1))
        for i in range(0, len(group), per):
            yield group[i : i + per]


def _answer_weight_rows(jobs: Sequence[Job], width: int, first: int, weight: float) -> Tensor:
    """(R, width) weights of the last `width` predicted tokens of each row (0 outside its alias)."""
    w = torch.zeros(len(jobs), width)
    for i, job in enumerate(jobs):
        w[i, width - job.n_alias :] = answer_weights(job.n_alias, first, weight)
    return w


class AnswerScorer:
    """Computes s(C) for batches of `ScoreRequest`s with a causal LM (no gradient)."""

    def __init__(
        self,
        model: torch.nn.Module,
        max_context: int = 4096,
        first_tokens: int = 3,
        first_weight: float = 3.0,
        max_batch_tokens: int = 16384,
        temperature: float = 1.0,
    ):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        if temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 (the sampling temperature of the policy), got {temperature}"
            )
        self.model = model
        self.temperature = temperature
        """Logits are divided by it: s(C) scores the answer under the policy that sampled the rollouts."""
        self.max_context = max_context
        self.first_tokens = first_tokens
        self.first_weight = first_weight
        self.max_batch_tokens = max_batch_tokens
        """Key/value positions one forward may hold: rows × (cached + new tokens)."""
        self.tokens_encoded = 0
        """Real (non-padding) tokens run through the model so far (a cost measure for benchmarks)."""
        self.padding_tokens = 0
        """Padding positions run beside them by the batched path."""
        self.forward_passes = 0
        """Model calls so far."""
        self._cache_ok = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _alias_score(self, logprobs: Tensor) -> Tensor:
        return weighted_answer_score(
            logprobs,
            answer_weights(logprobs.numel(), self.first_tokens, self.first_weight).to(logprobs),
        )

    # -- reference path ---------------------------------------------------------------------------

    @torch.no_grad()
    def score_reference(self, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """(n_blocks, n_aliases) scores per request, one full forward per context."""
        out = []
        with _eval_mode(self.model):
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
        self.forward_passes += 1
        logits = self.model(input_ids=x).logits[0, -n_alias - 1 : -1].float() / self.temperature
        lp = torch.log_softmax(logits, -1).gather(-1, x[0, -n_alias:, None]).squeeze(-1)
        return self._alias_score(lp).cpu()

    # -- fast path --------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, requests: Sequence[ScoreRequest]) -> list[Tensor]:
        """(n_blocks, n_aliases) scores per request, as `score_reference` computes them, with shared
        prefixes encoded once and rows batched under `max_batch_tokens` (see the module docstring)."""
        if not self._cache_ok:
            return self.score_reference(requests)
        plan = plan_scoring(
            [(r.prefix, r.blocks, r.answers, r.alias_starts) for r in requests], self.max_context
        )
        with _eval_mode(self.model):
            job_scores = self._run_plan(plan)
            if job_scores is None:  # the model's cache cannot be cropped and gathered
                self._cache_ok = False
                return self.score_reference(requests)
            alone = {row.slot: self._score_row(row) for row in plan.uncached}
        out = [torch.empty(len(r.blocks), len(r.answers)) for r in requests]
        for (r, b, a), j in plan.job_of.items():
            out[r][b, a] = job_scores[j]
        for (r, b, a), s in alone.items():
            out[r][b, a] = s
        return out

    def _score_row(self, row: Row) -> Tensor:
        return self._score_one(row.ids[: -row.n_alias], row.ids[-row.n_alias :], 0)

    def _run_plan(self, plan: ScorePlan) -> Tensor | None:
        """Scores of every job: a window of roots is encoded, then its jobs run in packed groups."""
        scores = torch.zeros(len(plan.jobs))
        jobs_of_root: dict[int, list[int]] = {}
        for j, job in enumerate(plan.jobs):
            jobs_of_root.setdefault(job.root, []).append(j)
        for window in self._root_windows(plan, sorted(jobs_of_root)):
            kv_of: dict[int, KV] = {}
            for group in _equal_length_groups(plan, window, self.max_batch_tokens):
                kvs = self._encode_roots([plan.roots[r] for r in group])
                if kvs is None:
                    return None
                kv_of.update(zip(group, kvs, strict=True))
            todo = [j for r in window for j in jobs_of_root[r]]
            for batch in self._job_batches([plan.jobs[j] for j in todo], todo):
                scores[batch] = self._continue(kv_of, [plan.jobs[j] for j in batch])
        return scores

    def _root_windows(self, plan: ScorePlan, roots: list[int]) -> Iterator[list[int]]:
        """Roots, longest first, in windows of at most `max_batch_tokens` tokens (one root at least):
        a window's caches are held while its jobs run."""
        window: list[int] = []
        size = 0
        for r in sorted(roots, key=lambda r: len(plan.roots[r]), reverse=True):
            if window and size + len(plan.roots[r]) > self.max_batch_tokens:
                yield window
                window, size = [], 0
            window.append(r)
            size += len(plan.roots[r])
        if window:
            yield window

    def _job_batches(self, jobs: Sequence[Job], ids: Sequence[int]) -> Iterator[list[int]]:
        """Jobs packed under the budget. A batch holds one width bucket (new tokens // WIDTH_STEP),
        sorted by cached length, so that little padding is computed."""
        order = sorted(range(len(jobs)), key=lambda i: (_bucket(jobs[i]), jobs[i].cached))
        batch: list[int] = []
        bucket = cached = width = 0
        for i in order:
            c, w = max(cached, jobs[i].cached), max(width, len(jobs[i].suffix))
            full = (len(batch) + 1) * (c + w) > self.max_batch_tokens
            if batch and (full or _bucket(jobs[i]) != bucket):
                yield batch
                batch, c, w = [], jobs[i].cached, len(jobs[i].suffix)
            batch.append(ids[i])
            bucket, cached, width = _bucket(jobs[i]), c, w
        if batch:
            yield batch

    def _encode_roots(self, roots: Sequence[Sequence[int]]) -> list[KV] | None:
        """Keys and values of equal-length roots, one KV per root (None when the model's cache is not
        plain per-layer keys and values). No padding, so attention takes its causal fast path."""
        ids = torch.tensor([list(r) for r in roots], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.tokens_encoded += ids.numel()
        self.forward_passes += 1
        layers = getattr(getattr(out, "past_key_values", None), "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None
        return [
            [(layer.keys[i : i + 1], layer.values[i : i + 1]) for layer in layers]
            for i in range(len(roots))
        ]

    def _gather_past(self, kv_of: dict[int, KV], jobs: Sequence[Job], past: int, width: int) -> KV:
        """Per layer (R, kv_heads, past + width, head_dim) buffers: each job's root cache cut to its
        cached length, zeros up to `past` (masked, but it must be finite), room for `width` new."""
        out = []
        for layer, (k0, v0) in enumerate(kv_of[jobs[0].root]):
            keys = k0.new_empty(len(jobs), k0.shape[1], past + width, k0.shape[3])
            values = v0.new_empty(len(jobs), v0.shape[1], past + width, v0.shape[3])
            for i, job in enumerate(jobs):
                k, v = kv_of[job.root][layer]
                keys[i, :, : job.cached] = k[0, :, : job.cached]
                values[i, :, : job.cached] = v[0, :, : job.cached]
                keys[i, :, job.cached : past] = 0
                values[i, :, job.cached : past] = 0
            out.append((keys, values))
        return out

    def _continue(self, kv_of: dict[int, KV], jobs: Sequence[Job]) -> Tensor:
        """Scores of jobs whose first `cached` tokens come from their root's cache: one forward over
        the left-padded suffixes, with explicit positions and a mask hiding each row's unused past."""
        dev, n = self.device, len(jobs)
        past, width = max(j.cached for j in jobs), max(len(j.suffix) for j in jobs)
        ids = torch.zeros(n, width, dtype=torch.long)
        mask = torch.zeros(n, past + width, dtype=torch.long)
        pos = torch.empty(n, width, dtype=torch.long)
        for i, job in enumerate(jobs):
            pad = width - len(job.suffix)
            ids[i, pad:] = torch.tensor(job.suffix)
            mask[i, : job.cached] = 1
            mask[i, past + pad :] = 1
            pos[i] = job.cached + (torch.arange(width) - pad).clamp(min=0)
        keep = max(j.n_alias for j in jobs) + 1
        logits = (
            self.model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos.to(dev),
                past_key_values=_presized_cache(self._gather_past(kv_of, jobs, past, width), past),
                use_cache=True,
                logits_to_keep=keep,
            )
            .logits[:, :-1]
            .float()
            / self.temperature
        )
        real = sum(len(j.suffix) for j in jobs)
        self.tokens_encoded += real
        self.padding_tokens += ids.numel() - real
        self.forward_passes += 1
        targets = ids[:, width - keep + 1 :].to(dev)
        token_lp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
        w = _answer_weight_rows(jobs, keep - 1, self.first_tokens, self.first_weight).to(dev)
        token_lp = torch.where(w > 0, token_lp, torch.zeros_like(token_lp))
        return ((token_lp * w).sum(-1) / w.sum(-1)).cpu()
