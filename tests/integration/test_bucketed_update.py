"""The length-bucketed policy update gives TRL's single-forward loss and gradients, on fewer padded
positions (docs/design.md, The policy update).

One real batch: the trainer's own `_generate_and_score_completions` on the nano policy of the
trainer tests, with a scripted agent whose rows differ in length (some answer at once, some search
first), so buckets can drop padding.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_trainer import ANSWERS, make_cfg, setup  # noqa: F401  (setup is a fixture)

from igsearch.rollout.loop import decode_ids, encode_block
from igsearch.train.rl import build_trainer
from igsearch.train.trainer import chunk_weights, split_by_length

TOLERANCE = 1e-5


class UnevenAgent:
    """Rows 0 and 1 of each group of four answer at once; the others search first, with a long
    or a short thought, then answer (right on even rows)."""

    def __init__(self, tokenizer):
        from conftest import SMALL_CORPUS

        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.answer = {q: ANSWERS[pid] for pid, _, _, q in SMALL_CORPUS if pid in ANSWERS}

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        out = []
        for i, ids in enumerate(batch):
            text = decode_ids(self.tokenizer, ids)
            question = text.split("Question:", 1)[1].split("\n", 1)[0].strip()
            answer = self.answer[question] if i % 2 == 0 else "Nobody"
            if "<information>" in text or i % 4 < 2:
                turn = f"<think> ok </think>\n<answer> {answer} </answer>"
            else:
                thought = " ".join(["look it up carefully"] * (8 if i % 4 == 3 else 1))
                turn = f"<think> {thought} </think>\n<search> {question.rstrip('?')} </search>"
            out.append(encode_block(self.tokenizer, turn)[:max_new_tokens])
        return out


@pytest.fixture(scope="module")
def batch(setup):  # noqa: F811
    cfg = make_cfg(setup["root"], "bucketed")
    trainer = build_trainer(cfg, generator_factory=lambda model, tok: UnevenAgent(tok))
    rows = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = (
        1  # set by Trainer.train(); the loss is called here
    )
    inputs = trainer._generate_and_score_completions(rows)
    return trainer, inputs


def _loss_and_grads(trainer, inputs, chunks: int):
    trainer.cfg = replace(trainer.cfg, train=replace(trainer.cfg.train, update_chunks=chunks))
    trainer.model.zero_grad()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}
    return loss.detach(), grads, dict(trainer._metrics["train"])


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_bucketed_loss_and_gradients_equal_the_single_forward(batch, loss_type):
    trainer, inputs = batch
    # group-normalised advantages nearly cancel in a row mean; an offset keeps the loss away from 0
    inputs = {**inputs, "advantages": inputs["advantages"] + 0.5}
    lengths = inputs["prompt_mask"].sum(1) + inputs["completion_mask"].sum(1)
    assert lengths.max() > 1.5 * lengths.min()  # the batch is uneven, so buckets can save
    trainer.loss_type = loss_type
    try:
        loss1, grads1, m1 = _loss_and_grads(trainer, inputs, 1)
        loss4, grads4, m4 = _loss_and_grads(trainer, inputs, 4)
    finally:
        trainer.loss_type = "grpo"
    assert loss1.abs() > 0.01 and (loss1 - loss4).abs() <= TOLERANCE, (loss1, loss4)
    assert all(g.abs().max() > 0 for g in grads1.values())  # every parameter gets a gradient
    diff = {n: float((grads1[n] - grads4[n]).abs().max()) for n in grads1}
    worst = max(diff, key=diff.get)
    assert diff[worst] <= TOLERANCE, f"max |grad diff| {diff[worst]:.2e} at {worst}"
    # fewer positions fed, the same real tokens, and TRL's metrics folded back to one per step
    assert m4["update/tokens"][0] < m1["update/tokens"][0]
    assert m4["update/padded_tokens"][0] < m1["update/padded_tokens"][0]
    real = float(lengths.sum())
    assert m1["update/tokens"][0] - m1["update/padded_tokens"][0] == real
    assert m4["update/tokens"][0] - m4["update/padded_tokens"][0] == real
    for key in ("entropy", "clip_ratio/region_mean", "clip_ratio/low_min", "clip_ratio/high_max"):
        assert len(m4[key]) == 1 and m4[key][0] == pytest.approx(m1[key][0], abs=1e-5), key


def test_buckets_hold_every_row_once_trimmed_to_their_own_widths(batch):
    _, inputs = batch
    chunks = split_by_length(inputs, 4)
    rows = inputs["prompt_ids"].size(0)
    assert sum(c["prompt_ids"].size(0) for c in chunks) == rows
    assert all(c["num_items_in_batch"] is inputs["num_items_in_batch"] for c in chunks)
    real = [int(c["prompt_mask"].sum() + c["completion_mask"].sum()) for c in chunks]
    assert sum(real) == int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    for c in chunks:  # no all-padding column is left at either end
        assert c["prompt_mask"][:, 0].any() and c["completion_mask"][:, -1].any()
        assert c["advantages"].shape == c["completion_ids"].shape == c["tool_mask"].shape
    widths = [c["prompt_ids"].size(1) + c["completion_ids"].size(1) for c in chunks]
    assert widths[0] < widths[-1]  # shortest rows first
    assert sum(chunk_weights("grpo", inputs, chunks)) == pytest.approx(1.0)
    assert sum(chunk_weights("bnpo", inputs, chunks)) == pytest.approx(1.0)
    assert chunk_weights("dapo", inputs, chunks) == [1.0] * 4


def test_a_batch_wide_entropy_bonus_keeps_the_single_forward(batch):
    trainer, inputs = batch
    trainer._entropy_bonus_enabled = True  # its token mean is over the whole batch
    try:
        _, _, metrics = _loss_and_grads(trainer, inputs, 4)
    finally:
        trainer._entropy_bonus_enabled = False
    full = inputs["prompt_ids"].numel() + inputs["completion_ids"].numel()
    assert metrics["update/tokens"] == [float(full)]
