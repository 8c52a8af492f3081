"""Scripted turns for benchmarking rollouts of untrained policies (shared by the benchmark scripts).

A randomly initialised policy never writes a well-formed action, so `ScriptTurns` lets the model
sample `free` tokens (protocol tags and EOS banned), then forces each row's action token by token.
Every token still goes through the model's decoding loop and the stop strings, so the cost is that
of a real rollout of the same length.
"""

from __future__ import annotations

import torch


class ScriptTurns:
    """Logits processor: `free` model tokens (tags and EOS banned), then each row's forced script."""

    def __init__(self, banned: list[int], free: int):
        self.banned, self.free = torch.tensor(banned), free
        self.width, self.scripts = 0, torch.zeros((0, 1), dtype=torch.long)

    def start(self, width: int, scripts: list[list[int]]) -> None:
        """A new generate call: prompts padded to `width`, one token script per row."""
        self.width = width
        longest = max(len(s) for s in scripts)
        self.scripts = torch.tensor([s + [s[-1]] * (longest - len(s)) for s in scripts])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.width
        if step < self.free:
            scores[:, self.banned] = float("-inf")
            return scores
        j = min(step - self.free, self.scripts.shape[1] - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[torch.arange(scores.shape[0]), self.scripts[:, j]] = 0.0
        return forced
