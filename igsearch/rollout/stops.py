"""Incremental stop-string detection on token ids, for decode loops that keep their own state.

`HFGenerator` decodes the last `window` generated tokens of every row at every step. A stop string
can only appear for the first time at the step whose token supplies its last character, so
`StopWatch` precomputes, once per tokenizer and set of stop strings, which token ids can do that
("triggers": the token's own text holds a stop string's last character, or U+FFFD when that
character is not ASCII, since a token that completes a split character decodes alone to U+FFFD),
and decodes a row's tail only when its new token is a trigger. A token whose text is exactly an
ASCII stop string (a protocol tag added as one token) stops the row without any decoding. Tail
and window are those of `HFGenerator` (the last `window` generated tokens, window = longest stop
string in UTF-8 bytes + 2), so both stop a row at the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


class StopWatch:
    """Which rows a new token ends, given each row's generated ids (see the module docstring)."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], vocab_size: int = 0):
        self.tokenizer = tokenizer
        self.stops = [s for s in stop_strings if s]
        self.window = max((len(s.encode()) for s in self.stops), default=0) + 2
        size = max(len(tokenizer), vocab_size)
        self.every_step = any(s[-1].isspace() for s in self.stops)
        self.trigger = [False] * size
        self.exact: set[int] = set()
        if not self.stops or self.every_step:
            return
        texts = tokenizer.batch_decode(
            [[i] for i in range(len(tokenizer))],
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        lasts = {s[-1] for s in self.stops}
        if any(not c.isascii() for c in lasts):
            lasts.add("\ufffd")
        ascii_stops = {s for s in self.stops if s.isascii()}
        for i, text in enumerate(texts):
            self.trigger[i] = any(c in text for c in lasts)
            if text in ascii_stops:
                self.exact.add(i)

    def ends(self, generated: Sequence[int]) -> bool:
        """Whether the row whose generated ids are `generated` (new token last) hit a stop string."""
        if not self.stops:
            return False
        token = generated[-1]
        if token in self.exact:
            return True
        if not self.every_step and not (0 <= token < len(self.trigger) and self.trigger[token]):
            return False
        tail = _decode(self.tokenizer, generated[-self.window :])
        return any(s in tail for s in self.stops)
