"""Corpus jsonl: one passage a line, `{"id": ..., "contents": "Title\\ntext"}` (wiki-18 layout).

Reading streams the file; an index keeps the byte offset of every line so that a passage is read
back from the corpus file on demand (`CorpusStore`) instead of holding the corpus in memory.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from igsearch.data.jsonl import write_jsonl
from igsearch.errors import FormatError
from igsearch.retrieval.base import Doc

_FINGERPRINT_CHUNK = 1 << 20


def parse_corpus_line(line: bytes | str, path: Path | str, lineno: int) -> Doc:
    """Parse one corpus line into a `Doc`, or raise `FormatError` naming file, line and problem."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(path, lineno, f"invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise FormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    if "id" not in obj:
        raise FormatError(path, lineno, 'missing "id"')
    if "contents" not in obj:
        hint = ' (found "title"/"text": join them as "Title\\ntext")' if "text" in obj else ""
        raise FormatError(path, lineno, f'missing "contents"{hint}')
    doc_id, contents = obj["id"], obj["contents"]
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise FormatError(
            path, lineno, f'"id" must be a string or integer, got {type(doc_id).__name__}'
        )
    if not isinstance(contents, str):
        raise FormatError(
            path, lineno, f'"contents" must be a string, got {type(contents).__name__}'
        )
    return Doc(id=str(doc_id), contents=contents)


def scan_corpus(path: str | Path) -> Iterator[tuple[int, Doc]]:
    """Stream (byte offset of the line, Doc) for every non-blank line, in file order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f'{path}: corpus file not found; give a jsonl file with one {{"id", "contents"}} '
            "object a line"
        )
    with path.open("rb") as f:
        offset = 0
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield offset, parse_corpus_line(line, path, lineno)
            offset += len(line)


def iter_corpus(path: str | Path) -> Iterator[Doc]:
    """Stream the passages of a corpus jsonl file."""
    for _, doc in scan_corpus(path):
        yield doc


def write_corpus(path: str | Path, docs: Iterable[Doc]) -> int:
    """Write passages as corpus jsonl; returns the number written."""
    return write_jsonl(path, ({"id": d.id, "contents": d.contents} for d in docs))


def file_fingerprint(path: str | Path) -> str:
    """A cheap content fingerprint: sha256 over the size and the first and last MiB.

    Used to check that an index still matches its corpus without re-reading a 14 GB file.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_FINGERPRINT_CHUNK))
        if size > _FINGERPRINT_CHUNK:
            f.seek(max(size - _FINGERPRINT_CHUNK, _FINGERPRINT_CHUNK))
            h.update(f.read())
    return h.hexdigest()


class CorpusStore(Sequence[Doc]):
    """Random access to corpus passages by row number, through line offsets and a memory map."""

    def __init__(self, path: str | Path, offsets: np.ndarray):
        self.path = Path(path)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._file = self.path.open("rb")
        self._map = (
            mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            if self.path.stat().st_size
            else None
        )

    @classmethod
    def build(cls, path: str | Path) -> CorpusStore:
        """Scan a corpus once and return a store over it."""
        offsets = np.fromiter((off for off, _ in scan_corpus(path)), dtype=np.int64)
        return cls(path, offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._map is None:
            raise IndexError(i)
        start = int(self.offsets[i])
        end = self._map.find(b"\n", start)
        line = self._map[start : end if end >= 0 else len(self._map)]
        return parse_corpus_line(line, self.path, -1)

    def get_many(self, rows: Iterable[int]) -> list[Doc]:
        return [self[int(r)] for r in rows]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()
