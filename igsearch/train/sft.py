"""Supervised warm start: teacher-forced training of a tiny policy on a world's oracle demonstrations.

Uses transformers' `Trainer` on pre-tokenised rows (igsearch.train.sft_data): the loss is masked on
the prompt and on inserted documents, the same rule as the RL loss, so the warm start and RL train
the same tokens, and only trained positions are projected to the vocabulary
(`trained_positions_loss`: the same loss, without the logits of documents nobody trains on).
Length-grouped batches keep padding low (demonstrations range from ~150 to ~900
tokens). Checkpoints go to OUT/checkpoints, each renamed into place only once complete
(igsearch.train.checkpoint); `--resume` continues from the newest complete one, optimizer and
schedule included. The log goes to OUT/train_log.jsonl and TensorBoard (OUT/checkpoints/runs).
The final model and tokenizer are saved into OUT with `save_pretrained`, next to `igsearch.json`
recording the prompt style and tag set the policy was trained with, for evaluation and rollouts.

Where this departs from Search-R1 / IG-Search: they start RL from a pretrained instruction model
with no SFT; a policy trained from scratch first needs the protocol, which the demonstrations teach.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from igsearch.config import POLICY_INFO, SftConfig, read_policy_info, to_dict
from igsearch.data.world import read_demos, read_world
from igsearch.errors import IGSearchError
from igsearch.tokenizer import load_tokenizer
from igsearch.train.checkpoint import last_complete_checkpoint, save_checkpoint_atomically
from igsearch.train.models import count_parameters, init_model
from igsearch.train.sft_data import IGNORE, EncodedDemos, PadCollator, encode_demos

log = logging.getLogger(__name__)


class _Rows(Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def trained_positions_loss(
    model: Any, inputs: dict[str, torch.Tensor], num_items: torch.Tensor | int | None = None
) -> torch.Tensor:
    """The causal LM loss, with only the trained positions projected to the vocabulary.

    A causal LM's own loss computes logits at every position (prompt, inserted documents and
    padding included) and then ignores most of them. Here the decoder's hidden states are taken
    at the positions whose next token is trained (shifted label != -100), and only those go
    through the LM head: the same loss, summed over trained tokens and divided by `num_items`
    (default: their count), for about a third of the head's work on demonstrations.
    """
    labels = inputs["labels"][:, 1:]
    keep = labels != IGNORE
    hidden = model.get_decoder()(
        input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
    ).last_hidden_state
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), labels[keep], reduction="sum")
    return loss / (num_items if num_items is not None else keep.sum().clamp(min=1))


class _SftTrainer(Trainer):
    """transformers' Trainer with `trained_positions_loss`; gradient accumulation is handled as
    for the model's own loss (normalised by the step's trained-token count when Trainer gives it).
    `bf16` runs the loss under bf16 autocast (the weights and AdamW stay fp32)."""

    def __init__(self, *args, bf16: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.bf16 = bf16

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:  # evaluation asks for outputs; keep the model's own path there
            return super().compute_loss(model, inputs, True, num_items_in_batch)
        device = inputs["input_ids"].device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16):
            return trained_positions_loss(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, written aside and renamed into place once complete."""
        save_checkpoint_atomically(self, super()._save_checkpoint, model, trial)


