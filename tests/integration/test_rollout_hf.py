"""HFGenerator + rollout loop with a tiny Llama and BM25 over a 10-passage corpus.

Two policies: a random-init nano model (junk text: invalid turns, final-turn messages, budgets) and
a smaller Llama warm-started for a few seconds on five demonstrations tokenised segment by segment
(it then searches BM25 and answers, so rows stop at different turns). Both run in float64, so
greedy decoding has no near-ties and batched rows must equal rows run alone.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from igsearch.config import RolloutConfig
from igsearch.errors import IGSearchError
from igsearch.protocol import build_prompt, get_tagset
from igsearch.retrieval.index import build_index, load_index
from igsearch.rollout.backends import Generator, HFGenerator, VLLMGenerator
from igsearch.rollout.loop import (
    decode_ids,
    encode_block,
    encode_prompt,
    observation_text,
    run_rollouts,
)
from igsearch.train.models import init_model, save_tokenizer, train_tokenizer

TAGS = get_tagset("search-r1")
PASSAGES = [
    ("Zürich", "Zürich is the largest city of Switzerland, on Lake Zürich."),
    ("Bern", "Bern is the capital of Switzerland and lies on the Aare."),
    ("Lyon", "Lyon is a city in France where the Rhône meets the Saône."),
    ("Tokyo", "Tokyo is the capital of Japan and its largest city."),
    ("Ada Lovelace", "Ada Lovelace wrote the first published program for an engine."),
    ("Mount Fuji", "Mount Fuji is the highest mountain in Japan."),
    ("Danube", "The Danube flows through Vienna, Budapest and Belgrade."),
    ("Marie Curie", "Marie Curie won Nobel prizes in physics and chemistry."),
    ("Oslo", "Oslo is the capital of Norway, at the head of a fjord."),
    ("Nile", "The Nile is a river in Africa that flows into the Mediterranean."),
]
# question -> (search queries in order, answer): 0, 1 and 2 searches, so rows stop at turns 1-3
DEMOS = {
    "What is the capital of Japan?": ([], "Tokyo"),
    "Which city is the largest in Switzerland?": (["largest city Switzerland"], "Zürich"),
    "Who wrote the first program?": (["first published program"], "Ada Lovelace"),
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


@contextlib.contextmanager
def one_thread():
    """Tiny matrices: a second thread only adds contention on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout_world")
    with (root / "corpus.jsonl").open("w") as f:
        for i, (title, text) in enumerate(PASSAGES):
            f.write(
                json.dumps({"id": f"p{i}", "contents": f"{title}\n{text}"}, ensure_ascii=False)
                + "\n"
            )
    build_index(root / "corpus.jsonl", "bm25", root / "index")
    texts = [f"{t}\n{x}" for t, x in PASSAGES] * 3 + [build_prompt(q, style="bare") for q in DEMOS]
    return dict(
        root=root, retriever=load_index(root / "index"), tok=train_tokenizer(texts, vocab_size=400)
    )


def demo_ids(world, question: str) -> list[int]:
    """A demonstration tokenised as the SFT builder does: prompt, then each segment alone."""
    tok, queries_answer = world["tok"], DEMOS[question]
    ids = encode_prompt(tok, build_prompt(question, style="bare"))
    for query in queries_answer[0]:
        ids += encode_block(tok, f"<search> {query} </search>")
        hits = world["retriever"].search([query], CFG.topk)[0]
        ids += encode_block(tok, observation_text(tok, TAGS, hits, CFG.max_obs_tokens))
    return ids + encode_block(tok, f"<answer> {queries_answer[1]} </answer>")


@pytest.fixture(scope="module")
def random_policy(world):
    return init_model("nano", world["tok"], seed=0).double().eval()


