"""BM25 retrieval with bm25s (Lucene BM25, English stop words, Snowball stemming).

bm25s builds and stores the index (its precomputed (term -> document, score) matrix). Searching
uses our own numba kernel over that matrix (`Postings.topk`) rather than bm25s' numba backend,
which scores and scans every document for every query and is compiled anew in every process
(~15-25 s before the first answer on 2 cores). Ours
- processes a query term at a time, rarest (highest max score) first, and once no unseen
  document can reach the top k (the k-th best partial score beats the sum of the remaining terms'
  max scores: MaxScore pruning) only updates the documents already seen, by binary search in the
  frequent terms' posting lists; the result is exact, and on 100k passages ~4x faster in batches
  of 1024 and ~50x for single queries (benchmarks/results/retrieval.md);
- spreads a batch over threads in chunks of 8 queries (so a thread that gets more CPU takes
  more), reusing per-thread buffers instead of allocating an array of every document per query;
- is cached on disk after its first compilation (`cache=True`);
- breaks score ties by row, so a query's hits do not depend on the batch it came in.
Scores equal bm25s' up to float rounding; queries touching fewer than k documents are padded with
score-0 documents in row order, as bm25s pads. bm25s' own retrieve remains the fallback without
numba and for BM25 variants that give untouched documents a non-zero score.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from igsearch.data.corpus import CorpusStore
from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.index import register_kind

try:
    import numba
except ImportError:  # numba is a dependency; without it bm25s' numpy backend searches
    numba = None


def _backend() -> str:
    """bm25s' backend for the fallback path: numba when installed, else numpy."""
    return "numpy" if numba is None else "numba"


def _bm25s() -> Any:
    """Import bm25s, undoing its import-time `setLevel(DEBUG)` that floods the CLI's log."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _tokenizer(stemmer: str | None):
    from bm25s.tokenization import Tokenizer

    stem = None
    if stemmer:
        import Stemmer

        stem = Stemmer.Stemmer(stemmer).stemWord
    return Tokenizer(lower=True, stopwords="en", stemmer=stem)


def _jit(**options: Any) -> Any:
    """`numba.njit(cache=True, **options)`, or the plain function without numba (never called)."""
    return numba.njit(cache=True, **options) if numba is not None else (lambda fn: fn)


_prange = numba.prange if numba is not None else range


@_jit(nogil=True, inline="always")
def _worse(s1, r1, s2, r2):
    """Whether (score s1, row r1) ranks below (s2, r2): lower score, ties broken by higher row."""
    return s1 < s2 or (s1 == s2 and r1 > r2)


@_jit(nogil=True)
def _sift_down(hs, hr, n, pos):
    """Restore the min-heap (hs, hr)[:n] (worst at the root) below `pos`."""
    while 2 * pos + 1 < n:
        c = 2 * pos + 1
        if c + 1 < n and _worse(hs[c + 1], hr[c + 1], hs[c], hr[c]):
            c += 1
        if not _worse(hs[c], hr[c], hs[pos], hr[pos]):
            break
        hs[pos], hs[c], hr[pos], hr[c] = hs[c], hs[pos], hr[c], hr[pos]
        pos = c


@_jit(nogil=True)
def _push(hs, hr, n, s, r):
    """Add (s, r) to the min-heap (hs, hr)[:n]."""
    hs[n], hr[n], pos = s, r, n
    while pos > 0 and _worse(hs[pos], hr[pos], hs[(pos - 1) // 2], hr[(pos - 1) // 2]):
        p = (pos - 1) // 2
        hs[pos], hs[p], hr[pos], hr[p] = hs[p], hs[pos], hr[p], hr[pos]
        pos = p


@_jit(nogil=True)
def _heap_topk(scores, touched, n_touched, hs, hr):
    """Min-heap (hs, hr) of the len(hs) best touched documents, worst at hs[0]; returns its size."""
    k, n = len(hs), 0
    for i in range(n_touched):
        d = touched[i]
        if n < k:
            _push(hs, hr, n, scores[d], d)
            n += 1
        elif _worse(hs[0], hr[0], scores[d], d):
            hs[0], hr[0] = scores[d], d
            _sift_down(hs, hr, n, 0)
    return n


@_jit(nogil=True)
def _find(indices, start, end, d):
    """Position of document d in the sorted posting list indices[start:end], or -1."""
    lo, hi = start, end
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and indices[lo] == d else -1


@_jit(nogil=True)
def _add_to_seen(t, data, indptr, indices, scores, seen, touched, n_touched):
    """Add term t's scores to documents already seen only (binary search when that is cheaper)."""
    start, end = indptr[t], indptr[t + 1]
    if n_touched * (np.log2(end - start + 1.0) + 1.0) < end - start:
        for c in range(n_touched):
            p = _find(indices, start, end, touched[c])
            if p >= 0:
                scores[touched[c]] += data[p]
    else:
        for j in range(start, end):
            if seen[indices[j]]:
                scores[indices[j]] += data[j]


