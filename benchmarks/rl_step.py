"""One RL step, old against new: rollout, policy update and IG scoring on identical batches.

For each preset (nano, micro, untrained), group size G (5, 8) and max_turns (2, 4), one batch of
`--batch` rollouts (batch / G questions of the tiny world, each G times, as the trainer groups
them) is rolled out with the rollout settings of configs/nano-synthetic-*.yaml, at temperature 1:
  old    `HFGenerator` (`model.generate` on every row's whole context at every turn),
  new    `CachedHFGenerator` (igsearch.rollout.engine: per-row key/value caches across turns),
  floor  a bare cached loop over the new run's trajectories, forward calls only: the prompts in
         one forward, then per turn the inserted blocks in one forward and one forward per
         generated token for the rows still running, into in-place key/value buffers; no
         sampling, stop checks, retrieval or bookkeeping. It is what the same forwards cost.
An untrained policy never writes an action, so turns are scripted as in
benchmarks/_ig_common.py: `--free` sampled tokens, then the action is forced token by token: a
question's rows search 1 to max_turns times (by question), then answer, so rows leave the
rollout at different turns. Tokens/s counts generated (loss-mask 1) tokens.

The rest of the step runs on the new run's batch (the first repetition's), through the trainer
itself: an `IGSearchTrainer` is built per shape (the tiny world, a copy of the preset's policy,
algo defaults, beta = 0 so that neither update runs a reference-model forward, loss_type grpo),
with a `generator_factory` that replays the batch's trajectories turn by turn (checked equal), and
its `_generate_and_score_completions` gives the batch TRL trains on (ids, masks, the IG-Search
advantages). Then
  update  one GRPO update on that batch: the trainer's `compute_loss`, backward, gradient
          clipping and an AdamW step, as `Trainer.training_step` and the optimizer step run them;
          old = `train.update_chunks=1` (TRL's single forward over the batch padded to its
          longest row), new = `train.update_chunks=4` (length buckets; the same loss and
          gradients, see docs/design.md, The policy update); one untimed update first, on a
          preset's first shape;
  IG      the trainer's own IG scoring of the batch's search steps (`IGSearchTrainer._step_ig`:
          igsearch.rewards.step_ig.compute_step_ig with the trainer's defaults: 3 random
          counterfactual sets, the fast scorer; the first repetition's figure is the trainer's own
          timing of the scoring its batch step ran). `ig_tokens` is what the scorer encoded
          (AnswerScorer.tokens_encoded). `ig_floor_tokens` is what any exact IG must encode even
          if the rollout's keys and values were kept: for every scored search step (a non-empty
          query), its N counterfactual blocks, plus, in each of its 1 + N contexts (real and
          counterfactual), every answer continuation scored (answer prefix + alias):
              floor = Σ_steps [ Σ_j |cf block j| + (1 + N) · Σ_aliases |prefix + alias| ].
          `ig_root_tokens` is the part of the scorer's encoding the floor leaves out: each
          trajectory's context up to its last scored block (the scorer's prefix roots), which the
          rollout computed already.
old_step_s = old rollout + old update + IG and new_step_s = new rollout + new update + IG; IG is
the same work in both. old, new and floor rollouts, and old and new updates, alternate (`--reps`
times, the order rotating) in one process on identical batches (same prompts, config and seed);
each figure is the median.

    python benchmarks/rl_step.py            # nano and micro -> benchmarks/results/rl_step.{json,md}
    python benchmarks/rl_step.py --quick    # smoke run (nano, batch 10), nothing written
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _ig_common as common
import _machine
from _scripted import ScriptTurns

ROOT = common.ROOT
RESULTS = ROOT / "benchmarks" / "results"
TAGS = common.TAGS
DEMO_SHAPE = ("nano", 5, 4)
"""(preset, group, max_turns) of the demo step the targets are stated at."""

import torch  # noqa: E402
from transformers import LogitsProcessorList  # noqa: E402

import igsearch.train.trainer as trainer_module  # noqa: E402
from igsearch.config import (  # noqa: E402
    DataConfig,
    OptimConfig,
    RetrieverConfig,
    RolloutConfig,
    TrainConfig,
)
from igsearch.data.qa import read_qa  # noqa: E402
from igsearch.protocol import build_prompt  # noqa: E402
from igsearch.retrieval.index import load_index  # noqa: E402
from igsearch.rewards.score_plan import plan_scoring  # noqa: E402
from igsearch.rewards.scorer import AnswerScorer  # noqa: E402
from igsearch.rollout.backends import HFGenerator  # noqa: E402
from igsearch.rollout.engine import CachedHFGenerator  # noqa: E402
from igsearch.rollout.kv import BatchCache  # noqa: E402
from igsearch.rollout.loop import decode_ids, encode_block, run_rollouts  # noqa: E402
from igsearch.train.models import count_parameters, init_model, load_tokenizer  # noqa: E402
from igsearch.train.rl import example_row  # noqa: E402


def scripted(base: type) -> type:
    """`base` (a generator class) whose turns follow ScriptTurns; a question's rows search
    1 + (question index mod max_turns) times, then answer."""

    class Scripted(base):
        def __init__(self, model: Any, tokenizer: Any, free: int, searches: dict[str, int]):
            tags = [tokenizer.convert_tokens_to_ids(t) for t in TAGS.all_tags]
            banned = tags + [tokenizer.eos_token_id, tokenizer.pad_token_id]
            self.proc, self.searches = ScriptTurns(banned, free), searches
            super().__init__(model, tokenizer, logits_processor=LogitsProcessorList([self.proc]))

        def _action(self, ids: list[int]) -> str:
            text = decode_ids(self.tokenizer, ids)
            question = text.split("Question:", 1)[1].split("\n", 1)[0].strip()
            if text.count(TAGS.close(TAGS.info)) < self.searches[question]:
                return f"<search> {question.rstrip('?')} </search>"
            return "<answer> nobody </answer>"

        def generate(
            self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0
        ):
            scripts = [encode_block(self.tokenizer, self._action(list(ids))) for ids in batch]
            self.proc.start(max(len(ids) for ids in batch), scripts)
            return super().generate(batch, max_new_tokens, stop_strings, temperature, top_p, seed)

    return Scripted


OLD, NEW = scripted(HFGenerator), scripted(CachedHFGenerator)


def rollout_config(turns: int) -> RolloutConfig:
    """configs/nano-synthetic-*.yaml's rollout settings with `turns` as max_turns."""
    return RolloutConfig(
        prompt_style="bare",
        topk=3,
        max_turns=turns,
        max_new_tokens_per_turn=128,
        max_response_tokens=1280,
        max_context_tokens=1536,
        temperature=1.0,
        seed=0,
    )


