"""The retrieval server's limits and the parsing of a `POST /retrieve` body, hostile input included.

`parse_retrieve_body` turns raw request bytes into a `RetrieveRequest` or raises `ApiError` with a
4xx status and one message naming the field and the fix. It never lets a value through that could
make a handler fail later: JSON's non-standard constants (`NaN`, `Infinity`) and numbers that
overflow to infinity (`1e400`) are refused, `topk` must be a whole number, queries must be strings
of valid Unicode (no lone surrogates) within `max_query_chars`, and a request holds at most
`max_queries` of them. Oversized bodies are refused from their Content-Length before being read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

EXAMPLE_REQUEST = '{"queries": ["who wrote Hamlet?"], "topk": 3, "return_scores": true}'


class ApiError(Exception):
    """An error answered as `{"error": message}` with HTTP `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the retrieval server (`igsearch serve` flags of the same names)."""

    default_topk: int = 3
    """Passages per query when a request gives no `topk`."""
    max_topk: int = 100
    """Largest `topk` a request may ask for."""
    max_queries: int = 1024
    """Most queries one request may hold."""
    max_query_chars: int = 4096
    """Longest query, in characters."""
    max_batch_queries: int = 256
    """Most queries one merged search holds; larger requests are searched in slices, taking turns."""

    def __post_init__(self) -> None:
        for name in ("max_topk", "max_queries", "max_query_chars", "max_batch_queries"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{name} must be at least 1, got {getattr(self, name)}; fix {flag}"
                )
        if not 1 <= self.default_topk <= self.max_topk:
            raise ValueError(
                f"default topk {self.default_topk} must be between 1 and max topk "
                f"{self.max_topk}; fix --topk or --max-topk"
            )

    @property
    def max_body_bytes(self) -> int:
        """Largest body a request within the limits can need (12 bytes per escaped character)."""
        return self.max_queries * (12 * self.max_query_chars + 8) + 4096


@dataclass(frozen=True)
class RetrieveRequest:
    """A checked `POST /retrieve` body (Search-R1's `QueryRequest`); unknown fields are dropped."""

    queries: list[str]
    """The queries, answered in order."""
    topk: int
    """Passages per query (the server's default filled in)."""
    return_scores: bool = False
    """Wrap each document as `{"document": ..., "score": ...}` (Search-R1's default is false)."""


def _invalid(field: str, problem: str, status: int = 422) -> ApiError:
    return ApiError(status, f"{field}: {problem}; send e.g. {EXAMPLE_REQUEST}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} overflows (numbers must be finite)")
    return value


def check_headers(
    content_type: str | None, content_length: str | None, limits: ServerLimits
) -> None:
    """Refuse a body that is not declared JSON (415) or is larger than any valid request (413)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            415,
            f"Content-Type {content_type or 'missing'!r}: the body must be JSON; send it with "
            f"Content-Type: application/json, e.g. {EXAMPLE_REQUEST}",
        )
    if content_length is not None and content_length.isdigit():
        if int(content_length) > limits.max_body_bytes:
            raise body_too_large(int(content_length), limits)


def body_too_large(size: int, limits: ServerLimits) -> ApiError:
    """413 for a body of `size` bytes (or more) over `limits.max_body_bytes`."""
    return ApiError(
        413,
        f"body: {size} bytes is more than a request within this server's limits can need "
        f"({limits.max_body_bytes}); send fewer or shorter queries (--max-queries "
        f"{limits.max_queries}, --max-query-chars {limits.max_query_chars})",
    )


def decode_json(body: bytes) -> Any:
    """The JSON value of `body` (strict UTF-8, finite numbers only), else a 400 ApiError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _invalid("body", f"not valid UTF-8 (byte {e.start})", 400) from None
    if not text.strip():
        raise _invalid("body", "empty; a JSON object is required", 400)
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as e:  # JSONDecodeError and the two hooks above
        raise _invalid("body", f"malformed JSON ({str(e)[:200]})", 400) from None
    except RecursionError:
        raise _invalid("body", "JSON nested too deeply", 400) from None


def _check_query(i: int, query: Any, limits: ServerLimits) -> str:
    if not isinstance(query, str):
        raise _invalid(f"queries.{i}", f"must be a string, got {type(query).__name__}")
    if len(query) > limits.max_query_chars:
        raise _invalid(
            f"queries.{i}",
            f"{len(query)} characters, over this server's cap of {limits.max_query_chars}; "
            "shorten the query or restart the server with a larger --max-query-chars",
            413,
        )
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _invalid(
            f"queries.{i}", f"holds invalid Unicode (a lone surrogate at character {e.start})"
        ) from None
    return query


def _check_topk(value: Any, limits: ServerLimits) -> int:
    if value is None:
        return limits.default_topk
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("topk", f"must be a whole number or null, got {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise _invalid("topk", f"must be a whole number, got {value}")
        value = int(value)
    if not 1 <= value <= limits.max_topk:
        raise _invalid("topk", f"must be between 1 and {limits.max_topk}, got {value}")
    return value


def parse_retrieve_body(body: bytes, limits: ServerLimits) -> RetrieveRequest:
    """Check a raw `POST /retrieve` body against `limits` (see the module docstring)."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise _invalid("body", f"must be a JSON object, got a {type(data).__name__}")
    if "queries" not in data:
        raise _invalid("queries", "field required")
    queries = data["queries"]
    if not isinstance(queries, list):
        raise _invalid("queries", f"must be a list of strings, got {type(queries).__name__}")
    if len(queries) > limits.max_queries:
        raise _invalid(
            "queries",
            f"{len(queries)} queries in one request but this server takes at most "
            f"{limits.max_queries}; split the batch or restart the server with a larger "
            "--max-queries",
            413,
        )
    checked = [_check_query(i, q, limits) for i, q in enumerate(queries)]
    topk = _check_topk(data.get("topk"), limits)
    return_scores = data.get("return_scores", False)
    if return_scores is None:
        return_scores = False
    if not isinstance(return_scores, bool):
        raise _invalid(
            "return_scores", f"must be true or false, got {type(return_scores).__name__}"
        )
    return RetrieveRequest(checked, topk, return_scores)
