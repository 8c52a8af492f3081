"""`igsearch train`: load the policy, data and retriever of a TrainConfig and run IGSearchTrainer."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from igsearch.config import POLICY_INFO, TrainConfig, load_config, read_policy_info, to_dict
from igsearch.data.qa import QAExample, read_qa
from igsearch.errors import IGSearchError
from igsearch.protocol import build_prompt
from igsearch.retrieval.base import Retriever
from igsearch.train.checkpoint import last_complete_checkpoint
from igsearch.train.models import check_model_source, load_policy

log = logging.getLogger(__name__)


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from YAML + overrides, with input files checked before any work."""
    cfg = load_config(TrainConfig, path, overrides)
    missing = [
        p
        for p in (*cfg.data.train, cfg.data.dev, cfg.retriever.index)
        if p and not Path(p).exists()
    ]
    if missing:
        raise IGSearchError(
            f"train config: these paths do not exist: {', '.join(missing)}; fix data.train, "
            "data.dev or retriever.index (paths are relative to the current folder)"
        )
    check_model_source(cfg.model)  # before any work, and before transformers is asked
    return cfg


def open_retriever(cfg: TrainConfig) -> Retriever:
    """The configured retriever: an index folder in process, or an HTTP /retrieve server."""
    if cfg.retriever.index is not None:
        from igsearch.retrieval.index import load_index

        return load_index(cfg.retriever.index)
    from igsearch.retrieval.client import HttpRetriever

    return HttpRetriever(
        cfg.retriever.url, timeout=cfg.retriever.timeout, retries=cfg.retriever.retries
    )


def read_examples(paths: Sequence[str], limit: int | None = None) -> list[QAExample]:
    """QA examples of several files, in order, at most `limit`."""
    out: list[QAExample] = []
    for p in paths:
        out.extend(read_qa(p))
    return out[:limit] if limit is not None else out


def spread_by_type(examples: Sequence[QAExample], limit: int | None) -> list[QAExample]:
    """At most `limit` examples taking the question types (`metadata.type`) in turn, each in file
    order: a dev slice of a file sorted by type still covers every type."""
    if limit is None or limit >= len(examples):
        return list(examples)
    queues: dict[str, list[QAExample]] = {}
    for ex in examples:
        queues.setdefault(str(ex.metadata.get("type", "")), []).append(ex)
    out: list[QAExample] = []
    for i in range(max(len(q) for q in queues.values())):
        out += [q[i] for q in queues.values() if i < len(q)]
    return out[:limit]


def example_row(ex: QAExample, prompt: str) -> dict[str, Any]:
    """One trainer input row: the prompt TRL samples and the columns the rewards and metrics read
    (`supporting_ids`: the passages that support the answer, empty when the data has none)."""
    return {
        "prompt": prompt,
        "golden_answers": list(ex.golden_answers),
        "qid": ex.id,
        "qtype": str(ex.metadata.get("type", "")),
        "supporting_ids": [str(x) for x in ex.metadata.get("supporting_ids") or []],
    }


def build_dataset(examples: Sequence[QAExample], cfg: TrainConfig, tokenizer: Any) -> Any:
    """A datasets.Dataset of `example_row`s, prompts rendered as the rollout config says."""
    from datasets import Dataset

    r = cfg.rollout
    return Dataset.from_list(
        [
            example_row(
                ex, build_prompt(ex.question, r.tagset, r.prompt_style, tokenizer, r.rendering)
            )
            for ex in examples
        ]
    )


def load_train_policy(cfg: TrainConfig) -> tuple[Any, Any]:
    """(model, tokenizer) to train: fp32 weights on the CPU, whatever the machine.

    The optimizer updates these fp32 master weights; `train.bf16` runs forward and backward under
    bf16 autocast (with DeepSpeed, its bf16 engine keeps the fp32 master copy in the optimizer
    state instead). Accelerate moves the model to each process's own device; moving it here would
    put every process's copy on GPU 0.
    """
    model, tokenizer = load_policy(
        cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=torch.float32, device="cpu"
    )
    return model, tokenizer


def build_trainer(
    cfg: TrainConfig, callbacks: Sequence[Any] = (), generator_factory: Any = None
) -> Any:
    """Everything a run needs, wired: policy, tokenizer, retriever, dataset, trainer.

    `generator_factory(model, tokenizer)` replaces the rollout backend (tests use a scripted one).
    """
    from igsearch.train.trainer import IGSearchTrainer

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    model, tokenizer = load_train_policy(cfg)
    dataset = build_dataset(read_examples(cfg.data.train, cfg.data.max_train), cfg, tokenizer)
    if len(dataset) * cfg.train.group_size < cfg.train.batch_size:
        raise IGSearchError(
            f"data.train has {len(dataset)} questions but one step needs {cfg.train.batch_size // cfg.train.group_size}"
        )
    dev = spread_by_type(read_examples([cfg.data.dev]), cfg.data.dev_limit) if cfg.data.dev else []
    return IGSearchTrainer(
        cfg,
        model,
        tokenizer,
        open_retriever(cfg),
        dataset,
        generator_factory,
        dev,
        callbacks=list(callbacks),
    )


def save_policy(trainer: Any, cfg: TrainConfig, out_dir: str | Path) -> None:
    """Save the trained policy as a Hugging Face folder, with the rollout settings it expects."""
    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir))
    trainer.processing_class.save_pretrained(str(out_dir))
    info = read_policy_info(cfg.model)
    info.update(
        {
            "prompt_style": cfg.rollout.prompt_style,
            "rendering": cfg.rollout.rendering,
            "tagset": cfg.rollout.tagset,
            "trained_with": cfg.algo.estimator,
        }
    )
    (out_dir / POLICY_INFO).write_text(json.dumps(info, indent=2) + "\n")


def run_training(
    cfg: TrainConfig,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    generator_factory: Any = None,
) -> Path:
    """Train, checkpointing every `train.save_steps`; returns the folder of the final policy."""
    out = Path(cfg.train.output_dir)
    if out.exists() and not resume and any(out.glob("checkpoint-*")):
        raise IGSearchError(
            f"{out} already holds checkpoints: pass --resume to continue, or choose another train.output_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    trainer = build_trainer(cfg, callbacks, generator_factory)
    last = last_complete_checkpoint(out) if resume else None
    if resume and last is None:
        log.warning("--resume: no complete checkpoint in %s, starting from step 0", out)
    elif last is not None:
        log.info("--resume: continuing from %s", last)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    final = out / "final"
    if trainer.accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        save_policy(trainer, cfg, final)
    return final
