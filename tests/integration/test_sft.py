"""Supervised warm start: the segmentation/masking contract, a 3-step run that changes parameters and
writes a loadable policy, resuming, and the `igsearch world` / `igsearch sft` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from igsearch.cli import app
from igsearch.config import ConfigError, SftConfig, from_dict
from igsearch.data.world import read_demos
from igsearch.errors import IGSearchError
from igsearch.train.models import init_model, load_policy, load_tokenizer
from igsearch.train.sft import (
    read_policy_meta,
    resolve_precision,
    run_sft,
    trained_positions_loss,
)
from igsearch.train.sft_data import IGNORE, PadCollator, encode_block, encode_demo

TINY = dict(max_steps=3, batch_size=4, max_demos=12, max_length=1024, save_steps=3, logging_steps=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    result = CliRunner().invoke(
        app, ["world", "--out", str(out), "--size", "tiny", "--seed", "5", "n_demos=40"]
    )
    assert result.exit_code == 0, result.output
    assert "single_hop" in result.output and "passages" in result.output
    return out


def test_labels_mask_prompt_and_inserted_segments_only(world):
    tok = load_tokenizer(world / "tokenizer")
    demo = read_demos(world)[0]
    ids, labels = encode_demo(tok, demo)
    expected = tok(demo["prompt"])["input_ids"]
    expected_labels = [IGNORE] * len(expected)
    for seg in demo["segments"]:
        seg_ids = encode_block(tok, seg["text"])  # each segment encoded alone
        expected += seg_ids
        expected_labels += seg_ids if seg["generated"] else [IGNORE] * len(seg_ids)
    assert ids == expected + [tok.eos_token_id]
    assert labels == expected_labels + [tok.eos_token_id]
    trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    assert "<information>" not in trained  # quotes in notes are trained; whole blocks never
    assert not [s for s in demo["segments"] if not s["generated"] and s["text"].strip() in trained]
    assert trained.endswith(f"<answer> {demo['answer']} </answer>{tok.eos_token}")


def test_collator_pads_right_with_masked_labels(world):
    rows = [{"input_ids": [1, 2, 3], "labels": [IGNORE, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    batch = PadCollator(pad_token_id=9, attention_mask=True)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 3], [4, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    # right padding + causal attention: real tokens' logits do not depend on the mask
    model = init_model("nano", load_tokenizer(world / "tokenizer"))
    masked = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = model(**{k: v for k, v in PadCollator(9)(rows).items() if k != "labels"}).logits
    assert torch.allclose(masked[1, :1], plain[1, :1], atol=1e-5) and torch.allclose(
        masked[0], plain[0], atol=1e-5
    )


def test_trained_positions_loss_is_the_models_own_loss(world):
    """Projecting only trained positions to the vocabulary changes the cost, not the loss or its
    gradient; with `num_items` (Trainer's count over a whole accumulated step) it is sum / num_items."""
    tok = load_tokenizer(world / "tokenizer")
    rows = [
        dict(zip(("input_ids", "labels"), encode_demo(tok, d), strict=True))
        for d in read_demos(world)[:3]
    ]
    batch = PadCollator(tok.pad_token_id)(rows)
    model = init_model("nano", tok, seed=1)
    ours = trained_positions_loss(model, batch)
    ours.backward()
    ours_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for a, p in zip(ours_grads, model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    halved = trained_positions_loss(model, batch, num_items=2 * n)
    assert torch.allclose(halved, theirs / 2, atol=1e-6)


def test_three_steps_change_parameters_and_write_a_loadable_policy(world, tmp_path):
    cfg = SftConfig(**TINY)
    summary = run_sft(world, tmp_path, cfg)
    assert summary["steps"] == 3 and summary["demos"] == 12 and summary["prompt_style"] == "bare"
    initial = init_model(cfg.preset, load_tokenizer(world / "tokenizer"), seed=cfg.seed)
    model, tok = load_policy(tmp_path, device="cpu")
    changed = [
        not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters(), strict=True)
    ]
    assert all(changed)
    meta = read_policy_meta(tmp_path)
    assert (meta["tagset"], meta["preset"], meta["world_hash"]) == (
        "search-r1",
        "nano",
        json.loads((world / "world.json").read_text())["content_hash"],
    )
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    ids = tok("Question: Where?\n", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == len(tok)


def test_resume_continues_from_the_last_checkpoint(world, tmp_path):
    run_sft(world, tmp_path, SftConfig(**{**TINY, "max_steps": 2, "save_steps": 2}))
    with pytest.raises(IGSearchError, match="--resume"):
        run_sft(world, tmp_path, SftConfig(**{**TINY, "max_steps": 4, "save_steps": 2}))
    summary = run_sft(
        world, tmp_path, SftConfig(**{**TINY, "max_steps": 4, "save_steps": 2}), resume=True
    )
    assert summary["steps"] == 4
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()
    ]
    assert 3 in steps and steps.count(1) == 1  # steps 1-2 were not trained again


def test_sft_command(world, tmp_path):
    result = CliRunner().invoke(app, ["sft", "--world", str(world), "--out", str(tmp_path), "--preset", "nano",
                                      "max_steps=1", "batch_size=2", "max_demos=4", "save_steps=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 steps" in result.output and read_policy_meta(tmp_path)["steps"] == 1
    bad = CliRunner().invoke(
        app, ["sft", "--world", str(world), "--out", str(tmp_path / "x"), "batch_sise=2"]
    )
    assert bad.exit_code != 0 and "batch_size" in str(bad.exception or bad.output)


def test_auto_precision_is_bf16_only_where_the_hardware_multiplies_it():
    assert resolve_precision("fp32", cuda=False, cpu_flags={"avx512_bf16"}) == "fp32"
    assert resolve_precision("bf16", cuda=False, cpu_flags=set()) == "bf16"
    assert resolve_precision("auto", cuda=False, cpu_flags={"avx512f", "avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", cuda=False, cpu_flags={"amx_bf16"}) == "bf16"
    assert resolve_precision("auto", cuda=False, cpu_flags={"avx2", "avx512f"}) == "fp32"
    with pytest.raises(ConfigError, match="sft.precision"):
        from_dict(SftConfig, {"precision": "fp16"}, "sft")


def test_bf16_runs_the_loss_in_bf16_and_keeps_fp32_weights(world, tmp_path):
    """bf16 must reach the decoder (the loss calls it directly, outside `forward`): the first
    step's loss differs from fp32's, the saved weights stay fp32, and the choice is recorded."""
    losses = {}
    for run, p in (("a", "fp32"), ("b", "fp32"), ("c", "bf16")):
        summary = run_sft(
            world, tmp_path / run, SftConfig(**{**TINY, "max_steps": 1, "precision": p})
        )
        assert summary["precision"] == p
        model, _ = load_policy(tmp_path / run, device="cpu")
        assert {w.dtype for w in model.parameters()} == {torch.float32}
        losses[run] = summary["train_loss"]
    assert losses["a"] == losses["b"] != losses["c"]
    assert losses["c"] == pytest.approx(losses["a"], rel=0.02)
