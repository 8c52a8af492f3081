"""Counterfactual sampling and the IG arithmetic."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from igsearch.rewards.info_gain import (
    StepDocs,
    answer_weights,
    best_alias,
    information_gain,
    sample_counterfactuals,
    weighted_answer_score,
)


@dataclass(frozen=True)
class D:
    id: str


def _steps():
    return [
        StepDocs("q1", [D("a"), D("b"), D("c")]),
        StepDocs("q1", [D("a"), D("d")]),
        StepDocs("q2", [D("e"), D("f"), D("g")]),
        StepDocs("q3", [D("h"), D("i"), D("a")]),
    ]


def test_counterfactuals_come_from_other_questions_and_match_set_size():
    steps = _steps()
    sets = sample_counterfactuals(steps, n_sets=3, seed=7)
    q1_docs = {"a", "b", "c", "d"}
    for step, step_sets in zip(steps, sets, strict=True):
        assert len(step_sets) == 3
        own = {d.id for d in step.docs}
        for cf in step_sets:
            ids = [d.id for d in cf]
            assert len(ids) == len(step.docs) == len(set(ids))
            assert not own & set(ids)
            if step.question == "q1":
                assert not q1_docs & set(ids)


def test_sampling_is_seeded_and_per_step_independent():
    steps = _steps()
    assert sample_counterfactuals(steps, seed=1) == sample_counterfactuals(steps, seed=1)
    assert sample_counterfactuals(steps, seed=1) != sample_counterfactuals(steps, seed=2)


def test_fallback_fills_a_small_pool_and_missing_fallback_says_how_to_fix():
    steps = [StepDocs("q1", [D("a"), D("b"), D("c")]), StepDocs("q2", [D("x")])]
    corpus = [D(f"c{i}") for i in range(10)]

    def fallback(rng: np.random.Generator, n: int, exclude):
        assert {"a", "b", "c", "x"} <= exclude
        return [corpus[i] for i in rng.choice(len(corpus), n, replace=False)]

    sets = sample_counterfactuals(steps, n_sets=2, fallback=fallback)
    assert all(len(cf) == 3 and cf[0].id == "x" for cf in sets[0])
    with pytest.raises(Exception, match="corpus fallback"):
        sample_counterfactuals(steps, n_sets=2)


def test_empty_variant_and_unknown_kind():
    assert sample_counterfactuals(_steps(), kind="empty") == [[[]]] * 4
    with pytest.raises(Exception, match="random, empty"):
        sample_counterfactuals(_steps(), kind="shuffled")


def test_weighted_score_and_ig_hand_computed():
    w = answer_weights(5)
    assert w.tolist() == [3, 3, 3, 1, 1]
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert weighted_answer_score(lp, w).item() == pytest.approx((-3 - 6 - 9 - 4 - 5) / 11)
    assert answer_weights(2).tolist() == [3, 3]
    real = torch.tensor([-1.0, -2.0])
    cf = torch.tensor([[-3.0, -5.0, -4.0], [-2.0, -2.0, -2.0]])
    assert information_gain(real, cf).tolist() == [3.0, 0.0]  # equal documents -> IG 0
    assert best_alias([-3.0, -0.5, -1.0]) == 1


def test_corpus_fallback_draws_distinct_documents_outside_the_question():
    """Counterfactual sets never repeat a document, nor use the step's own or its question's."""
    from igsearch.retrieval.base import Doc, Hit
    from igsearch.rewards.step_ig import corpus_fallback

    store = [Doc(f"d{i}", f"T{i}\ntext {i}") for i in range(12)]
    draw = corpus_fallback(type("R", (), {"store": store})())
    rng = np.random.default_rng(0)
    for _ in range(20):
        got = [h.id for h in draw(rng, 6, frozenset({"d0", "d1", "d2"}))]
        assert len(set(got)) == 6 and not {"d0", "d1", "d2"} & set(got)
    with pytest.raises(Exception, match="too few"):
        draw(rng, 10, frozenset({"d0", "d1", "d2"}))
    hit = lambda i: Hit(store[i], 1.0)  # noqa: E731
    steps = [StepDocs("q1", [hit(0), hit(1), hit(2)]), StepDocs("q1", [hit(3)])]
    steps.append(StepDocs("q2", [hit(4)]))
    for cf in sample_counterfactuals(steps, n_sets=4, seed=1, fallback=draw)[0]:
        ids = [h.id for h in cf]  # d4 from q2, the rest from the corpus, never q1's d0..d3
        assert len(set(ids)) == 3 and not {"d0", "d1", "d2", "d3"} & set(ids)
