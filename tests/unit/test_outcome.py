"""EM / F1 / substring match with SQuAD normalisation, on tricky cases."""

import pytest

from igsearch.rewards.outcome import exact_match, f1_score, normalize_answer, substring_match


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  a   cat\tand\nan apple ", "cat and apple"),
        ("U.S.A.", "usa"),
        ("Theatre, the", "theatre"),  # article only as a whole word
        ("anthem", "anthem"),
        ("Café  Müller", "café müller"),  # unicode letters kept, lower-cased
        ("1,000", "1000"),
        ("“quoted” – dash", "“quoted” – dash"),  # non-ASCII punctuation kept, as in SQuAD/FlashRAG
        ("", ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_against_aliases_and_none():
    golds = ["New York City", "NYC"]
    assert exact_match("the new york city.", golds) == 1.0
    assert exact_match("nyc", golds) == 1.0
    assert exact_match("New York", golds) == 0.0
    assert exact_match(None, golds) == 0.0
    assert exact_match("Paris", "paris") == 1.0


def test_substring_match():
    assert substring_match("It is New York City, I think", ["new york city"]) == 1.0
    assert substring_match("York", ["new york"]) == 0.0
    assert substring_match(None, ["x"]) == 0.0


def test_f1_hand_computed():
    # pred tokens: [new, york], gold: [new, york, city] -> P = 1, R = 2/3, F1 = 0.8
    assert f1_score("New York", ["New York City"]) == pytest.approx(0.8)
    assert f1_score("New York", ["Boston", "New York City"]) == pytest.approx(0.8)
    assert f1_score("x b b", ["b b c"]) == pytest.approx(2 / 3)
    assert f1_score("a b b", ["b b c"]) == pytest.approx(0.8)  # "a" is an article, dropped
    assert f1_score("yes", ["no"]) == 0.0
    assert f1_score("yes indeed", ["yes"]) == 0.0  # yes/no answers must match exactly
    assert f1_score(None, ["x"]) == 0.0
    assert f1_score("the", ["a"]) == 0.0  # both normalise to nothing
