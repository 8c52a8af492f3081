"""The search-r1 rendering against the exact bytes Search-R1 writes, and the igsearch rendering kept.

tests/fixtures/search_r1.json holds strings produced by Search-R1's own code: its base-model
training prompt after its question clean-up, `_passages2string` of three raw corpus contents, the
observation block wrapped around it, and its invalid-action message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from igsearch.config import ConfigError, RolloutConfig, TrainConfig, load_config
from igsearch.protocol import (
    RENDERINGS,
    build_prompt,
    get_tagset,
    instructions,
    invalid_message,
    render_docs,
    search_r1_prompt,
    wrap_observation,
)
from igsearch.retrieval.base import Doc, Hit
from igsearch.rewards.step_ig import BlockTokens
from igsearch.rollout.loop import observation_text, run_rollouts
from igsearch.tokenizer import train_tokenizer
from igsearch.tokens import decode_ids, encode_block, encode_prompt

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "search_r1.json").read_text())
TAGS = get_tagset("search-r1")
HITS = [Hit(Doc(f"d{i}", c), 1.0) for i, c in enumerate(FIXTURE["documents"])]


@pytest.fixture(scope="module")
def tok():
    texts = FIXTURE["documents"] + [FIXTURE["observation"], FIXTURE["invalid_message"]]
    return train_tokenizer(texts + [p["prompt"] for p in FIXTURE["prompts"]], vocab_size=400)


@pytest.mark.parametrize("case", FIXTURE["prompts"], ids=lambda c: c["question"].strip())
def test_prompt_is_search_r1s_training_prompt(case):
    assert search_r1_prompt(case["question"]) == case["prompt"]
    assert build_prompt(case["question"]) == case["prompt"]  # the default for plain prompts
    assert build_prompt(case["question"], TAGS, "plain", None, "search-r1") == case["prompt"]


def test_chat_prompt_carries_the_same_text_as_the_user_message(tok):
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    case = FIXTURE["prompts"][0]
    assert build_prompt(case["question"], style="chat", tokenizer=tok) == (
        f"<u>{case['prompt']}</u><a>"
    )


def test_documents_and_observation_are_search_r1s_bytes(tok):
    assert render_docs(HITS, rendering="search-r1") == FIXTURE["passages"]
    assert wrap_observation(TAGS, FIXTURE["passages"], "search-r1") == FIXTURE["observation"]
    for budget in (None, 10_000):  # a budget that cuts nothing changes nothing
        assert observation_text(tok, TAGS, HITS, budget, "search-r1") == FIXTURE["observation"]


def test_invalid_message_is_search_r1s(tok):
    assert invalid_message(TAGS, "search-r1") == FIXTURE["invalid_message"]
    assert invalid_message(TAGS) == TAGS.invalid_message


def test_igsearch_rendering_is_unchanged():
    assert build_prompt("  Who? ", style="bare") == "Question: Who?\n"
    assert build_prompt("Who", style="bare", rendering="search-r1") == "Question: Who\n"
    plain = build_prompt("Who?", rendering="igsearch")
    assert plain == f"{instructions(TAGS)}\nQuestion: Who?\n"
    docs = render_docs(HITS[:1])
    assert docs == "Doc 1(Title: Gzip) gzip is a file format and a software application.\n"
    assert wrap_observation(TAGS, docs) == f"\n\n<information>{docs}</information>\n\n"


def test_rendering_defaults_and_validation():
    assert RolloutConfig().rendering == "search-r1"
    assert RolloutConfig(prompt_style="chat").rendering == "search-r1"
    assert RolloutConfig(prompt_style="bare").rendering == "igsearch"
    assert RolloutConfig(tagset="autorefine").rendering == "igsearch"
    assert RolloutConfig(prompt_style="bare", rendering="search-r1").rendering == "search-r1"
    with pytest.raises(ConfigError, match="rendering 'igsearch'"):
        RolloutConfig(tagset="autorefine", rendering="search-r1")
    with pytest.raises(ConfigError, match=", ".join(RENDERINGS)):
        RolloutConfig(rendering="fancy")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(TrainConfig, path)
        expected = "search-r1" if cfg.rollout.prompt_style == "plain" else "igsearch"
        assert cfg.rollout.rendering == expected, path.name


class _Scripted:
    """Replays fixed turns for a single row; the loop's only view of a policy."""

    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns, self.calls = tokenizer, list(turns), 0
        self.eos_token_ids = frozenset([tokenizer.eos_token_id])

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        self.calls += 1
        return [encode_block(self.tokenizer, self.turns[self.calls - 1])[:max_new_tokens]]


class _Fixed:
    def search(self, queries, k):
        return [HITS[:k] for _ in queries]


def test_rollout_inserts_search_r1_blocks(tok):
    turns = ["<think>a</think>\n<search> gzip </search>", "hm", "<answer> Jean-loup </answer>"]
    case = FIXTURE["prompts"][0]
    cfg = RolloutConfig(temperature=0.0, topk=3)
    [traj] = run_rollouts([build_prompt(case["question"])], _Scripted(tok, turns), _Fixed(), cfg)
    assert traj.prompt_ids == encode_prompt(tok, case["prompt"])
    text = {s.kind: decode_ids(tok, traj.response_ids[s.start : s.end]) for s in traj.segments}
    assert text["information"] == FIXTURE["observation"]
    assert text["invalid"] == FIXTURE["invalid_message"]
    assert traj.answer == "Jean-loup"


def test_step_ig_blocks_follow_the_rollouts_rendering(tok):
    block = BlockTokens(tok, TAGS, None, "search-r1")(HITS)
    assert block == encode_block(tok, FIXTURE["observation"])
    assert BlockTokens(tok, TAGS, None)(HITS) != block
