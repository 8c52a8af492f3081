"""parse_action / extract_answer / render_docs / build_prompt: the protocol's text contract."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igsearch.errors import IGSearchError
from igsearch.protocol import (
    TAG_SETS,
    Answer,
    Invalid,
    Search,
    build_prompt,
    extract_answer,
    get_tagset,
    normalize_query,
    parse_action,
    render_docs,
)
from igsearch.retrieval.base import Doc, Hit

# ----------------------------------------------------------------------------- parse_action


def test_search_well_formed_offsets_point_at_the_query():
    text = "<think>need the capital</think>\n<search> capital of France </search>"
    action = parse_action(text)
    assert action == Search("capital of France", action.start, action.end)
    assert text[action.start : action.end] == "capital of France"


def test_answer_well_formed():
    text = "<think>known</think> <answer> Paris </answer>"
    action = parse_action(text)
    assert isinstance(action, Answer)
    assert action.text == "Paris"
    assert text[action.start : action.end] == "Paris"


def test_whichever_block_closes_first_wins():
    assert isinstance(parse_action("<search>a</search><answer>b</answer>"), Search)
    assert isinstance(parse_action("<answer>b</answer><search>a</search>"), Answer)


def test_repeated_search_blocks_first_one_wins():
    action = parse_action("<search>first</search> <search>second</search>")
    assert isinstance(action, Search) and action.query == "first"


def test_nested_open_tags_use_the_innermost():
    text = "<search> outer <search> inner </search>"
    action = parse_action(text)
    assert isinstance(action, Search) and action.query == "inner"
    assert text[action.start : action.end] == "inner"


def test_unclosed_tags_are_invalid():
    assert isinstance(parse_action("<search> never closed"), Invalid)
    assert isinstance(parse_action("<answer> never closed"), Invalid)
    assert isinstance(parse_action("a closing tag alone </search>"), Invalid)


def test_empty_query_is_invalid_but_empty_answer_is_an_answer():
    assert parse_action("<search>   </search>") == Invalid("empty search query")
    action = parse_action("<answer></answer>")
    assert isinstance(action, Answer) and action.text == ""


def test_query_with_protocol_tags_is_invalid():
    action = parse_action("<search> <think> x </search>")
    assert isinstance(action, Invalid)
    assert "tags" in action.reason


def test_no_action_and_empty_text_are_invalid():
    assert isinstance(parse_action(""), Invalid)
    assert isinstance(parse_action("just thinking out loud"), Invalid)


def test_other_tagset_uses_its_own_tags():
    tags = get_tagset("autorefine")
    text = "<refine>notes</refine><search>q</search>"
    assert parse_action(text, tags) == Search("q", text.index("q"), text.index("q") + 1)


def test_unknown_tagset_lists_valid_names():
    with pytest.raises(IGSearchError, match="search-r1"):
        get_tagset("nope")


# ----------------------------------------------------------------------------- extract_answer


def test_extract_answer_last_complete_block():
    assert extract_answer("<answer>a</answer> then <answer> b </answer>") == "b"


def test_extract_answer_unclosed_or_absent():
    assert extract_answer("<answer> unfinished") is None
    assert extract_answer("no tags at all") is None
    assert extract_answer("") is None
    assert extract_answer("stray </answer>") is None


def test_extract_answer_nested_uses_innermost_open():
    assert extract_answer("<answer> x <answer> y </answer>") == "y"


def test_extract_answer_empty_block():
    assert extract_answer("<answer>  </answer>") == ""


def test_extract_answer_last_closed_even_if_later_open_is_unclosed():
    assert extract_answer("<answer>a</answer><answer> b") == "a"


# ----------------------------------------------------------------------------- robustness

_PIECES = st.sampled_from(
    [
        "<search>",
        "</search>",
        "<answer>",
        "</answer>",
        "<think>",
        "</think>",
        "<information>",
        "</information>",
        "<",
        ">",
        "/",
        " ",
        "\n",
        "a",
        "é",
        "東",
    ]
)
_TEXT = st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=40).map("".join))


@settings(max_examples=300, deadline=None)
@given(_TEXT, st.sampled_from(sorted(TAG_SETS)))
def test_arbitrary_text_never_raises_and_offsets_are_consistent(text, tagset):
    action = parse_action(text, tagset)
    assert isinstance(action, (Search, Answer, Invalid))
    if isinstance(action, Search):
        assert text[action.start : action.end] == action.query and action.query
    if isinstance(action, Answer):
        assert text[action.start : action.end] == action.text
    answer = extract_answer(text, tagset)
    assert answer is None or isinstance(answer, str)


# ----------------------------------------------------------------------------- documents and prompts


def _hit(i: int, title: str, text: str) -> Hit:
    return Hit(Doc(str(i), f"{title}\n{text}"), 1.0)


def test_render_docs_format():
    text = render_docs([_hit(1, "Paris", "Capital of France."), _hit(2, "Lyon", "A city.")])
    assert text == "Doc 1(Title: Paris) Capital of France.\nDoc 2(Title: Lyon) A city.\n"
    assert render_docs([]) == ""


def test_render_docs_token_budget_cuts_at_word_boundary():
    hits = [_hit(1, "A", "one two three"), _hit(2, "B", "four five six seven")]
    count = lambda s: len(s.split())  # noqa: E731
    full = render_docs(hits)
    text = render_docs(hits, max_tokens=count(full) - 2, count_tokens=count)
    assert count(text) <= count(full) - 2
    assert text.startswith("Doc 1(Title: A) one two three\nDoc 2(Title: B) four")
    assert text.endswith("\n")


def test_tagset_blocks():
    tags = get_tagset("search-r1")
    assert tags.wrap_info("x") == "\n\n<information>x</information>\n\n"
    assert tags.stop_strings == ("</search>", "</answer>")
    assert "<answer>" in tags.final_turn_message
    assert "<search>" in tags.invalid_message


def test_build_prompt_styles():
    assert build_prompt("  Who? ", style="bare") == "Question: Who?\n"
    plain = build_prompt("Who?")
    assert plain.endswith("Question: Who?\n") and "<search>" in plain
    with pytest.raises(IGSearchError, match="plain"):
        build_prompt("Who?", style="chat")
    with pytest.raises(IGSearchError, match="bare"):
        build_prompt("Who?", style="fancy")


def test_normalize_query():
    assert normalize_query("  a \n b\t c ") == "a b c"
