"""IG-Search on TRL: `IGSearchTrainer`, a `GRPOTrainer` whose rollouts, rewards and advantages are
igsearch's. Tested with TRL 1.16 (pinned in pyproject.toml); this is the only module that imports TRL.

One training step is one scoring path, each stage reading what the previous one left on the rows:
1. rollout: `_rollout_func` runs igsearch's multi-turn loop (igsearch.rollout.loop) on the step's
   prompts (HF `generate`, or TRL's colocated vLLM engine) and hands TRL the token ids, the
   backend's sampling log-probs (TRL's vLLM importance correction reads them), `env_mask` = the
   trajectory's loss mask (inserted documents are attended to but never trained) and, per row,
   the `trajectory` itself, which TRL merges into the step's input rows;
2. reward: TRL calls `_calculate_rewards` once; it computes the exact-match reward (the TRL reward
   function `exact_match_reward`) and leaves each row's value on the row as `reward`;
3. advantages: `_generate_and_score_completions` scores the information gain of every search step
   under the rollout policy (igsearch.rewards.step_ig), gathers rewards, step IG and query spans
   from all processes and sets TRL's advantages to `compute_ig_advantages` of the gathered batch
   (this process's rows). TRL's loss broadcasts (B, T) advantages as they are. TRL's own (B,)
   group advantages are computed inside its method, which has no hook to skip them; they are
   never used;
4. update: `_compute_loss` runs TRL's loss over `train.update_chunks` length buckets of the batch,
   each trimmed of its padding, weighted so that loss and gradients are TRL's full-batch ones
   (docs/design.md, The policy update).

Each process scores the IG of its own rollouts; groups never straddle processes (checked up
front). Seeds of sampling and counterfactuals derive from the global step, so a resumed run draws
what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from igsearch.algo.advantages import compute_ig_advantages, get_estimator  # noqa: E402
from igsearch.config import TrainConfig  # noqa: E402
from igsearch.errors import IGSearchError  # noqa: E402
from igsearch.protocol import get_tagset  # noqa: E402
from igsearch.retrieval.base import TimedRetriever  # noqa: E402
from igsearch.rewards.outcome import exact_match  # noqa: E402
from igsearch.rewards.scorer import AnswerScorer  # noqa: E402
from igsearch.rewards.step_ig import compute_step_ig, corpus_fallback  # noqa: E402
from igsearch.rollout.engine import hf_generator  # noqa: E402
from igsearch.rollout.logprobs import LogprobRecorder  # noqa: E402
from igsearch.rollout.loop import run_rollouts  # noqa: E402
from igsearch.train.metrics import advantage_metrics, ig_metrics, rollout_metrics  # noqa: E402


def exact_match_reward(
    prompts: list, completions: list, answer: list, golden_answers: list, **_: Any
) -> list[float]:
    """TRL reward function: EM of the last <answer> of each response against the gold aliases."""
    return [exact_match(a, g) for a, g in zip(answer, golden_answers, strict=True)]


def check_processes(cfg: TrainConfig, num_processes: int) -> int:
    """Rollouts per process; each process must hold whole groups (its metrics and IG scoring
    are per group) and TRL's multi-turn path needs vLLM's colocated engine."""
    o = cfg.train
    if o.batch_size % num_processes:
        raise IGSearchError(
            f"train.batch_size={o.batch_size} is not divisible by {num_processes} processes; "
            f"use a multiple of {num_processes * o.group_size}"
        )
    per = o.batch_size // num_processes
    if per % o.group_size:
        raise IGSearchError(
            f"train.batch_size={o.batch_size} over {num_processes} processes gives {per} rollouts "
            f"per process, not a multiple of train.group_size={o.group_size}, so groups would be "
            f"split across processes; use a multiple of {num_processes * o.group_size}"
        )
    if o.use_vllm and o.vllm_mode != "colocate":
        raise IGSearchError(
            "multi-turn rollouts drive vLLM per turn, which needs train.vllm_mode=colocate "
            "(TRL's server mode generates whole completions only)"
        )
    return per


def grpo_args(cfg: TrainConfig, num_processes: int = 1) -> GRPOConfig:
    """TRL arguments for a TrainConfig (batch split over processes, one update per generation).

    bf16 is TRL's autocast: the model keeps fp32 master weights (see rl.load_train_policy).
    """
    o, r = cfg.train, cfg.rollout
    return GRPOConfig(
        output_dir=o.output_dir,
        max_steps=o.steps,
        per_device_train_batch_size=check_processes(cfg, num_processes),
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
        vllm_max_model_length=r.max_context_tokens if o.use_vllm else None,
        report_to=list(o.report_to),
        temperature=r.temperature,  # TrainConfig refuses a near-greedy one and top_p < 1
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
        self._fallback = corpus_fallback(retriever)
        self.renamer, self._renamed = None, None
        if cfg.data.rename_entities:
            from igsearch.data.world.rename import Renamer, RenamingRetriever

            self.renamer = Renamer.for_questions(cfg.data.train[0])
            self._renamed = RenamingRetriever(retriever)
            self._fallback = self._renamed.fallback(self._fallback)
        self.retriever = TimedRetriever(self._renamed or retriever)
        self._times: dict[str, float] = {}
        from accelerate import PartialState

        super().__init__(
            model=model,
            reward_funcs=[exact_match_reward],
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

    # -- 1. rollouts ------------------------------------------------------------------------------

    def _generator(self, model: Any) -> Any:
        if self.generator_factory is not None:
            return self.generator_factory(model, self.processing_class)
        if not self.cfg.train.use_vllm:
            return hf_generator(model, self.processing_class)
        from igsearch.rollout.backends import VLLMGenerator

        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        return VLLMGenerator.from_llm(self.vllm_generation.llm, self.processing_class, eos)

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
            generator = LogprobRecorder(self._generator(model))
            trajs = run_rollouts(
                list(prompts), generator, self.retriever, self.cfg.rollout, seed=self.step_seed()
            )
        finally:
            model.train(was_training)
        self._times = {
            "rollout": time.perf_counter() - t0,
            "retrieval": self.retriever.seconds - r0,
        }
        eos = self.processing_class.eos_token_id
        return {  # an empty response (prompt over budget) becomes one masked EOS, as TRL needs a token
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.response_ids or [eos] for t in trajs],
            "logprobs": [generator.response_logprobs(t) or [None] for t in trajs],
            "env_mask": [t.loss_mask or [0] for t in trajs],
            "answer": [t.answer for t in trajs],
            "trajectory": trajs,
        }

    # -- 2. rewards -------------------------------------------------------------------------------

    def _local_rows(self, n: int) -> slice:
        i = self.accelerator.process_index
        return slice(i * n, (i + 1) * n)

    def _calculate_rewards(self, inputs: list, prompts: list, completions: list, ids: list) -> Any:
        """TRL's reward step, the one place the outcome reward is computed: (all rows, 1) gathered
        exact match; each of this process's rows keeps its own value as `reward`."""
        t0 = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, ids)
        for x, r in zip(inputs, rewards[self._local_rows(len(inputs)), 0].tolist(), strict=True):
            x["reward"] = r
        self._times["outcome_reward"] = time.perf_counter() - t0
        return rewards

    # -- 3. information gain and advantages --------------------------------------------------------

    def _step_ig(self, inputs: Sequence[dict[str, Any]]) -> tuple[list[list[float]], int]:
        """IG of every search step of this process's rollouts, and the tokens the scorer encoded."""
        trajs, a = [x["trajectory"] for x in inputs], self.cfg.algo
        if not self.estimator.needs_ig or a.alpha == 0:  # IG cannot change any advantage
            return [[0.0] * len(t.steps) for t in trajs], 0
        model = self.accelerator.unwrap_model(self.model)
        scorer = AnswerScorer(
            model,
            a.max_score_context,
            a.first_tokens,
            a.first_weight,
            temperature=self.cfg.rollout.temperature,
        )
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
            rendering=self.cfg.rollout.rendering,
        )
        return step_ig, scorer.tokens_encoded

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.renamer is None:
            return self._score_step(inputs)
        # `data.rename_entities`: the step's rows, retriever and random documents share one fresh
        # spelling of the world's names, the same on every process (igsearch.data.world.rename)
        renaming = self.renamer.draw(self.cfg.train.seed * 1_000_003 + self.state.global_step)
        inputs[:] = [renaming.example(x) for x in inputs]
        self._renamed.renaming = renaming
        try:
            return self._score_step(inputs)
        finally:
            self._renamed.renaming = None

    def _score_step(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)  # steps 1 and 2
        t0 = time.perf_counter()
        step_ig, ig_tokens = self._step_ig(inputs)
        self._times["ig_scoring"] = time.perf_counter() - t0
        width = out["completion_ids"].size(1)
        adv = self._advantages(inputs, step_ig, width)
        out["advantages"] = adv.to(out["completion_ids"].device)
        self._log_step_metrics(inputs, step_ig, adv, out, ig_tokens)
        self._log_support_metrics(inputs, step_ig)
        return out

    def _advantages(
        self, inputs: Sequence[dict[str, Any]], step_ig: list[list[float]], width: int
    ) -> torch.Tensor:
        """(B_local, width) advantages: `compute_ig_advantages` of the batch gathered from every
        process (group statistics and IG normalisation see whole groups), this process's rows."""
        from accelerate.utils import gather_object

        a, acc = self.cfg.algo, self.accelerator
        rewards = acc.gather(torch.tensor([x["reward"] for x in inputs], device=acc.device)).cpu()
        spans = [[s.query_span for s in x["trajectory"].steps] for x in inputs]
        widest = int(acc.gather(torch.tensor([width], device=acc.device)).max())
        adv = compute_ig_advantages(
            rewards,
            self.cfg.train.group_size,
            gather_object(step_ig),
            gather_object(spans),
            widest,
            alpha=a.alpha if self.estimator.needs_ig else 0.0,
            ig_norm=a.ig_norm,
            ig_clip=a.ig_clip,
        )
        return adv[self._local_rows(len(inputs)), :width]

    def _log_support_metrics(self, inputs: Sequence[dict[str, Any]], step_ig: list) -> None:
        """How IG separates steps that retrieved a supporting passage (igsearch.train.metrics)."""
        from igsearch.train.metrics import support_metrics

        scored = self.estimator.needs_ig and self.cfg.algo.alpha != 0
        support = [x.get("supporting_ids") or [] for x in inputs]
        trajs = [x["trajectory"] for x in inputs]
        for k, v in support_metrics(trajs, support, step_ig if scored else None).items():
            self._metrics["train"][k].append(v)

    def _log_step_metrics(
        self,
        inputs: Sequence[dict[str, Any]],
        step_ig: list[list[float]],
        adv: torch.Tensor,
        out: dict,
        ig_tokens: int,
    ) -> None:
        g = self.cfg.train.group_size
        trajs, rewards = [x["trajectory"] for x in inputs], [x["reward"] for x in inputs]
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
        metrics["ig/tokens_encoded"] = float(ig_tokens)
        for k, v in metrics.items():
            self._metrics["train"][k].append(v)

    # -- 4. the policy update ----------------------------------------------------------------------

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss over length buckets of the batch (docs/design.md, The policy update).

        Rows are sorted by real length (prompt + completion tokens) and split into
        `train.update_chunks` contiguous micro-batches; each is trimmed to its own widths (the
        leading all-padding columns of the left-padded prompts, the trailing all-padding columns
        of every right-padded (B, T) completion tensor) and run through TRL's `_compute_loss`.
        The chunk losses are summed with weights that reproduce TRL's full-batch normalisation
        (`chunk_weights`), so loss and gradients are the single forward's up to rounding (the
        trimmed prompt columns shift a chunk's absolute positions, which rotary attention does not
        see). Only the forward over fewer padded positions differs. One backward runs over the sum.

        TRL's metrics appended inside the loss (entropy, clip ratios, kl) come once per chunk; they
        are folded back into one value per step (`_merge_chunk_metrics`: token-weighted means,
        min of minima, max of maxima). `update/tokens` logs the positions fed to the model (rows x
        width over the forwards), `update/padded_tokens` the padding among them.
        """
        real = int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
        chunks = self._update_chunks(inputs)
        if chunks is None:
            fed = inputs["prompt_ids"].numel() + inputs["completion_ids"].numel()
            self._log_update_tokens(fed, real)
            return super()._compute_loss(model, inputs)
        weights = chunk_weights(self.loss_type, inputs, chunks)
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        before = {k: len(v) for k, v in metrics.items()}
        loss, fed, new = None, 0, []
        for chunk, w in zip(chunks, weights, strict=True):
            sizes = {k: len(v) for k, v in metrics.items()}
            part = super()._compute_loss(model, chunk) * w
            loss = part if loss is None else loss + part
            fed += chunk["prompt_ids"].numel() + chunk["completion_ids"].numel()
            new.append({k: v[sizes.get(k, 0) :] for k, v in metrics.items()})
        _merge_chunk_metrics(metrics, before, new, [_loss_tokens(c) for c in chunks])
        self._log_update_tokens(fed, real)
        return loss

    def _update_chunks(self, inputs: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The length buckets of `inputs`, or None for TRL's single forward (one bucket asked for,
        one row, or a loss setting or input this split cannot reproduce exactly)."""
        k = min(self.cfg.train.update_chunks, inputs["prompt_ids"].size(0))
        exact = (
            self.loss_type in EXACT_LOSS_TYPES
            and not self._entropy_bonus_enabled  # its mean is over the batch's tokens
            and self.top_entropy_quantile >= 1.0  # a quantile over the batch's tokens
            and not self.aux_loss_enabled  # one router loss per forward
        )
        if k < 2 or not exact:
            return None
        return split_by_length(inputs, k)

    def _log_update_tokens(self, fed: int, real: int) -> None:
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["update/tokens"].append(float(fed))
        self._metrics[mode]["update/padded_tokens"].append(float(fed - real))

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

    # -- dev evaluation ---------------------------------------------------------------------------

    def evaluate_dev(self) -> dict[str, float]:
        """Greedy dev EM (overall and by question type) with the current policy; logged as dev/*."""
        from igsearch.eval.evaluate import aggregate, aggregate_by, evaluate_examples

        if self.cfg.train.use_vllm and self._last_loaded_step != self.state.global_step:
            self.vllm_generation.sync_weights()  # the engine holds the weights of the step's start
            self._last_loaded_step = self.state.global_step
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

    def log_dev(self, logs: dict[str, float]) -> None:
        """Log a dev row on its own: the Trainer's log without TRL's merge of the pending step
        metrics, which belong to the step's own row."""
        Trainer.log(self, logs)


