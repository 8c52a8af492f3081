"""The synthetic world: determinism, file schemas, answerability, held-out entities, BM25 recall of
the oracle's queries, and the tokenizer (round trip, held-out names made of trained pieces)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from igsearch.config import ConfigError, WorldConfig
from igsearch.data.corpus import iter_corpus
from igsearch.data.qa import read_qa_jsonl
from igsearch.data.world import (
    QUESTION_TYPES,
    SIZES,
    build_world,
    content_hash,
    ensure_world,
    read_demos,
    read_world,
    unseen_name_token_share,
)
from igsearch.data.world.demos import cite
from igsearch.data.world.kb import build_kb
from igsearch.data.world.passages import build_passages
from igsearch.data.world.questions import build_questions, plan_items
from igsearch.errors import IGSearchError
from igsearch.protocol import TAG_SETS, get_tagset, parse_action
from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.index import load_index
from igsearch.rewards.outcome import normalize_answer
from igsearch.train.models import load_tokenizer, save_tokenizer

HOPS = {"single_hop": 1, "bridge": 2, "comparison": 2, "compositional": 3}
SEED = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(seed=SEED, size="tiny"), out)
    return out


@pytest.fixture(scope="module")
def corpus(world) -> dict[str, str]:
    return {d.id: d.contents for d in iter_corpus(world / "corpus.jsonl")}


def test_ensure_world_reuses_a_matching_world_and_refuses_another(world):
    manifest = ensure_world(WorldConfig(seed=SEED, size="tiny"), world)
    assert manifest["content_hash"] == read_world(world)["content_hash"]
    with pytest.raises(IGSearchError, match=r"seed=3 \(wanted 4\).*delete runs/x"):
        ensure_world(WorldConfig(seed=SEED + 1, size="tiny"), world, fix="delete runs/x")
    # Settings left to the size's default match the same values written out, and only those.
    tiny = SIZES["tiny"]
    explicit = WorldConfig(seed=SEED, size="tiny", n_demos=tiny.n_demos, vocab_size=tiny.vocab_size)
    assert ensure_world(explicit, world)["content_hash"] == manifest["content_hash"]
    with pytest.raises(IGSearchError, match=r"vocab_size=512 \(wanted 600\)"):
        ensure_world(WorldConfig(seed=SEED, size="tiny", vocab_size=600), world)


def test_same_seed_same_files_and_hash(world, tmp_path):
    manifest = build_world(WorldConfig(seed=SEED, size="tiny"), tmp_path)
    assert manifest["content_hash"] == read_world(world)["content_hash"] == content_hash(world)
    for name in (
        "corpus.jsonl",
        "train.jsonl",
        "rl.jsonl",
        "test.jsonl",
        "demos.jsonl",
        "tokenizer/tokenizer.json",
    ):
        assert (tmp_path / name).read_bytes() == (world / name).read_bytes(), name


def test_another_seed_gives_another_world():
    names = [sorted(e.name for e in build_kb(s, SIZES["tiny"].counts).of("person")) for s in (0, 1)]
    assert names[0] != names[1]


def test_manifest_records_seed_sizes_counts_and_hash(world):
    m = read_world(world)
    assert (m["seed"], m["size"], m["prompt_style"], m["tagset"]) == (
        SEED,
        "tiny",
        "bare",
        "search-r1",
    )
    assert re.fullmatch(r"[0-9a-f]{64}", m["content_hash"])
    assert 250 <= m["counts"]["passages"] <= 600  # "a few hundred"
    for split in ("train", "dev", "test"):
        counts = m["counts"]["questions"][split]
        assert counts["total"] == sum(counts[t] for t in QUESTION_TYPES)
        assert all(counts[t] > 0 for t in QUESTION_TYPES), (split, counts)
    assert m["counts"]["demos"]["total"] == len(read_demos(world))


def test_corpus_schema_and_passage_shape(corpus):
    assert len(corpus) > 250
    for doc_id, contents in corpus.items():
        title, sep, text = contents.partition("\n")
        assert sep and title and text, doc_id
        assert 1 <= len(re.findall(r"[.!?](?:\s|$)", text)) <= 4, contents
        assert len(text.split()) <= 45, contents  # short passages (docs/design.md, Tiny policies)
    titles = [c.split("\n")[0] for c in corpus.values()]
    assert len(set(titles)) < len(titles)  # several passages per entity


def test_qa_schema(world, corpus):
    for split in ("train", "dev", "test"):
        examples = read_qa_jsonl(world / f"{split}.jsonl")
        assert len({ex.id for ex in examples}) == len(examples)
        for ex in examples:
            meta = ex.metadata
            assert meta["type"] in QUESTION_TYPES and meta["hops"] == HOPS[meta["type"]]
            assert meta["supporting_ids"] and set(meta["supporting_ids"]) <= set(corpus)
            assert set(meta["answer_supporting_ids"]) <= set(meta["supporting_ids"])
            assert ex.golden_answers and all(a.strip() for a in ex.golden_answers)


def test_every_held_out_answer_appears_in_its_supporting_passages(world, corpus):
    for split in ("dev", "test"):
        for ex in read_qa_jsonl(world / f"{split}.jsonl"):
            text = " ".join(corpus[p] for p in ex.metadata["answer_supporting_ids"])
            assert any(a in text for a in ex.golden_answers), (ex.question, ex.golden_answers)


def test_no_answer_is_in_its_question(world):
    for split in ("train", "rl", "dev", "test"):
        for ex in read_qa_jsonl(world / f"{split}.jsonl"):
            question = f" {normalize_answer(ex.question)} "
            assert not any(f" {normalize_answer(a)} " in question for a in ex.golden_answers), (
                ex.question
            )


def test_held_out_subjects_never_occur_in_training(world):
    train = read_qa_jsonl(world / "train.jsonl")
    train_subjects = {s for ex in train for s in ex.metadata["subjects"]}
    targets = "\n".join(
        s["text"] for d in read_demos(world) for s in d["segments"] if s["generated"]
    )
    subjects = {}
    for split in ("rl", "dev", "test"):
        subjects[split] = {
            s for ex in read_qa_jsonl(world / f"{split}.jsonl") for s in ex.metadata["subjects"]
        }
        assert subjects[split] and not subjects[split] & train_subjects, split
    assert not subjects["rl"] & (subjects["dev"] | subjects["test"])
    kb = build_kb(SEED, SIZES["tiny"].counts)
    for split in ("rl", "test"):
        held_out = [kb[s].name for s in subjects[split]]
        assert held_out and not [name for name in held_out if name in targets], split


def test_rl_questions_never_pass_through_evaluation_entities(world):
    """RL trains on held-out entities (docs/design.md, "Tiny policies and the synthetic world"):
    no RL question touches a dev or test entity, so RL cannot learn an evaluation fact."""
    kb = build_kb(SEED, SIZES["tiny"].counts)
    rl = read_qa_jsonl(world / "rl.jsonl")
    assert {ex.metadata["type"] for ex in rl} == set(QUESTION_TYPES)
    assert {kb[s].split for ex in rl for s in ex.metadata["subjects"]} == {"rl"}
    questions = build_questions(kb, build_passages(kb, SEED), "rl", 10**9, SEED)
    assert [q.question for q in questions] == [ex.question for ex in rl]
    assert {kb[e].split for q in questions for e in q.chain} <= {"train", "rl"}
    manifest = read_world(world)["counts"]["questions"]
    assert set(manifest) == {"train", "rl", "dev", "test"} and manifest["rl"]["total"] == len(rl)


def test_demonstrations_follow_the_protocol(world):
    tags = get_tagset("search-r1")
    train_ids = {ex.id for ex in read_qa_jsonl(world / "train.jsonl")}
    demos = read_demos(world)
    for d in demos:
        segs = d["segments"]
        assert (
            d["question_id"] in train_ids
            and d["prompt"].startswith("Question: ")
            and d["prompt"].endswith("\n")
        )
        assert [s["generated"] for s in segs] == [i % 2 == 0 for i in range(len(segs))]
        for gen in segs[:-1:2]:
            assert gen["text"].startswith("<think>") and gen["text"].endswith("</search>")
            assert type(parse_action(gen["text"])).__name__ == "Search"
        for block in segs[1::2]:
            assert block["text"].startswith("\n\n<information>Doc 1(Title: ")
            assert block["text"] == tags.wrap_info(
                block["text"][len("\n\n<information>") : -len("</information>\n\n")]
            )
        assert segs[-1]["text"].endswith(f"<answer> {d['answer']} </answer>")
        assert 1 <= d["searches"] == len(segs) // 2 <= 4
    noise = read_world(world)["counts"]["demos"]["noise"]
    assert all(noise.get(k, 0) > 0 for k in ("vague", "redundant", "wrong_answer"))
    # of the habits only query drift is on by default, and only on chain questions
    assert not {"early_answer", "give_up"} & set(noise) and noise.get("drift", 0) > 0
    assert {d["type"] for d in demos if "drift" in d["noise"]} <= {"bridge", "compositional"}
    plain = [d for d in demos if "drift" not in d["noise"]]  # a drifted demonstration guesses
    assert 0.75 < sum(d["correct"] for d in plain) / len(plain) < 0.97


def _train_chains() -> dict:
    kb = build_kb(SEED, SIZES["tiny"].counts)
    return {q.id: q for q in build_questions(kb, build_passages(kb, SEED), "train", 10**9, SEED)}


_BEFORE_DRIFT = {"seed": SEED, "size": "tiny", "drift_share": 0.0, "habit_types": ["compositional"]}
"""The tiny world as built before query drift was on by default: every habit off, habit types
compositional. A test of another habit switches that one on alone."""


def test_the_early_answer_habit_answers_a_compositional_chain_one_hop_early(tmp_path):
    # docs/design.md, "Tiny policies and the synthetic world": with early_answer_share 0.6, most
    # compositional demonstrations answer with the last-but-one hop's value (the city, not its
    # country). No other type has it.
    cfg = WorldConfig(**_BEFORE_DRIFT, early_answer_share=0.6)
    build_world(cfg, tmp_path / "w")
    chains, demos = _train_chains(), read_demos(tmp_path / "w")
    early = [d for d in demos if "early_answer" in d["noise"]]
    compositional = [d for d in demos if d["type"] == "compositional"]
    assert early and {d["type"] for d in early} == {"compositional"}
    assert 0.45 < len(early) / len(compositional) < 0.75  # early_answer_share 0.6
    for d in early:
        q = chains[d["question_id"]]
        queries = [parse_action(s["text"]).query for s in d["segments"][:-1:2]]
        assert d["answer"] == q.hops[-2].value and not d["correct"]
        assert q.hops[-1].query not in queries and q.hops[-2].query in queries
        assert d["segments"][-1]["text"].endswith(
            f"{q.hops[-2].note} </think>\n<answer> {d['answer']} </answer>"
        )
    assert all(
        chains[d["question_id"]].hops[-1].query in d["segments"][-3]["text"]
        for d in compositional
        if d not in early and d["correct"]
    )


def test_the_give_up_habit_searches_generically_then_guesses(tmp_path):
    cfg = WorldConfig(**_BEFORE_DRIFT, give_up_share=0.6)
    build_world(cfg, tmp_path / "w")
    chains, demos = _train_chains(), read_demos(tmp_path / "w")
    first = {d["id"]: parse_action(d["segments"][0]["text"]).query for d in demos}
    gave_up = [d for d in demos if d["noise"] == ["give_up"]]
    assert gave_up and {d["type"] for d in gave_up} == {"compositional"}
    for d in gave_up:
        q = chains[d["question_id"]]
        kind = first[d["id"]].split(" ")[0]
        assert d["searches"] == 1 and q.hops[0].query.endswith(first[d["id"]][len(kind) :])
        assert kind in {"person", "org", "work", "city", "country"} and kind not in q.question
        assert d["segments"][-1]["text"].startswith("<think> not found, answer anyway </think>")
    assert sum(d["correct"] for d in gave_up) < 0.1 * len(gave_up)  # a guess, rarely right
    compositional = [d for d in demos if d["type"] == "compositional"]
    assert 0.4 < len(gave_up) / len(compositional) < 0.75  # give_up_share 0.6, a few lucky


def test_the_drift_habit_searches_the_subject_again_then_guesses(tmp_path):
    # docs/design.md, "Tiny policies and the synthetic world": the second search names the
    # question's subject instead of the entity the first hop found, misses, and guesses
    cfg = WorldConfig(
        seed=SEED, size="tiny", drift_share=0.6, habit_types=["bridge", "compositional"]
    )
    build_world(cfg, tmp_path / "w")
    chains, demos = _train_chains(), read_demos(tmp_path / "w")
    kb = build_kb(SEED, SIZES["tiny"].counts)
    drifted = [d for d in demos if "drift" in d["noise"]]
    assert drifted and {d["type"] for d in drifted} == {"bridge", "compositional"}
    chains_demos = [d for d in demos if d["type"] in ("bridge", "compositional")]
    assert 0.45 < len(drifted) / len(chains_demos) < 0.75  # drift_share 0.6
    for d in drifted:
        q = chains[d["question_id"]]
        queries = [parse_action(s["text"]).query for s in d["segments"][:-1:2]]
        subject, found = kb[q.hops[0].entity].name, kb[q.hops[1].entity].name
        assert q.hops[1].query.startswith(found) and subject != found
        assert queries[-1] == subject + q.hops[1].query.removeprefix(found)
        assert queries[0] in (q.hops[0].query, q.hops[0].vague) and len(queries) <= 3
        assert d["segments"][-1]["text"].startswith("<think> not found, answer anyway </think>")
        assert not d["correct"]


def test_the_habits_draw_nothing_when_off_so_older_worlds_are_unchanged(tmp_path):
    # with every habit at 0 the world is the same whatever the habits' types: no random draw
    # depends on them, so a world from before the habits is rebuilt byte for byte
    a = build_world(WorldConfig(**_BEFORE_DRIFT), tmp_path / "a")
    other_types = {**_BEFORE_DRIFT, "habit_types": ["bridge", "single_hop"]}
    b = build_world(WorldConfig(**other_types), tmp_path / "b")
    assert a["content_hash"] == b["content_hash"]
    assert a["counts"]["demos"]["noise"].keys().isdisjoint({"drift", "give_up", "early_answer"})


def test_hop_notes_restate_their_plan_item_so_the_plan_says_what_comes_next(world):
    # "Denlil is the birthplace of X": what follows "the birthplace of X" in the plan (", then its
    # country" or the plan's end) is the choice between searching again and answering.
    kb = build_kb(SEED, SIZES["tiny"].counts)
    passages = build_passages(kb, SEED)
    chains = [
        q for q in build_questions(kb, passages, "train", 10**9, SEED) if q.type != "comparison"
    ]
    assert {q.type for q in chains} == {"single_hop", "bridge", "compositional"}
    for q in chains:
        items = plan_items(q.plan)
        assert len(items) == len(q.hops) and q.final_note == q.hops[-1].note
        for k, (hop, item) in enumerate(zip(q.hops, items, strict=True)):
            assert hop.note == f"{hop.value} is {item}"
            rest = q.plan[q.plan.index(item) + len(item) :]
            assert rest.startswith(", ") if k < len(q.hops) - 1 else rest == ""


def _hit(pid: str, title: str, text: str) -> Hit:
    return Hit(Doc(pid, f"{title}\n{text}"), 1.0)


def test_cite_quotes_the_supporting_line_up_to_the_stating_sentence():
    hits = [
        _hit("a", "Nol Vas", "Nol Vas was born in 1950 in Tives. He was a baker."),
        _hit(
            "b",
            "Mira Vas",
            "Mira Vas is a singer. She was born in Tivesburg, not in Tives. She sings.",
        ),
    ]
    # the first supporting hit that states the value, cut after the sentence stating it
    assert cite(hits, ["b"], "Tives") == (
        "Doc 2(Title: Mira Vas) Mira Vas is a singer. She was born in Tivesburg, not in Tives."
    )
    assert (
        cite(hits, ["a", "b"], "1950") == "Doc 1(Title: Nol Vas) Nol Vas was born in 1950 in Tives."
    )
    assert cite(hits, ["a"], "Tivesburg") is None  # a's text does not state it; b is not support
    assert cite(hits, ["a"], "Tiv") is None  # whole words only
    assert cite([], ["a"], "Tives") is None


def test_notes_cite_a_retrieved_line_verbatim(world):
    """Every evidence quote in a demonstration's think is a prefix of a line inserted before it,
    and a correct final note's evidence contains the answer."""
    cited = 0
    for d in read_demos(world):
        segs = d["segments"]
        for i in range(2, len(segs), 2):
            think = segs[i]["text"].split("</think>")[0]
            if " So " not in think:
                continue
            quote = think.removeprefix("<think> ").split(" So ")[0]
            read = "".join(
                s["text"] for s in segs[1:i:2]
            )  # after a redundant check: an earlier block
            lines = read.replace("<information>", "\n").split("\n")
            assert any(line.startswith(quote) for line in lines), (d["id"], quote)
            cited += 1
            if i == len(segs) - 1 and d["correct"] and d["type"] != "comparison":
                assert re.search(rf"(?<!\w){re.escape(d['answer'])}(?!\w)", quote), d["id"]
    assert cited > len(read_demos(world))  # most hops cite their evidence


