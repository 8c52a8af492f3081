"""IGSearchTrainer on a nano model: one step trains, documents never do, metrics are logged, resume.

Rollouts come from a scripted generator (search, then answer right on even rows and wrong on odd
rows, always wrong for the "all-fail" question), so every step has search steps to score, groups
with reward spread and one group where every rollout fails.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CORPUS, write_small_corpus

from igsearch.config import TrainConfig, from_dict
from igsearch.data.qa import QAExample, write_qa_jsonl
from igsearch.retrieval.index import build_index
from igsearch.rollout.loop import decode_ids, encode_block
from igsearch.train.models import init_model, save_tokenizer, train_tokenizer
from igsearch.train.rl import build_trainer, run_training

ANSWERS = {"p0": "Oranthe", "p1": "Ombrisa", "p3": "Imre Saldo", "p5": "Sabine Orrow"}
ALL_FAIL = "p1"


class ScriptedAgent:
    """Searches the question's words first; then answers (right on even batch rows)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.by_question = {
            q: (pid, ANSWERS[pid]) for pid, _, _, q in SMALL_CORPUS if pid in ANSWERS
        }

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        out = []
        for i, ids in enumerate(batch):
            text = decode_ids(self.tokenizer, ids)
            question = text.split("Question:", 1)[1].split("\n", 1)[0].strip()
            pid, answer = self.by_question[question]
            if "<information>" not in text:
                turn = f"<think> look it up </think>\n<search> {question.rstrip('?')} </search>"
            else:
                right = i % 2 == 0 and pid != ALL_FAIL
                turn = f"<think> found </think>\n<answer> {answer if right else 'Nobody'} </answer>"
            out.append(encode_block(self.tokenizer, turn)[:max_new_tokens])
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("trainer")
    corpus = root / "corpus.jsonl"
    write_small_corpus(corpus)
    build_index(corpus, "bm25", root / "index")
    # Two questions, so every batch of 8 holds one mixed group and one all-fail group (ALL_FAIL).
    # Supporting passages: p0's own (its search retrieves it), none retrievable for ALL_FAIL.
    qa = [
        QAExample(
            pid,
            q,
            (ANSWERS[pid],),
            {"type": "single_hop", "supporting_ids": [pid if pid != ALL_FAIL else "absent"]},
        )
        for pid, _, _, q in SMALL_CORPUS
        if pid in ("p0", ALL_FAIL)
    ]
    write_qa_jsonl(root / "train.jsonl", qa)
    tok = train_tokenizer([f"{t}\n{x}\n{q}" for _, t, x, q in SMALL_CORPUS] * 3, vocab_size=300)
    init_model("nano", tok, seed=0).save_pretrained(root / "policy")
    save_tokenizer(tok, root / "policy")
    return {"root": root}


def make_cfg(root: Path, out: str, **train) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "model": str(root / "policy"),
            "data": {"train": [str(root / "train.jsonl")], "dev": str(root / "train.jsonl")},
            "retriever": {"index": str(root / "index")},
            "rollout": {
                "prompt_style": "bare",
                "max_turns": 2,
                "max_new_tokens_per_turn": 160,
                "max_response_tokens": 800,
                "max_context_tokens": 1024,
            },
            "algo": {"estimator": "ig_grpo", "n_counterfactuals": 2},
            "train": {
                "output_dir": str(root / out),
                "steps": 1,
                "group_size": 4,
                "batch_size": 8,
                "learning_rate": 1e-3,
                "save_steps": 1,
                "report_to": [],
                "seed": 3,
                **train,
            },
        },
    )


def scripted(model, tokenizer):
    return ScriptedAgent(tokenizer)


def _trainer(cfg):
    return build_trainer(cfg, generator_factory=scripted)


