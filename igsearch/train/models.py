"""Policies: tiny Llama presets trained from scratch, their offline tokenizer, and one loader.

The tokenizer is a byte-level BPE trained with `tokenizers` on the world's text, with a small
vocabulary (~1k): names then split into pieces that all occur in training targets, so the policy
can write an unseen entity's name into a query. Protocol tags are atomic added tokens that decoding
keeps. Tiny tokenizers are saved and loaded as `PreTrainedTokenizerFast`, never through a model
type's own tokenizer class, which could swap the pre-tokenizer and change ids silently.

`load_policy` loads any Hugging Face causal LM folder or hub name the same way; `trust_remote_code`
stays off unless the caller turns it on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from igsearch.errors import IGSearchError
from igsearch.protocol import TAG_SETS, TagSet, get_tagset

EOS = "<|endoftext|>"
PAD = "<|pad|>"

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


def protocol_tags(tags: TagSet | str | None = None) -> list[str]:
    """The tags to add as atomic tokens: one tag set's, or every registered set's when None."""
    sets = [get_tagset(tags)] if tags is not None else list(TAG_SETS.values())
    return sorted({t for s in sets for t in s.all_tags})


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    tags: TagSet | str | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`, with protocol tags as atomic added tokens.

    `vocab_size` counts the 256 byte symbols, the merges and the two special tokens (EOS, PAD);
    the tags come on top.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in protocol_tags(tags)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    fast.padding_side = "left"
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Save a tokenizer folder (tokenizer.json + configs)."""
    tokenizer.save_pretrained(str(out_dir))


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer folder or hub name; generic fast-tokenizer folders load as such.

    Sets a pad token (EOS) when the tokenizer has none and pads on the left (for generation).
    """
    config = Path(path) / "tokenizer_config.json"
    generic = {"PreTrainedTokenizerFast", "TokenizersBackend"}  # transformers 4 and 5 names
    if config.exists() and json.loads(config.read_text()).get("tokenizer_class") in generic:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


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