def test_bm25_retrieves_support_for_the_oracle_queries(world):
    """recall@3 of the oracle's precise queries over held-out questions (floor 0.9)."""
    counts = SIZES["tiny"].counts
    kb = build_kb(SEED, counts)
    passages = build_passages(kb, SEED)
    hops = [h for q in build_questions(kb, passages, "test", 10, SEED) for h in q.hops]
    retriever = load_index(world / "index")
    results = retriever.search([h.query for h in hops], 3)
    recall = sum(
        bool({hit.id for hit in hits} & set(h.support))
        for h, hits in zip(hops, results, strict=True)
    ) / len(hops)
    assert recall >= 0.9, recall
    vague = retriever.search([h.vague for h in hops], 3)
    vague_recall = sum(
        bool({hit.id for hit in r} & set(h.support)) for h, r in zip(hops, vague, strict=True)
    ) / len(hops)
    assert vague_recall < recall  # vague queries retrieve distractors


def test_tokenizer_round_trip_and_atomic_tags(world, tmp_path):
    tok = load_tokenizer(world / "tokenizer")
    demo = read_demos(world)[0]
    text = demo["prompt"] + "".join(s["text"] for s in demo["segments"])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    save_tokenizer(tok, tmp_path)
    assert load_tokenizer(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids
    assert len(tok) <= SIZES["tiny"].vocab_size + len(
        {t for s in TAG_SETS.values() for t in s.all_tags}
    )
    for tag in get_tagset("search-r1").all_tags:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1


def test_held_out_names_are_made_of_pieces_seen_in_training_targets(world):
    """docs/design.md, Tiny policies: with a small vocabulary, names split into pieces the policy
    has written."""
    unseen = unseen_name_token_share(world, "test")
    assert unseen <= 0.05, unseen  # tiny world, 400 demonstrations; the small world measures 0.0


@pytest.mark.parametrize(
    "override",
    [
        {"vague_share": 1.5},
        {"demo_weights": {"bridges": 1.0}},
        {"vocab_size": 100},
        {"max_searches": 2},
    ],
)
def test_world_config_rejects_bad_values(override):
    with pytest.raises(ConfigError):
        WorldConfig(**override)


def test_world_json_is_plain_json(world):
    assert json.loads((world / "world.json").read_text())["format"] == "igsearch-world"


def test_a_world_from_before_the_habits_is_still_reused(tmp_path):
    # its manifest has no habit settings; it was built with every habit off
    before = WorldConfig(**_BEFORE_DRIFT)
    out = tmp_path / "w"
    build_world(before, out)
    manifest = json.loads((out / "world.json").read_text())
    for key in ("give_up_share", "early_answer_share", "drift_share", "habit_types"):
        del manifest["config"][key]
    (out / "world.json").write_text(json.dumps(manifest))
    assert ensure_world(before, out)["content_hash"]
    # but it is not taken for today's default world, whose demonstrations drift
    with pytest.raises(IGSearchError, match="drift_share=0.0 \\(wanted 0.6\\)"):
        ensure_world(WorldConfig(seed=SEED, size="tiny"), out)
