"""The rollout loop against a scripted generator and an in-memory retriever (no model, fast).

The tokenizer is byte-level BPE with no merges (every byte one token, protocol tags atomic), so
every multi-byte character is split across tokens: the hardest case for span mapping.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from igsearch.config import ConfigError, RolloutConfig
from igsearch.errors import RetrieverError
from igsearch.protocol import build_prompt, get_tagset, parse_action
from igsearch.retrieval.base import Doc, Hit
from igsearch.rollout.loop import (
    NullRetriever,
    Trajectory,
    cut_turn,
    decode_ids,
    encode_block,
    observation_text,
    run_rollouts,
    token_span,
)

TAGS = get_tagset("search-r1")
EOS = "<|endoftext|>"


def byte_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken("<|pad|>", special=True)])
    tags = sorted({t for name in ("search-r1", "autorefine") for t in get_tagset(name).all_tags})
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in tags])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token="<|pad|>")


TOK = byte_tokenizer()


class ScriptedGenerator:
    """Plays each question's turns in order; the turn index is the number of blocks inserted so far.

    Returns the scripted ids raw (text after a stop string included), so the loop's own cutting is
    exercised; records every call.
    """

    def __init__(self, scripts: dict[str, list[str]]):
        self.tokenizer = TOK
        self.eos_token_ids = frozenset([TOK.eos_token_id])
        self.scripts = scripts
        self.calls: list[dict] = []

    def generate(self, batch, max_new_tokens, stop_strings=(), temperature=0.0, top_p=1.0, seed=0):
        self.calls.append(
            dict(batch=[list(b) for b in batch], max_new_tokens=max_new_tokens, seed=seed)
        )
        out = []
        for ids in batch:
            text = decode_ids(TOK, ids)
            key = next(k for k in self.scripts if f"Question: {k}\n" in text)
            turn = text.count(TAGS.close(TAGS.info)) + text.count("Invalid action.")
            out.append(encode_block(TOK, self.scripts[key][turn])[:max_new_tokens])
        return out


class MemoryRetriever:
    """Word-overlap scoring over a few passages; records each batched call."""

    def __init__(self):
        self.docs = [
            Doc("d1", "Zürich\nZürich is the largest city of Switzerland."),
            Doc("d2", "Bern\nBern is the capital of Switzerland."),
            Doc("d3", "東京\n東京 is the capital of Japan."),
            Doc("d4", "Lyon\nLyon is a city in France on the Rhône."),
        ]
        self.calls: list[tuple[list[str], int]] = []

    def search(self, queries, k):
        self.calls.append((list(queries), k))
        out = []
        for q in queries:
            words = set(re.findall(r"\w+", q.lower()))
            scored = [
                (len(words & set(re.findall(r"\w+", d.contents.lower()))), i, d)
                for i, d in enumerate(self.docs)
            ]
            scored.sort(key=lambda s: (-s[0], s[1]))
            out.append([Hit(d, float(s)) for s, _, d in scored[:k]])
        return out


def cfg(**kw) -> RolloutConfig:
    base = dict(
        prompt_style="bare", temperature=0.0, topk=2, max_turns=3, max_new_tokens_per_turn=200
    )
    return RolloutConfig(**{**base, **kw})


def prompt(q: str) -> str:
    return build_prompt(q, TAGS, style="bare")


def check_invariants(traj: Trajectory) -> None:
    """Segments tile the response, the mask is 0 exactly on inserted blocks, spans decode right."""
    resp = traj.response_ids
    assert len(traj.loss_mask) == len(resp)
    pos = 0
    for seg in traj.segments:
        assert seg.start == pos and seg.end >= seg.start
        assert traj.loss_mask[seg.start : seg.end] == [0 if seg.inserted else 1] * (
            seg.end - seg.start
        )
        pos = seg.end
    assert pos == len(resp)
    info = [s for s in traj.segments if s.kind == "information"]
    assert [(s.start, s.end) for s in info] == [step.info_span for step in traj.steps]
    for step in traj.steps:
        a, b = step.info_span
        assert resp[a:b] == encode_block(TOK, observation_text(TOK, TAGS, step.hits, 512))
        qa, qb = step.query_span
        assert decode_ids(TOK, resp[qa:qb]).strip() == step.query
        assert all(traj.loss_mask[qa:qb])
    for seg in traj.segments:
        expected = {"invalid": TAGS.invalid_message, "final": TAGS.final_turn_message}.get(seg.kind)
        if expected is not None:
            assert resp[seg.start : seg.end] == encode_block(TOK, expected)
    assert traj.num_turns == len(traj.actions) == sum(s.kind == "generated" for s in traj.segments)


# ----------------------------------------------------------------------------- single rollouts


def test_search_then_answer_every_field():
    turns = [
        "<think>look up</think>\n<search> capital of Switzerland </search>",
        "<think>ok</think><answer> Bern </answer>",
    ]
    gen, ret = ScriptedGenerator({"q1": turns}), MemoryRetriever()
    [traj] = run_rollouts([prompt("q1")], gen, ret, cfg())
    check_invariants(traj)
    assert traj.prompt_ids == TOK(prompt("q1"))["input_ids"] and traj.prompt == prompt("q1")
    assert traj.answer == "Bern" and traj.actions == ["search", "answer"] and traj.num_turns == 2
    assert (
        traj.well_formed
        and not traj.hit_max_turns
        and not traj.truncated
        and traj.stop_reason == "answer"
    )
    [step] = traj.steps
    assert step.query == "capital of Switzerland" and step.turn == 0
    assert (
        step.doc_ids == ["d2", "d1"]
        and step.titles == ["Bern", "Zürich"]
        and step.scores == [3.0, 2.0]
    )
    assert step.texts[0] == "Bern is the capital of Switzerland."
    block = encode_block(TOK, observation_text(TOK, TAGS, step.hits, 512))
    answer = encode_block(TOK, turns[1]) + [TOK.eos_token_id]  # EOS appended after the answer
    assert traj.response_ids == encode_block(TOK, turns[0]) + block + answer
    assert ret.calls == [(["capital of Switzerland"], 2)]
    assert decode_ids(TOK, traj.response_ids[slice(*step.info_span)]).startswith(
        "\n\n<information>Doc 1(Title: Bern)"
    )


def test_contexts_are_prompt_plus_response_so_far():
    turns = ["<search>Zürich city</search>", "<search>東京</search>", "<answer>Tokyo</answer>"]
    gen = ScriptedGenerator({"q": turns})
    [traj] = run_rollouts([prompt("q")], gen, MemoryRetriever(), cfg())
    check_invariants(traj)
    for call in gen.calls:
        [ctx] = call["batch"]
        assert ctx == traj.ids[: len(ctx)]
    assert len(gen.calls) == 3


def test_unicode_query_span_with_split_characters():
    turns = ["<search>  東京 Zürich  </search>", "<answer>x</answer>"]
    [traj] = run_rollouts([prompt("u")], ScriptedGenerator({"u": turns}), MemoryRetriever(), cfg())
    check_invariants(traj)
    a, b = traj.steps[0].query_span
    assert decode_ids(TOK, traj.response_ids[a:b]) == "東京 Zürich"


def test_text_after_stop_string_is_cut():
    turns = [
        "<search>Lyon</search> and then more text <answer>no</answer>",
        "<answer>Lyon</answer> trailing",
    ]
    [traj] = run_rollouts([prompt("c")], ScriptedGenerator({"c": turns}), MemoryRetriever(), cfg())
    check_invariants(traj)
    first = traj.segments[0]
    assert decode_ids(TOK, traj.response_ids[first.start : first.end]) == "<search>Lyon</search>"
    last = decode_ids(TOK, traj.response_ids[traj.segments[-1].start :])
    assert last == f"<answer>Lyon</answer>{EOS}"
    assert traj.answer == "Lyon"


def test_invalid_action_inserts_message_and_counts_against_max_turns():
    turns = ["just rambling", "<search>Bern</search>", "<answer> Bern </answer>"]
    [traj] = run_rollouts(
        [prompt("i")], ScriptedGenerator({"i": turns}), MemoryRetriever(), cfg(max_turns=2)
    )
    check_invariants(traj)
    assert traj.actions == ["invalid", "search", "answer"] and traj.num_invalid == 1
    assert [s.kind for s in traj.segments] == [
        "generated",
        "invalid",
        "generated",
        "information",
        "final",
        "generated",
    ]
    assert traj.answer == "Bern" and traj.hit_max_turns and not traj.well_formed


def test_max_turns_forces_a_final_answer_turn():
    turns = ["<search>a</search>", "<search>b</search>", "<answer>c</answer>"]
    [traj] = run_rollouts(
        [prompt("m")], ScriptedGenerator({"m": turns}), MemoryRetriever(), cfg(max_turns=2)
    )
    check_invariants(traj)
    assert traj.segments[-2].kind == "final" and traj.hit_max_turns
    assert traj.answer == "c" and traj.well_formed and traj.num_searches == 2


def test_search_in_the_final_turn_is_not_run():
    turns = ["<search>a</search>", "<search>b</search>", "<search>c</search>"]
    ret = MemoryRetriever()
    [traj] = run_rollouts([prompt("f")], ScriptedGenerator({"f": turns}), ret, cfg(max_turns=2))
    check_invariants(traj)
    assert traj.actions == ["search"] * 3 and traj.num_searches == 2 and len(ret.calls) == 2
    assert (
        traj.answer is None
        and not traj.well_formed
        and traj.hit_max_turns
        and traj.stop_reason == "max_turns"
    )


def test_max_turns_zero_answers_without_searching():
    [traj] = run_rollouts(
        [prompt("z")],
        ScriptedGenerator({"z": ["<search>x</search>"]}),
        MemoryRetriever(),
        cfg(max_turns=0),
    )
    assert (
        traj.actions == ["search"]
        and not traj.steps
        and traj.answer is None
        and traj.stop_reason == "max_turns"
    )
    assert [s.kind for s in traj.segments] == ["generated"]


def test_a_finished_answer_ends_with_one_trained_eos():
    """TRL counts a completion whose last id is not EOS as truncated; a finished answer is not."""
    gens = {"a": ["<answer>x</answer>"], "b": [f"<answer>x</answer>{EOS}"]}
    trajs = run_rollouts(
        [prompt("a"), prompt("b")], ScriptedGenerator(gens), NullRetriever(), cfg()
    )
    for traj in trajs:
        check_invariants(traj)
        assert traj.response_ids[-1] == TOK.eos_token_id and traj.loss_mask[-1] == 1
        assert traj.response_ids.count(TOK.eos_token_id) == 1 and traj.well_formed
    n = len(encode_block(TOK, "<answer>x</answer>"))  # no room for an EOS: none is appended
    [tight] = run_rollouts(
        [prompt("a")], ScriptedGenerator(gens), NullRetriever(), cfg(max_response_tokens=n)
    )
    assert len(tight.response_ids) == n and tight.response_ids[-1] != TOK.eos_token_id


def test_eos_is_kept_and_ends_the_row():
    [traj] = run_rollouts(
        [prompt("e")],
        ScriptedGenerator({"e": [f"<think>done{EOS}ignored"]}),
        MemoryRetriever(),
        cfg(),
    )
    check_invariants(traj)
    assert traj.response_ids[-1] == TOK.eos_token_id and traj.loss_mask[-1] == 1
    assert (
        traj.stop_reason == "eos"
        and traj.answer is None
        and traj.actions == ["invalid"]
        and not traj.well_formed
    )


def test_turn_cap_without_action_is_invalid_not_truncated():
    turns = ["x" * 50, "<answer>y</answer>"]
    [traj] = run_rollouts(
        [prompt("t")],
        ScriptedGenerator({"t": turns}),
        MemoryRetriever(),
        cfg(max_new_tokens_per_turn=20),
    )
    check_invariants(traj)
    assert (
        traj.segments[0].end == 20 and traj.actions == ["invalid", "answer"] and not traj.truncated
    )


def test_max_response_tokens_truncates():
    turns = ["<search>Zürich city</search>", "<think>" + "z" * 300]
    [traj] = run_rollouts(
        [prompt("r")],
        ScriptedGenerator({"r": turns}),
        MemoryRetriever(),
        cfg(max_response_tokens=150),
    )
    check_invariants(traj)
    assert (
        len(traj.response_ids) == 150 and traj.truncated and traj.stop_reason == "response_budget"
    )
    assert traj.answer is None and not traj.well_formed


def test_block_that_does_not_fit_stops_the_row():
    turns = ["<search>Zürich city</search>", "<answer>x</answer>"]
    [traj] = run_rollouts(
        [prompt("b")],
        ScriptedGenerator({"b": turns}),
        MemoryRetriever(),
        cfg(max_response_tokens=40),
    )
    check_invariants(traj)
    assert traj.truncated and not traj.steps and [s.kind for s in traj.segments] == ["generated"]


def test_max_context_tokens_counts_the_prompt():
    turns = ["<think>" + "a" * 100]
    p = prompt("long " + "w" * 60)
    gen = ScriptedGenerator({"long " + "w" * 60: turns})
    [traj] = run_rollouts(
        [p],
        gen,
        MemoryRetriever(),
        cfg(max_context_tokens=len(TOK(p)["input_ids"]) + 30, max_response_tokens=29),
    )
    assert len(traj.ids) <= len(traj.prompt_ids) + 30 and traj.truncated
    calls = len(gen.calls)
    [traj] = run_rollouts(
        [p], gen, MemoryRetriever(), cfg(max_context_tokens=10, max_response_tokens=5)
    )
    assert traj.response_ids == [] and traj.stop_reason == "context_budget" and traj.truncated
    assert len(gen.calls) == calls  # a prompt over the context budget never reaches the generator


def test_max_obs_tokens_cuts_documents():
    turns = ["<search>capital city Switzerland Japan France</search>", "<answer>x</answer>"]
    [traj] = run_rollouts(
        [prompt("o")],
        ScriptedGenerator({"o": turns}),
        MemoryRetriever(),
        cfg(topk=4, max_obs_tokens=60),
    )
    a, b = traj.steps[0].info_span
    wrapper = len(encode_block(TOK, TAGS.wrap_info("")))
    assert b - a <= 60 + wrapper
    assert decode_ids(TOK, traj.response_ids[a:b]).endswith("\n</information>\n\n")


def test_null_retriever_inserts_an_empty_block():
    turns = ["<search>anything</search>", "<answer>x</answer>"]
    [traj] = run_rollouts([prompt("n")], ScriptedGenerator({"n": turns}), NullRetriever(), cfg())
    assert (
        traj.steps[0].hits == []
        and decode_ids(TOK, traj.response_ids[slice(*traj.steps[0].info_span)])
        == "\n\n<information></information>\n\n"
    )


def test_prompt_ids_pass_through_and_seed_override():
    ids = TOK(prompt("p"))["input_ids"]
    gen = ScriptedGenerator({"p": ["<search>x</search>", "<answer>y</answer>"]})
    [traj] = run_rollouts([ids], gen, MemoryRetriever(), cfg(seed=3), seed=7)
    assert traj.prompt_ids == ids and traj.prompt is None
    seeds = [c["seed"] for c in gen.calls]
    assert len(set(seeds)) == 2
    run_rollouts([ids], gen, MemoryRetriever(), cfg(seed=7))
    assert [c["seed"] for c in gen.calls[2:]] == seeds


def test_retriever_answering_the_wrong_number_of_lists_fails():
    class Bad:
        def search(self, queries, k):
            return []

    with pytest.raises(RetrieverError, match="1 queries"):
        run_rollouts([prompt("w")], ScriptedGenerator({"w": ["<search>x</search>"]}), Bad(), cfg())


# ----------------------------------------------------------------------------- batches

SCRIPTS = {
    "a": ["<answer>A</answer>"],
    "b": ["<search>Bern capital</search>", "<search>Zürich</search>", "<answer>B</answer>"],
    "c": ["oops", "<search>東京</search>", "<answer>C</answer>"],
    "d": ["<search>Lyon</search>", "<answer>D</answer>"],
}


def test_batch_shrinks_and_retrieval_is_one_call_per_turn():
    gen, ret = ScriptedGenerator(SCRIPTS), MemoryRetriever()
    trajs = run_rollouts([prompt(k) for k in SCRIPTS], gen, ret, cfg())
    assert [len(c["batch"]) for c in gen.calls] == [4, 3, 2]
    assert ret.calls == [(["Bern capital", "Lyon"], 2), (["Zürich", "東京"], 2)]
    assert [t.answer for t in trajs] == ["A", "B", "C", "D"]
    for t in trajs:
        check_invariants(t)


def test_batch_equals_each_row_alone():
    prompts = [prompt(k) for k in SCRIPTS] + [prompt("b")]  # a repeated prompt too
    batched = run_rollouts(prompts, ScriptedGenerator(SCRIPTS), MemoryRetriever(), cfg())
    for p, traj in zip(prompts, batched, strict=True):
        [alone] = run_rollouts([p], ScriptedGenerator(SCRIPTS), MemoryRetriever(), cfg())
        assert alone == traj


# ----------------------------------------------------------------------------- token helpers

_WORDS = st.text(alphabet=st.sampled_from(list("ab ü東é\n-")), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(_WORDS, _WORDS, _WORDS)
def test_query_span_decodes_to_the_query(before, query, after):
    text = f"{before}<search>{query}</search>{after}"
    ids = encode_block(TOK, text)
    cut, cut_text, ended = cut_turn(TOK, ids, TAGS.stop_strings, [TOK.eos_token_id])
    assert ended == "stop" and cut_text == f"{before}<search>{query}</search>"
    action = parse_action(cut_text, TAGS)
    if query.strip():
        a, b = token_span(TOK, cut, action.start, action.end)
        assert decode_ids(TOK, cut[a:b]) == query.strip()


def test_token_span_includes_partial_character_tokens():
    ids = encode_block(TOK, "x東y")
    assert len(ids) == 5
    assert token_span(TOK, ids, 1, 2) == (1, 4)
    assert token_span(TOK, ids, 0, 1) == (0, 1)


def test_cut_turn_prefers_whichever_comes_first():
    ids = encode_block(TOK, f"<answer>a</answer>{EOS}")
    assert cut_turn(TOK, ids, TAGS.stop_strings, [TOK.eos_token_id])[2] == "stop"
    ids = encode_block(TOK, f"a{EOS}<answer>a</answer>")
    out, text, ended = cut_turn(TOK, ids, TAGS.stop_strings, [TOK.eos_token_id])
    assert ended == "eos" and text == "a" and out[-1] == TOK.eos_token_id
    assert cut_turn(TOK, encode_block(TOK, "abc"), TAGS.stop_strings, [])[2] == "length"


def test_rollout_config_validation():
    with pytest.raises(ConfigError, match="max_context_tokens"):
        RolloutConfig(max_response_tokens=4096, max_context_tokens=4096)
    with pytest.raises(ConfigError, match="search-r1"):
        RolloutConfig(tagset="nope")
    with pytest.raises(ConfigError, match="NullRetriever"):
        RolloutConfig(topk=0)
