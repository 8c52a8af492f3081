"""compute_step_ig on hand-built trajectories: the fast scorer gives the reference IG, each document
set is tokenised once, and steps with an empty query span are never scored."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import igsearch.rewards.step_ig as step_ig
from igsearch.protocol import get_tagset
from igsearch.retrieval.base import Doc, Hit
from igsearch.rewards.scorer import AnswerScorer
from igsearch.rewards.step_ig import compute_step_ig
from igsearch.rollout.loop import Step, Trajectory, encode_block, encode_prompt, observation_text
from igsearch.train.models import train_tokenizer

TAGS = get_tagset("search-r1")
DOCS = [
    Doc(f"d{i}", f"Place {i}\nPlace {i} lies by the river {name} and grows {crop}.")
    for i, (name, crop) in enumerate(
        [("Arn", "rye"), ("Bel", "oats"), ("Cor", "figs"), ("Dun", "plums"), ("Esk", "hops")]
        + [("Fal", "kale"), ("Gil", "corn"), ("Hox", "beans")]
    )
]


@pytest.fixture(scope="module")
def tok():
    texts = [d.contents for d in DOCS] + ["Question: where is it?\n<search> place </search>"]
    return train_tokenizer(texts * 3, vocab_size=300)


@pytest.fixture(scope="module")
def model(tok, tiny_shape):
    torch.manual_seed(0)
    cfg = LlamaConfig(**tiny_shape, vocab_size=len(tok), max_position_embeddings=1024)
    return LlamaForCausalLM(cfg).eval()


def trajectory(tok, question: str, searches: list[tuple[str, list[int]]]) -> Trajectory:
    """A rollout that searches `searches` (query, doc indices) in turn, then answers."""
    prompt = encode_prompt(tok, f"Question: {question}\n", "bare")
    response, steps = [], []
    for turn, (query, docs) in enumerate(searches):
        head = encode_block(tok, "<think> hm </think>\n<search>")
        q = encode_block(tok, f" {query} ") if query else []
        response += head
        span = (len(response), len(response) + len(q))
        response += q + encode_block(tok, "</search>")
        hits = [Hit(DOCS[d], 1.0) for d in docs]
        block = encode_block(tok, observation_text(tok, TAGS, hits, None))
        steps.append(Step(query, span, (len(response), len(response) + len(block)), hits, turn))
        response += block
    response += encode_block(tok, "<answer> rye </answer>")
    n = len(searches) + 1
    return Trajectory(prompt, response, [1] * len(response), steps, "rye", n, True, False, False)


def batch(tok) -> tuple[list[Trajectory], list[list[str]], list[str]]:
    trajs = [
        trajectory(tok, "where is rye grown?", [("rye place", [0, 1])]),
        trajectory(tok, "where is rye grown?", [("rye", [0]), ("river arn", [0, 2]), ("", [3])]),
        trajectory(tok, "what grows by the Cor?", [("cor river", [2, 3]), ("figs", [2, 4])]),
        trajectory(
            tok, "what grows by the Cor?", [("x", [5]), ("y", [6, 7]), ("z", [2]), ("w", [4])]
        ),
    ]
    return trajs, [["rye", "Rye grain"]] * 2 + [["figs"]] * 2, ["q1", "q1", "q2", "q2"]


class ReferenceScorer(AnswerScorer):
    """The slow path behind the same interface."""

    def score(self, requests):
        return self.score_reference(requests)


@pytest.mark.parametrize("kind", ["random", "empty"])
@pytest.mark.parametrize("max_context", [4096, 120])
def test_fast_ig_matches_reference(tok, model, kind, max_context):
    trajs, golds, qids = batch(tok)
    results = []
    for scorer in (AnswerScorer(model, max_context), ReferenceScorer(model, max_context)):
        results.append(
            compute_step_ig(trajs, golds, qids, scorer, tok, TAGS, counterfactual=kind, seed=4)
        )
    fast, ref = results
    assert [len(r) for r in fast] == [len(t.steps) for t in trajs]
    for f, r in zip(fast, ref, strict=True):
        assert f == pytest.approx(r, abs=1e-4)
    assert fast[1][2] == 0.0  # the empty query


def test_each_document_set_is_tokenised_once(tok, model, monkeypatch):
    rendered = []
    original = step_ig.observation_text

    def counting(tokenizer, tags, docs, *rest):
        rendered.append(tuple(d.id for d in docs))
        return original(tokenizer, tags, docs, *rest)

    monkeypatch.setattr(step_ig, "observation_text", counting)
    trajs, golds, qids = batch(tok)
    scorer = AnswerScorer(model)
    compute_step_ig(trajs, golds, qids, scorer, tok, TAGS, counterfactual="empty")
    assert rendered == [()]  # one empty set serves every step
    rendered.clear()
    compute_step_ig(trajs, golds, qids, scorer, tok, TAGS, n_sets=3, seed=1)
    assert rendered and len(rendered) == len(set(rendered))


def test_empty_query_steps_are_not_scored(tok, model):
    class Recording(AnswerScorer):
        def score(self, requests):
            self.seen = list(requests)
            return super().score(requests)

    trajs, golds, qids = batch(tok)
    scorer = Recording(model)
    ig = compute_step_ig(trajs, golds, qids, scorer, tok, TAGS)
    steps = sum(len(t.steps) for t in trajs)
    assert len(scorer.seen) == steps - 1 and ig[1][2] == 0.0
    scorer = Recording(model)
    only_empty = [trajectory(tok, "where is rye grown?", [("", [0])])] * 2
    ig = compute_step_ig(only_empty, golds[:2], qids[:2], scorer, tok, TAGS, counterfactual="empty")
    assert ig == [[0.0], [0.0]]
    assert not hasattr(scorer, "seen")  # nothing to score: the model is never called
