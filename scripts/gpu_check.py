"""The Python half of scripts/gpu_check.sh: one stage per call, one PASS/FAIL line per check.

usage: python scripts/gpu_check.py build|backend|train OUT

build:   the tiny synthetic world (corpus, BM25 index, questions, tokenizer) and a small random
         Qwen2 checkpoint saved in bf16 (as released checkpoints are), under OUT.
backend: the real vLLM engine through VLLMGenerator: seeded rows do not depend on their batch,
         turns are cut at stop strings / EOS, the engine's log-probs match the HF model's, and
         the multi-turn loop runs on it.
train:   3 IGSearchTrainer steps with use_vllm=True, vllm_mode=colocate and bf16 autocast: the
         weights stay fp32, TRL syncs them into the engine (the trainer's copy is perturbed first,
         so only a sync makes the engine's log-probs match) and the importance ratio is ~1.

The stage exits 1 when a check fails. `backend` takes the engine factory, so the test suite runs
every stage on the CPU with a stand-in engine (tests/integration/test_gpu_check.py).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

QUESTIONS = 8
RESULTS: list[bool] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    """Print one PASS/FAIL line and remember the outcome."""
    RESULTS.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def build(out: Path) -> None:
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from igsearch.config import WorldConfig, load_config
    from igsearch.data.world import build_world

    build_world(load_config(WorldConfig, None, ["seed=0", "size=tiny"]), out / "world")
    tok = PreTrainedTokenizerFast.from_pretrained(str(out / "world" / "tokenizer"))
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out / "policy")
    tok.save_pretrained(out / "policy")
    report("build", (out / "policy" / "config.json").exists(), f"vocabulary {len(tok)}")


def _prompts(out: Path, tokenizer: Any) -> list[str]:
    from igsearch.data.qa import read_qa
    from igsearch.protocol import build_prompt

    examples = read_qa(out / "world" / "train.jsonl")[:QUESTIONS]
    return [build_prompt(ex.question, "search-r1", "plain", tokenizer) for ex in examples]


def backend(out: Path, make_llm: Callable[..., Any]) -> None:
    from igsearch.config import RolloutConfig
    from igsearch.retrieval.index import load_index
    from igsearch.rollout.backends import VLLMGenerator
    from igsearch.rollout.loop import cut_turn, run_rollouts
    from igsearch.train.models import load_policy

    model, tok = load_policy(out / "policy", dtype=torch.float32, device="cpu")
    llm = make_llm(str(out / "policy"), logprobs_mode="processed_logprobs")
    gen = VLLMGenerator.from_llm(llm, tok, model.generation_config.eos_token_id)
    stops = ("</search>", "</answer>")
    contexts = [tok(p)["input_ids"] for p in _prompts(out, tok)]
    ids, lps = gen.generate_with_logprobs(contexts, 48, stops, 1.0, 1.0, seed=7)
    alone, _ = gen.generate_with_logprobs(contexts[3:4], 48, stops, 1.0, 1.0, seed=10)
    report("vllm_seeded_rows_ignore_their_batch", alone[0] == ids[3])
    recut = [cut_turn(tok, row, stops, gen.eos_token_ids)[0] == row for row in ids]
    report("vllm_turns_cut_at_stop_or_eos", all(recut) and all(len(r) <= 48 for r in ids))
    diffs = []
    for context, new, lp in zip(contexts, ids, lps, strict=True):
        x = torch.tensor([context + new])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, len(context) - 1 : -1].float()
        want = torch.log_softmax(logits, -1).gather(-1, x[0, len(context) :, None]).squeeze(-1)
        diffs += (torch.tensor(lp) - want).abs().tolist()
    mean = sum(diffs) / max(len(diffs), 1)
    report("vllm_logprobs_match_hf", mean < 0.05, f"mean |diff| {mean:.2e} over {len(diffs)}")
    cfg = RolloutConfig(max_turns=2, max_new_tokens_per_turn=64, max_response_tokens=256)
    trajs = run_rollouts(_prompts(out, tok), gen, load_index(out / "world" / "index"), cfg)
    report("vllm_multi_turn_rollouts", len(trajs) == QUESTIONS, f"{len(trajs)} trajectories")


def train_config(out: Path) -> Any:
    from igsearch.config import TrainConfig, from_dict

    return from_dict(
        TrainConfig,
        {
            "model": str(out / "policy"),
            "data": {"train": [str(out / "world" / "train.jsonl")], "max_train": QUESTIONS},
            "retriever": {"index": str(out / "world" / "index")},
            "rollout": {"max_turns": 2, "max_new_tokens_per_turn": 48,
                        "max_response_tokens": 192, "max_context_tokens": 1024},
            "algo": {"estimator": "ig_grpo", "n_counterfactuals": 2},
            "train": {"output_dir": str(out / "train"), "steps": 3, "group_size": 4,
                      "batch_size": 8, "learning_rate": 1e-5, "save_steps": 100,
                      "report_to": [], "bf16": True, "use_vllm": True,
                      "vllm_mode": "colocate"},
        },
    )  # fmt: skip


def train(out: Path) -> None:
    from igsearch.train.rl import build_trainer

    cfg = train_config(out)
    trainer = build_trainer(cfg)
    report("train_bf16_autocast", trainer.accelerator.mixed_precision == "bf16")
    with torch.no_grad():  # the engine loaded the checkpoint: only a sync can match these weights
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    trainer.train()
    dtypes = {str(p.dtype) for p in trainer.model.parameters()}
    report("train_fp32_master_weights", dtypes == {"torch.float32"}, ", ".join(sorted(dtypes)))
    rows = [json.loads(x) for x in (Path(cfg.train.output_dir) / "metrics.jsonl").open()]
    steps = [r for r in rows if "loss" in r]
    report("train_three_steps", [r["step"] for r in steps] == [1, 2, 3])
    report("train_finite_loss", all(math.isfinite(r["loss"]) for r in steps))
    diff = max(r["sampling/sampling_logp_difference/mean"] for r in steps)
    ratio = [r["sampling/importance_sampling_ratio/mean"] for r in steps]
    report("train_weights_synced_to_vllm", diff < 0.05, f"max mean |logp diff| {diff:.2e}")
    report("train_importance_ratio_near_1", all(0.9 < x < 1.1 for x in ratio), f"{ratio}")
    clipped = [r["completions/clipped_ratio"] for r in steps]
    print(f"INFO clipped_ratio per step {clipped} (random policy: long turns are expected)")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("build", "backend", "train"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    stage, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if stage == "build":
        build(out)
    elif stage == "backend":
        import vllm

        backend(out, lambda model, **kw: vllm.LLM(model=model, enforce_eager=True,
                                                  gpu_memory_utilization=0.25, **kw))  # fmt: skip
    else:
        train(out)
    return 0 if RESULTS and all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
