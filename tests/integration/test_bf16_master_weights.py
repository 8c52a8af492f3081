"""bf16 training keeps fp32 master weights: the policy loads in fp32 on the CPU whatever the
machine (accelerate places it), and a tiny random Qwen2 trains one step under bf16 autocast with a
1e-6 learning rate that changes the fp32 weights (an update bf16 weights would mostly round away)."""

from __future__ import annotations

from dataclasses import replace

import torch
from test_trainer import make_cfg, scripted, setup  # noqa: F401  (the module-scoped fixture)
from transformers import Qwen2Config, Qwen2ForCausalLM

from igsearch.train.models import load_tokenizer
from igsearch.train.rl import build_trainer, load_train_policy


def test_training_loads_fp32_on_the_cpu_even_with_cuda(setup, monkeypatch):  # noqa: F811
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model, _ = load_train_policy(make_cfg(setup["root"], "fp32"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_bf16_autocast_step_updates_fp32_master_weights(setup, tiny_shape):  # noqa: F811
    root = setup["root"]
    tok = load_tokenizer(root / "policy")
    config = Qwen2Config(
        **tiny_shape,
        vocab_size=len(tok),
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(root / "qwen2")
    tok.save_pretrained(root / "qwen2")
    cfg = make_cfg(root, "bf16", bf16=True, learning_rate=1e-6, save_steps=10)
    cfg = replace(cfg, model=str(root / "qwen2"), data=replace(cfg.data, dev=None))
    trainer = build_trainer(cfg, generator_factory=scripted)
    assert trainer.args.bf16 and trainer.accelerator.mixed_precision == "bf16"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert {p.dtype for p in before.values()} == {torch.float32}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert {p.dtype for p in after.values()} == {torch.float32}
    changed = sum(int((after[n] != b).sum()) for n, b in before.items())
    total = sum(b.numel() for b in before.values())
    assert changed > total // 2  # AdamW moves most weights by ~1e-6, which fp32 resolves
    bf16_changed = sum(int((after[n].bfloat16() != b.bfloat16()).sum()) for n, b in before.items())
    assert bf16_changed < changed // 10  # stored in bf16, most of the update would be lost
