"""BM25 and dense indexes end to end: build, manifest checks, load, search, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_small_corpus
from typer.testing import CliRunner

from igsearch.cli import app
from igsearch.errors import IGSearchError, IndexMismatchError
from igsearch.retrieval.base import Retriever
from igsearch.retrieval.index import build_index, load_index, read_manifest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")
dense = pytest.importorskip("igsearch.retrieval.dense")

# (kind, build options); HNSW with a small graph so the 20-passage corpus exercises the real graph
KINDS = {
    "bm25": ("bm25", {}),
    "dense-flat": ("dense", {"faiss_type": "Flat", "show_progress": False}),
    "dense-hnsw": (
        "dense",
        {"faiss_type": "HNSW", "hnsw_m": 8, "ef_search": 16, "show_progress": False},
    ),
}


@pytest.fixture(scope="module", autouse=True)
def encoder():
    """The bundled MiniLM, loaded once for the module (`load_encoder` caches it per process)."""
    _, path = dense.resolve_encoder(None)
    return dense.load_encoder(path, "cpu")


@pytest.fixture(scope="module", params=list(KINDS))
def built(request, tmp_path_factory, encoder):
    """(retriever, questions, manifest, index dir, corpus path) for each index kind, built once."""
    tmp = tmp_path_factory.mktemp(request.param)
    corpus = tmp / "corpus.jsonl"
    questions = write_small_corpus(corpus)
    kind, options = KINDS[request.param]
    manifest = build_index(corpus, kind, tmp / "index", **options)
    return load_index(tmp / "index", kind=kind), questions, manifest, tmp / "index", corpus


def _ids(hits) -> list[str]:
    return [h.id for h in hits]


def test_answering_passage_ranks_first(built) -> None:
    retriever, questions, *_ = built
    assert isinstance(retriever, Retriever)
    results = retriever.search([q for q, _ in questions], 3)
    top1 = [hits[0].id for hits in results]
    assert top1 == [doc_id for _, doc_id in questions]
    for hits in results:
        assert len(hits) == 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_batched_equals_one_by_one(built) -> None:
    retriever, questions, *_ = built
    queries = [q for q, _ in questions[:8]] + ["unrelated words entirely", "volcano"]
    batched = retriever.search(queries, 5)
    single = [retriever.search([q], 5)[0] for q in queries]
    assert [_ids(h) for h in batched] == [_ids(h) for h in single]
    for b, s in zip(batched, single, strict=True):
        assert [h.score for h in b] == pytest.approx([h.score for h in s], rel=1e-4, abs=1e-5)


def test_k_is_clamped_to_corpus_size(built) -> None:
    retriever, questions, manifest, *_ = built
    (hits,) = retriever.search([questions[0][0]], 1000)
    assert len(hits) == manifest["doc_count"] == 20
    assert len(set(_ids(hits))) == 20
    assert retriever.search([], 3) == []


def test_save_load_round_trip(built) -> None:
    retriever, questions, manifest, out, corpus = built
    assert read_manifest(out) == manifest
    assert manifest["doc_count"] == 20 and manifest["corpus"]["path"] == str(corpus.resolve())
    reloaded = load_index(out)
    assert type(reloaded) is type(retriever)
    queries = [q for q, _ in questions]
    assert [_ids(h) for h in reloaded.search(queries, 4)] == [
        _ids(h) for h in retriever.search(queries, 4)
    ]
    hit = reloaded.search([questions[10][0]], 1)[0][0]
    assert (hit.id, hit.title) == ("p10", "Oswin Thale") and hit.text.startswith(
        "Oswin Thale is a novelist"
    )


def test_dense_manifest_records_encoder_and_faiss(small_corpus, tmp_path: Path) -> None:
    corpus, _ = small_corpus
    manifest = build_index(
        corpus, "dense", tmp_path / "d", faiss_type="hnsw", hnsw_m=8, show_progress=False
    )
    assert manifest["encoder"] == dense.BUNDLED_ENCODER
    assert manifest["dense"] == {
        "dim": 384,
        "query_prefix": "",
        "passage_prefix": "",
        "normalize": True,
        "metric": "inner_product",
        "faiss": {"type": "HNSW", "M": 8, "ef_search": 128, "ef_construction": 200},
    }
    assert dense.default_prefixes("intfloat/e5-base-v2") == ("query: ", "passage: ")
    assert dense.default_prefixes("all-MiniLM-L6-v2") == ("", "")


# ---------------------------------------------------------------- manifest and loading errors


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(IndexMismatchError, match="no manifest.json here.*igsearch index"):
        load_index(tmp_path)


def test_wrong_expected_kind(small_corpus, tmp_path: Path) -> None:
    build_index(small_corpus[0], "bm25", tmp_path / "i")
    with pytest.raises(IndexMismatchError, match="this is a 'bm25' index, not 'dense'"):
        load_index(tmp_path / "i", kind="dense")


def test_corpus_changed_after_indexing(small_corpus, tmp_path: Path) -> None:
    corpus, _ = small_corpus
    build_index(corpus, "bm25", tmp_path / "i")
    with corpus.open("a") as f:
        f.write(json.dumps({"id": "p20", "contents": "New\nA new passage."}) + "\n")
    with pytest.raises(
        IndexMismatchError, match="changed since it was indexed.*igsearch index --corpus"
    ):
        load_index(tmp_path / "i")


def test_corpus_moved(small_corpus, tmp_path: Path) -> None:
    corpus, questions = small_corpus
    build_index(corpus, "bm25", tmp_path / "i")
    moved = tmp_path / "elsewhere" / "corpus.jsonl"
    moved.parent.mkdir()
    shutil.move(corpus, moved)
    with pytest.raises(
        IndexMismatchError, match="corpus .* is missing; pass the corpus' new location"
    ):
        load_index(tmp_path / "i")
    retriever = load_index(tmp_path / "i", corpus=moved)
    assert retriever.search([questions[3][0]], 1)[0][0].id == questions[3][1]


def test_unknown_kind_lists_valid_kinds(small_corpus, tmp_path: Path) -> None:
    with pytest.raises(
        IGSearchError, match="unknown index kind 'splade'; choose one of: bm25, dense"
    ):
        build_index(small_corpus[0], "splade", tmp_path / "i")


def test_unknown_faiss_type_lists_valid_types(small_corpus, tmp_path: Path) -> None:
    with pytest.raises(IGSearchError, match="unknown faiss_type 'IVF'; choose one of: Flat, HNSW"):
        build_index(small_corpus[0], "dense", tmp_path / "i", faiss_type="IVF")


def _edit_manifest(index_dir: Path, **changes) -> None:
    path = index_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        target = manifest
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(manifest))


def test_dense_encoder_missing_or_different_dim(small_corpus, tmp_path: Path) -> None:
    out = tmp_path / "d"
    build_index(small_corpus[0], "dense", out, show_progress=False)
    _edit_manifest(out, dense__dim=768)
    with pytest.raises(IndexMismatchError, match="768-dim vectors but encoder .* makes 384-dim"):
        load_index(out)
    _edit_manifest(out, dense__dim=384, encoder=str(tmp_path / "no-such-model"))
    with pytest.raises(IGSearchError, match="cannot load the dense encoder .*no-such-model"):
        load_index(out)
    # a moved encoder is fixed by naming it at load time
    assert (
        load_index(out, encoder=dense.BUNDLED_ENCODER).search(["copper mine"], 1)[0][0].id == "p19"
    )


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_cli_index_and_search(small_corpus, tmp_path: Path, kind: str) -> None:
    corpus, _ = small_corpus
    runner = CliRunner()
    out = tmp_path / "idx"
    result = runner.invoke(
        app, ["index", "--corpus", str(corpus), "--kind", kind, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 20 passages" in result.output
    result = runner.invoke(
        app,
        [
            "search",
            "--index",
            str(out),
            "-k",
            "2",
            "Who wrote the mystery novel The Lantern Cipher?",
            "copper mine drills",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1. Oswin Thale (p10" in result.output and "1. Cobaltine Mine (p19" in result.output
    assert result.output.count("2. ") == 2


# ---------------------------------------------------------------- the BM25 kernel


@pytest.fixture(scope="module")
def zipf_bm25(tmp_path_factory):
    """(retriever, queries) over 1500 passages of Zipf-distributed words: long posting lists,
    many ties, repeated and unknown query words; exercises the kernel's pruning."""
    rng = np.random.default_rng(0)
    vocab = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in "xqjw"]  # 280 words
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    tmp = tmp_path_factory.mktemp("zipf")
    with (tmp / "corpus.jsonl").open("w") as f:
        for i in range(1500):
            words = rng.choice(vocab, size=rng.integers(3, 40), p=p)
            f.write(json.dumps({"id": f"z{i}", "contents": f"T{i}\n{' '.join(words)}"}) + "\n")
    build_index(tmp / "corpus.jsonl", "bm25", tmp / "index")
    queries = [" ".join(rng.choice(vocab, size=rng.integers(1, 9), p=p)) for _ in range(300)]
    queries += [" ".join(rng.choice(vocab[:5], size=3)), "unknownword", "", "the of and"]
    return load_index(tmp / "index"), queries