CHUNK_WEIGHTING = {
    **dict.fromkeys(("grpo", "sapo", "luspo", "dr_grpo"), "rows"),
    "bnpo": "tokens",
    **dict.fromkeys(("dapo", "cispo", "vespo"), "global"),
}
"""How each TRL loss type's full-batch loss splits over chunks (see chunk_weights): by the chunk's
share of rows, by its share of loss tokens, or not at all (a global normaliser)."""

EXACT_LOSS_TYPES = tuple(CHUNK_WEIGHTING)
"""TRL loss types whose full-batch loss is a weighted sum of chunk losses."""

PROMPT_KEYS = ("prompt_ids", "prompt_mask")
"""Left-padded (B, T_prompt) inputs: a chunk drops its leading all-padding columns."""

COMPLETION_KEYS = (
    "completion_ids",
    "completion_mask",
    "tool_mask",
    "advantages",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
)
"""Right-padded (B, T_completion) inputs (when 2-D and that wide): a chunk drops its trailing
all-padding columns. As (B,) or (B, 1) tensors they are per row and only row-indexed."""


def _loss_tokens(inputs: dict[str, Any]) -> int:
    """Tokens TRL's loss averages over: completion mask x tool mask."""
    mask = inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        mask = mask * inputs["tool_mask"]
    return int(mask.sum())