def test_one_step_changes_parameters_and_logs_every_metric(setup):
    cfg = make_cfg(setup["root"], "one")
    trainer = _trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    logs = [
        json.loads(line)
        for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    step = next(x for x in logs if "loss" in x)
    for key in (
        "em",
        "well_formed",
        "turns",
        "searches",
        "query_tokens",
        "ig/all/mean",
        "ig/all/std",
        "ig/all/positive",
        "ig/step1/mean",
        "all_fail_groups",
        "adv/nonzero_token_share",
        "adv/all_fail_nonzero_token_share",
        "time/rollout",
        "time/retrieval",
        "time/outcome_reward",
        "time/ig_scoring",
        "ig/tokens_encoded",
        "time/update",
        "time/step_cpu",
        "update/tokens",
        "update/padded_tokens",
        "kl",
        "reward",
    ):
        assert key in step, key
    assert step["searches"] == 1.0 and step["well_formed"] == 1.0
    assert step["ig/tokens_encoded"] > 0 and step["time/outcome_reward"] >= 0
    assert step["time/step_cpu"] > 0
    assert 0 <= step["update/padded_tokens"] < step["update/tokens"]  # four length buckets
    assert step["completions/clipped_ratio"] == 0.0  # every finished answer ends with EOS
    assert step["all_fail_groups"] == 0.5 and step["em"] == 0.25
    dev = [x for x in logs if "dev/em" in x]
    assert [x["step"] for x in dev] == [0, 1]  # before training and at the end
    assert (
        dev[0]["dev/em"] == 0.5 and dev[0]["dev/em/single_hop"] == 0.5
    )  # greedy batch rows 0 (right), 1 (all-fail)
    assert step["adv/all_fail_nonzero_token_share"] > 0  # all-fail groups still train their queries
    # IG vs supporting passages: 4 rollouts of p0 retrieved theirs, the 4 of ALL_FAIL could not
    assert step["ig_support/all/n_support"] == 4 and step["ig_support/all/n_other"] == 4
    assert 0 <= step["ig_support/step1/auc"] <= 1 and "ig_support/all/ig_other" in step


def _scored_batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = (
        1  # set by Trainer.train(); we call the loss directly
    )
    out = trainer._generate_and_score_completions(batch)
    return out, [x["trajectory"] for x in batch]  # TRL merged the rollout's rows into the batch


def test_inserted_documents_contribute_no_gradient(setup):
    trainer = _trainer(make_cfg(setup["root"], "grad"))
    inputs, trajs = _scored_batch(trainer)
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    inserted = (inputs["completion_mask"] == 1) & (inputs["tool_mask"] == 0)
    assert inserted.any()
    for i, t in enumerate(trajs):  # the mask is the trajectory's loss mask
        assert mask[i, : len(t.loss_mask)].tolist() == t.loss_mask

    def grads(adv):
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, {**inputs, "advantages": adv}).backward()
        return [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]

    base = grads(inputs["advantages"])
    noisy = inputs["advantages"].clone()
    noisy[inserted] = torch.randn(int(inserted.sum())) * 100
    for a, b in zip(base, grads(noisy), strict=True):
        torch.testing.assert_close(a, b)


def test_all_fail_group_moves_only_query_tokens(setup):
    trainer = _trainer(make_cfg(setup["root"], "allfail"))
    inputs, trajs = _scored_batch(trainer)
    adv, g = inputs["advantages"], trainer.cfg.train.group_size
    rewards = [float(t.answer == ANSWERS[ALL_FAIL]) for t in trajs]
    for start in range(0, len(trajs), g):
        rows = range(start, start + g)
        if any(trajs[i].answer not in ("Nobody", None) for i in rows):
            continue
        for i in rows:
            q0, q1 = trajs[i].steps[0].query_span
            outside = torch.ones(adv.shape[1], dtype=torch.bool)
            outside[q0:q1] = False
            assert (adv[i, outside] == 0).all() and (adv[i, q0:q1] != 0).all()
        break
    else:
        pytest.fail(f"no all-fail group in the batch: {rewards}")


def test_grpo_estimator_gives_trajectory_level_advantages(setup):
    cfg = make_cfg(setup["root"], "grpo")
    cfg = replace(cfg, algo=replace(cfg.algo, estimator="grpo"))
    trainer = _trainer(cfg)
    inputs, _ = _scored_batch(trainer)
    adv = inputs["advantages"]
    assert torch.equal(adv, adv[:, :1].expand_as(adv))


def test_alpha_zero_scores_nothing_and_equals_grpo(setup):
    cfg = make_cfg(setup["root"], "alpha0")
    cfg = replace(cfg, algo=replace(cfg.algo, alpha=0.0))
    trainer = _trainer(cfg)
    inputs, _ = _scored_batch(trainer)
    adv = inputs["advantages"]
    assert torch.equal(adv, adv[:, :1].expand_as(adv))
    assert trainer._metrics["train"]["ig/tokens_encoded"] == [0.0]  # the model scored nothing


def test_resume_reproduces_the_next_step(setup):
    root = setup["root"]
    full = make_cfg(root, "full", steps=2)
    run_training(full, generator_factory=scripted)
    first = make_cfg(root, "resumed", steps=1)
    run_training(first, generator_factory=scripted)
    run_training(make_cfg(root, "resumed", steps=2), resume=True, generator_factory=scripted)

    def step2(name):
        logs = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
        return next(x for x in logs if x["step"] == 2 and "loss" in x)

    a, b = step2("full"), step2("resumed")
    for key in ("loss", "em", "ig/all/mean", "kl", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), key