def _brute_force(retriever, queries: list[str]) -> np.ndarray:
    """(Q, N) exact BM25 scores from bm25s' score matrix, one query token at a time."""
    sc = retriever.model.scores
    ids = retriever.tokenizer.tokenize(
        queries, update_vocab=False, return_as="ids", show_progress=False
    )
    out = np.zeros((len(queries), sc["num_docs"]), np.float64)
    for row, toks in zip(out, ids, strict=True):
        for t in toks:
            lo, hi = sc["indptr"][t], sc["indptr"][t + 1]
            np.add.at(row, sc["indices"][lo:hi], sc["data"][lo:hi])
    return out


@pytest.mark.parametrize("k", [1, 3, 10, 200, 1500])
def test_bm25_kernel_is_exact(zipf_bm25, k: int) -> None:
    retriever, queries = zipf_bm25
    assert retriever.postings is not None and retriever.postings.prune
    exact = _brute_force(retriever, queries)
    ids = retriever.tokenizer.tokenize(
        queries, update_vocab=False, return_as="ids", show_progress=False
    )
    scores, rows = retriever.postings.topk(ids, k, 2)
    assert scores.shape == rows.shape == (len(queries), k)
    best = -np.sort(-exact, axis=1)[:, :k]
    np.testing.assert_allclose(scores, best, rtol=1e-5, atol=1e-5)  # the k best scores
    np.testing.assert_allclose(np.take_along_axis(exact, rows, 1), scores, rtol=1e-5, atol=1e-5)
    assert all(len(set(r)) == k for r in rows.tolist())  # distinct documents
    one_thread = retriever.postings.topk(ids, k, 1)
    one_by_one = [retriever.postings.topk([q], k, 2) for q in ids]
    assert (one_thread[1] == rows).all() and all(
        (r[1][0] == rows[i]).all() for i, r in enumerate(one_by_one)
    )


def test_bm25_fallback_without_kernel_agrees(zipf_bm25, monkeypatch) -> None:
    import igsearch.retrieval.bm25 as bm25

    retriever, queries = zipf_bm25
    fast = retriever.search(queries[:50], 5)
    # as without numba: bm25s' own retrieve with its numpy backend
    monkeypatch.setattr(retriever, "postings", None)
    monkeypatch.setattr(retriever.model, "backend", "numpy")
    monkeypatch.setattr(bm25, "_backend", lambda: "numpy")
    slow = retriever.search(queries[:50], 5)
    for f, s in zip(fast, slow, strict=True):
        assert [h.score for h in f] == pytest.approx([h.score for h in s], rel=1e-5, abs=1e-5)


def test_parallel_search_leaves_torch_threads_alone(zipf_bm25) -> None:
    torch = pytest.importorskip("torch")
    retriever, queries = zipf_bm25
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ids = retriever.tokenizer.tokenize(
            queries, update_vocab=False, return_as="ids", show_progress=False
        )
        retriever.postings.topk(ids, 3, 2)  # 300 queries on 2 numba threads
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