def split_by_length(inputs: dict[str, Any], k: int) -> list[dict[str, Any]] | None:
    """`inputs` sorted by real length and split into `k` contiguous chunks of (nearly) equal rows,
    each trimmed to its own prompt and completion widths; None when an input has a layout this
    cannot trim (image inputs, per-row lists), so the caller runs the single forward."""
    prompt_mask, completion_mask = inputs["prompt_mask"], inputs["completion_mask"]
    rows, width = completion_mask.shape
    lengths = prompt_mask.sum(1) + completion_mask.sum(1)
    order = torch.sort(lengths.cpu(), stable=True).indices
    chunks = []
    for idx in torch.tensor_split(order, k):
        idx = idx.to(completion_mask.device)
        has_prompt = prompt_mask[idx].sum(0).nonzero()
        first = int(has_prompt[0]) if len(has_prompt) else 0
        has_completion = completion_mask[idx].sum(0).nonzero()
        last = max(int(has_completion[-1]) + 1 if len(has_completion) else 1, 1)
        chunk: dict[str, Any] = {}
        for key, value in inputs.items():
            if (
                value is None
                or isinstance(value, int | float)
                or (torch.is_tensor(value) and value.dim() == 0)
            ):
                chunk[key] = value  # e.g. num_items_in_batch: a global normaliser, kept
            elif not torch.is_tensor(value) or value.size(0) != rows:
                return None
            elif key in PROMPT_KEYS:
                chunk[key] = value[idx, first:]
            elif key in COMPLETION_KEYS and value.dim() == 2 and value.size(1) == width:
                chunk[key] = value[idx, :last]
            elif value.dim() == 1 or (value.dim() == 2 and value.size(1) == 1):
                chunk[key] = value[idx]
            else:
                return None
        chunks.append(chunk)
    return chunks


