"""Choosing the dev slice of the EM-by-step curve."""

from __future__ import annotations

from igsearch.data.qa import QAExample
from igsearch.train.rl import spread_by_type


def _ex(i: int, qtype: str) -> QAExample:
    return QAExample(f"q{i}", f"question {i}?", ("a",), {"type": qtype})


def test_a_limited_slice_takes_the_types_in_turn_in_file_order():
    examples = [_ex(i, "single_hop") for i in range(4)] + [_ex(4 + i, "bridge") for i in range(2)]
    examples.append(_ex(6, "comparison"))
    ids = [ex.id for ex in spread_by_type(examples, 5)]
    assert ids == ["q0", "q4", "q6", "q1", "q5"]


def test_no_limit_or_a_large_one_keeps_the_file_as_it_is():
    examples = [_ex(0, "bridge"), _ex(1, "single_hop"), _ex(2, "bridge")]
    assert spread_by_type(examples, None) == examples
    assert spread_by_type(examples, 10) == examples
    assert spread_by_type([_ex(i, "") for i in range(3)], 2) == [_ex(0, ""), _ex(1, "")]
