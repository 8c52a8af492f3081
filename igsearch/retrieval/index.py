"""Index folders: build, manifest, and checked loading for every retriever kind.

An index folder holds `manifest.json` (kind, corpus path, hash and fingerprint, doc count,
encoder, format version), `offsets.npy` (byte offset of every corpus line, so passages are read
from the corpus file on demand) and the kind's own files. Kinds register in `INDEX_KINDS`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from igsearch import __version__
from igsearch.data.corpus import CorpusStore, file_fingerprint, scan_corpus
from igsearch.errors import IGSearchError, IndexMismatchError
from igsearch.retrieval.base import Doc, Retriever

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexKind(Protocol):
    """How one kind of index is built from streamed passages and loaded back."""

    def build(self, docs: Iterable[Doc], out_dir: Path, **options: Any) -> dict[str, Any]:
        """Index `docs` (streamed once) into `out_dir`; return extra manifest fields."""
        ...

    def load(
        self, index_dir: Path, manifest: dict[str, Any], store: CorpusStore, **options: Any
    ) -> Retriever:
        """Load a built index as a `Retriever` over `store`."""
        ...


INDEX_KINDS: dict[str, Callable[[], IndexKind]] = {}


def register_kind(name: str) -> Callable[[type], type]:
    """Class decorator registering an `IndexKind` under `name`."""

    def deco(cls: type) -> type:
        INDEX_KINDS[name] = cls
        return cls

    return deco


def get_kind(name: str) -> IndexKind:
    """The registered index kind `name`; unknown names fail listing the valid ones."""
    _import_builtin_kinds()
    if name not in INDEX_KINDS:
        raise IGSearchError(
            f"unknown index kind {name!r}; choose one of: {', '.join(sorted(INDEX_KINDS))}"
        )
    return INDEX_KINDS[name]()


def _import_builtin_kinds() -> None:
    import igsearch.retrieval.bm25  # noqa: F401

    try:
        import igsearch.retrieval.dense  # noqa: F401
    except (
        ImportError
    ):  # the `dense` extra is optional; get_kind("dense") then says how to install it
        INDEX_KINDS.setdefault("dense", _missing_dense)


def _missing_dense() -> IndexKind:
    raise IGSearchError("dense retrieval needs the `dense` extra: pip install 'igsearch[dense]'")


@dataclass
class _Tap:
    """Records line offsets and the full-file hash while passages stream to a builder."""

    path: Path
    offsets: list[int]

    def docs(self) -> Iterator[Doc]:
        for off, doc in scan_corpus(self.path):
            self.offsets.append(off)
            yield doc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _empty_corpus(corpus: Path) -> str:
    return (
        f'{corpus}: the corpus has no passages; give a jsonl file with one {{"id", "contents"}} '
        'object a line, e.g. {"id": "1", "contents": "Title\\ntext"}'
    )


def build_index(
    corpus: str | Path, kind: str, out_dir: str | Path, **options: Any
) -> dict[str, Any]:
    """Build an index of `kind` over a corpus jsonl into `out_dir`; returns the manifest."""
    corpus, out_dir = Path(corpus).resolve(), Path(out_dir)
    builder = get_kind(kind)
    if next(scan_corpus(corpus), None) is None:  # checked before anything in out_dir is touched
        raise IGSearchError(_empty_corpus(corpus))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # an interrupted build must not look finished
    tap = _Tap(corpus, [])
    started = time.time()
    extra = builder.build(tap.docs(), out_dir, **options)
    if not tap.offsets:
        raise IGSearchError(_empty_corpus(corpus))
    np.save(out_dir / "offsets.npy", np.asarray(tap.offsets, dtype=np.int64))
    manifest = {
        "format": "igsearch-index",
        "version": FORMAT_VERSION,
        "kind": kind,
        "doc_count": len(tap.offsets),
        "corpus": {
            "path": str(corpus),
            "sha256": _sha256(corpus),
            "fingerprint": file_fingerprint(corpus),
        },
        "igsearch_version": __version__,
        "build_seconds": round(time.time() - started, 3),
        **extra,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """Read and validate an index folder's manifest."""
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if not path.exists():
        raise IndexMismatchError(
            f"{index_dir}: no {MANIFEST} here (not an index folder, or its build did not finish); "
            "build one with `igsearch index --corpus FILE --kind bm25 --out DIR`"
        )
    rebuild = "rebuild the index with `igsearch index --corpus FILE --kind bm25 --out DIR`"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexMismatchError(f"{path}: not valid JSON ({e}); {rebuild}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "igsearch-index":
        raise IndexMismatchError(f"{path}: not an igsearch index manifest; {rebuild}")
    if manifest.get("version") != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path}: index format version {manifest.get('version')} but this igsearch reads version "
            f"{FORMAT_VERSION}; rebuild the index with `igsearch index`"
        )
    corpus = manifest.get("corpus")
    lacking = [k for k in ("kind", "doc_count") if k not in manifest]
    if not isinstance(corpus, dict) or not {"path", "fingerprint"} <= corpus.keys():
        lacking.append("corpus.path/fingerprint")
    if lacking:
        raise IndexMismatchError(f"{path}: lacks {', '.join(lacking)}; {rebuild}")
    return manifest


def load_index(
    index_dir: str | Path,
    *,
    kind: str | None = None,
    corpus: str | Path | None = None,
    **options: Any,
) -> Retriever:
    """Load an index folder as a `Retriever`, checking its manifest.

    `kind` (if given) must match the manifest; `corpus` overrides the recorded corpus path (for a
    corpus that moved) and must have the same content fingerprint.
    """
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    if kind is not None and manifest["kind"] != kind:
        raise IndexMismatchError(f"{index_dir}: this is a {manifest['kind']!r} index, not {kind!r}")
    corpus_path = Path(corpus) if corpus is not None else Path(manifest["corpus"]["path"])
    if not corpus_path.exists():
        raise IndexMismatchError(
            f"{index_dir}: its corpus {corpus_path} is missing; pass the corpus' new location "
            "(--corpus) or rebuild the index"
        )
    if file_fingerprint(corpus_path) != manifest["corpus"]["fingerprint"]:
        raise IndexMismatchError(
            f"{index_dir}: the corpus {corpus_path} changed since it was indexed (fingerprint differs); "
            f"rebuild with `igsearch index --corpus {corpus_path} --kind {manifest['kind']} --out {index_dir}`"
        )
    rebuild = (
        f"rebuild it with `igsearch index --corpus {corpus_path} --kind {manifest['kind']} "
        f"--out {index_dir}`"
    )
    try:
        offsets = np.load(index_dir / "offsets.npy")
        if len(offsets) != manifest["doc_count"]:
            raise IndexMismatchError(
                f"{index_dir}: offsets.npy has {len(offsets)} rows, manifest says "
                f"{manifest['doc_count']}; {rebuild}"
            )
        store = CorpusStore(corpus_path, offsets)
        return get_kind(manifest["kind"]).load(index_dir, manifest, store, **options)
    except FileNotFoundError as e:
        name = Path(e.filename).name if e.filename else str(e)
        raise IndexMismatchError(
            f"{index_dir}: {name} is missing, so the index folder is incomplete; {rebuild}"
        ) from None
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        raise IndexMismatchError(
            f"{index_dir}: an index file is unreadable ({type(e).__name__}: {str(e)[:200]}); "
            f"{rebuild}"
        ) from None
