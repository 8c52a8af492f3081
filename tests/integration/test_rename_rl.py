"""`data.rename_entities` in a real RL step on the tiny world: the policy sees only fresh names,
the reward pays for copying them and not for recalling the world's, the retriever gets the
world's names back (docs/design.md, "Renamed entities in RL")."""

from __future__ import annotations

import json
import re
from pathlib import Path

from igsearch.config import TrainConfig, from_dict
from igsearch.data.world.rename import Renamer
from igsearch.rollout.loop import decode_ids, encode_block
from igsearch.train.models import init_model, load_tokenizer, save_tokenizer
from igsearch.train.rl import build_trainer


class RecallOrCopy:
    """Searches the question as it reads it; then answers with the gold respelt the step's way
    (a copy) on every fourth row, and with the world's own spelling (a recall) on the others."""

    def __init__(self, tokenizer, trainer_ref: dict, gold: dict[str, list[str]]):
        self.tokenizer, self.ref, self.gold = tokenizer, trainer_ref, gold
        self.eos_token_ids = frozenset({tokenizer.eos_token_id})
        self.seen: list[str] = []

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        renaming = self.ref["trainer"]._renamed.renaming
        out = []
        for i, ids in enumerate(batch):
            text = decode_ids(self.tokenizer, ids)
            self.seen.append(text)
            question = text.split("Question:", 1)[1].split("\n", 1)[0].strip()
            if "<information>" not in text:
                turn = f"<think> look it up </think>\n<search> {question.rstrip('?')} </search>"
            else:
                gold = self.gold[renaming.query(question)][0]
                answer = renaming.text(gold) if i % 4 == 0 else gold
                turn = f"<think> found </think>\n<answer> {answer} </answer>"
            out.append(encode_block(self.tokenizer, turn)[:max_new_tokens])
        return out


def test_a_renamed_step_pays_copies_not_recalls(tiny_world, tmp_path: Path):
    tok = load_tokenizer(tiny_world / "tokenizer")
    init_model("nano", tok, seed=0).save_pretrained(tmp_path / "policy")
    save_tokenizer(tok, tmp_path / "policy")
    rows = [json.loads(x) for x in (tiny_world / "rl.jsonl").read_text().splitlines()]
    words = Renamer.for_questions(tiny_world / "rl.jsonl").words
    named = [r for r in rows if set(r["golden_answers"][0].split()) & words]  # not a year
    rows = [r for r in named if r["metadata"]["type"] == "single_hop"][:2]
    qa = tmp_path / "world" / "rl.jsonl"  # two questions, in a folder of the world's manifest
    qa.parent.mkdir()
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (qa.parent / "world.json").write_text((tiny_world / "world.json").read_text())
    cfg = from_dict(
        TrainConfig,
        {
            "model": str(tmp_path / "policy"),
            "data": {"train": [str(qa)], "rename_entities": True},
            "retriever": {"index": str(tiny_world / "index")},
            "rollout": {"prompt_style": "bare", "max_turns": 2, "max_new_tokens_per_turn": 160},
            "algo": {"estimator": "ig_grpo", "n_counterfactuals": 1},
            "train": {"output_dir": str(tmp_path / "run"), "steps": 1, "group_size": 4,
                      "batch_size": 8, "save_steps": 1, "report_to": [], "seed": 3},
        },
    )  # fmt: skip
    ref: dict = {}
    agents: list[RecallOrCopy] = []

    def factory(model, tokenizer):
        agents.append(
            RecallOrCopy(tokenizer, ref, {r["question"]: r["golden_answers"] for r in rows})
        )
        return agents[-1]

    ref["trainer"] = trainer = build_trainer(cfg, generator_factory=factory)
    trainer.train()
    step = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert step["reward"] == 0.25  # the copies (rows 0 and 4) earn, the recalls never do
    seen = " ".join(a for agent in agents for a in agent.seen)
    assert "<information>" in seen
    assert trainer.renamer.words == words
    assert not set(re.findall(r"[A-Z][a-z]+", seen)) & words  # no world name reaches the policy
    assert trainer._renamed.renaming is None  # between steps the retriever is the world's own
