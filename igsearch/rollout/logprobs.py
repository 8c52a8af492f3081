"""Sampling log-probs of rollouts: which log-probability each generated token had when sampled.

`LogprobRecorder` wraps a generator for `run_rollouts`: it asks the backend for ids *and* their
log-probs (`generate_with_logprobs`, which HFGenerator and VLLMGenerator provide) and remembers
them by context. `response_logprobs` then reads, for every response token of a trajectory, the
recorded log-prob of a generated token, or None for inserted tokens and for generated tokens the
backend did not report (e.g. the EOS the loop appends after an answer). TRL reads None as "no
sampling log-prob" and applies no importance correction to that token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class LogprobRecorder:
    """A Generator that forwards to `inner` and records each turn's sampling log-probs."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.eos_token_ids = getattr(inner, "eos_token_ids", None)
        self.records: dict[tuple[int, ...], list[tuple[list[int], list[float]]]] = {}
        self.reports = hasattr(inner, "generate_with_logprobs")
        """Whether the backend reports log-probs at all."""

    def generate(
        self,
        batch: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """The inner generator's ids; their log-probs are recorded under each row's context."""
        args = (batch, max_new_tokens, stop_strings, temperature, top_p, seed)
        if not self.reports:
            return self.inner.generate(*args)
        ids, logprobs = self.inner.generate_with_logprobs(*args)
        for context, row, lp in zip(batch, ids, logprobs, strict=True):
            self.records.setdefault(tuple(context), []).append((list(row), list(lp)))
        return ids

    def response_logprobs(self, traj: Any) -> list[float | None]:
        """One entry per response token of `traj` (see the module docstring)."""
        out: list[float | None] = [None] * len(traj.response_ids)
        for seg in traj.segments:
            if seg.inserted:
                continue
            context = tuple(traj.prompt_ids + traj.response_ids[: seg.start])
            ids = traj.response_ids[seg.start : seg.end]
            matches = [(_common_prefix(row, ids), lp) for row, lp in self.records.get(context, [])]
            n, lp = max(matches, key=lambda m: m[0], default=(0, []))
            out[seg.start : seg.start + n] = lp[:n]
        return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
