"""Outcome metrics on a predicted answer against gold aliases.

The normalisation is the SQuAD evaluation script's, which FlashRAG and Search-R1 reuse: lower-case,
drop ASCII punctuation, drop the articles a/an/the, collapse white space. Non-ASCII punctuation
is kept, as those scripts keep it. A missing prediction (None) scores 0 on every metric.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, strip ASCII punctuation, drop a/an/the, collapse white space."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _golds(golden_answers: str | Sequence[str]) -> list[str]:
    return [golden_answers] if isinstance(golden_answers, str) else list(golden_answers)


def exact_match(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold alias, else 0.0."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golden_answers)))


def substring_match(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
    """1.0 if any normalised gold alias occurs inside the normalised prediction (FlashRAG's "acc")."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in _golds(golden_answers)))


def _token_f1(pred: str, gold: str) -> float:
    if (pred in _SPECIAL or gold in _SPECIAL) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golden_answers: str | Sequence[str]) -> float:
    """Best token-level F1 over gold aliases; yes/no/noanswer must match exactly (as FlashRAG)."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return max((_token_f1(pred, normalize_answer(g)) for g in _golds(golden_answers)), default=0.0)
