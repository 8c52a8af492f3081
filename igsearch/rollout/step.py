"""One `CachedHFGenerator` call: prefill the new tokens onto the cached rows, then decode.

Layout of the call's buffers (columns): [0, P) each row's cached tokens, right aligned; [P, P + N)
the tokens appended since (left padded); then one column per decoded token. P and N are the
largest cached and new lengths of the batch; masked columns are holes that attention skips, and
position ids count each row's real tokens, so a row's states are those of its contiguous sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from igsearch.rollout.kv import BatchCache, RowCache
from igsearch.rollout.stops import StopWatch

if TYPE_CHECKING:
    from igsearch.rollout.engine import CachedHFGenerator


@dataclass(frozen=True)
class Sampling:
    """How a token is chosen from a row's logits, in `generate`'s order."""

    temperature: float
    """0 = greedy (argmax after `processor`); else the softmax temperature."""
    top_p: float
    """Nucleus mass kept when sampling (1 = all)."""
    processor: Any = None
    """A transformers LogitsProcessorList applied first, or None."""

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"temperature={self.temperature}, top_p={self.top_p}: use temperature >= 0 "
                "and 0 < top_p <= 1"
            )

    def choose(
        self, logits: torch.Tensor, ids: torch.Tensor | None, want_logprobs: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next token (b,) and its log-prob (b,) or None, from float32 `logits` (b, V)."""
        scores = logits
        if self.processor is not None:
            scores = self.processor(ids, logits.clone() if want_logprobs else logits)
        if self.temperature > 0:
            from transformers import TopPLogitsWarper

            if self.temperature != 1.0:
                scores = scores / self.temperature
            if self.top_p < 1.0:
                scores = TopPLogitsWarper(self.top_p)(ids, scores)
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        if not want_logprobs:
            return tokens, None
        scaled = logits / self.temperature if self.temperature > 0 else logits
        logprobs = torch.log_softmax(scaled, dim=-1).gather(1, tokens[:, None]).squeeze(1)
        return tokens, logprobs


class DecodeCall:
    """State of one call: the batch cache, each row's generated ids, and who is still running."""

    def __init__(
        self,
        owner: CachedHFGenerator,
        batch: list[list[int]],
        cached: list[RowCache | None],
        max_new_tokens: int,
        stops: StopWatch,
    ):
        self.model, self.stops, self.max_new = owner.model, stops, max_new_tokens
        self.eos, self.pad = owner.eos_token_ids, owner.pad_token_id
        self.compact_below = 0.0 if owner.logits_processor is not None else owner.compact_below
        self.device = owner.device
        self.batch, self.cached = batch, [len(c.ids) if c else 0 for c in cached]
        size = len(batch)
        width = max(self.cached)
        self.new_width = max(len(ids) - p for ids, p in zip(batch, self.cached, strict=True))
        layers = owner.model.config.num_hidden_layers
        self.kv = BatchCache(layers, size, width + self.new_width + max_new_tokens, self.device)
        self.kv.load(cached, width)
        self.order = list(range(size))  # call row of each batch row
        self.generated: list[list[int]] = [[] for _ in batch]
        self.logprobs: list[list[float]] = [[] for _ in batch]
        self.fed = [0] * size  # generated tokens whose states are cached
        self.done = [False] * size
        self.steps = 0  # decode forwards
        self.snapshots: list[RowCache | None] = [None] * size
        self.ids = self._processor_ids() if owner.logits_processor is not None else None

    def _processor_ids(self) -> torch.Tensor:
        """The (B, width) left-padded contexts a logits processor sees, as `generate` builds them."""
        width = max(len(ids) for ids in self.batch)
        rows = [[self.pad] * (width - len(ids)) + ids for ids in self.batch]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=self.kv.mask[:, : self.kv.length + ids.shape[1]],
            position_ids=positions,
            past_key_values=self.kv.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].to(dtype=torch.float32)

    def prefill(self) -> torch.Tensor:
        """Encode every row's new tokens in one forward; float32 logits (B, V) of their last."""
        n_new, start = self.new_width, self.kv.length
        ids = [[self.pad] * n_new for _ in self.batch]
        pos = [[1] * n_new for _ in self.batch]
        for i, (row, p) in enumerate(zip(self.batch, self.cached, strict=True)):
            new = row[p:]
            ids[i][n_new - len(new) :] = new
            pos[i][n_new - len(new) :] = range(p, len(row))
            self.kv.mask[i, start + n_new - len(new) : start + n_new] = 1
        self.kv.positions = torch.tensor([len(r) for r in self.batch], device=self.device)
        to = dict(dtype=torch.long, device=self.device)
        return self._forward(torch.tensor(ids, **to), torch.tensor(pos, **to))

    def _record(self, tokens: list[int], logprobs: list[float] | None) -> None:
        for b, i in enumerate(self.order):
            if self.done[i]:
                continue
            self.generated[i].append(tokens[b])
            if logprobs is not None:
                self.logprobs[i].append(logprobs[b])
            if tokens[b] in self.eos or self.stops.ends(self.generated[i]):
                self.done[i] = True

    def _compact(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop finished rows from the batch once few enough run; their caches are kept."""
        keep = [b for b, i in enumerate(self.order) if not self.done[i]]
        if len(keep) > self.compact_below * len(self.order):
            return tokens
        for b, i in enumerate(self.order):
            if self.done[i]:
                self.snapshots[i] = self.kv.snapshot(b)
        self.kv.select(keep)
        self.order = [self.order[b] for b in keep]
        return tokens[torch.tensor(keep, device=tokens.device)]

    def _feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per batch row (a pad, masked, for finished rows); next logits."""
        running = torch.tensor([not self.done[i] for i in self.order], device=self.device)
        self.kv.mask[:, self.kv.length] = running.long()
        ids = torch.where(running, tokens, torch.full_like(tokens, self.pad))
        positions = self.kv.positions[:, None].clone()
        self.kv.positions += running.long()
        for i in self.order:
            self.fed[i] += not self.done[i]
        self.steps += 1
        return self._forward(ids[:, None], positions)

    def run(self, sampling: Sampling, want_logprobs: bool = True) -> None:
        """Decode up to max_new_tokens per row; fills generated, logprobs, fed and snapshots."""
        logits = self.prefill()
        for step in range(self.max_new):
            tokens, logprobs = sampling.choose(logits, self.ids, want_logprobs)
            listed = tokens.tolist()
            self._record(listed, logprobs.tolist() if logprobs is not None else None)
            if self.ids is not None:
                pads = [self.pad if self.done[i] and len(self.generated[i]) <= step else t
                        for i, t in zip(self.order, listed, strict=True)]  # fmt: skip
                self.ids = torch.cat([self.ids, torch.tensor(pads, device=self.device)[:, None]], 1)
            if step == self.max_new - 1 or all(self.done[i] for i in self.order):
                break
            if self.compact_below > 0:
                tokens = self._compact(tokens)
            logits = self._feed(tokens)
        for b, i in enumerate(self.order):
            self.snapshots[i] = self.kv.snapshot(b)