def timed_rollout(generator: Any, prompts: list[str], retriever: Any, cfg: RolloutConfig):
    """(trajectories, wall seconds) of one run_rollouts call."""
    started = time.perf_counter()
    trajs = run_rollouts(prompts, generator, retriever, cfg)
    return trajs, time.perf_counter() - started


def _turns(traj: Any) -> list[tuple[list[int], list[int]]]:
    """(generated ids, ids inserted after them) per turn of a trajectory."""
    turns: list[tuple[list[int], list[int]]] = []
    for seg in traj.segments:
        ids = traj.response_ids[seg.start : seg.end]
        if seg.kind == "generated":
            turns.append((ids, []))
        else:
            turns[-1][1].extend(ids)
    return turns


def floor_rollout(model: Any, trajs: list[Any], pad: int) -> float:
    """Seconds of the bare cached loop over `trajs` (see the module docstring)."""
    turns = [_turns(t) for t in trajs]
    feeds = [[t.prompt_ids] + [g[-1:] + block for g, block in turn[:-1]] for t, turn in
             zip(trajs, turns, strict=True)]  # fmt: skip
    plan, rows = [], list(range(len(trajs)))
    for k in range(max(map(len, turns))):
        rows = [i for i in rows if len(turns[i]) > k]
        width = max(len(feeds[i][k]) for i in rows)
        ids = [[pad] * (width - len(feeds[i][k])) + feeds[i][k] for i in rows]
        plan.append((rows, torch.tensor(ids), max(len(turns[i][k][0]) for i in rows) - 1))
    device = next(model.parameters()).device
    cap = sum(ids.shape[1] + steps for _, ids, steps in plan)
    kv = BatchCache(model.config.num_hidden_layers, len(trajs), cap, device)
    kv.mask.fill_(1)
    started, previous = time.perf_counter(), plan[0][0]
    with torch.inference_mode():
        for rows, ids, steps in plan:
            if rows != previous:
                kv.select([previous.index(i) for i in rows])
                previous = rows
            forward(model, kv, ids.to(device))
            for _ in range(steps):
                forward(model, kv, torch.full((len(rows), 1), pad, device=device))
    return time.perf_counter() - started