@_jit(nogil=True)
def _query_topk(
    tokens, data, indptr, indices, max_scores, prune, scores, seen, touched, out_s, out_r
):
    """The k = len(out_s) best rows of one query, best first, into out_s / out_r.

    Term at a time, highest max-score term first (MaxScore pruning): once the k-th best partial
    score beats the sum of the remaining terms' max scores, no unseen document can enter the top
    k, so the remaining (frequent) terms only update documents already seen. `scores` (float, N)
    and `seen` (uint8, N) must be all zero and are left all zero; `touched` (N) is scratch.
    """
    k, n_touched = len(out_s), 0
    order = np.argsort(-max_scores[tokens])
    i = 0
    while i < len(order):
        t = tokens[order[i]]
        for j in range(indptr[t], indptr[t + 1]):
            d = indices[j]
            if not seen[d]:
                seen[d] = 1
                touched[n_touched] = d
                n_touched += 1
            scores[d] += data[j]
        i += 1
        rest = 0.0
        for m in range(i, len(order)):
            rest += max_scores[tokens[order[m]]]
        bound = rest * 1.0001 + 1e-6  # margin for float rounding: pruning stays exact
        if (
            prune
            and i < len(order)
            and n_touched >= k
            and _heap_topk(scores, touched, n_touched, out_s, out_r) == k
            and out_s[0] > bound
        ):
            break
    for m in range(i, len(order)):
        _add_to_seen(tokens[order[m]], data, indptr, indices, scores, seen, touched, n_touched)
    n = _heap_topk(scores, touched, n_touched, out_s, out_r)
    d = 0
    while n < k:  # pad with untouched rows (score 0) in row order; k <= number of documents
        if not seen[d]:
            _push(out_s, out_r, n, 0.0, d)
            n += 1
        d += 1
    for m in range(n - 1, 0, -1):  # heap sort: worst to the back, leaving best-first order
        out_s[0], out_s[m], out_r[0], out_r[m] = out_s[m], out_s[0], out_r[m], out_r[0]
        _sift_down(out_s, out_r, m, 0)
    for m in range(n_touched):
        scores[touched[m]] = 0.0
        seen[touched[m]] = 0


@_jit(nogil=True)
def _topk_serial(q_flat, q_ptr, data, indptr, indices, max_scores, prune, scratch, out_s, out_r):
    """All Q queries (flat token ids + (Q + 1,) pointers) on this thread into (Q, k) outputs."""
    scores, seen, touched = scratch
    for i in range(len(q_ptr) - 1):
        q = q_flat[q_ptr[i] : q_ptr[i + 1]]
        _query_topk(
            q,
            data,
            indptr,
            indices,
            max_scores,
            prune,
            scores[0],
            seen[0],
            touched[0],
            out_s[i],
            out_r[i],
        )


@_jit(parallel=True)
def _topk_parallel(q_flat, q_ptr, data, indptr, indices, max_scores, prune, scratch, out_s, out_r):
    """`_topk_serial` with queries spread over threads; thread t uses row t of the scratch buffers."""
    scores, seen, touched = scratch
    for i in _prange(len(q_ptr) - 1):
        t = numba.get_thread_id()
        q = q_flat[q_ptr[i] : q_ptr[i + 1]]
        _query_topk(
            q,
            data,
            indptr,
            indices,
            max_scores,
            prune,
            scores[t],
            seen[t],
            touched[t],
            out_s[i],
            out_r[i],
        )


@_jit(nogil=True)
def _posting_stats(data, indptr, indices):
    """((V,) max score of each term's postings, whether every posting list is sorted by row)."""
    max_scores = np.zeros(len(indptr) - 1, dtype=np.float32)
    is_sorted = True
    for t in range(len(indptr) - 1):
        for j in range(indptr[t], indptr[t + 1]):
            max_scores[t] = max(max_scores[t], data[j])
            if j > indptr[t] and indices[j] <= indices[j - 1]:
                is_sorted = False
    return max_scores, is_sorted


