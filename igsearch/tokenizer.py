"""The policy's tokenizer: a tiny byte-level BPE trained offline on a world's text, and one loader.

The tokenizer is a byte-level BPE trained with `tokenizers` on the world's text, with a small
vocabulary (~1k): names then split into pieces that all occur in training targets, so the policy
can write an unseen entity's name into a query. Protocol tags are atomic added tokens that decoding
keeps. Tiny tokenizers are saved and loaded as `PreTrainedTokenizerFast`, never through a model
type's own tokenizer class, which could swap the pre-tokenizer and change ids silently.

Both the world builder (igsearch.data.world) and training (igsearch.train) use this module; it
knows neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from igsearch.protocol import TAG_SETS, TagSet, get_tagset

EOS = "<|endoftext|>"
PAD = "<|pad|>"


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
