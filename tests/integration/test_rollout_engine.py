"""CachedHFGenerator against the reference HFGenerator, through the rollout loop.

Policies as in test_rollout_hf.py (float64, so greedy decoding has no near-ties): a random-init
nano model (junk turns, invalid-action and final-turn blocks, response and context budgets) and a
small Llama fitted to five demonstrations (it searches BM25 0, 1 or 2 times and answers, so rows
leave the rollout at turns 1-3 and stop on `</search>` / `</answer>` at different steps).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from igsearch.config import RolloutConfig
from igsearch.errors import IGSearchError
from igsearch.protocol import build_prompt, get_tagset
from igsearch.retrieval.index import build_index, load_index
from igsearch.rollout.backends import HFGenerator
from igsearch.rollout.engine import CachedHFGenerator, hf_generator
from igsearch.rollout.loop import (
    decode_ids,
    encode_block,
    encode_prompt,
    observation_text,
    run_rollouts,
)
from igsearch.rollout.stops import StopWatch
from igsearch.train.models import init_model, train_tokenizer

TAGS = get_tagset("search-r1")
PASSAGES = [
    ("Zürich", "Zürich is the largest city of Switzerland, on Lake Zürich."),
    ("Bern", "Bern is the capital of Switzerland and lies on the Aare."),
    ("Lyon", "Lyon is a city in France where the Rhône meets the Saône."),
    ("Tokyo", "Tokyo is the capital of Japan and its largest city."),
    ("Ada Lovelace", "Ada Lovelace wrote the first published program for an engine."),
    ("Mount Fuji", "Mount Fuji is the highest mountain in Japan."),
    ("Nile", "The Nile is a river in Africa that flows into the Mediterranean."),
]
DEMOS = {
    "What is the capital of Japan?": ([], "Tokyo"),
    "Which city is the largest in Switzerland?": (["largest city Switzerland"], "Zürich"),
    "Where does the Rhône meet the Saône?": (["Rhône Saône", "Lyon city France"], "Lyon"),
    "Which river flows into the Mediterranean?": (["river Mediterranean", "Nile Africa"], "Nile"),
}
CFG = RolloutConfig(
    prompt_style="bare",
    temperature=0.0,
    topk=1,
    max_turns=3,
    max_obs_tokens=40,
    max_new_tokens_per_turn=24,
    max_response_tokens=400,
    max_context_tokens=600,
)
BUDGETS = RolloutConfig(
    prompt_style="bare",
    temperature=0.0,
    max_turns=4,
    max_new_tokens_per_turn=16,
    max_response_tokens=290,
    max_context_tokens=300,
)


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_world")
    with (root / "corpus.jsonl").open("w") as f:
        for i, (title, text) in enumerate(PASSAGES):
            row = {"id": f"p{i}", "contents": f"{title}\n{text}"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    build_index(root / "corpus.jsonl", "bm25", root / "index")
    texts = [f"{t}\n{x}" for t, x in PASSAGES] * 3 + [build_prompt(q, style="bare") for q in DEMOS]
    return dict(retriever=load_index(root / "index"), tok=train_tokenizer(texts, vocab_size=400))


def demo_ids(world, question: str) -> list[int]:
    tok, (queries, answer) = world["tok"], DEMOS[question]
    ids = encode_prompt(tok, build_prompt(question, style="bare"))
    for query in queries:
        ids += encode_block(tok, f"<search> {query} </search>")
        hits = world["retriever"].search([query], CFG.topk)[0]
        ids += encode_block(tok, observation_text(tok, TAGS, hits, CFG.max_obs_tokens))
    return ids + encode_block(tok, f"<answer> {answer} </answer>")


@pytest.fixture(scope="module")
def random_policy(world):
    return init_model("nano", world["tok"], seed=0).double().eval()


@pytest.fixture(scope="module")
def warm_policy(world):
    """A 2-layer, 64-wide Llama fitted to the demonstrations (a few seconds on CPU)."""
    tok, seqs = world["tok"], [demo_ids(world, q) for q in DEMOS]
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros_like(x)
    for i, s in enumerate(seqs):
        x[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    with one_thread():
        for _ in range(80):
            loss = model(
                input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.1, f"the warm start did not fit the demonstrations ({loss.item():.3f})"
    return model.double().eval()


def prompts_for(questions) -> list[str]:
    return [build_prompt(q, style="bare") for q in questions]


def encoded_once(trajs) -> int:
    """Tokens a cached engine must encode: prompts, inserted blocks, each re-fed last turn token."""
    return sum(len(t.prompt_ids) + t.loss_mask.count(0) + t.num_turns - 1 for t in trajs)


# ----------------------------------------------------------------------------- equivalence


def test_greedy_rollouts_equal_hf_generator_and_encode_each_token_once(world, warm_policy):
    prompts = prompts_for(DEMOS) * 2
    engine = CachedHFGenerator(warm_policy, world["tok"])
    with one_thread():
        reference = run_rollouts(
            prompts, HFGenerator(warm_policy, world["tok"]), world["retriever"], CFG
        )
        cached = run_rollouts(prompts, engine, world["retriever"], CFG)
    assert sorted({t.num_turns for t in reference}) == [1, 2, 3]  # rows leave at different turns
    eos = [world["tok"].eos_token_id]  # the loop ends a finished answer with EOS
    assert [t.ids for t in reference] == [demo_ids(world, q) + eos for q in DEMOS] * 2
    assert cached == reference  # ids, loss masks, segments, spans, hits, outcomes
    assert engine.counts["prefilled"] == encoded_once(reference)
    assert engine.counts["reused"] > 0


@pytest.mark.parametrize("compact_below", [0.0, 1.0])
def test_compaction_does_not_change_outputs(world, warm_policy, compact_below):
    prompts = prompts_for(DEMOS)
    engine = CachedHFGenerator(warm_policy, world["tok"], compact_below=compact_below)
    with one_thread():
        reference = run_rollouts(
            prompts, HFGenerator(warm_policy, world["tok"]), world["retriever"], CFG
        )
        assert run_rollouts(prompts, engine, world["retriever"], CFG) == reference


def test_budgets_and_junk_turns_equal_hf_generator(world, random_policy):
    """Context and response budgets bind (neither backend truncates: the loop stops the row)."""
    prompts = prompts_for("Why " + "very " * n + "odd?" for n in (0, 12, 45, 70))
    with one_thread():
        reference = run_rollouts(
            prompts, HFGenerator(random_policy, world["tok"]), world["retriever"], BUDGETS
        )
        cached = run_rollouts(
            prompts, CachedHFGenerator(random_policy, world["tok"]), world["retriever"], BUDGETS
        )
    reasons = {t.stop_reason for t in reference}
    assert "context_budget" in reasons and any(t.truncated for t in reference)
    assert any(t.num_invalid for t in reference)
    assert cached == reference


def test_logits_processor_sees_what_generate_gives_it(world, random_policy):
    """A processor that reads the padded ids (ban each row's previous token) acts the same."""

    def no_repeat(input_ids, scores):
        scores[torch.arange(len(scores)), input_ids[:, -1]] = float("-inf")
        return scores

    tok, procs = world["tok"], LogitsProcessorList([no_repeat])
    prompts = prompts_for(DEMOS)
    with one_thread():
        reference = run_rollouts(
            prompts,
            HFGenerator(random_policy, tok, logits_processor=procs),
            world["retriever"],
            BUDGETS,
        )
        engine = CachedHFGenerator(random_policy, tok, logits_processor=procs)
        assert run_rollouts(prompts, engine, world["retriever"], BUDGETS) == reference


# ----------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_reproducible(world, random_policy):
    cfg = dataclasses.replace(BUDGETS, temperature=1.0, top_p=0.9)
    prompts = prompts_for(DEMOS) * 3
    engine = CachedHFGenerator(random_policy, world["tok"])
    fresh = CachedHFGenerator(random_policy, world["tok"])
    with one_thread():
        a = run_rollouts(prompts, engine, world["retriever"], cfg, seed=7)
        b = run_rollouts(prompts, fresh, world["retriever"], cfg, seed=7)
        c = run_rollouts(prompts, engine, world["retriever"], cfg, seed=8)
        state = torch.random.get_rng_state()
        engine.generate([a[0].prompt_ids], 8, (), temperature=1.0, seed=1)
    assert a == b
    assert a != c
    assert len({tuple(t.response_ids) for t in a}) == len(a)  # rows of a group differ
    assert torch.equal(state, torch.random.get_rng_state())


def test_logprobs_are_the_policys_tempered_log_softmax(world, warm_policy):
    tok = world["tok"]
    ctx = encode_prompt(tok, prompts_for(["Where does the Rhône meet the Saône?"])[0])
    engine = CachedHFGenerator(warm_policy, tok)
    with one_thread():
        for temperature in (0.0, 0.7):
            [ids], [logprobs] = engine.generate_with_logprobs(
                [ctx], 12, TAGS.stop_strings, temperature, 1.0, seed=3
            )
            logits = warm_policy(torch.tensor([ctx + ids])).logits[0, len(ctx) - 1 : -1]
            scale = temperature if temperature > 0 else 1.0
            expected = torch.log_softmax(logits / scale, -1).gather(1, torch.tensor(ids)[:, None])
            assert len(logprobs) == len(ids) > 0
            assert torch.allclose(
                torch.tensor(logprobs, dtype=torch.float64), expected.flatten(), atol=1e-6
            )


# ----------------------------------------------------------------------------- cache reuse


def test_cache_is_dropped_when_the_weights_change(world, warm_policy):
    tok, model = world["tok"], copy.deepcopy(warm_policy)
    ctx = encode_prompt(tok, prompts_for(["Which city is the largest in Switzerland?"])[0])
    engine = CachedHFGenerator(model, tok)
    with one_thread():
        [first] = engine.generate([ctx], 24, TAGS.stop_strings)
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight.mul_(3.0)  # an optimiser step, in place
        follow = ctx + first + encode_block(tok, TAGS.invalid_message)
        prefilled = engine.counts["prefilled"]
        [after] = engine.generate([follow], 24, TAGS.stop_strings)
        [reference] = HFGenerator(model, tok).generate([follow], 24, TAGS.stop_strings)
    assert engine.counts["prefilled"] - prefilled == len(follow)  # nothing reused
    assert after == reference


def test_contexts_that_do_not_extend_a_cached_row_are_encoded_whole(world, warm_policy):
    tok = world["tok"]
    a, b = (encode_prompt(tok, p) for p in prompts_for(list(DEMOS)[:2]))
    engine = CachedHFGenerator(warm_policy, tok)
    with one_thread():
        engine.generate([a, b], 6)
        before = engine.counts["prefilled"]
        out = engine.generate([b, a[:-2]], 6)  # reordered rows; a context shorter than the cache
        reference = HFGenerator(warm_policy, tok).generate([b, a[:-2]], 6)
    assert out == reference
    assert engine.counts["prefilled"] - before == len(a) - 2 + len(b)


# ----------------------------------------------------------------------------- stop strings


def test_stop_watch_stops_where_decoding_the_tail_does(world):
    """Against HFGenerator's criterion (decode the last window tokens at every step)."""
    tok = world["tok"]
    stops = ["</search>", "ich", "ü", "the capital"]
    watch = StopWatch(tok, stops)
    rng = random.Random(0)
    text = " ".join(f"{t} {x}" for t, x in PASSAGES) + " <search> a </search> </sea rch>"
    pool = tok(text, add_special_tokens=False)["input_ids"] + list(range(len(tok)))
    checked = 0
    for _ in range(300):
        ids = [rng.choice(pool) for _ in range(30)]
        for n in range(1, len(ids) + 1):
            tail = decode_ids(tok, ids[:n][-watch.window :])
            expected = any(s in tail for s in stops)
            assert watch.ends(ids[:n]) == expected, (ids[:n], tail)
            checked += expected
            if expected:
                break
    assert checked > 50  # stops were actually hit


# ----------------------------------------------------------------------------- factory, devices


def test_factory_picks_the_cached_engine_on_cpu(world, warm_policy):
    tok = world["tok"]
    assert isinstance(hf_generator(warm_policy, tok), CachedHFGenerator)
    assert type(hf_generator(warm_policy, tok, cached=False)) is HFGenerator


def test_sliding_window_models_are_refused(world):
    config = LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, layer_types=["sliding_attention"])  # fmt: skip
    with pytest.raises(IGSearchError, match="use HFGenerator"):
        CachedHFGenerator(LlamaForCausalLM(config), world["tok"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cached_engine_on_gpu_matches_cpu(world, warm_policy):
    prompts = prompts_for(DEMOS) * 2
    cpu = run_rollouts(
        prompts, CachedHFGenerator(warm_policy, world["tok"]), world["retriever"], CFG
    )
    gpu = CachedHFGenerator(copy.deepcopy(warm_policy), world["tok"], device="cuda")
    assert run_rollouts(prompts, gpu, world["retriever"], CFG) == cpu
    sampled = dataclasses.replace(CFG, temperature=1.0)
    a = run_rollouts(prompts, gpu, world["retriever"], sampled, seed=1)
    assert a == run_rollouts(prompts, gpu, world["retriever"], sampled, seed=1)
