"""Demonstrations to training rows: token ids and labels, tokenised exactly as rollouts are.

Segmentation contract (igsearch.tokens, as in rollouts): ids = the prompt's ids (`encode_prompt`:
the tokenizer's default special tokens; igsearch's tiny tokenizer adds none) + every segment's
ids, each segment encoded ALONE with `encode_block` (add_special_tokens=False), + EOS. Labels are -100 on the prompt
and on every inserted (`generated: false`) segment, so inserted documents are masked exactly as
the RL loss masks them; the policy's segments and the final EOS are trained. The joined text is
never tokenised: BPE merges across a segment boundary would misalign the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from igsearch.errors import FormatError
from igsearch.tokens import encode_block, encode_prompt

IGNORE = -100


def encode_demo(
    tokenizer: Any, demo: dict[str, Any], where: str = "demo"
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one demonstration `{"prompt", "segments": [{"text", "generated"}]}`."""
    if "prompt" not in demo or not isinstance(demo.get("segments"), list) or not demo["segments"]:
        raise FormatError(
            where, None, 'a demonstration needs "prompt" and a non-empty "segments" list'
        )
    ids = encode_prompt(tokenizer, demo["prompt"])
    labels = [IGNORE] * len(ids)
    for i, seg in enumerate(demo["segments"]):
        if (
            not isinstance(seg, dict)
            or not isinstance(seg.get("text"), str)
            or not isinstance(seg.get("generated"), bool)
        ):
            raise FormatError(
                where, None, f'segment {i}: expected {{"text": str, "generated": bool}}'
            )
        seg_ids = encode_block(tokenizer, seg["text"])
        ids += seg_ids
        labels += seg_ids if seg["generated"] else [IGNORE] * len(seg_ids)
    if tokenizer.eos_token_id is None:
        raise FormatError(where, None, "the tokenizer has no EOS token to end a demonstration with")
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return ids, labels


@dataclass
class EncodedDemos:
    """Training rows and what was left out."""

    rows: list[dict[str, list[int]]]
    too_long: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def encode_demos(tokenizer: Any, demos: Iterable[dict[str, Any]], max_length: int) -> EncodedDemos:
    """Encode demonstrations, dropping (and counting) those longer than `max_length` tokens."""
    out = EncodedDemos([])
    for demo in demos:
        ids, labels = encode_demo(tokenizer, demo, where=str(demo.get("id", "demo")))
        if len(ids) > max_length:
            out.too_long += 1
            continue
        out.rows.append({"input_ids": ids, "labels": labels})
        out.tokens += len(ids)
        out.trained_tokens += sum(label != IGNORE for label in labels)
        kind = str(demo.get("type", "unknown"))
        out.by_type[kind] = out.by_type.get(kind, 0) + 1
    return out


class PadCollator:
    """Right-pads a batch: pad id in input_ids, -100 in labels.

    With right padding a causal model never attends from a real token to a pad (pads come after),
    and pads carry no loss, so no attention mask is needed: leaving it out lets SDPA take its
    causal fast path (about 20% faster on CPU). `attention_mask=True` adds one anyway.
    """

    def __init__(self, pad_token_id: int, attention_mask: bool = False):
        self.pad_token_id = pad_token_id
        self.attention_mask = attention_mask

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        out = {"input_ids": ids, "labels": labels}
        return {**out, "attention_mask": mask} if self.attention_mask else out
