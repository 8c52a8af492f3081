"""The tokenisation contract: how text becomes the ids a policy sees, and how ids are cut back.

One module for everything that must agree on ids: the rollout loop, the generation backends, the
SFT rows built from demonstrations and the information-gain scorer. Every sequence is

  ids = encode_prompt(tok, prompt, style) + seg_1 + seg_2 + ... + seg_n

where each segment (a generated turn, an inserted block, a demonstration segment) is encoded
ALONE by `encode_block` (add_special_tokens=False). The joined text is never re-tokenised: BPE
merges across a segment boundary would move the boundary between trained and inserted tokens.
`encode_prompt` keeps the tokenizer's default special tokens, except for chat-template text,
whose template already holds them. `decode_ids` keeps protocol tags and special tokens (the text
the parser reads); `cut_turn` ends a generated turn after its first stop string or EOS; the EOS
ids of a policy come from `eos_ids` (tokenizer and generation config) or `policy_eos_ids` (a
generation backend). See docs/design.md, "Protocol and formats".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from igsearch.errors import IGSearchError


def decode_ids(tokenizer: Any, ids: Sequence[int]) -> str:
    """Decode ids keeping protocol tags and special tokens (the text the parser reads)."""
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def encode_block(tokenizer: Any, text: str) -> list[int]:
    """The ids of one inserted block (or one generated segment of a demonstration), encoded alone."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: Any, prompt: str, style: str = "plain") -> list[int]:
    """Prompt ids: the tokenizer's default special tokens, except for chat-template text."""
    return list(tokenizer(prompt, add_special_tokens=style != "chat")["input_ids"])


def eos_ids(*values: Any) -> frozenset[int]:
    """The EOS ids named by a tokenizer and a generation config (each an int, a list, or None)."""
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    if not ids:
        raise IGSearchError("the tokenizer and model define no EOS token; set tokenizer.eos_token")
    return frozenset(ids)


def policy_eos_ids(generator: Any) -> frozenset[int]:
    """A backend's `eos_token_ids`, or else its tokenizer's EOS id (empty when it has none)."""
    ids = getattr(generator, "eos_token_ids", None)
    if ids is None:
        eos = generator.tokenizer.eos_token_id
        ids = [] if eos is None else [eos]
    return frozenset(ids)


def _clean(tokenizer: Any, ids: Sequence[int], i: int, text: str) -> bool:
    return text.startswith(decode_ids(tokenizer, ids[:i]))


def boundary_after(tokenizer: Any, ids: Sequence[int], text: str, pos: int) -> int:
    """Smallest i whose prefix ids[:i] decodes cleanly (no split character) to >= `pos` chars of `text`."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode_ids(tokenizer, ids[:mid])) >= pos:
            hi = mid
        else:
            lo = mid + 1
    while lo < len(ids) and not _clean(tokenizer, ids, lo, text):
        lo += 1
    return lo


def boundary_before(tokenizer: Any, ids: Sequence[int], text: str, pos: int) -> int:
    """Largest i whose prefix ids[:i] decodes cleanly to <= `pos` chars of `text`."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(decode_ids(tokenizer, ids[:mid])) <= pos:
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and not _clean(tokenizer, ids, lo, text):
        lo -= 1
    return lo


def token_span(tokenizer: Any, ids: Sequence[int], start: int, end: int) -> tuple[int, int]:
    """[a, b): every token of `ids` overlapping characters [start, end) of decode_ids(ids).

    Byte-level tokens may split a UTF-8 character; such a character belongs to all its tokens.
    """
    text = decode_ids(tokenizer, ids)
    return boundary_before(tokenizer, ids, text, start), boundary_after(tokenizer, ids, text, end)


def cut_turn(
    tokenizer: Any, ids: Sequence[int], stop_strings: Iterable[str], eos_ids: Iterable[int]
) -> tuple[list[int], str, str]:
    """Cut one turn's generated ids right after the first stop string, or after the first EOS.

    Returns (ids, text without a final EOS, how it ended: "stop" | "eos" | "length"). The token
    that completes the stop string is kept whole.
    """
    ids, eos_ids, ended = list(ids), set(eos_ids), "length"
    at = next((i for i, t in enumerate(ids) if t in eos_ids), None)
    if at is not None:
        ids, ended = ids[: at + 1], "eos"
    body = ids[:-1] if ended == "eos" else ids
    text = decode_ids(tokenizer, body)
    ends = [text.find(s) + len(s) for s in stop_strings if s and s in text]
    if ends:
        body = body[: boundary_after(tokenizer, body, text, min(ends))]
        return body, decode_ids(tokenizer, body), "stop"
    return ids, text, ended
