"""Exceptions shared across igsearch. Every message names the input and says how to fix it."""


class IGSearchError(Exception):
    """Base class of igsearch's own errors (bad input, mismatched files, unreachable services)."""


class FormatError(IGSearchError, ValueError):
    """A data file (QA jsonl, corpus jsonl, parquet) has a record that does not fit its format."""

    def __init__(self, path: object, line: int | None, problem: str):
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


class IndexMismatchError(IGSearchError):
    """An index folder does not match what the caller expects (kind, corpus, version)."""


class RetrieverError(IGSearchError):
    """A retriever could not answer (server down, timed out, returned a malformed response)."""
