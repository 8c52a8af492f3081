"""A Hugging Face rollout backend that keeps each row's key/value cache across turns.

`HFGenerator` calls `model.generate` on every row's whole context at every turn, so a rollout of
T turns encodes its prompt T times and each inserted block T - t times. `CachedHFGenerator` takes
the same calls (token-id contexts in, each row's new ids out) and keeps, after each call, every
row's keys and values (`igsearch.rollout.kv`). A context that extends a row of the previous call
(prompt + turns + the block the loop inserted) reuses that row's cache: only the new tokens are
prefilled, once, and then decoded one token at a time into in-place buffers. Rows that finish
leave the decode batch (compaction, without re-encoding anyone) once a quarter of it is done, and
rows that leave the rollout are simply not asked for again. Stop strings are detected
incrementally (`igsearch.rollout.stops.StopWatch`), not by decoding every row's tail at each token.

Equivalence with `HFGenerator` (what tests pin): same cut after the first stop string or EOS
(`cut_turn`), same stop step, same logits processing order (custom `logits_processor`, then
temperature, then nucleus `top_p`, all in float32), same per-call seeding inside
`torch.random.fork_rng`. Greedy outputs are the same ids up to floating-point ties (the cached
states are computed in other batch shapes than a full re-encoding). With temperature > 0 draws
are reproducible for a given seed and batch history, but are not the draws `HFGenerator` makes:
the decode batch shrinks as rows finish, which changes how the RNG stream is consumed.

Where a cache is reused: only when its token ids are an exact prefix of the new context and the
model's parameters have not changed since (every parameter's storage and version counter are
compared, so an optimiser step or `load_state_dict` invalidates everything). Neither backend
truncates a context: the rollout loop keeps contexts within `max_context_tokens` (a row without
room left stops), so both see the same contexts. Sliding-window attention is refused (buffers
have holes, so a window counted in columns would not be one counted in tokens). A custom
`logits_processor` sees, as with `generate`, the padded (B, width + step) ids of the whole call,
so rows are not compacted within a call when one is set.

transformers' continuous-batching manager also shares prefixes between requests, but it runs a
background scheduler with paged blocks and per-request sampling; this module keeps the rollout
loop's synchronous, seeded, batch-per-turn contract instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from igsearch.errors import IGSearchError
from igsearch.rollout.backends import HFGenerator, bind_policy
from igsearch.rollout.kv import RowCache
from igsearch.rollout.step import DecodeCall, Sampling
from igsearch.rollout.stops import StopWatch
from igsearch.tokens import cut_turn

_WATCHES: dict[tuple, StopWatch] = {}


def stop_watch(tokenizer: Any, stop_strings: tuple[str, ...], vocab_size: int) -> StopWatch:
    """A StopWatch, built once per tokenizer and stop strings (it decodes the vocabulary once;
    the trainer builds a generator per step)."""
    key = (id(tokenizer), len(tokenizer), stop_strings, vocab_size)
    watch = _WATCHES.get(key)
    if watch is None or watch.tokenizer is not tokenizer:
        if len(_WATCHES) >= 8:
            _WATCHES.clear()
        watch = _WATCHES[key] = StopWatch(tokenizer, stop_strings, vocab_size)
    return watch


def _check_attention(config: Any) -> None:
    types = getattr(config, "layer_types", None) or []
    sliding = any(t != "full_attention" for t in types) or (
        not types
        and getattr(config, "sliding_window", None) is not None
        and getattr(config, "use_sliding_window", True)
    )
    if sliding:
        raise IGSearchError(
            f"CachedHFGenerator: {type(config).__name__} uses sliding-window or non-standard "
            "attention layers, which its buffers do not support; use HFGenerator"
        )


class CachedHFGenerator:
    """Batched decoding with per-row key/value caches kept across calls; CPU or GPU.

    Arguments are those of `HFGenerator`. `compact_below`: rows that finished leave the decode
    batch once the running rows are at most this share of it (1.0: at every finish; 0: never).
    Memory: the last call's buffers (every row's keys and values) stay alive until the next call
    or `reset()`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: Any = None,
        logits_processor: Any = None,
        compact_below: float = 0.75,
    ):
        if not 0.0 <= compact_below <= 1.0:
            raise IGSearchError(f"compact_below={compact_below}: use a share between 0 and 1")
        _check_attention(model.config)
        bind_policy(self, model, tokenizer, device)
        self.logits_processor = logits_processor
        self.compact_below = compact_below
        self._rows: list[RowCache] = []
        self._weights: tuple = ()
        self.counts = {"prefilled": 0, "reused": 0, "decode_steps": 0}
        """Tokens encoded by prefills, tokens whose cached states were reused, decode forwards."""

    def reset(self) -> None:
        """Drop every cached row (their memory is freed; the next call prefills from scratch)."""
        self._rows, self._weights = [], ()

    def generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """New ids per row, cut after the first stop string or EOS (see the module docstring)."""
        args = (batch, max_new_tokens, stop_strings, temperature, top_p, seed)
        return self._generate(*args, want_logprobs=False)[0]

    def generate_with_logprobs(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """`generate`'s ids and, per id, its sampling log-probability.

        The log-probability is the log-softmax of the model's logits divided by the temperature
        (undivided when greedy), before `logits_processor` and `top_p`: the policy's own
        probability of the token, as a policy-gradient loss computes it.
        """
        args = (batch, max_new_tokens, stop_strings, temperature, top_p, seed)
        return self._generate(*args, want_logprobs=True)

    def _generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str],
        temperature: float,
        top_p: float,
        seed: int,
        want_logprobs: bool,
    ) -> tuple[list[list[int]], list[list[float]]]:
        if not batch:
            return [], []
        if any(not ids for ids in batch):
            raise IGSearchError(
                "CachedHFGenerator.generate: every context needs at least one token"
            )
        batch = [list(ids) for ids in batch]
        cached = self._match(batch)
        self._rows = []  # the matched rows are in `cached`; the rest are freed
        sampling = Sampling(temperature, top_p, self.logits_processor)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            call = DecodeCall(self, batch, cached, max_new_tokens, self._watch(stop_strings))
            call.run(sampling, want_logprobs)
        reused = sum(call.cached)
        self.counts["reused"] += reused
        self.counts["prefilled"] += sum(map(len, batch)) - reused
        self.counts["decode_steps"] += call.steps
        outs, logprobs, rows = [], [], []
        for i, ids in enumerate(batch):
            cut = cut_turn(self.tokenizer, call.generated[i], stop_strings, self.eos_token_ids)[0]
            outs.append(cut)
            logprobs.append(call.logprobs[i][: len(cut)])
            kept = min(len(cut), call.fed[i])
            rows.append(call.snapshots[i].bind(ids + cut[:kept]))
        self._rows, self._weights = rows, self._weights_key()
        return outs, logprobs

    def _watch(self, stop_strings: Sequence[str]) -> StopWatch:
        vocab = int(getattr(self.model.config, "vocab_size", 0) or 0)
        return stop_watch(self.tokenizer, tuple(stop_strings), vocab)

    def _weights_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def _match(self, batch: list[list[int]]) -> list[RowCache | None]:
        """For each context, a cached row whose ids are a prefix of it (at least one id left)."""
        rows = self._rows if self._rows and self._weights == self._weights_key() else []
        used, start, out = [False] * len(rows), 0, []
        for ids in batch:
            found = None
            for j in [*range(start, len(rows)), *range(start)]:
                r = rows[j].ids
                n = len(r)
                if used[j] or not n or n > len(ids) or ids[n - 1] != r[-1] or ids[0] != r[0]:
                    continue
                if ids[:n] == r:
                    found = j
                    break
            if found is None:
                out.append(None)
                continue
            used[found], start = True, found + 1
            row = rows[found]
            out.append(row if len(row.ids) < len(ids) else row.bind(ids[:-1]))
        return out


def hf_generator(
    model: Any,
    tokenizer: Any,
    device: Any = None,
    logits_processor: Any = None,
    cached: bool | None = None,
) -> CachedHFGenerator | HFGenerator:
    """The Hugging Face backend to roll out with: `CachedHFGenerator` on CPU, `HFGenerator` else.

    `cached` forces the choice (True: the cached engine on any device; False: the reference
    `HFGenerator`, which calls `model.generate` on whole contexts).
    """
    if cached is None:
        target = torch.device(device) if device is not None else next(model.parameters()).device
        cached = target.type == "cpu"
    cls = CachedHFGenerator if cached else HFGenerator
    return cls(model, tokenizer, device=device, logits_processor=logits_processor)