def test_ddp_one_step_with_two_cpu_processes(setup):
    """`accelerate launch --cpu --num_processes 2` (gloo): each process rolls out and scores its shard."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(repo / "configs/accelerate/cpu-2proc.yaml"),
        "--main_process_port",
        "0",
        str(repo / "tests/integration/ddp_step.py"),
        str(setup["root"]),
        "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [
        json.loads(x) for x in (setup["root"] / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    step = next(x for x in logs if "loss" in x)
    assert step["all_fail_groups"] == 0.5 and step["searches"] == 1.0
    assert (setup["root"] / "ddp" / "final" / "model.safetensors").exists()


def test_a_run_killed_while_saving_resumes_from_the_previous_checkpoint(setup, monkeypatch, caplog):
    """The step-2 save aborts after the weights and optimizer are written (as a kill would), and
    an older run left a torn checkpoint-3; --resume skips both, naming them, and reproduces the
    uninterrupted run's step 2 from checkpoint-1."""
    import logging
    import shutil

    from igsearch.train.trainer import IGSearchTrainer

    root = setup["root"]
    out = root / "killed"
    run_training(make_cfg(root, "killed", steps=1), generator_factory=scripted)

    def killed(self, output_dir):
        raise KeyboardInterrupt("killed while saving")

    with monkeypatch.context() as m:
        m.setattr(IGSearchTrainer, "_save_rng_state", killed)
        with pytest.raises(KeyboardInterrupt):
            run_training(make_cfg(root, "killed", steps=2), resume=True, generator_factory=scripted)
    assert (out / ".partial-checkpoint-2" / "checkpoint-2" / "optimizer.pt").exists()
    assert not (out / "checkpoint-2").exists()
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-3")
    (out / "checkpoint-3" / "trainer_state.json").unlink()
    with (out / "checkpoint-3" / "model.safetensors").open("r+b") as f:
        f.truncate(100)

    with caplog.at_level(logging.INFO):
        run_training(make_cfg(root, "killed", steps=2), resume=True, generator_factory=scripted)
    assert ".partial-checkpoint-2" in caplog.text
    assert "incomplete checkpoint" in caplog.text and "checkpoint-3" in caplog.text
    assert f"continuing from {out / 'checkpoint-1'}" in caplog.text
    assert not (out / ".partial-checkpoint-2").exists()
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    resumed = next(x for x in steps if x["step"] == 2 and "loss" in x)
    full = make_cfg(root, "uninterrupted", steps=2)
    run_training(full, generator_factory=scripted)
    logs = [
        json.loads(x) for x in (root / "uninterrupted" / "metrics.jsonl").read_text().splitlines()
    ]
    expected = next(x for x in logs if x["step"] == 2 and "loss" in x)
    for key in ("loss", "em", "ig/all/mean", "kl", "grad_norm"):
        assert resumed[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-7), key


def test_injected_advantages_are_compute_ig_advantages_of_the_batch(setup, monkeypatch):
    """One scoring path: the reward is computed once per rollout, and the advantages TRL trains on
    are compute_ig_advantages of the batch's rewards, step IG and query spans."""
    import igsearch.train.trainer as trainer_module
    from igsearch.algo.advantages import compute_ig_advantages
    from igsearch.rewards.outcome import exact_match

    calls, scored = [], []

    def counting_em(*args):
        calls.append(args)
        return exact_match(*args)

    def recording_ig(*args, **kwargs):
        scored.append(trainer_module.compute_step_ig.__wrapped__(*args, **kwargs))
        return scored[-1]

    recording_ig.__wrapped__ = trainer_module.compute_step_ig
    monkeypatch.setattr(trainer_module, "exact_match", counting_em)
    monkeypatch.setattr(trainer_module, "compute_step_ig", recording_ig)
    cfg = make_cfg(setup["root"], "onepath")
    cfg = replace(cfg, algo=replace(cfg.algo, ig_norm="group", ig_clip=2.0))
    trainer = _trainer(cfg)
    inputs, trajs = _scored_batch(trainer)
    assert len(calls) == len(trajs) == 8 and not hasattr(trainer, "_batch")
    rewards = torch.tensor([float(t.answer == ANSWERS["p0"]) for t in trajs])
    want = compute_ig_advantages(
        rewards,
        4,
        scored[0],
        [[s.query_span for s in t.steps] for t in trajs],
        inputs["completion_ids"].size(1),
        alpha=cfg.algo.alpha,
        ig_norm="group",
        ig_clip=2.0,
    )
    assert any(v != 0 for row in scored[0] for v in row)
    torch.testing.assert_close(inputs["advantages"], want)


def test_dev_rows_never_carry_the_step_metrics(setup):
    """Each step's training metrics land on their own row, written before that step's dev row."""
    cfg = make_cfg(setup["root"], "devrows", steps=2, eval_steps=1)
    _trainer(cfg).train()
    rows = [
        json.loads(x)
        for x in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in rows if "loss" in r]
    dev = [r for r in rows if "dev/em" in r]
    assert [r["step"] for r in train] == [1, 2] and [r["step"] for r in dev] == [0, 1, 2]
    assert all("em" in r and "reward" in r for r in train)
    assert not any(k in r for r in dev for k in ("em", "reward", "loss", "searches"))
    order = [(r["step"], "dev/em" in r) for r in rows if "loss" in r or "dev/em" in r]
    assert order == [(0, True), (1, False), (1, True), (2, False), (2, True)]


def test_groups_must_not_straddle_processes(setup):
    from igsearch.errors import IGSearchError
    from igsearch.train.trainer import grpo_args

    cfg = make_cfg(setup["root"], "split")  # 8 rollouts in groups of 4
    assert grpo_args(cfg, 2).per_device_train_batch_size == 4
    with pytest.raises(IGSearchError, match="multiple of 16"):
        grpo_args(cfg, 4)  # 2 rollouts per process: half a group each
    with pytest.raises(IGSearchError, match="not divisible by 3"):
        grpo_args(cfg, 3)
