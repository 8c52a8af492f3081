"""The `Retriever` protocol and the `Doc` / `Hit` records every retriever returns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


def split_contents(contents: str) -> tuple[str, str]:
    """Split corpus `contents` ("Title\\ntext") into (title, text).

    wiki-18 as Search-R1 ships it quotes the title (`"Aaron"\\nAaron is ...`); the quotes are
    dropped from `title` but `contents` itself is always kept verbatim.
    """
    title, sep, text = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title, text.strip()


@dataclass(frozen=True, slots=True)
class Doc:
    """A corpus passage."""

    id: str
    """Corpus id (the `id` field of the corpus jsonl)."""
    contents: str
    """The raw `contents` field, "Title\\ntext"."""

    @property
    def title(self) -> str:
        return split_contents(self.contents)[0]

    @property
    def text(self) -> str:
        return split_contents(self.contents)[1]

    def to_json(self) -> dict[str, str]:
        """The document object of Search-R1's `/retrieve` contract (plus title and text)."""
        title, text = split_contents(self.contents)
        return {"id": self.id, "contents": self.contents, "title": title, "text": text}


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved passage with its score (higher is better)."""

    doc: Doc
    score: float

    @property
    def id(self) -> str:
        return self.doc.id

    @property
    def title(self) -> str:
        return self.doc.title

    @property
    def text(self) -> str:
        return self.doc.text

    @property
    def contents(self) -> str:
        return self.doc.contents


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a batch of queries with k hits each, best first.

    Implementations answer a batch with one batched search; `len(result) == len(queries)` and
    each inner list holds at most `k` hits.
    """

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...


class TimedRetriever:
    """Wraps a retriever and adds up the seconds spent in `search` and the number of calls."""

    def __init__(self, inner: Retriever):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        t0 = time.perf_counter()
        try:
            return self.inner.search(queries, k)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1