def chunk_weights(loss_type: str, inputs: dict[str, Any], chunks: list[dict[str, Any]]) -> list:
    """Weights w_c with TRL's full-batch loss = sum_c w_c * (TRL's loss of chunk c).

    TRL 1.16 (GRPOTrainer._compute_loss) normalises as follows; B rows, M loss tokens in all:
    grpo, sapo: mean over rows of each row's token mean -> w_c = B_c / B;
    luspo: mean over rows of each row's token sum -> w_c = B_c / B;
    dr_grpo: token sum / (rows x max_completion_length) -> w_c = B_c / B;
    bnpo: token sum / token count -> w_c = M_c / M (a chunk without loss tokens sums to 0);
    dapo, cispo, vespo: token sum / num_items_in_batch, a global count every chunk keeps -> 1.
    """
    rule = CHUNK_WEIGHTING.get(loss_type)
    if rule == "rows":
        rows = inputs["prompt_ids"].size(0)
        return [c["prompt_ids"].size(0) / rows for c in chunks]
    if rule == "tokens":
        total = _loss_tokens(inputs)  # 0: every chunk's loss is 0 / 1, any weight will do
        return [_loss_tokens(c) / total if total else 0.0 for c in chunks]
    if rule == "global":
        return [1.0] * len(chunks)
    raise ValueError(f"no exact chunk weights for loss_type {loss_type!r}")


