"""`HttpRetriever`: the `Retriever` protocol over a Search-R1 `/retrieve` server.

Works against igsearch's own server (`igsearch serve`) and Search-R1's `retrieval_server.py`:
one POST per `search` call, both answer shapes (with and without scores) understood. Connection
errors, timeouts and 5xx answers are retried a bounded number of times with exponential backoff;
4xx answers are not retried. Every failure is a `RetrieverError` naming the URL and the problem.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from igsearch.errors import RetrieverError
from igsearch.retrieval.base import Doc, Hit

logger = logging.getLogger(__name__)


def retrieve_url(url: str) -> str:
    """The `/retrieve` endpoint of `url`, which may be the server's base URL or the endpoint."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise RetrieverError(
            f"{url!r} is not an http(s) URL; give e.g. http://127.0.0.1:8000/retrieve"
        )
    return url if url.endswith("/retrieve") else url + "/retrieve"


def _server_message(resp: httpx.Response) -> str:
    """The server's own error message: `error` or `detail` of a JSON body, else the raw text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(body, dict) and (body.get("error") or body.get("detail")):
        return str(body.get("error") or body.get("detail"))[:1000]
    return str(body)[:300]


def _parse_hit(item: Any, url: str, i: int) -> Hit:
    """One entry of a query's list: `{"document": {...}, "score": s}` or a bare document."""
    if isinstance(item, dict) and isinstance(item.get("document"), dict):
        doc, score = item["document"], item.get("score")
    elif isinstance(item, dict):
        doc, score = item, None
    else:
        raise RetrieverError(
            f"{url}: result[{i}] holds a {type(item).__name__}, expected a document object"
        )
    contents = doc.get("contents")
    if not isinstance(contents, str):
        if "title" not in doc and "text" not in doc:
            raise RetrieverError(
                f'{url}: result[{i}] has a document without "contents" (or "title"/"text"): {str(doc)[:200]}'
            )
        contents = f"{doc.get('title') or ''}\n{doc.get('text') or ''}"
    try:
        value = 0.0 if score is None else float(score)
    except (TypeError, ValueError):
        raise RetrieverError(f"{url}: result[{i}] has a non-numeric score {score!r}") from None
    return Hit(Doc(id=str(doc.get("id", "")), contents=contents), value)


def parse_result(body: Any, n_queries: int, k: int, url: str) -> list[list[Hit]]:
    """Parse a `/retrieve` answer for `n_queries` queries into hit lists (at most `k` hits each)."""
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, list):
        raise RetrieverError(
            f'{url}: the answer has no "result" list (got {str(body)[:200]}); is this a /retrieve server?'
        )
    if len(result) != n_queries:
        raise RetrieverError(
            f"{url}: the answer holds {len(result)} result lists for {n_queries} queries"
        )
    hits = []
    for i, items in enumerate(result):
        if not isinstance(items, list):
            raise RetrieverError(
                f"{url}: result[{i}] is a {type(items).__name__}, expected a list of documents"
            )
        hits.append([_parse_hit(item, url, i) for item in items[:k]])
    return hits


class HttpRetriever:
    """A `Retriever` backed by a `/retrieve` server, over one persistent HTTP connection pool.

    `retries` is the number of retries after the first attempt (so at most `retries + 1`
    attempts); retry `n` waits `backoff * 2 ** (n - 1)` seconds. Thread-safe.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        *,
        transport: httpx.BaseTransport | None = None,
    ):
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError(
                f"need retries >= 0, backoff >= 0, timeout > 0; got {retries}, {backoff}, {timeout}"
            )
        self.url = retrieve_url(url)
        self.base_url = self.url.removesuffix("/retrieve")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"HttpRetriever({self.url!r}, timeout={self.timeout}, retries={self.retries})"

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """One POST for the whole batch; `k` hits (at most) per query, best first."""
        queries = list(queries)
        if not queries:
            return []
        payload = {"queries": queries, "topk": k, "return_scores": True}
        resp = self._request("POST", self.url, payload)
        try:
            body = resp.json()
        except ValueError:
            raise RetrieverError(
                f"{self.url}: the answer is not JSON: {resp.text[:200]!r}"
            ) from None
        return parse_result(body, len(queries), k, self.url)

    def health(self) -> dict[str, Any]:
        """The server's `GET /health` answer (igsearch servers; Search-R1's has none)."""
        url = f"{self.base_url}/health"
        resp = self._request("GET", url, None)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RetrieverError(f"{url}: expected a JSON object, got {resp.text[:200]!r}")
        return body

    def _request(self, method: str, url: str, payload: dict[str, Any] | None) -> httpx.Response:
        """Send with bounded retries on connection errors, timeouts and 5xx; 4xx fails at once."""
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self._client.request(method, url, json=payload)
            except httpx.UnsupportedProtocol as e:
                raise RetrieverError(f"{url}: {e}") from e
            except httpx.TimeoutException as e:
                problem = f"timed out after {self.timeout}s ({type(e).__name__})"
            except httpx.TransportError as e:
                problem = f"connection failed ({type(e).__name__}: {e})"
            else:
                if resp.is_success:
                    return resp
                if resp.status_code < 500:
                    raise RetrieverError(f"{url}: HTTP {resp.status_code}: {_server_message(resp)}")
                problem = f"HTTP {resp.status_code}: {_server_message(resp)}"
            logger.warning(
                "%s %s: attempt %d/%d failed: %s", method, url, attempt + 1, attempts, problem
            )
        raise RetrieverError(
            f"{url}: {problem}; gave up after {attempts} attempts "
            "(is the server running? start one with `igsearch serve --index DIR`)"
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
