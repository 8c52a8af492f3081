"""Fresh spellings for the world's made-up names, drawn anew for every RL step.

The synthetic world's `rl` split holds a few hundred questions, so a run of a hundred steps draws
each one more than once, and a tiny policy rewarded for a right answer learns to write *that*
entity's name and answer: a gain on its own questions that does not carry over to held-out ones
(docs/design.md, "Renamed entities in RL"). Large real training sets see a question about once.
`data.rename_entities` gives RL that regime on the world: each step maps every made-up word of
the world (first names, surnames, city, country, language and river names, the made-up words of
organisations and titles) to a new random word of the same syllable count and suffix, and the
step sees the world through that map: the question and gold answers are renamed, the documents
the retriever returns are renamed, and the policy's queries are mapped back before they reach the
retriever. Everything but the spelling stays as it was: which passages a correctly copied query
retrieves, which answers are right, the relations between entities (a shared surname stays
shared). A name can then only be copied from the context, never recalled.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igsearch.data.world.kb import (
    _ADJS,
    _CITY_SUFFIX,
    _COUNTRY_SUFFIX,
    _NOUNS,
    AWARD_WORDS,
    EVENT_KINDS,
    KB,
    ORG_KINDS,
    Namer,
)
from igsearch.errors import IGSearchError
from igsearch.retrieval.base import Doc, Hit

_SUFFIXES = sorted(
    {s for s in (*_CITY_SUFFIX, *_COUNTRY_SUFFIX, "ic", "ian", "ese", "ish") if s},
    key=len,
    reverse=True,
)
"""Endings the world appends to a made-up stem (cities, countries, languages): kept by a rename."""
_ENGLISH = {
    *_ADJS,
    *_NOUNS,
    *ORG_KINDS,
    *AWARD_WORDS,
    *(w for kind in EVENT_KINDS for w in kind.split()),
    "The",
    "Republic",
    "Kingdom",
    "Federation",
}
"""The English words of entity names (titles, organisation and event kinds): never renamed."""
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_WORD = re.compile(r"\b[A-Za-z]+\b")


def made_up_words(kb: KB) -> set[str]:
    """Every made-up word of the world: the words of entity names and aliases and of their
    string attributes (languages, rivers, long names), less the English ones."""
    words: set[str] = set()
    for ent in kb.entities.values():
        texts = [ent.name, *ent.aliases, *(v for v in ent.attrs.values() if isinstance(v, str))]
        for text in texts:
            words.update(_CAPITALISED.findall(text))
    return {w for w in words if w not in _ENGLISH}


def _shape(word: str) -> tuple[int, str]:
    """(syllables, suffix) of a made-up word: its stem's vowel count (one per syllable) and the
    world's ending it carries, if any."""
    low = word.lower()
    suffix = next((s for s in _SUFFIXES if low.endswith(s) and len(low) > len(s) + 1), "")
    stem = low[: len(low) - len(suffix)]
    return max(1, sum(c in "aeiou" for c in stem)), suffix


@dataclass
class Renaming:
    """One step's map from the world's made-up words to fresh ones, filled as words appear."""

    words: frozenset[str]
    seed: int
    forward: dict[str, str] = field(default_factory=dict)
    back: dict[str, str] = field(default_factory=dict)
    """Lower-cased fresh word -> the world's word."""

    def word(self, word: str) -> str:
        """The fresh spelling of one made-up word (the same for the whole step)."""
        fresh = self.forward.get(word)
        if fresh is None:
            syllables, suffix = _shape(word)
            namer = Namer(random.Random(f"igsearch-rename-{self.seed}-{word}"))
            while True:  # never a word of the world, never another word's spelling
                fresh = (namer.syllables(syllables) + suffix).capitalize()
                low = fresh.lower()
                if fresh not in self.words and low not in self.back and fresh not in _ENGLISH:
                    break
            self.forward[word], self.back[low] = fresh, word
        return fresh

    def text(self, text: str) -> str:
        """`text` with every made-up word of the world respelt."""
        return _CAPITALISED.sub(lambda m: self.word(m[0]) if m[0] in self.words else m[0], text)

    def query(self, query: str) -> str:
        """A query the policy wrote, with the step's spellings mapped back to the world's words
        (in any case), so that the retriever sees the names its index holds."""
        return _WORD.sub(lambda m: self.back.get(m[0].lower(), m[0]), query)

    def hits(self, hits: Iterable[Hit]) -> list[Hit]:
        return [Hit(Doc(h.doc.id, self.text(h.doc.contents)), h.score) for h in hits]

    def example(self, row: dict[str, Any]) -> dict[str, Any]:
        """A trainer input row with its prompt and gold answers respelt."""
        return {
            **row,
            "prompt": self.text(row["prompt"]),
            "golden_answers": [self.text(a) for a in row["golden_answers"]],
        }


class Renamer:
    """Draws each step's `Renaming` of one world's made-up words."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(words)

    @classmethod
    def for_questions(cls, qa_file: str | Path) -> Renamer:
        """The renamer of the world a QA file belongs to (the world.json in its folder)."""
        from igsearch.data.world.build import read_kb

        folder = Path(qa_file).parent
        if not (folder / "world.json").exists():
            raise IGSearchError(
                f"data.rename_entities: {qa_file} is not in a synthetic world's folder (no "
                f"world.json in {folder}); renaming needs the world that made the names: set "
                "data.rename_entities=false for other data"
            )
        return cls(made_up_words(read_kb(folder)))

    def draw(self, seed: int) -> Renaming:
        return Renaming(self.words, seed)


class RenamingRetriever:
    """A retriever seen through the current step's renaming (none between steps): queries are
    mapped back to the world's names, and the documents respelt."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.renaming: Renaming | None = None

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        r = self.renaming
        if r is None:
            return self.inner.search(queries, k)
        return [r.hits(hits) for hits in self.inner.search([r.query(q) for q in queries], k)]

    def fallback(self, draw: Any) -> Any:
        """`corpus_fallback`'s random documents, respelt like the retrieved ones."""
        if draw is None:
            return None

        def renamed(*args: Any, **kwargs: Any) -> list[Hit]:
            hits = draw(*args, **kwargs)
            return self.renaming.hits(hits) if self.renaming is not None else hits

        return renamed
