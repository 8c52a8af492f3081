"""Policies: tiny Llama presets trained from scratch and one loader for any causal LM.

The tiny policies' tokenizer lives in igsearch.tokenizer (the world builder trains it too); its
names stay importable from here. `load_policy` loads any Hugging Face causal LM folder or hub name
the same way; `trust_remote_code` stays off unless the caller turns it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from igsearch.errors import IGSearchError
from igsearch.tokenizer import (
    EOS,
    PAD,
    load_tokenizer,
    protocol_tags,
    save_tokenizer,
    train_tokenizer,
)

__all__ = [
    "EOS",
    "MAX_POSITIONS",
    "PAD",
    "PRESETS",
    "count_parameters",
    "init_model",
    "load_policy",
    "load_tokenizer",
    "protocol_tags",
    "save_tokenizer",
    "train_tokenizer",
]

PRESETS: dict[str, dict[str, Any]] = {
    "nano": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256
    ),
    "micro": dict(
        hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=768
    ),
}
"""Llama shapes of the tiny policies: nano ~0.8M parameters, micro ~5.4M (vocabulary ~1k).

nano's MLP is narrow (2x hidden): the warm start mostly teaches copying from documents, which is
attention's work; halving the MLP cut SFT time by a fifth and scored as well (benchmarks/sft.md)."""

MAX_POSITIONS = 2048


def init_model(preset: str, tokenizer: Any, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama for `tokenizer` (seeded)."""
    if preset not in PRESETS:
        raise IGSearchError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        num_key_value_heads=shape["num_attention_heads"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_policy(
    name_or_path: str | Path,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a Hugging Face folder or hub name, in eval mode.

    `dtype` None keeps the checkpoint's float32 on CPU and uses bfloat16 on a CUDA device.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    path = Path(name_or_path)
    if not path.exists() and (path.is_absolute() or str(name_or_path).startswith(".")):
        raise IGSearchError(f"{path}: no such model folder")
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code, dtype=dtype
    )
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer
