"""BM25 retrieval with bm25s (Lucene BM25, English stop words, Snowball stemming).

Uses the numba backend when numba is installed (it is a dependency), which scores a batch of
queries in parallel; otherwise bm25s' numpy backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from igsearch.data.corpus import CorpusStore
from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.index import register_kind


def _backend() -> str:
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


def _tokenizer(stemmer: str | None):
    from bm25s.tokenization import Tokenizer

    stem = None
    if stemmer:
        import Stemmer

        stem = Stemmer.Stemmer(stemmer).stemWord
    return Tokenizer(lower=True, stopwords="en", stemmer=stem)


class BM25Retriever:
    """A loaded BM25 index over a `CorpusStore`."""

    def __init__(self, model: Any, tokenizer: Any, store: CorpusStore, n_threads: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.n_threads = n_threads or (os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Score all queries in one batched call; returns min(k, corpus size) hits per query."""
        if not queries:
            return []
        k = min(k, len(self.store))
        ids = self.tokenizer.tokenize(
            list(queries), update_vocab=False, return_as="ids", show_progress=False
        )
        rows, scores = self.model.retrieve(
            ids,
            k=k,
            show_progress=False,
            n_threads=self.n_threads,
            backend_selection=_backend(),
        )
        return [
            [Hit(self.store[int(r)], float(s)) for r, s in zip(row, srow, strict=True)]
            for row, srow in zip(np.asarray(rows), np.asarray(scores), strict=True)
        ]


@register_kind("bm25")
class BM25Kind:
    """Build and load BM25 indexes."""

    def build(self, docs: Iterable[Doc], out_dir: Path, *, stemmer: str | None = "english", **_: Any) -> dict[str, Any]:
        import bm25s

        tokenizer = _tokenizer(stemmer)
        ids = list(
            tokenizer.streaming_tokenize((d.contents for d in docs), update_vocab=True)
        )
        model = bm25s.BM25(backend=_backend())
        model.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        model.save(str(out_dir), show_progress=False)
        tokenizer.save_vocab(str(out_dir))
        (out_dir / "bm25.json").write_text(json.dumps({"stemmer": stemmer}))
        return {"bm25": {"stemmer": stemmer, "k1": model.k1, "b": model.b, "method": model.method}}

    def load(self, index_dir: Path, manifest: dict[str, Any], store: CorpusStore, **options: Any) -> BM25Retriever:
        import bm25s

        tokenizer = _tokenizer(manifest["bm25"]["stemmer"])
        tokenizer.load_vocab(str(index_dir))
        model = bm25s.BM25.load(str(index_dir), mmap=bool(options.get("mmap", False)))
        if _backend() == "numba":
            model.backend = "numba"
        return BM25Retriever(model, tokenizer, store, n_threads=int(options.get("n_threads", 0)))