def _merge_chunk_metrics(
    metrics: dict[str, list], before: dict[str, int], new: list[dict[str, list]], tokens: list
) -> None:
    """Fold the values each chunk's loss appended to `metrics` into one per step: the minimum of
    `*_min` keys, the maximum of `*_max` keys, else the mean weighted by the chunks' loss tokens
    (TRL's own metrics are token means over the batch; the weights are this process's)."""
    for key in {k for part in new for k, v in part.items() if v}:
        values = [(v, w) for part, w in zip(new, tokens, strict=True) for v in part.get(key, [])]
        del metrics[key][before.get(key, 0) :]
        finite = [v for v, _ in values if not math.isnan(v)] or [math.nan]
        if key.endswith("_min"):
            merged = min(finite)
        elif key.endswith("_max"):
            merged = max(finite)
        else:
            total = sum(w for _, w in values)
            merged = (
                sum(v * w for v, w in values) / total
                if total
                else sum(v for v, _ in values) / len(values)
            )
        metrics[key].append(merged)


class DevEvalCallback(TrainerCallback):
    """Evaluates dev EM before training, every `train.eval_steps` steps and at the end.

    On an evaluation step, `on_step_end` only asks the Trainer to log that step; the evaluation
    runs in `on_log`, right after the step's own row is written, so a step's training metrics and
    the dev metrics never share a row.
    """

    def __init__(self, trainer: IGSearchTrainer):
        self.trainer = trainer
        self.done: set[int] = set()
        self.pending = False

    def _run(self, state: Any) -> None:
        if state.global_step in self.done or not state.is_world_process_zero:
            return
        self.done.add(state.global_step)
        self.trainer.log_dev(self.trainer.evaluate_dev())

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step == 0:
            self._run(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        every = self.trainer.cfg.train.eval_steps
        if every and state.global_step % every == 0 and state.global_step not in self.done:
            self.pending = True
            control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.pending:  # the step's own row has just been written
            self.pending = False
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
