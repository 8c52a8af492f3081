"""Policies: tiny Llama presets trained from scratch and one loader for any causal LM.

The tiny policies' tokenizer lives in igsearch.tokenizer (the world builder trains it too); its
names stay importable from here. `load_policy` loads any Hugging Face causal LM folder or hub name
the same way; `trust_remote_code` stays off unless the caller turns it on.
"""

from __future__ import annotations

import os
import re
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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline() -> bool:
    """Whether Hugging Face downloads are switched off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in _OFFLINE_VARS)


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: not usable either way
        return False


def check_model_source(name_or_path: str | Path) -> None:
    """Fail with one line, before transformers is asked, when `name_or_path` can't be a model:
    a local path that does not exist, or a hub name that offline mode cannot fetch."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise IGSearchError(
                f"{name}: not a model folder (no config.json); give a folder written by "
                "save_pretrained, e.g. OUT/final of `igsearch train` or OUT of `igsearch sft`"
            )
        return
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise IGSearchError(
            f"{name}: no such model folder; check the path (e.g. OUT/final of `igsearch train`)"
        )
    if _offline() and not _in_hub_cache(name):
        raise IGSearchError(
            f"{name}: no model folder of that name here, and offline mode (HF_HUB_OFFLINE=1) "
            "keeps it from being downloaded from the Hugging Face hub; give a local model folder, "
            "or download it once with network access (HF_HUB_OFFLINE=0)"
        )


def load_policy(
    name_or_path: str | Path,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a Hugging Face folder or hub name, in eval mode.

    `dtype` None keeps the checkpoint's float32 on CPU and uses bfloat16 on a CUDA device.
    The name is checked first (`check_model_source`); transformers' own failures become one line.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    check_model_source(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code, dtype=dtype
        )
        tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as e:
        reason = " ".join(str(e).split())[:300]
        raise IGSearchError(
            f"{name_or_path}: could not load the model ({reason}); give a local model folder, "
            "or check the hub name and the network"
        ) from None
    return model.to(device).eval(), tokenizer
