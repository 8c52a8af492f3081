"""One RL step's rollout, today's backend against the cached engine, and the bare-loop floor.

For each preset (nano, micro, untrained), group size G (5, 8) and max_turns (2, 4), one batch of
`--batch` rollouts (batch / G questions of the tiny world, each G times, as the trainer groups
them) is rolled out with the rollout settings of configs/nano-synthetic-*.yaml, at temperature 1:
  old    `HFGenerator` (`model.generate` on every row's whole context at every turn),
  new    `CachedHFGenerator` (igsearch.rollout.engine: per-row key/value caches across turns),
  floor  a bare cached loop over the new run's trajectories, forward calls only: the prompts in
         one forward, then per turn the inserted blocks in one forward and one forward per
         generated token for the rows still running, into in-place key/value buffers; no
         sampling, stop checks, retrieval or bookkeeping. It is what the same forwards cost.
old, new and floor alternate (`--reps` times, the order rotating) in one process on identical
batches (same prompts, config and seed); each figure is the median. An untrained policy never
writes an action, so turns are scripted as in benchmarks/_ig_common.py: `--free` sampled tokens,
then the action is forced token by token: a question's rows search 1 to max_turns times (by
question), then answer, so rows leave the rollout at different turns. Tokens/s counts generated
(loss-mask 1) tokens. The whole-step columns of the full RL-step benchmark (update, IG scoring,
step time) are not measured here yet.

    python benchmarks/rl_step.py            # nano and micro -> benchmarks/results/rl_step.{json,md}
    python benchmarks/rl_step.py --quick    # smoke run (nano, batch 10), nothing written
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
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

from igsearch.config import RolloutConfig  # noqa: E402
from igsearch.data.qa import read_qa  # noqa: E402
from igsearch.protocol import build_prompt  # noqa: E402
from igsearch.retrieval.index import load_index  # noqa: E402
from igsearch.rollout.backends import HFGenerator  # noqa: E402
from igsearch.rollout.engine import CachedHFGenerator  # noqa: E402
from igsearch.rollout.kv import BatchCache  # noqa: E402
from igsearch.rollout.loop import decode_ids, encode_block, run_rollouts  # noqa: E402
from igsearch.train.models import count_parameters, init_model, load_tokenizer  # noqa: E402


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


def warm_up(model, tok, world: Path, free: int) -> None:
    """A small rollout with each backend, so that no timed run pays for first calls."""
    prompts, searches = batch_prompts(world, 4, 2, 1)
    for cls in (OLD, NEW):
        run_rollouts(prompts, cls(model, tok, free, searches), load_index(world / "index"),
                     rollout_config(1))  # fmt: skip


def run_shape(model, tok, world: Path, shape: tuple[str, int, int], reps: int, args) -> dict:
    """old / new / floor alternated `reps` times on one shape; medians and ratios."""
    preset, group, turns = shape
    prompts, searches = batch_prompts(world, args.batch, group, turns)
    retriever, cfg = load_index(world / "index"), rollout_config(turns)
    times: dict[str, list[float]] = {"old": [], "new": [], "floor": []}
    tokens: dict[str, int] = {}
    counts: dict[str, int] = {}
    for rep in range(reps):
        trajs = None
        for kind in ("old", "new") if rep % 2 == 0 else ("new", "old"):
            gen = (OLD if kind == "old" else NEW)(model, tok, args.free, searches)
            got, seconds = timed_rollout(gen, prompts, retriever, cfg)
            times[kind].append(seconds)
            tokens[kind] = sum(sum(t.loss_mask) for t in got)
            if kind == "new":
                trajs, counts = got, dict(gen.counts)
        times["floor"].append(floor_rollout(model, trajs, tok.pad_token_id))
    old, new, floor = (statistics.median(times[k]) for k in ("old", "new", "floor"))
    return {
        "preset": preset,
        "params": count_parameters(model),
        "group": group,
        "max_turns": turns,
        "batch": len(prompts),
        "old_rollout_s": round(old, 3),
        "new_rollout_s": round(new, 3),
        "floor_rollout_s": round(floor, 3),
        "rollout_speedup": round(old / new, 2),
        "new_over_floor": round(new / floor, 3),
        "old_tokens_per_s": round(tokens["old"] / old, 1),
        "new_tokens_per_s": round(tokens["new"] / new, 1),
        "floor_tokens_per_s": round(tokens["new"] / floor, 1),
        "generated_tokens": {"old": tokens["old"], "new": tokens["new"]},
        "new_prefilled_tokens": counts["prefilled"],
        "new_reused_tokens": counts["reused"],
        "reps": reps,
        "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m = report["machine"]
    lines = [
        "# One RL step: rollout (HF backend, CPU)",
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
    lines += _machine.load_note(m, m["nproc"], ", so wall-clock figures are noisy.")
    lines += ["", *target_lines(report["rows"])]
    lines += [
        "",
        "Not measured yet: the whole-step columns of the RL-step benchmark (policy update, IG "
        "scoring, step time and their ratios); this file holds the rollout part only.",
    ]
    path.write_text("\n".join(lines) + "\n")


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The targets at the demo shape: rollout >= 2x today's, within 1.3x of the floor."""
    demo = [r for r in rows if (r["preset"], r["group"], r["max_turns"]) == DEMO_SHAPE]
    if not demo:
        return []
    r = demo[0]
    ok = "met" if r["rollout_speedup"] >= 2 and r["new_over_floor"] <= 1.3 else "NOT met"
    bound = r["old_rollout_s"] / r["floor_rollout_s"]
    return [
        f"Targets at the demo shape (nano, batch {r['batch']}, G = 5, max_turns 4): rollout "
        f"{r['rollout_speedup']:.2f}x faster than today's (target >= 2x), "
        f"{r['new_over_floor']:.2f}x the bare loop (target <= 1.3x): {ok}. The bare loop itself "
        f"is {bound:.2f}x faster than today's backend there: no engine that runs these forwards "
        "can gain more; the rest of the time is the decode forwards themselves (batch x widest "
        "context attention at every token)."
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
            for group, turns in shapes:
                rows.append(run_shape(model, tok, world, (preset, group, turns), reps, args))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "times_s"}), flush=True)
    report = {"machine": machine, "batch": args.batch, "free_tokens": args.free, "rows": rows,
              "reps": {"nano": args.reps, "micro": args.reps_micro}}  # fmt: skip
    if args.quick:
        print("quick run: results not written")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "rl_step.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out_dir / "rl_step.md")
    print(f"wrote {args.out_dir / 'rl_step.json'} and {args.out_dir / 'rl_step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
