"""The vLLM path on the CPU: a stand-in engine (tests/fakes/fake_vllm.py) with vLLM's documented
stop-string, seed and log-prob semantics, VLLMGenerator on it, and IGSearchTrainer with
use_vllm=True, vllm_mode=colocate (TRL builds the engine, syncs the weights every step, and
corrects by the sampling log-probs igsearch returns)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import SMALL_CORPUS
from fakes import fake_vllm
from test_trainer import make_cfg, setup  # noqa: F401  (the module-scoped fixture)

from igsearch.rollout.backends import HFGenerator, VLLMGenerator
from igsearch.rollout.loop import encode_block
from igsearch.train.rl import build_trainer


@pytest.fixture
def vllm(monkeypatch):
    return fake_vllm.install(monkeypatch)


def _prompt(tok) -> list[int]:
    return encode_block(tok, f"Question: {SMALL_CORPUS[0][3]}\n")


def _teacher_forced(model, context, new, temperature) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + new])).logits[0, len(context) - 1 : -1]
    lp = torch.log_softmax(logits.float() / temperature, -1)
    return lp.gather(-1, torch.tensor(new)[:, None]).squeeze(-1)


def test_standin_stop_strings_and_seeds_follow_vllm(setup, vllm):  # noqa: F811
    llm = vllm.LLM(str(setup["root"] / "policy"), seed=0)
    tok, prompt = llm.get_tokenizer(), vllm.TokensPrompt(prompt_token_ids=_prompt(llm.tokenizer))
    free = llm.generate([prompt], vllm.SamplingParams(temperature=0, max_tokens=24))[0].outputs[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 24
    text = free.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    at = text.find(stop)
    for include in (False, True):
        sp = vllm.SamplingParams(
            temperature=0, max_tokens=24, stop=[stop], include_stop_str_in_output=include
        )
        out = llm.generate([prompt], sp)[0].outputs[0]
        assert out.finish_reason == "stop" and out.stop_reason == stop
        assert out.text == text[: at + len(stop) if include else at]
        n = len(out.token_ids)  # every token up to the one that completes the stop string
        assert out.token_ids == free.token_ids[:n] and stop in tok.decode(free.token_ids[:n])
        assert stop not in tok.decode(free.token_ids[: n - 1])
    sp = [vllm.SamplingParams(temperature=1.0, max_tokens=12, seed=s) for s in (5, 6, 7)]
    batch = [o.outputs[0].token_ids for o in llm.generate([prompt] * 3, sp)]
    alone = llm.generate([prompt], sp[1])[0].outputs[0].token_ids
    assert alone == batch[1] and batch[0] != batch[1]  # a seeded request ignores its batch


def test_vllm_generator_returns_tempered_sampling_logprobs(setup, vllm):  # noqa: F811
    llm = vllm.LLM(str(setup["root"] / "policy"), seed=0, logprobs_mode="processed_logprobs")
    gen = VLLMGenerator.from_llm(llm, llm.get_tokenizer())
    prompts = [_prompt(gen.tokenizer), _prompt(gen.tokenizer)[:-2]]
    ids, lps = gen.generate_with_logprobs(prompts, 16, ("</search>",), 0.7, 1.0, seed=11)
    alone, _ = gen.generate_with_logprobs(prompts[1:], 16, ("</search>",), 0.7, 1.0, seed=12)
    assert alone[0] == ids[1]  # row i is seeded with seed + i
    for context, new, lp in zip(prompts, ids, lps, strict=True):
        want = _teacher_forced(llm.model, context, new, 0.7)
        torch.testing.assert_close(torch.tensor(lp), want, atol=1e-4, rtol=1e-4)


def test_hf_generator_returns_tempered_sampling_logprobs(setup):  # noqa: F811
    from igsearch.train.models import load_policy

    model, tok = load_policy(setup["root"] / "policy", device="cpu")
    prompts = [_prompt(tok), _prompt(tok)[:-3]]
    ids, lps = HFGenerator(model, tok).generate_with_logprobs(prompts, 12, (), 0.7, 1.0, seed=3)
    for context, new, lp in zip(prompts, ids, lps, strict=True):
        assert len(lp) == len(new) > 0
        want = _teacher_forced(model, context, new, 0.7)
        torch.testing.assert_close(torch.tensor(lp), want, atol=1e-4, rtol=1e-4)


def test_trainer_with_vllm_colocate_trains_two_steps(setup, vllm):  # noqa: F811
    cfg = make_cfg(setup["root"], "vllm", steps=2, use_vllm=True, vllm_mode="colocate")
    short = dict(max_turns=1, max_new_tokens_per_turn=24, max_response_tokens=64)
    cfg = replace(cfg, rollout=replace(cfg.rollout, **short), data=replace(cfg.data, dev=None))
    trainer = build_trainer(cfg)  # the real backend: VLLMGenerator on TRL's engine
    [llm] = [x for x in fake_vllm.LLM.instances if x is trainer.vllm_generation.llm]
    assert llm.logprobs_mode == "processed_logprobs"
    with torch.no_grad():  # the engine loaded the checkpoint; only a weight sync can match this
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    trainer.train()
    assert llm.weights.loaded == 2 * len(list(trainer.model.parameters()))  # once per step
    rows = [
        json.loads(x)
        for x in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # the correction reads the engine's log-probs of the synced weights
        assert r["sampling/sampling_logp_difference/mean"] < 1e-3
        assert r["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-3)
