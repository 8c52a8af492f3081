"""Renamed entities in RL (igsearch.data.world.rename; docs/design.md, "Renamed entities in RL")."""

from __future__ import annotations

import json
import re

import pytest

from igsearch.data.world.kb import build_kb
from igsearch.data.world.rename import (
    _ENGLISH,
    Renamer,
    RenamingRetriever,
    made_up_words,
)
from igsearch.errors import IGSearchError
from igsearch.retrieval.base import Doc, Hit

WORDS = {"Vubos", "Hispir", "Hoton", "Vipalistan", "Vipalese", "Zushar", "Ginmal"}


def test_world_words_are_the_made_up_ones():
    kb = build_kb(
        0, {"country": 3, "city": 4, "person": 12, "org": 4, "work": 6, "event": 4, "award": 4}
    )
    words = made_up_words(kb)
    person = kb.of("person")[0]
    country = kb.of("country")[0]
    assert set(person.name.split()) <= words
    assert country.name in words and country.attrs["language"] in words
    english = {w for e in kb.of("work") + kb.of("org") for w in e.name.split() if w in _ENGLISH}
    assert english and not english & words  # titles and organisation kinds keep their words
    assert not {"The", "Republic", "Kingdom", "Federation"} & words


def test_a_renaming_respells_every_made_up_word_consistently_and_nothing_else():
    r = Renamer(WORDS).draw(7)
    text = "Vubos Hispir was born in Hoton in 1898. Hoton lies in Vipalistan; Vubos Hispir founded Zushar Works."
    out = r.text(text)
    # same word -> same spelling; English words, numbers and punctuation untouched
    assert (
        out.count(r.word("Hoton")) == 2 and out.count(r.word("Vubos") + " " + r.word("Hispir")) == 2
    )
    assert re.sub(r"[A-Z][a-z]+", "W", out) == re.sub(r"[A-Z][a-z]+", "W", text)
    assert "1898" in out and "Works" in out and "was born in" in out
    assert not set(re.findall(r"[A-Z][a-z]+", out)) & WORDS  # no world word survives
    # a fresh spelling keeps the world's ending and is never a world word or another's spelling
    assert r.word("Vipalistan").endswith("istan") and r.word("Vipalese").endswith("ese")
    assert len({r.word(w) for w in WORDS}) == len(WORDS)
    assert r.text("Hispir") == r.word("Hispir")


def test_queries_map_back_in_any_case_and_garbles_pass_through():
    r = Renamer(WORDS).draw(1)
    q = r.text("Where was Vubos Hispir born")
    assert r.query(q) == "Where was Vubos Hispir born"
    assert r.query(q.lower()) == "where was Vubos Hispir born"
    garbled = q.replace(r.word("Hispir"), r.word("Hispir") + "x")
    assert "Hispir" not in r.query(garbled)  # a miscopied name reaches the retriever miscopied


def test_renamings_differ_by_step_and_repeat_by_seed():
    a, b, a2 = (Renamer(WORDS).draw(s) for s in (1, 2, 1))
    assert [a.word(w) for w in sorted(WORDS)] == [a2.word(w) for w in sorted(WORDS)]
    assert [a.word(w) for w in sorted(WORDS)] != [b.word(w) for w in sorted(WORDS)]


def test_rows_get_renamed_prompt_and_gold():
    r = Renamer(WORDS).draw(3)
    row = {
        "prompt": "Question: Who founded Zushar Works?",
        "golden_answers": ["Ginmal Hispir"],
        "qid": "q",
    }
    out = r.example(row)
    assert out["prompt"] == f"Question: Who founded {r.word('Zushar')} Works?"
    assert out["golden_answers"] == [f"{r.word('Ginmal')} {r.word('Hispir')}"]
    assert out["qid"] == "q" and row["prompt"].endswith("Zushar Works?")  # the dataset row is kept


class _Echo:
    """Returns one document naming what it was asked."""

    def __init__(self):
        self.asked: list[str] = []

    def search(self, queries, k):
        self.asked += queries
        return [[Hit(Doc("d", f"{q}\n{q} was born in Hoton."), 1.0)] for q in queries]


def test_retriever_sees_world_names_and_the_policy_sees_fresh_ones():
    inner = _Echo()
    ret = RenamingRetriever(inner)
    assert (
        ret.search(["Vubos"], 1)[0][0].contents == "Vubos\nVubos was born in Hoton."
    )  # off between steps
    ret.renaming = r = Renamer(WORDS).draw(4)
    hits = ret.search([r.word("Vubos") + " born"], 1)
    assert inner.asked[-1] == "Vubos born"
    assert (
        hits[0][0].contents
        == f"{r.word('Vubos')} born\n{r.word('Vubos')} born was born in {r.word('Hoton')}."
    )
    assert hits[0][0].id == "d" and hits[0][0].score == 1.0
    draw = ret.fallback(lambda rng, n, exclude=frozenset(): [Hit(Doc("x", "T\nHispir"), 0.0)])
    assert draw(None, 1)[0].contents == f"T\n{r.word('Hispir')}"
    assert ret.fallback(None) is None


def test_renaming_needs_a_world_folder(tmp_path):
    qa = tmp_path / "train.jsonl"
    qa.write_text(json.dumps({"id": "a", "question": "q", "golden_answers": ["x"]}) + "\n")
    with pytest.raises(IGSearchError, match="data.rename_entities"):
        Renamer.for_questions(qa)


def test_renaming_a_world_keeps_what_the_retriever_finds(tiny_world):
    """A query that copies the fresh names retrieves exactly what the world's names retrieve."""
    from igsearch.retrieval.index import load_index

    renamer = Renamer.for_questions(tiny_world / "rl.jsonl")
    index = load_index(tiny_world / "index")
    rows = [json.loads(line) for line in (tiny_world / "rl.jsonl").read_text().splitlines()][:40]
    r = renamer.draw(11)
    for row in rows:
        seen = r.text(row["question"])
        assert r.query(seen) == row["question"]
        plain = index.search([row["question"]], 3)[0]
        renamed = RenamingRetriever(index)
        renamed.renaming = r
        got = renamed.search([seen], 3)[0]
        assert [h.id for h in got] == [h.id for h in plain]
        assert (
            not set(re.findall(r"[A-Z][a-z]+", " ".join(h.contents for h in got))) & renamer.words
        )