class JsonlLog(TrainerCallback):
    """Appends every Trainer log record (step, loss, learning rate, …) to a jsonl file."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            with self.path.open("a") as f:
                f.write(
                    json.dumps({"step": state.global_step, "time": round(time.time(), 2), **logs})
                    + "\n"
                )


class TimeLimit(TrainerCallback):
    """Stops training (saving a checkpoint) once `minutes` of training have passed."""

    def __init__(self, minutes: float | None):
        self.seconds = None if minutes is None else minutes * 60
        self.started = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None and time.time() - self.started > self.seconds:
            log.warning(
                "sft: time limit of %.1f min reached at step %d; stopping",
                self.seconds / 60,
                state.global_step,
            )
            control.should_training_stop = control.should_save = True
        return control


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return {
                w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()
            }
    except OSError:  # not Linux: no way to tell, assume no native bf16
        return set()


def resolve_precision(
    choice: str, cuda: bool | None = None, cpu_flags: set[str] | None = None
) -> str:
    """The precision `sft.precision` resolves to, "bf16" or "fp32".

    "auto" takes bf16 where the hardware multiplies it natively: a CUDA GPU with bf16, or a CPU
    with AVX512-BF16 or AMX, where bf16 autocast made the nano policy's SFT steps about 1.2x
    faster (benchmarks/results/rl_recipe.md, section 12). Elsewhere it takes fp32, because bf16
    would be emulated and slower.
    """
    if choice != "auto":
        return choice
    if cuda if cuda is not None else torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "fp32"


def _training_args(cfg: SftConfig, out: Path) -> TrainingArguments:
    try:
        import tensorboard  # noqa: F401

        report_to = ["tensorboard"]
    except ImportError:
        report_to = []
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size // cfg.grad_accum,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        lr_scheduler_kwargs=(
            {"num_decay_steps": max(1, round(cfg.decay_ratio * cfg.max_steps))}
            if cfg.lr_scheduler == "warmup_stable_decay"
            else {}
        ),
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=False,  # autocast is _SftTrainer's own: the loss calls the decoder, not forward
        fp16=False,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=report_to,
        disable_tqdm=False,
    )


def _resume_point(out: Path, resume: bool) -> str | None:
    ckpt_dir = out / "checkpoints"
    if not resume:
        if ckpt_dir.is_dir() and any(ckpt_dir.glob("checkpoint-*")):
            raise IGSearchError(
                f"{out}: holds SFT checkpoints already; pass --resume to continue, or choose another --out"
            )
        return None
    last = last_complete_checkpoint(ckpt_dir)
    if last is None:
        log.warning(
            "sft: --resume but no complete checkpoint in %s; starting from scratch", ckpt_dir
        )
        return None
    log.info("sft: resuming from %s", last)
    return str(last)


def load_demo_rows(world: Path, tokenizer: Any, cfg: SftConfig) -> EncodedDemos:
    """The world's demonstrations (the first `max_demos`), encoded; fails if none fit."""
    demos = read_demos(world)
    if cfg.max_demos is not None:
        demos = demos[: cfg.max_demos]
    encoded = encode_demos(tokenizer, demos, cfg.max_length)
    if not encoded.rows:
        raise IGSearchError(
            f"{world}: no demonstration fits sft.max_length={cfg.max_length} tokens; raise it"
        )
    if encoded.too_long:
        log.warning(
            "sft: %d demonstrations longer than %d tokens were left out",
            encoded.too_long,
            cfg.max_length,
        )
    return encoded


def run_sft(
    world: str | Path, out: str | Path, cfg: SftConfig = SftConfig(), *, resume: bool = False
) -> dict[str, Any]:
    """Warm-start a tiny policy on `world`'s demonstrations into `out`; returns the run summary."""
    world, out = Path(world), Path(out)
    manifest = read_world(world)
    torch.set_num_threads(cfg.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    last = _resume_point(out, resume)
    tokenizer = load_tokenizer(world / "tokenizer")
    data = load_demo_rows(world, tokenizer, cfg)
    model = init_model(cfg.preset, tokenizer, seed=cfg.seed)
    trainer = _SftTrainer(
        model=model,
        args=_training_args(cfg, out),
        train_dataset=_Rows(data.rows),
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=[JsonlLog(out / "train_log.jsonl"), TimeLimit(cfg.max_minutes)],
        bf16=resolve_precision(cfg.precision) == "bf16",
    )
    started = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    summary = _summary(
        cfg, world, manifest, data, trainer, result, seconds, count_parameters(model)
    )
    (out / POLICY_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _summary(
    cfg, world, manifest, data: EncodedDemos, trainer, result, seconds, n_params
) -> dict[str, Any]:
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    steps = trainer.state.global_step
    return {
        "format": "igsearch-policy",
        "prompt_style": manifest.get("prompt_style", "bare"),
        "tagset": manifest.get("tagset", "search-r1"),
        "topk": manifest.get("topk", 3),
        "world": str(world.resolve()),
        "world_hash": manifest.get("content_hash"),
        "preset": cfg.preset,
        "parameters": n_params,
        "sft": to_dict(cfg),
        "precision": "bf16" if trainer.bf16 else "fp32",
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "demos": len(data.rows),
        "demos_too_long": data.too_long,
        "demos_by_type": data.by_type,
        "tokens": data.tokens,
        "trained_tokens": data.trained_tokens,
        "epochs": round(steps * cfg.batch_size / len(data.rows), 3),
        "final_loss": losses[-1] if losses else result.training_loss,
        "train_loss": result.training_loss if not math.isnan(result.training_loss) else None,
    }


def read_policy_meta(path: str | Path) -> dict[str, Any]:
    """The `POLICY_INFO` of a policy folder, or {} for a folder that has none (e.g. a hub model)."""
    return read_policy_info(path)
