"""RL can learn: a few GRPO steps raise greedy exact match on the questions they train on.

The task is small and decided by the policy alone: four questions whose gold answer is the same
name. A tiny Llama is first taught the protocol with four candidate answers, a decoy three times as
often as each other one, so greedy decoding writes the decoy (EM 0) while sampled rollouts are
right about one time in six and most groups hold both rewards. GRPO through the real trainer (HF
rollouts, TRL's update with igsearch's advantages) must then lift greedy EM on the same questions
to at least three of four in six steps. The controls run the same steps with the advantages
negated, or with the loss mask emptied: neither may learn, so a broken sign, mask or advantage
injection fails this file. (The policy needs one preference, not a mapping from questions to
answers: a tiny model learns the latter far too slowly for a unit test.)

Learning rate: at 3e-3 the first Adam step (about lr per weight, whatever the gradient's size)
breaks the tiny policy's format and the reward falls to 0; 1e-3 learns.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CORPUS, write_small_corpus

from igsearch.config import RolloutConfig, TrainConfig, from_dict
from igsearch.data.qa import QAExample, write_qa_jsonl
from igsearch.protocol import build_prompt
from igsearch.retrieval.index import build_index, load_index
from igsearch.rewards.outcome import exact_match
from igsearch.rollout.backends import HFGenerator
from igsearch.rollout.loop import encode_block, run_rollouts
from igsearch.train.models import save_tokenizer, train_tokenizer
from igsearch.train.rl import build_trainer
from igsearch.train.trainer import IGSearchTrainer

PIDS = ("p0", "p3", "p5", "p7")
CANDIDATES = ("Oranthe", "Imre Saldo", "Sabine Orrow", "Ferrant")
GOLD, DECOY = "Sabine Orrow", "Imre Saldo"
ROLLOUT = {"prompt_style": "bare", "max_turns": 1, "max_new_tokens_per_turn": 24,
           "max_response_tokens": 64, "max_context_tokens": 256}  # fmt: skip


def _questions() -> list[str]:
    by_pid = {pid: q for pid, _, _, q in SMALL_CORPUS}
    return [by_pid[p] for p in PIDS]


def _warm_start(root: Path) -> Path:
    """A tiny policy that answers in protocol, with no preference between the four answers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [f"{t}\n{x}\n{q}" for _, t, x, q in SMALL_CORPUS] * 3
    tok = train_tokenizer(texts + ["<think> recall </think>\n<answer> x </answer>"], vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    )
    rows = []
    for q in _questions():
        prompt = tok(build_prompt(q, "search-r1", "bare"))["input_ids"]
        for a in (*CANDIDATES, DECOY, DECOY):  # the decoy is three times as likely as the gold
            reply = encode_block(tok, f"<think> recall </think>\n<answer> {a} </answer>")
            rows.append((prompt, reply + [tok.eos_token_id]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(150):
        batch = rng.sample(rows, 8)
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, (p, r) in enumerate(batch):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(root / "policy")
    save_tokenizer(tok, root / "policy")
    return root / "policy"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learning")
    write_small_corpus(root / "corpus.jsonl")
    build_index(root / "corpus.jsonl", "bm25", root / "index")
    examples = [
        QAExample(p, q, (GOLD,), {"type": "single_hop"})
        for p, q in zip(PIDS, _questions(), strict=True)
    ]
    write_qa_jsonl(root / "train.jsonl", examples)
    _warm_start(root)
    return root


def _config(root: Path, out: str) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "model": str(root / "policy"),
            "data": {"train": [str(root / "train.jsonl")]},
            "retriever": {"index": str(root / "index")},
            "rollout": dict(ROLLOUT),
            "algo": {"estimator": "grpo"},
            "train": {"output_dir": str(root / out), "steps": 6, "group_size": 8,
                      "batch_size": 32, "learning_rate": 1e-3, "beta": 0.0, "seed": 0,
                      "save_steps": 1000, "report_to": [], "num_threads": 1},
        },
    )  # fmt: skip


def greedy_em(model, tokenizer, root: Path) -> float:
    """Greedy exact match of `model` on the four training questions."""
    cfg = from_dict(RolloutConfig, {**ROLLOUT, "temperature": 0.0})
    prompts = [build_prompt(q, "search-r1", "bare") for q in _questions()]
    trajs = run_rollouts(prompts, HFGenerator(model, tokenizer), load_index(root / "index"), cfg)
    hits = [exact_match(t.answer, [GOLD]) for t in trajs]
    return sum(hits) / len(hits)


def _train(root: Path, out: str, corrupt=None) -> tuple[float, float]:
    """(greedy EM before, greedy EM after) six GRPO steps; `corrupt(out)` edits each step's batch."""
    trainer = build_trainer(_config(root, out))
    if corrupt is not None:
        original = IGSearchTrainer._generate_and_score_completions

        def patched(self, inputs):
            return corrupt(original(self, inputs))

        trainer._generate_and_score_completions = patched.__get__(trainer)
    model, tok = trainer.model, trainer.processing_class
    before = greedy_em(model, tok, root)
    trainer.train()
    return before, greedy_em(model, tok, root)


def test_grpo_raises_greedy_em_on_its_training_questions(world):
    before, after = _train(world, "grpo")
    assert before <= 0.25, f"the warm start should not know the answers yet (EM {before})"
    assert after >= 0.75, (
        f"six GRPO steps should teach at least three of four answers: {before} -> {after}"
    )


def _negate(out):
    out["advantages"] = -out["advantages"]
    return out


def _no_loss_tokens(out):
    out["completion_mask"] = torch.zeros_like(out["completion_mask"])
    return out


@pytest.mark.parametrize("corrupt", [_negate, _no_loss_tokens], ids=["negated", "masked"])
def test_broken_updates_do_not_learn(world, corrupt):
    before, after = _train(world, f"broken-{corrupt.__name__}", corrupt)
    assert after <= 0.5, f"a broken update must not learn the answers: {before} -> {after}"