@pytest.fixture(scope="module")
def warm_policy(world):
    """A 2-layer, 64-wide Llama fitted to the five demonstrations (~5 s on CPU; nano takes ~4x)."""
    tok = world["tok"]
    seqs = [demo_ids(world, q) for q in DEMOS]
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros_like(x)
    for i, s in enumerate(seqs):
        x[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    torch.manual_seed(0)
    shape = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **shape,
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
    assert loss.item() < 0.1, (
        f"the warm start did not fit the demonstrations (loss {loss.item():.3f})"
    )
    return model.double().eval()


class Recording:
    """Wraps a generator, recording the contexts it was given and the ids it returned."""

    def __init__(self, inner: Generator):
        self.inner, self.tokenizer, self.eos_token_ids = inner, inner.tokenizer, inner.eos_token_ids
        self.calls: list[tuple[list[list[int]], list[list[int]]]] = []

    def generate(self, batch, *args, **kwargs):
        out = self.inner.generate(batch, *args, **kwargs)
        self.calls.append(([list(b) for b in batch], out))
        return out


def check_no_drift(trajs, rec: Recording, prompts, tok) -> None:
    """Each context the policy saw is the trajectory's prefix; generated ids are stored unchanged."""
    for traj, p in zip(trajs, prompts, strict=True):
        assert traj.prompt_ids == tok(p)["input_ids"]
        generated = [
            traj.response_ids[s.start : s.end] for s in traj.segments if s.kind == "generated"
        ]
        seen = [
            (ctx, out)
            for batch, outs in rec.calls
            for ctx, out in zip(batch, outs, strict=True)
            if ctx[: len(traj.prompt_ids)] == traj.prompt_ids
        ]
        assert len(seen) == traj.num_turns == len(generated)
        for turn, ((ctx, out), gen) in enumerate(zip(seen, generated, strict=True)):
            assert traj.ids[: len(ctx)] == ctx
            # the loop appends EOS to an answer the policy ended without one (last turn only)
            added = int(out[: len(gen)] != gen)
            assert out[: len(gen) - added] == gen[: len(gen) - added]
            if added:
                assert gen[-1] == tok.eos_token_id and turn == len(generated) - 1
                assert traj.stop_reason == "answer"
        for seg in traj.segments:
            block = {"invalid": TAGS.invalid_message, "final": TAGS.final_turn_message}.get(
                seg.kind
            )
            if block:
                assert traj.response_ids[seg.start : seg.end] == encode_block(tok, block)
        assert [
            m for s in traj.segments for m in [int(not s.inserted)] * (s.end - s.start)
        ] == traj.loss_mask


# ----------------------------------------------------------------------------- random policy


def test_random_policy_ids_do_not_drift(world, random_policy):
    tok = world["tok"]
    prompts = [build_prompt(q, style="bare") for q in DEMOS]
    rec = Recording(HFGenerator(random_policy, tok))
    with one_thread():
        trajs = run_rollouts(prompts, rec, world["retriever"], CFG)
    check_no_drift(trajs, rec, prompts, tok)
    assert any(t.hit_max_turns for t in trajs)


def test_random_policy_batch_equals_single_with_budgets(world, random_policy):
    tok = world["tok"]
    prompts = [build_prompt("Why " + "very " * n + "odd?", style="bare") for n in (0, 12, 45, 70)]
    cfg = RolloutConfig(
        prompt_style="bare",
        temperature=0.0,
        max_turns=4,
        max_new_tokens_per_turn=16,
        max_response_tokens=290,
        max_context_tokens=300,
    )
    gen = HFGenerator(random_policy, tok)
    with one_thread():
        batched = run_rollouts(prompts, gen, world["retriever"], cfg)
        alone = [run_rollouts([p], gen, world["retriever"], cfg)[0] for p in prompts]
    assert len({t.num_turns for t in batched}) >= 3  # rows leave the batch at different turns
    assert batched == alone


# ----------------------------------------------------------------------------- warm-started policy


def test_warm_policy_searches_bm25_and_reproduces_demonstrations(world, warm_policy):
    tok = world["tok"]
    prompts = [build_prompt(q, style="bare") for q in DEMOS]
    rec = Recording(HFGenerator(warm_policy, tok))
    with one_thread():
        trajs = run_rollouts(prompts, rec, world["retriever"], CFG)
    check_no_drift(trajs, rec, prompts, tok)
    assert sorted({t.num_turns for t in trajs}) == [1, 2, 3]
    for q, traj in zip(DEMOS, trajs, strict=True):
        queries, answer = DEMOS[q]
        # the segmentation contract, end to end; the loop ends an answer with EOS, as SFT does
        assert traj.ids == demo_ids(world, q) + [tok.eos_token_id]
        assert (
            [s.query for s in traj.steps] == queries and traj.answer == answer and traj.well_formed
        )
        for step in traj.steps:
            assert decode_ids(tok, traj.response_ids[slice(*step.query_span)]).strip() == step.query
            assert step.hits == world["retriever"].search([step.query], 1)[0]


def test_warm_policy_batch_equals_single(world, warm_policy):
    prompts = [build_prompt(q, style="bare") for q in DEMOS] * 2
    gen = HFGenerator(warm_policy, world["tok"])
    with one_thread():
        batched = run_rollouts(prompts, gen, world["retriever"], CFG)
        alone = [run_rollouts([p], gen, world["retriever"], CFG)[0] for p in prompts[:5]]
    assert batched == alone * 2


def test_hf_generator_stops_seeds_and_keeps_the_global_rng(world, warm_policy):
    tok = world["tok"]
    gen = HFGenerator(warm_policy, tok)
    q = "Which city is the largest in Switzerland?"
    ctx = encode_prompt(tok, build_prompt(q, style="bare"))
    with one_thread():
        [stopped] = gen.generate([ctx], 40, TAGS.stop_strings)
        [free] = gen.generate([ctx], 40)
        state = torch.random.get_rng_state()
        a = gen.generate([ctx, ctx], 20, (), temperature=1.0, seed=5)
        b = gen.generate([ctx, ctx], 20, (), temperature=1.0, seed=5)
        c = gen.generate([ctx, ctx], 20, (), temperature=1.0, seed=6)
    assert decode_ids(tok, stopped).endswith("</search>") and stopped == encode_block(
        tok, "<search> largest city Switzerland </search>"
    )
    assert free[: len(stopped)] == stopped and len(free) > len(stopped)
    assert a == b and a != c
    assert torch.equal(state, torch.random.get_rng_state())


def test_ask_command_prints_the_trajectory(world, warm_policy, tmp_path):
    from igsearch.cli import app

    copy.deepcopy(warm_policy).float().save_pretrained(tmp_path / "policy")
    save_tokenizer(world["tok"], tmp_path / "policy")
    args = [
        "ask",
        "--model",
        str(tmp_path / "policy"),
        "--index",
        str(world["root"] / "index"),
        "--prompt-style",
        "bare",
        "--topk",
        "1",
        "--device",
        "cpu",
        "Who wrote the first program?",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Question: Who wrote the first program?" in out
    assert "search: first published program" in out and "Ada Lovelace" in out
    assert "answer:" in out and "turn" in out and "well_formed=" in out


# ----------------------------------------------------------------------------- GPU backends

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(HAS_VLLM and torch.cuda.is_available(), reason="vLLM and a GPU are here")
def test_vllm_generator_without_vllm_or_gpu_says_what_to_install():
    with pytest.raises(IGSearchError, match=r"pip install 'igsearch\[vllm\]'"):
        VLLMGenerator("any/model")


@pytest.mark.gpu
@needs_cuda
def test_hf_generator_on_gpu_matches_cpu(world, warm_policy):
    prompts = [build_prompt(q, style="bare") for q in DEMOS]
    cpu = run_rollouts(prompts, HFGenerator(warm_policy, world["tok"]), world["retriever"], CFG)
    gpu_gen = HFGenerator(copy.deepcopy(warm_policy), world["tok"], device="cuda")
    assert run_rollouts(prompts, gpu_gen, world["retriever"], CFG) == cpu


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not HAS_VLLM, reason="needs the vllm extra")
def test_vllm_generator_rollouts_do_not_drift(world, warm_policy, tmp_path):
    copy.deepcopy(warm_policy).float().save_pretrained(tmp_path / "policy")
    save_tokenizer(world["tok"], tmp_path / "policy")
    gen = VLLMGenerator(
        str(tmp_path / "policy"), world["tok"], gpu_memory_utilization=0.2, dtype="float32"
    )
    prompts = [build_prompt(q, style="bare") for q in DEMOS]
    rec = Recording(gen)
    check_no_drift(run_rollouts(prompts, rec, world["retriever"], CFG), rec, prompts, world["tok"])
