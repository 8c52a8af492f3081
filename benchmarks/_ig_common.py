"""What the IG benchmarks share: the world, the policy and a scripted rollout backend.

Without `--world`, a tiny synthetic world (seed 0: ~400 passages, BM25 index, tokenizer) is built
in a temporary folder in about ten seconds. Without `--policy`, the policy is a randomly
initialised preset, which never writes a well-formed action by itself, so `ScriptedGenerator`
scripts its turns: `free` tokens sampled by the model (protocol tags and EOS banned), then the
action is forced token by token: `<search> question </search>` while searches are left, then
`<answer> … </answer>` (the gold answer on even rows, a wrong one on odd rows, so groups have
spread). Every token still goes through the model's decoding loop and the stop strings, so the
cost is that of a real rollout of the same length. With `--policy` (an SFT'd folder) the policy
generates freely.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _scripted import ScriptTurns  # noqa: E402

from igsearch.data.qa import read_qa  # noqa: E402
from igsearch.protocol import get_tagset  # noqa: E402
from igsearch.rollout.backends import HFGenerator  # noqa: E402
from igsearch.tokens import decode_ids, encode_block  # noqa: E402

TAGS = get_tagset("search-r1")


def add_shared_args(parser: argparse.ArgumentParser) -> None:
    """The options both IG benchmarks take: scripted tokens, seed, torch threads, output folder."""
    parser.add_argument("--free", type=int, default=16, help="model tokens per scripted turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results (quick: …/quick)")


def ensure_world(world: Path | None, tmp: Path) -> Path:
    """`world` as given, or a tiny synthetic world (seed 0) built under `tmp` in a child process
    (`build_world_apart`), so that the build leaves no threads behind to skew the timings."""
    from igsearch.config import WorldConfig
    from igsearch.data.world import build_world_apart

    if world is not None:
        if not (world / "train.jsonl").exists() or not (world / "index").exists():
            raise SystemExit(
                f"--world {world}: no train.jsonl and index/ there; build it with `igsearch world`"
            )
        return world
    out = tmp / "world"
    print(f"building a tiny synthetic world in {out} ...", flush=True)
    build_world_apart(WorldConfig(seed=0, size="tiny"), out)
    return out


def untrained_policy(preset: str, world: Path, out: Path, seed: int = 0) -> Path:
    """A randomly initialised `preset` policy with the world's tokenizer, saved to `out`."""
    from igsearch.tokenizer import load_tokenizer
    from igsearch.train.models import init_model

    tok = load_tokenizer(world / "tokenizer")
    init_model(preset, tok, seed=seed).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def policy_preset(policy: Path) -> str:
    """The preset name a policy folder records (POLICY_INFO), else its hidden size."""
    import json

    from igsearch.config import POLICY_INFO, read_policy_info

    if (policy / POLICY_INFO).exists():
        return read_policy_info(policy).get("preset", policy.name)
    cfg = json.loads((policy / "config.json").read_text())
    return f"hidden{cfg.get('hidden_size')}x{cfg.get('num_hidden_layers')}"


def gold_answers(world: Path) -> dict[str, list[str]]:
    """Question text -> gold aliases of the world's training questions."""
    return {ex.question.strip(): list(ex.golden_answers) for ex in read_qa(world / "train.jsonl")}


class ScriptedGenerator(HFGenerator):
    """HFGenerator whose turns follow ScriptTurns: `searches` searches of the question, then an answer."""

    def __init__(self, model: Any, tokenizer: Any, searches: int, free: int, golds: dict):
        from transformers import LogitsProcessorList

        tags = [tokenizer.convert_tokens_to_ids(t) for t in TAGS.all_tags]
        self.proc = ScriptTurns(tags + [tokenizer.eos_token_id, tokenizer.pad_token_id], free)
        super().__init__(model, tokenizer, logits_processor=LogitsProcessorList([self.proc]))
        self.searches, self.golds = searches, golds

    def _action(self, ids: list[int], row: int) -> str:
        text = decode_ids(self.tokenizer, ids)
        question = text.split("Question:", 1)[1].split("\n", 1)[0].strip()
        if text.count(TAGS.close(TAGS.info)) < self.searches:
            return f"<search> {question.rstrip('?')} </search>"
        gold = self.golds.get(question, ["x"])[0]
        return f"<answer> {gold if row % 2 == 0 else 'nobody'} </answer>"

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        scripts = [
            encode_block(self.tokenizer, self._action(list(ids), i)) for i, ids in enumerate(batch)
        ]
        self.proc.start(max(len(ids) for ids in batch), scripts)
        return super().generate(batch, max_new_tokens, stop_strings, temperature, top_p, seed)


def scripted_factory(searches: int, free: int, golds: dict):
    """A trainer `generator_factory` for ScriptedGenerator."""

    def factory(model: Any, tokenizer: Any) -> ScriptedGenerator:
        return ScriptedGenerator(model, tokenizer, searches, free, golds)

    return factory