def forward(model: Any, kv: BatchCache, ids: torch.Tensor) -> None:
    """One forward of `ids` (b, n) onto the cache, positions counted from its length."""
    start = kv.length
    positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None].expand_as(ids)
    model(
        input_ids=ids,
        attention_mask=kv.mask[:, : start + ids.shape[1]],
        position_ids=positions,
        past_key_values=kv.cache,
        use_cache=True,
        logits_to_keep=1,
    )


def batch_prompts(world: Path, batch: int, group: int, turns: int) -> tuple[list[str], dict]:
    """`batch` prompts (batch / group questions, each `group` times in a row) and each question's
    scripted number of searches."""
    examples = read_qa(world / "train.jsonl")[: batch // group]
    searches = {ex.question.strip(): 1 + i % turns for i, ex in enumerate(examples)}
    prompts = [build_prompt(ex.question, TAGS, "bare") for ex in examples for _ in range(group)]
    return prompts, searches


def batch_rows(world: Path, prompts: list[str], group: int) -> list[dict[str, Any]]:
    """The trainer's input rows for `prompts` (the dataset columns igsearch.train.rl builds)."""
    examples = read_qa(world / "train.jsonl")[: len(prompts) // group]
    return [
        example_row(ex, prompt)
        for prompt, ex in zip(prompts, (ex for ex in examples for _ in range(group)), strict=True)
    ]


class Replay:
    """A rollout backend that answers each context with the turn a recorded trajectory generated
    there (rows with the same context take theirs in row order): the trainer rolls out exactly
    the benchmark's batch."""

    def __init__(self, tokenizer: Any, trajs: list[Any], eos_token_ids: Any):
        self.tokenizer, self.eos_token_ids = tokenizer, eos_token_ids
        self.turns: dict[tuple[int, ...], list[list[int]]] = {}
        for t in trajs:
            for seg in t.segments:
                if seg.kind == "generated":
                    context = tuple(t.prompt_ids + t.response_ids[: seg.start])
                    self.turns.setdefault(context, []).append(t.response_ids[seg.start : seg.end])

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        return [self.turns[tuple(ids)].pop(0) for ids in batch]


class RecordingScorer(AnswerScorer):
    """The trainer's AnswerScorer, remembering the requests it scored (for the floor)."""

    last: list[Any] = []

    def score(self, requests):
        RecordingScorer.last = list(requests)
        return super().score(requests)


trainer_module.AnswerScorer = RecordingScorer  # the trainer builds its scorer from this name


def step_config(world: Path, out: Path, shape: tuple[str, int, int], batch: int) -> TrainConfig:
    """The trainer's config for one shape: algo defaults, beta 0, loss grpo, no reports."""
    _, group, turns = shape
    return TrainConfig(
        model="(in memory)",
        data=DataConfig(train=(str(world / "train.jsonl"),)),
        retriever=RetrieverConfig(index=str(world / "index")),
        rollout=rollout_config(turns),
        train=OptimConfig(
            output_dir=str(out),
            steps=1,
            group_size=group,
            batch_size=batch,
            beta=0.0,
            loss_type="grpo",
            report_to=(),
        ),
    )


def build_step(model, tok, world: Path, shape, prompts, trajs, eos_ids, out: Path):
    """(trainer, TRL's batch, input rows, (IG seconds, IG tokens)) for the new run's
    trajectories (see the module docstring); the IG figures are the trainer's own timing of the
    scoring its batch step ran."""
    from datasets import Dataset

    rows = batch_rows(world, prompts, shape[1])
    policy = copy.deepcopy(model).train()
    trainer = trainer_module.IGSearchTrainer(
        step_config(world, out, shape, len(prompts)),
        policy,
        tok,
        load_index(world / "index"),
        Dataset.from_list(rows),
        generator_factory=lambda m, t: Replay(t, trajs, eos_ids),
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()
    trainer.create_optimizer()
    batch = [dict(r) for r in rows]
    inputs = trainer._generate_and_score_completions(batch)  # TRL merges the rollout into batch
    if [x["trajectory"].response_ids for x in batch] != [t.response_ids for t in trajs]:
        raise RuntimeError("the trainer's replayed rollouts differ from the benchmark's batch")
    rows = [{**r, "trajectory": t} for r, t in zip(rows, trajs, strict=True)]
    ig = (trainer._times["ig_scoring"], int(trainer._metrics["train"]["ig/tokens_encoded"][-1]))
    return trainer, inputs, rows, ig


def timed_update(trainer, inputs: dict[str, Any], chunks: int) -> tuple[float, float]:
    """(seconds, positions fed) of one update with `train.update_chunks = chunks`."""
    cfg = trainer.cfg
    trainer.cfg = replace(cfg, train=replace(cfg.train, update_chunks=chunks))
    started = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, inputs)
    trainer.accelerator.backward(loss)
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    seconds = time.perf_counter() - started
    trainer.cfg = cfg
    return seconds, trainer._metrics["train"]["update/tokens"][-1]


def timed_ig(trainer, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """(seconds, tokens encoded) of the trainer's IG scoring of the batch."""
    started = time.perf_counter()
    _, tokens = trainer._step_ig(rows)
    return time.perf_counter() - started, tokens


def ig_floor(requests: list[Any], max_context: int) -> tuple[int, int]:
    """(floor tokens, root tokens) of the scorer's requests (see the module docstring)."""
    floor = 0
    for r in requests:
        answers = sum(len(a) for a in r.answers)
        floor += sum(len(b) for b in r.blocks[1:]) + len(r.blocks) * answers
    plan = plan_scoring(
        [(r.prefix, r.blocks, r.answers, r.alias_starts) for r in requests], max_context
    )
    return floor, sum(len(root) for root in plan.roots)


def warm_up(model, tok, world: Path, free: int) -> None:
    """A small rollout with each backend, so that no timed run pays for first calls."""
    prompts, searches = batch_prompts(world, 4, 2, 1)
    for cls in (OLD, NEW):
        run_rollouts(prompts, cls(model, tok, free, searches), load_index(world / "index"),
                     rollout_config(1))  # fmt: skip


def run_shape(
    model, tok, world: Path, shape: tuple[str, int, int], reps: int, args, warm: bool = False
) -> dict:
    """Rollouts (old / new / floor), updates (old / new) and IG, alternated `reps` times on one
    shape; medians and ratios. `warm`: run one untimed update first (a preset's first shape)."""
    preset, group, turns = shape
    prompts, searches = batch_prompts(world, args.batch, group, turns)
    retriever, cfg = load_index(world / "index"), rollout_config(turns)
    times: dict[str, list[float]] = {k: [] for k in ("old", "new", "floor", "old_update",
                                                     "new_update", "ig")}  # fmt: skip
    tokens: dict[str, Any] = {}
    counts: dict[str, int] = {}
    trainer = inputs = rows = None
    with tempfile.TemporaryDirectory() as out:
        for rep in range(reps):
            order = ("old", "new") if rep % 2 == 0 else ("new", "old")
            for kind in order:
                gen = (OLD if kind == "old" else NEW)(model, tok, args.free, searches)
                got, seconds = timed_rollout(gen, prompts, retriever, cfg)
                times[kind].append(seconds)
                tokens[kind] = sum(sum(t.loss_mask) for t in got)
                if kind == "new":
                    trajs, counts, eos_ids = got, dict(gen.counts), gen.eos_token_ids
            times["floor"].append(floor_rollout(model, trajs, tok.pad_token_id))
            if trainer is None:
                trainer, inputs, rows, (seconds, tokens["ig"]) = build_step(
                    model, tok, world, shape, prompts, trajs, eos_ids, Path(out)
                )
                torch.set_num_threads(args.threads)
                if warm:
                    timed_update(trainer, inputs, 4)  # first-call costs (allocator, autograd)
            else:
                seconds, tokens["ig"] = timed_ig(trainer, rows)
            times["ig"].append(seconds)
            for kind in order:
                seconds, tokens[f"{kind}_update"] = timed_update(
                    trainer, inputs, 1 if kind == "old" else 4
                )
                times[f"{kind}_update"].append(seconds)
    floor_tokens, root_tokens = ig_floor(RecordingScorer.last, trainer.cfg.algo.max_score_context)
    real = int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    med = {k: statistics.median(v) for k, v in times.items()}
    old_step = med["old"] + med["old_update"] + med["ig"]
    new_step = med["new"] + med["new_update"] + med["ig"]
    return {
        "preset": preset,
        "params": count_parameters(model),
        "group": group,
        "max_turns": turns,
        "batch": len(prompts),
        "old_step_s": round(old_step, 3),
        "new_step_s": round(new_step, 3),
        "step_speedup": round(old_step / new_step, 2),
        "ig_search_over_grpo": round(new_step / (new_step - med["ig"]), 3),
        "old_rollout_s": round(med["old"], 3),
        "new_rollout_s": round(med["new"], 3),
        "floor_rollout_s": round(med["floor"], 3),
        "rollout_speedup": round(med["old"] / med["new"], 2),
        "new_over_floor": round(med["new"] / med["floor"], 3),
        "old_update_s": round(med["old_update"], 3),
        "new_update_s": round(med["new_update"], 3),
        "update_speedup": round(med["old_update"] / med["new_update"], 2),
        "old_update_tokens": int(tokens["old_update"]),
        "new_update_tokens": int(tokens["new_update"]),
        "real_update_tokens": real,
        "ig_s": round(med["ig"], 3),
        "ig_tokens": int(tokens["ig"]),
        "ig_floor_tokens": floor_tokens,
        "ig_root_tokens": root_tokens,
        "ig_over_floor": round(tokens["ig"] / floor_tokens, 3) if floor_tokens else None,
        "scored_steps": len(RecordingScorer.last),
        "old_tokens_per_s": round(tokens["old"] / med["old"], 1),
        "new_tokens_per_s": round(tokens["new"] / med["new"], 1),
        "floor_tokens_per_s": round(tokens["new"] / med["floor"], 1),
        "generated_tokens": {"old": tokens["old"], "new": tokens["new"]},
        "new_prefilled_tokens": counts["prefilled"],
        "new_reused_tokens": counts["reused"],
        "reps": reps,
        "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m = report["machine"]
    lines = [
        "# One RL step: rollout, policy update and IG scoring (CPU)",
        "",
        f"{_machine.torch_header(m)} {m.get('note', '')}".rstrip(),
        "",
        f"Batch {report['batch']} rollouts, untrained policies with scripted turns "
        f"({report['free_tokens']} sampled tokens, then a forced action; a question's rows "
        "search 1 to max_turns times), BM25 top-3 over the tiny world, temperature 1, "
        f"median of {report['reps']['nano']} (nano, the order of old and new alternating) and "
        f"{report['reps']['micro']} (micro) runs per shape, after a warm-up. old: `HFGenerator`; new: "
        "`CachedHFGenerator`; floor: forward calls alone over the new run's trajectories "
        "(see benchmarks/rl_step.py).",
        "",
        "## Rollout",
        "",
        "| preset | G | max_turns | old s | new s | floor s | old/new | new/floor "
        "| old tok/s | new tok/s | floor tok/s | prefilled / reused tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['preset']} | {r['group']} | {r['max_turns']} | {r['old_rollout_s']:.2f} | "
            f"{r['new_rollout_s']:.2f} | {r['floor_rollout_s']:.2f} | "
            f"{r['rollout_speedup']:.2f}x | {r['new_over_floor']:.2f}x | "
            f"{r['old_tokens_per_s']:.0f} | {r['new_tokens_per_s']:.0f} | "
            f"{r['floor_tokens_per_s']:.0f} | {r['new_prefilled_tokens']} / "
            f"{r['new_reused_tokens']} |"
        )
    lines += [
        "",
        "## Whole step",
        "",
        "The new run's batch goes through an `IGSearchTrainer` (replayed rollout, IG-Search "
        "advantages, loss_type grpo, beta = 0 so that neither update runs a reference-model "
        "forward). update: compute_loss + backward + gradient clipping + AdamW step; old = "
        "`train.update_chunks=1` (TRL's single padded forward), new = `train.update_chunks=4` "
        "(length buckets, same loss and gradients). IG: the trainer's IG scoring of the batch "
        "(3 random counterfactual sets), the same in both steps. step = rollout + update + IG. "
        "Positions: rows x width fed to the model by the update (real tokens in brackets). IG "
        "tokens: encoded by the scorer; floor: counterfactual blocks + answers in every context "
        "(what any exact IG encodes with the rollout's cache kept); roots: the trajectories' "
        "contexts the scorer encodes once more (see benchmarks/rl_step.py).",
        "",
        "| preset | G | max_turns | old rollout s | new rollout s | old update s | new update s "
        "| update positions old / new (real) | IG s | IG tokens / floor (roots) | old step s "
        "| new step s | old/new | IG-Search / GRPO step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['preset']} | {r['group']} | {r['max_turns']} | {r['old_rollout_s']:.2f} | "
            f"{r['new_rollout_s']:.2f} | {r['old_update_s']:.2f} | {r['new_update_s']:.2f} | "
            f"{r['old_update_tokens']} / {r['new_update_tokens']} ({r['real_update_tokens']}) | "
            f"{r['ig_s']:.2f} | {r['ig_tokens']} / {r['ig_floor_tokens']} "
            f"({r['ig_root_tokens']}) | {r['old_step_s']:.2f} | {r['new_step_s']:.2f} | "
            f"{r['step_speedup']:.2f}x | {r['ig_search_over_grpo']:.2f}x |"
        )
    lines += _machine.load_note(m, m["nproc"], ", so wall-clock figures are noisy.")
    targets = target_lines(report["rows"])
    lines += ["", "## Targets", "", *targets] if targets else []
    path.write_text("\n".join(lines) + "\n")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The targets at the demo shape: rollout >= 2x today's and within 1.3x of the floor, whole
    step >= 2x today's, IG tokens within 1.2x of the floor; and the IG-Search / GRPO step ratio."""
    demo = [r for r in rows if (r["preset"], r["group"], r["max_turns"]) == DEMO_SHAPE]
    if not demo:
        return []
    r = demo[0]
    rollout_ok = r["rollout_speedup"] >= 2 and r["new_over_floor"] <= 1.3
    bound = r["old_rollout_s"] / r["floor_rollout_s"]
    grpo = r["new_step_s"] - r["ig_s"]
    return [
        f"At the demo shape (nano, batch {r['batch']}, G = 5, max_turns 4):",
        "",
        f"- Rollout >= 2x today's and <= 1.3x the bare loop: {r['rollout_speedup']:.2f}x "
        f"({_met(r['rollout_speedup'] >= 2)}) and {r['new_over_floor']:.2f}x "
        f"({_met(r['new_over_floor'] <= 1.3)}): **{_met(rollout_ok)}**. The bare loop itself is "
        f"{bound:.2f}x faster than today's backend there: no engine that runs these forwards "
        "can gain more; the rest of the time is the decode forwards themselves (batch x widest "
        "context attention at every token).",
        f"- Whole step >= 2x today's: {r['old_step_s']:.2f} s -> {r['new_step_s']:.2f} s, "
        f"{r['step_speedup']:.2f}x: **{_met(r['step_speedup'] >= 2)}** (rollout "
        f"{r['old_rollout_s']:.2f} -> {r['new_rollout_s']:.2f} s, update "
        f"{r['old_update_s']:.2f} -> {r['new_update_s']:.2f} s, IG {r['ig_s']:.2f} s in both).",
        f"- IG tokens <= 1.2x the floor: {r['ig_tokens']} against {r['ig_floor_tokens']}, "
        f"{r['ig_over_floor']:.2f}x: **{_met(r['ig_over_floor'] <= 1.2)}**. The scorer encodes "
        f"each trajectory's context once more ({r['ig_root_tokens']} root tokens); the floor "
        "assumes the rollout's keys and values are kept for scoring, which no scorer here does. "
        f"Without the roots the scorer encodes {r['ig_tokens'] - r['ig_root_tokens']} tokens, "
        f"{(r['ig_tokens'] - r['ig_root_tokens']) / r['ig_floor_tokens']:.2f}x the floor.",
        "",
        f"IG-Search against GRPO at the new speed: an IG-Search step is {r['new_step_s']:.2f} s, "
        f"the same step without IG scoring (GRPO's) {grpo:.2f} s: "
        f"{r['ig_search_over_grpo']:.2f}x. Both steps here share one batch, rollout and update; "
        "in training, GRPO's and IG-Search's batches differ as their policies do.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, nothing written")
    parser.add_argument("--world", type=Path, help="a world folder (default: a tiny one)")
    parser.add_argument("--batch", type=int, default=40, help="rollouts per step")
    parser.add_argument("--reps", type=int, default=2, help="alternated runs per nano shape")
    parser.add_argument(
        "--reps-micro", type=int, default=1, help="runs per micro shape (~4x nano's cost)"
    )
    parser.add_argument("--free", type=int, default=24, help="sampled tokens per scripted turn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--note", default="", help="a sentence on the machine's other load")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    presets, shapes = ["nano", "micro"], [(g, t) for g in (5, 8) for t in (2, 4)]
    if args.quick:
        presets, shapes, args.batch, args.reps = ["nano"], [(5, 2)], 10, 1
    machine = _machine.torch_machine_info(note=args.note)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        world = common.ensure_world(args.world, Path(tmp))
        tok = load_tokenizer(world / "tokenizer")
        for preset in presets:
            model = init_model(preset, tok, seed=0).eval()
            warm_up(model, tok, world, args.free)
            reps = args.reps_micro if preset == "micro" else args.reps
            for i, (group, turns) in enumerate(shapes):
                shape = (preset, group, turns)
                rows.append(run_shape(model, tok, world, shape, reps, args, warm=i == 0))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "times_s"}), flush=True)
    report = {"machine": machine, "batch": args.batch, "free_tokens": args.free, "rows": rows,
              "reps": {"nano": args.reps, "micro": args.reps_micro}}  # fmt: skip
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            write_markdown(report, Path(tmp) / "rl_step.md")
            print((Path(tmp) / "rl_step.md").read_text())
        print("quick run: results not written")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "rl_step.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out_dir / "rl_step.md")
    print(f"wrote {args.out_dir / 'rl_step.json'} and {args.out_dir / 'rl_step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
