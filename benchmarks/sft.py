"""Acceptance measurement of the supervised warm start on the synthetic world.

Builds the world if needed (`igsearch world`), runs `igsearch sft` if the policy folder has no
finished policy, then evaluates the policy greedily on dev with BM25 top-k (igsearch.rollout) and
again with a NullRetriever (every search returns nothing: the no-retrieval baseline), and writes
benchmarks/results/sft.{json,md}: well-formed share, EM per question type, mean searches, the
share of first queries that retrieve a supporting passage, and the SFT's time and steps.

Usage: python benchmarks/sft.py [--world DIR] [--policy DIR] [--size small] [--seed 0]
                                [--limit N] [--retrain] [--quick] [key=value SftConfig overrides]

Exits 1 when an acceptance bar is missed (the results files are written either way).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import _machine

RESULTS = Path(__file__).resolve().parent / "results"
BARS = {"well_formed": 0.9, "single_hop_margin": 0.10, "multi_hop_gap": 0.10}
"""Acceptance: well-formed share >= 0.9; single-hop EM >= no-retrieval EM + 0.10 (clearly above);
multi-hop EM (mean over bridge, comparison, compositional) <= single-hop EM - 0.10 (well below)."""


def prepare_world(path: Path, size: str, seed: int) -> dict[str, Any]:
    """The world's manifest: built first when missing (in a child process, `build_world_apart`),
    checked against the default world settings when present."""
    from igsearch.config import WorldConfig
    from igsearch.data.world import ensure_world

    if not (path / "world.json").exists():
        print(f"building the {size} world (seed {seed}) into {path} ...", flush=True)
    fix = f"delete {path} and the policies trained on it (--retrain)"
    return ensure_world(WorldConfig(seed=seed, size=size), path, fix=fix)


def ensure_policy(world: Path, policy: Path, overrides: list[str], retrain: bool) -> dict[str, Any]:
    from igsearch.config import SftConfig, load_config
    from igsearch.train.sft import read_policy_meta, run_sft

    meta = read_policy_meta(policy)
    if meta and not retrain:
        print(
            f"using the trained policy in {policy} ({meta['steps']} steps, {meta['train_seconds']}s)"
        )
        return meta
    if retrain and policy.exists():
        shutil.rmtree(policy)
    cfg = load_config(SftConfig, None, overrides)
    print(f"sft: {cfg}", flush=True)
    resume = (policy / "checkpoints").is_dir()
    return run_sft(world, policy, cfg, resume=resume)


def rollout_all(
    model: Any, tokenizer: Any, prompts: list[str], retriever: Any, cfg: Any, batch: int
) -> list[Any]:
    from igsearch.rollout.backends import HFGenerator
    from igsearch.rollout.loop import run_rollouts

    generator = HFGenerator(model, tokenizer)
    out: list[Any] = []
    for start in range(0, len(prompts), batch):
        out += run_rollouts(prompts[start : start + batch], generator, retriever, cfg)
        print(f"  {len(out)}/{len(prompts)} rollouts", flush=True)
    return out


def score(examples: list[Any], trajectories: list[Any]) -> dict[str, dict[str, float]]:
    """Per question type (and "all", "multi_hop"): n, em, well_formed, searches, first_query_hit."""
    from igsearch.rewards.outcome import exact_match

    rows: dict[str, list[dict[str, float]]] = {}
    for ex, traj in zip(examples, trajectories, strict=True):
        support = set(ex.metadata.get("supporting_ids", []))
        first = traj.steps[0].doc_ids if traj.steps else []
        row = {
            "em": exact_match(traj.answer, list(ex.golden_answers)),
            "well_formed": float(traj.well_formed),
            "searches": float(traj.num_searches),
            "first_query_hit": float(bool(support & set(first))),
        }
        qtype = ex.metadata["type"]
        for key in (qtype, "all") + (("multi_hop",) if qtype != "single_hop" else ()):
            rows.setdefault(key, []).append(row)
    return {
        key: {"n": len(rs), **{m: round(statistics.fmean(r[m] for r in rs), 4) for m in rs[0]}}
        for key, rs in rows.items()
    }


def evaluate(
    world: Path, policy: Path, meta: dict[str, Any], limit: int | None, batch: int
) -> dict[str, Any]:
    import torch

    from igsearch.config import RolloutConfig
    from igsearch.data.qa import read_qa_jsonl
    from igsearch.protocol import build_prompt
    from igsearch.retrieval.index import load_index
    from igsearch.rollout.loop import NullRetriever
    from igsearch.train.models import load_policy
    from igsearch.train.rl import spread_by_type

    torch.set_num_threads(meta.get("sft", {}).get("num_threads", 2))
    examples = spread_by_type(read_qa_jsonl(world / "dev.jsonl"), limit)  # every type in a slice
    model, tokenizer = load_policy(policy, device="cpu")
    cfg = RolloutConfig(tagset=meta["tagset"], prompt_style=meta["prompt_style"], topk=meta.get("topk", 3),
                        max_turns=4, max_new_tokens_per_turn=128, max_response_tokens=1536,
                        max_context_tokens=2048, temperature=0.0)  # fmt: skip
    prompts = [build_prompt(ex.question, cfg.tagset, cfg.prompt_style) for ex in examples]
    results, samples = {}, {}
    for name, retriever in (
        ("bm25", load_index(world / "index")),
        ("no_retrieval", NullRetriever()),
    ):
        started = time.time()
        trajs = rollout_all(model, tokenizer, prompts, retriever, cfg, batch)
        results[name] = {"seconds": round(time.time() - started, 1), **score(examples, trajs)}
        samples[name] = [
            _sample(ex, t, tokenizer) for ex, t in list(zip(examples, trajs, strict=True))[:6]
        ]
    return {"rollout": {"topk": cfg.topk, "max_turns": cfg.max_turns, "greedy": True}, "n": len(examples),
            "results": results, "samples": samples}  # fmt: skip


def _sample(ex: Any, traj: Any, tokenizer: Any) -> dict[str, Any]:
    return {"question": ex.question, "gold": list(ex.golden_answers), "type": ex.metadata["type"],
            "response": tokenizer.decode(traj.response_ids), "answer": traj.answer}  # fmt: skip


def acceptance(results: dict[str, Any]) -> dict[str, Any]:
    bm25, null = results["bm25"], results["no_retrieval"]
    single, multi = bm25["single_hop"]["em"], bm25["multi_hop"]["em"]
    checks = {
        "well_formed >= 0.9": bm25["all"]["well_formed"] >= BARS["well_formed"],
        "single-hop EM >= no-retrieval + 0.10": single
        >= null["single_hop"]["em"] + BARS["single_hop_margin"],
        "multi-hop EM <= single-hop EM - 0.10": multi <= single - BARS["multi_hop_gap"],
    }
    return {"checks": checks, "passed": all(checks.values())}


def write_markdown(report: dict[str, Any], path: Path) -> None:
    sft, ev = report["sft"], report["eval"]
    types = ["single_hop", "bridge", "comparison", "compositional", "multi_hop", "all"]
    lines = [
        "# SFT warm start on the synthetic world (acceptance)", "",
        f"World: `{report['world']['size']}` seed {report['world']['seed']} ({report['world']['passages']} passages, "
        f"{report['world']['demos']} demonstrations), hash `{report['world']['content_hash'][:12]}`; "
        f"share of dev subject-name tokens never written in a demonstration: {report['world']['unseen_name_token_share']['dev']:.1%}.",
        f"Policy: `{sft['preset']}` ({sft['parameters']:,} parameters), {sft['steps']} steps of batch "
        f"{sft['sft']['batch_size']} ({sft['epochs']} epochs over {sft['demos']} demonstrations) in "
        f"**{sft['train_seconds']:.0f} s** on {report['machine']['threads']} CPU threads; final loss {sft['final_loss']:.3f}.",
        f"Evaluation: greedy, BM25 top-{ev['rollout']['topk']}, max {ev['rollout']['max_turns']} searches, {ev['n']} dev questions.", "",
        "| type | n | EM (BM25) | EM (no retrieval) | well-formed | mean searches | first query hits support |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for t in (t for t in types if t in ev["results"]["bm25"]):
        b, z = ev["results"]["bm25"][t], ev["results"]["no_retrieval"][t]
        lines.append(
            f"| {t} | {b['n']} | {b['em']:.1%} | {z['em']:.1%} | {b['well_formed']:.1%} | {b['searches']:.2f} | {b['first_query_hit']:.1%} |"
        )
    lines += ["", "Acceptance:", ""]
    lines += [
        f"- {'PASS' if ok else 'FAIL'}: {name}"
        for name, ok in report["acceptance"]["checks"].items()
    ]
    lines += ["", f"Machine: {report['machine']['platform']}, torch {report['machine']['torch']}; "
              f"rollouts took {ev['results']['bm25']['seconds']} s (BM25) and {ev['results']['no_retrieval']['seconds']} s (none).",
              "", "Reproduce: `python benchmarks/sft.py --retrain` (see the module docstring).", ""]  # fmt: skip
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, default=Path("data/world-small-s0"))
    parser.add_argument("--policy", type=Path, default=Path("runs/sft-nano-small"))
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="Evaluate on the first N dev questions only."
    )
    parser.add_argument("--batch", type=int, default=100, help="Rollouts generated together.")
    parser.add_argument(
        "--retrain", action="store_true", help="Discard the policy folder and train again."
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for sft.json and sft.md.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smoke run: tiny world, 20 SFT steps, 24 dev questions, results under results/quick.",
    )
    parser.add_argument("overrides", nargs="*", help="SftConfig overrides key=value.")
    args = parser.parse_args(argv)
    if args.quick:
        args.world, args.policy = Path("data/world-tiny-s0"), Path("runs/sft-nano-quick")
        args.size, args.limit, args.retrain = "tiny", 24, True
        args.out = RESULTS / "quick"
        args.overrides = ["max_steps=20", "batch_size=8", "save_steps=20", *args.overrides]
    import torch

    manifest = prepare_world(args.world, args.size, args.seed)
    meta = ensure_policy(args.world, args.policy, args.overrides, args.retrain)
    ev = evaluate(args.world, args.policy, meta, args.limit, args.batch)
    report = {
        "world": {"path": str(args.world), "size": manifest["size"], "seed": manifest["seed"],
                  "passages": manifest["counts"]["passages"], "demos": manifest["counts"]["demos"]["total"],
                  "questions": manifest["counts"]["questions"], "content_hash": manifest["content_hash"]},
        "sft": meta,
        "eval": ev,
        "machine": _machine.machine_info(platform=platform.platform(), torch=torch.__version__,
                                         threads=torch.get_num_threads()),
    }  # fmt: skip
    from igsearch.data.world import unseen_name_token_share

    report["world"]["unseen_name_token_share"] = {
        s: round(unseen_name_token_share(args.world, s), 4) for s in ("dev", "test")
    }
    report["acceptance"] = acceptance(ev["results"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sft.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "sft.md")
    print((args.out / "sft.md").read_text())
    return 0 if report["acceptance"]["passed"] or args.quick else 1  # a smoke run checks it runs


if __name__ == "__main__":
    raise SystemExit(main())