class Postings:
    """bm25s' score matrix as CSC arrays, with the per-term bounds the numba kernel prunes with.

    Holds one set of (N,) scratch buffers per numba thread, allocated on first use and left
    all-zero by every query; a lock makes concurrent `topk` calls take turns.
    """

    CHUNK = 8
    """Queries a thread takes at a time: threads that get more CPU take more chunks."""

    def __init__(self, model: Any):
        sc = model.scores
        self.data = np.asarray(sc["data"])
        self.indptr = np.asarray(sc["indptr"])
        self.indices = np.asarray(sc["indices"])
        self.num_docs = int(sc["num_docs"])
        self.max_scores, self.prune = _posting_stats(self.data, self.indptr, self.indices)
        """(V,) max score per term; pruning needs posting lists sorted by row (bm25s' are)."""
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, N) scores, seen flags and touched rows for T = numba's thread count (zeroed lazily)."""
        if self._scratch is None:
            shape = (numba.config.NUMBA_NUM_THREADS, self.num_docs)
            self._scratch = (
                np.zeros(shape, np.float32),
                np.zeros(shape, np.uint8),
                np.zeros(shape, np.int32),
            )
        return self._scratch

    def topk(
        self, query_ids: list[list[int]], k: int, n_threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and rows of tokenised queries, best first; k <= number of documents."""
        n_q = len(query_ids)
        out_s, out_r = np.zeros((n_q, k), np.float32), np.zeros((n_q, k), np.int64)
        if k < 1 or not n_q:
            return out_s, out_r
        q_ptr = np.cumsum([0] + [len(q) for q in query_ids], dtype=np.int64)
        q_flat = np.fromiter((t for q in query_ids for t in q), np.int64, count=int(q_ptr[-1]))
        if len(q_flat) and not 0 <= q_flat.min() <= q_flat.max() < len(self.indptr) - 1:
            raise ValueError(
                "query token ids outside the index vocabulary (tokenizer and index differ)"
            )
        threads = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS, -(-n_q // self.CHUNK)))
        with self._lock:
            args = (
                self.data,
                self.indptr,
                self.indices,
                self.max_scores,
                self.prune,
                self._buffers(),
                out_s,
                out_r,
            )
            if threads == 1:  # no thread launch for small batches
                _topk_serial(q_flat, q_ptr, *args)
                return out_s, out_r
            previous, torch_threads = numba.get_num_threads(), _torch_threads()
            numba.set_num_threads(threads)
            try:
                with numba.parallel_chunksize(self.CHUNK):
                    _topk_parallel(q_flat, q_ptr, *args)
            finally:
                numba.set_num_threads(previous)
                _restore_torch_threads(torch_threads)
        return out_s, out_r


def _torch_threads() -> int | None:
    """torch's intra-op thread count when torch is loaded (never imports it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _restore_torch_threads(threads: int | None) -> None:
    """Numba's OpenMP layer sets the process-wide OpenMP thread count, which torch then follows:
    a policy pinned to 1 thread would silently run on every core after the first parallel search
    (several times slower on a busy machine). Put torch's count back."""
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class BM25Retriever:
    """A loaded BM25 index over a `CorpusStore`."""

    def __init__(self, model: Any, tokenizer: Any, store: CorpusStore, n_threads: int = 0):
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.n_threads = n_threads or (os.cpu_count() or 1)
        # our kernel needs numba, and BM25 variants that score untouched documents need bm25s'
        use_kernel = numba is not None and getattr(model, "nonoccurrence_array", None) is None
        self.postings = Postings(model) if use_kernel else None

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Score all queries in one batched call; returns min(k, corpus size) hits per query."""
        if not queries:
            return []
        k = min(k, len(self.store))
        if k < 1:
            return [[] for _ in queries]
        ids = self.tokenizer.tokenize(
            list(queries), update_vocab=False, return_as="ids", show_progress=False
        )
        if self.postings is not None:
            scores, rows = self.postings.topk(ids, k, self.n_threads)  # (Q, k) each
        else:
            rows, scores = self.model.retrieve(
                ids,
                k=k,
                show_progress=False,
                n_threads=self.n_threads,
                backend_selection=_backend(),
            )
            rows, scores = np.asarray(rows), np.asarray(scores)
        rows, scores = rows.tolist(), scores.tolist()
        docs = {r: self.store[r] for r in {r for row in rows for r in row}}  # read each doc once
        return [
            [Hit(docs[r], s) for r, s in zip(row, srow, strict=True)]
            for row, srow in zip(rows, scores, strict=True)
        ]


@register_kind("bm25")
class BM25Kind:
    """Build and load BM25 indexes."""

    def build(
        self, docs: Iterable[Doc], out_dir: Path, *, stemmer: str | None = "english", **_: Any
    ) -> dict[str, Any]:
        bm25s = _bm25s()

        tokenizer = _tokenizer(stemmer)
        ids = list(tokenizer.streaming_tokenize((d.contents for d in docs), update_vocab=True))
        model = bm25s.BM25(backend=_backend())
        model.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        model.save(str(out_dir), show_progress=False)
        tokenizer.save_vocab(str(out_dir))
        (out_dir / "bm25.json").write_text(json.dumps({"stemmer": stemmer}))
        return {"bm25": {"stemmer": stemmer, "k1": model.k1, "b": model.b, "method": model.method}}

    def load(
        self, index_dir: Path, manifest: dict[str, Any], store: CorpusStore, **options: Any
    ) -> BM25Retriever:
        bm25s = _bm25s()

        tokenizer = _tokenizer(manifest["bm25"]["stemmer"])
        tokenizer.load_vocab(str(index_dir))
        model = bm25s.BM25.load(str(index_dir), mmap=bool(options.get("mmap", False)))
        if _backend() == "numba":
            model.backend = "numba"
        return BM25Retriever(model, tokenizer, store, n_threads=int(options.get("n_threads", 0)))
