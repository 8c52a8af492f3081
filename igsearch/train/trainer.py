"""IG-Search on TRL: `IGSearchTrainer`, a `GRPOTrainer` whose rollouts, rewards and advantages are
igsearch's. Tested with TRL 1.16 (pinned in pyproject.toml); this is the only module that imports TRL.

One training step:
1. `rollout_func` runs igsearch's multi-turn loop (igsearch.rollout.loop) on the step's prompts and
   hands TRL the token ids plus `env_mask` = the trajectory's loss mask, so inserted documents are
   attended to but never trained;
2. TRL computes the old / reference log-probs and the exact-match reward (a TRL reward function);
3. `_generate_and_score_completions` then scores the information gain of every search step under
   the rollout policy (igsearch.rewards.step_ig) and replaces TRL's (B,) advantages by igsearch's
   (B, T) ones (igsearch.algo.advantages). TRL's loss broadcasts (B, T) advantages as they are.

Rewards and IG are gathered across processes for the group statistics; each process scores the IG
of its own shard of rollouts. Seeds of sampling and counterfactuals derive from the global step, so
a resumed run draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from igsearch.algo.advantages import (  # noqa: E402
    add_ig_to_advantages,
    compute_grpo_advantages,
    get_estimator,
    normalize_step_ig,
)
from igsearch.config import TrainConfig  # noqa: E402
from igsearch.errors import IGSearchError  # noqa: E402
from igsearch.protocol import get_tagset  # noqa: E402
from igsearch.retrieval.base import Hit, TimedRetriever  # noqa: E402
from igsearch.rewards.outcome import exact_match  # noqa: E402
from igsearch.rewards.scorer import AnswerScorer  # noqa: E402
from igsearch.rewards.step_ig import compute_step_ig  # noqa: E402
from igsearch.rollout.backends import HFGenerator  # noqa: E402
from igsearch.rollout.loop import run_rollouts  # noqa: E402
from igsearch.train.metrics import advantage_metrics, ig_metrics, rollout_metrics  # noqa: E402


def exact_match_reward(
    prompts: list, completions: list, answer: list, golden_answers: list, **_: Any
) -> list[float]:
    """TRL reward function: EM of the last <answer> of each response against the gold aliases."""
    return [exact_match(a, g) for a, g in zip(answer, golden_answers, strict=True)]


def corpus_fallback(retriever: Any):
    """Random corpus documents for counterfactual sets, when the retriever holds a corpus store."""
    store = getattr(retriever, "store", None)
    if store is None or not len(store):
        return None

    def draw(rng, n: int) -> list[Hit]:
        return [
            Hit(store[int(i)], 0.0) for i in rng.choice(len(store), size=n, replace=n > len(store))
        ]

    return draw


def grpo_args(cfg: TrainConfig, num_processes: int = 1) -> GRPOConfig:
    """TRL arguments for a TrainConfig (batch split over processes, one update per generation)."""
    o, r = cfg.train, cfg.rollout
    if o.batch_size % num_processes:
        raise ValueError(
            f"train.batch_size={o.batch_size} is not divisible by {num_processes} processes"
        )
    return GRPOConfig(
        output_dir=o.output_dir,
        max_steps=o.steps,
        per_device_train_batch_size=o.batch_size // num_processes,
        num_generations=o.group_size,
        gradient_accumulation_steps=1,
        learning_rate=o.learning_rate,
        lr_scheduler_type=o.lr_scheduler,
        warmup_steps=o.warmup_ratio,  # a float in [0, 1) is a ratio of the steps
        max_grad_norm=o.max_grad_norm,
        beta=o.beta,
        loss_type=o.loss_type,
        epsilon=o.epsilon,
        seed=o.seed,
        data_seed=o.seed,
        save_steps=o.save_steps,
        save_total_limit=o.save_total_limit,
        logging_steps=o.logging_steps,
        bf16=o.bf16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=o.gradient_checkpointing,
        use_vllm=o.use_vllm,
        vllm_mode=o.vllm_mode,
        report_to=list(o.report_to),
        temperature=max(r.temperature, 1e-5),
        top_p=r.top_p,
        max_completion_length=r.max_response_tokens,
        remove_unused_columns=False,
        scale_rewards="group",
    )


class IGSearchTrainer(GRPOTrainer):
    """GRPO with igsearch's rollouts and IG-Search's per-token advantages (see the module docstring)."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: Any,
        tokenizer: Any,
        retriever: Any,
        train_dataset: Any,
        generator_factory: Callable[[Any, Any], Any] | None = None,
        dev_examples: Sequence[Any] | None = None,
        **kwargs: Any,
    ):
        """`generator_factory(model, tokenizer)` replaces the rollout backend (e.g. a scripted fake);
        `dev_examples` (QAExample) are evaluated greedily every `train.eval_steps` and at the end."""
        self.cfg = cfg
        self.generator_factory = generator_factory
        self.estimator = get_estimator(cfg.algo.estimator)
        self.tags = get_tagset(cfg.rollout.tagset)
        self.retriever = TimedRetriever(retriever)
        self._fallback = corpus_fallback(retriever)
        self._batch: list = []
        self._times: dict[str, float] = {}
        self._ig_tokens = 0
        from accelerate import PartialState

        super().__init__(
            model=model,
            reward_funcs=[self._timed_reward()],
            args=grpo_args(cfg, PartialState().num_processes),
            train_dataset=train_dataset,
            processing_class=tokenizer,
            rollout_func=self._rollout_func,
            **kwargs,
        )
        self.add_callback(MetricsFileCallback(Path(cfg.train.output_dir) / "metrics.jsonl"))
        self.dev_examples = dev_examples or []
        if self.dev_examples:
            self.add_callback(DevEvalCallback(self))

    # -- rollouts ---------------------------------------------------------------------------------

    def _generator(self, model: Any) -> Any:
        if self.generator_factory is not None:
            return self.generator_factory(model, self.processing_class)
        if not self.cfg.train.use_vllm:
            return HFGenerator(model, self.processing_class)
        from igsearch.rollout.backends import VLLMGenerator

        llm = getattr(getattr(self, "vllm_generation", None), "llm", None)
        if llm is None:
            raise IGSearchError(
                "multi-turn rollouts drive vLLM per turn, which needs train.vllm_mode=colocate "
                "(TRL's server mode generates whole completions only)"
            )
        return VLLMGenerator.from_llm(llm, self.processing_class)

    def step_seed(self) -> int:
        """Seed of this step's sampling and counterfactuals: a function of (seed, step, process)."""
        return (
            self.cfg.train.seed * 1_000_003
            + self.state.global_step * 1009
            + self.accelerator.process_index
        ) % (2**31 - 1)

    def _rollout_func(self, prompts: Sequence[str], trainer: Any) -> dict[str, Any]:
        t0, r0 = time.perf_counter(), self.retriever.seconds
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        try:
            trajs = run_rollouts(
                list(prompts),
                self._generator(model),
                self.retriever,
                self.cfg.rollout,
                seed=self.step_seed(),
            )
        finally:
            model.train(was_training)
        self._batch = trajs
        self._times = {
            "rollout": time.perf_counter() - t0,
            "retrieval": self.retriever.seconds - r0,
        }
        eos = self.processing_class.eos_token_id
        return {  # an empty response (prompt over budget) becomes one masked EOS, as TRL needs a token
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.response_ids or [eos] for t in trajs],
            "logprobs": None,
            "env_mask": [t.loss_mask or [0] for t in trajs],
            "answer": [t.answer for t in trajs],
        }

    # -- rewards, information gain, advantages ---------------------------------------------------

    def _add_time(self, name: str, seconds: float) -> None:
        self._times[name] = self._times.get(name, 0.0) + seconds

    def _timed_reward(self) -> Callable[..., list[float]]:
        """exact_match_reward (same name for TRL's logs), adding its seconds to time/outcome_reward."""

        @functools.wraps(exact_match_reward)
        def reward(*args: Any, **kwargs: Any) -> list[float]:
            t0 = time.perf_counter()
            try:
                return exact_match_reward(*args, **kwargs)
            finally:
                self._add_time("outcome_reward", time.perf_counter() - t0)

        return reward

    def _step_ig(self, inputs: Sequence[dict[str, Any]]) -> list[list[float]]:
        trajs, a = self._batch, self.cfg.algo
        self._ig_tokens = 0
        if not self.estimator.needs_ig or a.alpha == 0:  # IG cannot change any advantage
            return [[0.0] * len(t.steps) for t in trajs]
        model = self.accelerator.unwrap_model(self.model)
        scorer = AnswerScorer(model, a.max_score_context, a.first_tokens, a.first_weight)
        step_ig = compute_step_ig(
            trajs,
            [x["golden_answers"] for x in inputs],
            [x["qid"] for x in inputs],
            scorer,
            self.processing_class,
            self.tags,
            counterfactual=self.estimator.counterfactual or "random",
            n_sets=a.n_counterfactuals,
            seed=self.step_seed(),
            answer_prefix=a.answer_prefix,
            max_obs_tokens=self.cfg.rollout.max_obs_tokens,
            fallback=self._fallback,
        )
        self._ig_tokens = scorer.tokens_encoded
        return step_ig

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)
        trajs, g, a = self._batch, self.cfg.train.group_size, self.cfg.algo
        t0 = time.perf_counter()
        step_ig = self._step_ig(inputs)
        self._times["ig_scoring"] = time.perf_counter() - t0
        from accelerate.utils import gather_object

        t0 = time.perf_counter()
        local_rewards = [
            exact_match(t.answer, x["golden_answers"]) for t, x in zip(trajs, inputs, strict=True)
        ]
        self._add_time("outcome_reward", time.perf_counter() - t0)
        rewards = self.accelerator.gather(
            torch.tensor(local_rewards, device=self.accelerator.device)
        ).cpu()
        all_ig = normalize_step_ig(gather_object(step_ig), g, a.ig_norm, a.ig_clip)
        n = len(trajs)
        local = slice(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        spans = [[s.query_span for s in t.steps] for t in trajs]
        alpha = a.alpha if self.estimator.needs_ig else 0.0
        adv = add_ig_to_advantages(
            compute_grpo_advantages(rewards, g)[local],
            all_ig[local],
            spans,
            out["completion_ids"].size(1),
            alpha,
        )
        out["advantages"] = adv.to(out["completion_ids"].device)
        self._log_step_metrics(trajs, local_rewards, step_ig, adv, out)
        self._log_support_metrics(inputs, step_ig)
        return out

    def _log_support_metrics(self, inputs: Sequence[dict[str, Any]], step_ig: list) -> None:
        """How IG separates steps that retrieved a supporting passage (igsearch.train.metrics)."""
        from igsearch.train.metrics import support_metrics

        scored = self.estimator.needs_ig and self.cfg.algo.alpha != 0
        support = [x.get("supporting_ids") or [] for x in inputs]
        for k, v in support_metrics(self._batch, support, step_ig if scored else None).items():
            self._metrics["train"][k].append(v)

    def _log_step_metrics(
        self,
        trajs: list,
        rewards: list[float],
        step_ig: list[list[float]],
        adv: torch.Tensor,
        out: dict,
    ) -> None:
        g = self.cfg.train.group_size
        metrics = rollout_metrics(trajs, rewards, g)
        metrics.update(ig_metrics(step_ig))
        mask = out["completion_mask"] * out.get(
            "tool_mask", torch.ones_like(out["completion_mask"])
        )
        fail = torch.tensor(
            [all(r == 0 for r in rewards[i - i % g : i - i % g + g]) for i in range(len(rewards))]
        )
        metrics.update(advantage_metrics(adv.cpu(), mask.cpu(), fail))
        metrics.update({f"time/{k}": v for k, v in self._times.items()})
        metrics["ig/tokens_encoded"] = float(self._ig_tokens)
        for k, v in metrics.items():
            self._metrics["train"][k].append(v)

    def training_step(
        self, model: Any, inputs: Any, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        t0, cpu0 = time.perf_counter(), time.process_time()
        loss = super().training_step(model, inputs, num_items_in_batch)
        step = time.perf_counter() - t0
        self._metrics["train"]["time/step"].append(step)
        # CPU seconds of the whole process (all threads), without the time spent waiting for a CPU.
        self._metrics["train"]["time/step_cpu"].append(time.process_time() - cpu0)
        spent = sum(self._times.get(k, 0.0) for k in ("rollout", "outcome_reward", "ig_scoring"))
        self._metrics["train"]["time/update"].append(max(step - spent, 0.0))
        return loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """TRL's checkpoint, written aside and renamed into place when complete (train.checkpoint)."""
        from igsearch.train.checkpoint import save_checkpoint_atomically

        save_checkpoint_atomically(self, super()._save_checkpoint, model, trial)

    def evaluate_dev(self) -> dict[str, float]:
        """Greedy dev EM (overall and by question type) with the current policy; logged as dev/*."""
        from igsearch.eval.evaluate import aggregate, aggregate_by, evaluate_examples

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        try:
            records = evaluate_examples(
                self.dev_examples,
                self._generator(model),
                self.retriever.inner,
                self.cfg.rollout,
                progress=False,
            )
        finally:
            model.train(was_training)
        logs = {f"dev/{k}": v for k, v in aggregate(records).items() if k != "latency_s"}
        for qtype, agg in aggregate_by(records).items():
            if qtype != "None":
                logs[f"dev/em/{qtype}"] = agg["em"]
        return logs


class DevEvalCallback(TrainerCallback):
    """Evaluates dev EM before training, every `train.eval_steps` steps and at the end."""

    def __init__(self, trainer: IGSearchTrainer):
        self.trainer = trainer
        self.done: set[int] = set()

    def _run(self, state: Any) -> None:
        if state.global_step in self.done or not state.is_world_process_zero:
            return
        self.done.add(state.global_step)
        self.trainer.log(self.trainer.evaluate_dev())

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step == 0:
            self._run(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        every = self.trainer.cfg.train.eval_steps
        if every and state.global_step % every == 0:
            self._run(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self._run(state)


class MetricsFileCallback(TrainerCallback):
    """Appends every log (step metrics, dev evaluations) to a JSONL file a person can follow."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
