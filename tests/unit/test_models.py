"""Tiny tokenizer and model presets: ids round-trip through save/load, tags stay atomic."""

import pytest

from igsearch.protocol import TAG_SETS
from igsearch.train.models import (
    count_parameters,
    init_model,
    load_policy,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TEXT = (
    "<think> where was he born </think>\n<search> Zorvan Kellit birthplace </search>\n\n"
    "<information>Doc 1(Title: Zorvan Kellit) Zorvan Kellit (born 1931 in Ardmoor) is a painter.\n"
    "</information>\n\n<answer> Ardmoor </answer>"
)


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [
        "Zorvan Kellit was born in Ardmoor in 1931.",
        "Ardmoor is a city in Velland. Café ünïcode 日本",
    ] * 50
    return train_tokenizer(corpus, vocab_size=300)


def test_ids_round_trip_through_save_and_load(tokenizer, tmp_path):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == TEXT
    save_tokenizer(tokenizer, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert (
        loaded.eos_token_id == tokenizer.eos_token_id
        and loaded.pad_token_id == tokenizer.pad_token_id
    )
    assert loaded.padding_side == "left"


def test_every_protocol_tag_is_one_token_kept_on_decode(tokenizer):
    for tags in TAG_SETS.values():
        for tag in tags.all_tags:
            ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1, tag
            assert tokenizer.decode(ids, skip_special_tokens=True) == tag


def test_presets_sizes_and_policy_round_trip(tokenizer, tmp_path):
    nano, micro = init_model("nano", tokenizer), init_model("micro", tokenizer)
    # nano: 0.70M parameters with this 300-token vocabulary, 0.79M with the small world's ~1k
    assert 600_000 <= count_parameters(nano) <= 2_000_000
    assert 5_000_000 <= count_parameters(micro) <= 10_000_000
    nano.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)
    model, tok = load_policy(tmp_path, device="cpu")
    assert model.config.model_type == "llama"
    assert (
        tok(TEXT, add_special_tokens=False)["input_ids"]
        == tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    )
    for a, b in zip(model.parameters(), nano.parameters(), strict=True):
        assert (a == b).all()


def test_unknown_preset_lists_valid_ones(tokenizer):
    with pytest.raises(Exception, match="nano"):
        init_model("giga", tokenizer)
