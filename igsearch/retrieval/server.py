"""A retrieval server speaking Search-R1's `POST /retrieve` contract, and a thread to run it in.

`POST /retrieve` takes `{"queries": [str], "topk": int | null, "return_scores": bool}` and answers
`{"result": [[{"document": {"id", "contents", "title", "text"}, "score": float}, ...], ...]}`;
with `return_scores: false` (the default, as in Search-R1) each query's list holds the document
objects alone. Search-R1's trainer and verl's SearchTool work against it unchanged.
`GET /health` reports the index kind, its size and the server's limits.

Where it departs from Search-R1's `retrieval_server.py`, and why:
- Bad input gets a 4xx `{"error": "..."}` naming the problem and the fix (plus FastAPI's
  `detail` list for validation errors) instead of FastAPI's bare `{"detail": [...]}`; a failing
  retriever gets a 500 `{"error": ...}` and the server keeps serving.
- `topk` <= 0 or > `max_topk` is rejected (Search-R1 silently treats 0 as its default), and a
  request holds at most `max_queries` queries.
- An empty query list is answered `{"result": []}` as Search-R1 does: its trainer sends one
  whenever no rollout in a batch searched, so rejecting it would break training.
- Requests that arrive while a search runs are coalesced into one batched `retriever.search` per
  distinct `topk` (dynamic micro-batching); searches run one at a time off the event loop, since
  bm25s and faiss are not guaranteed thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from igsearch.errors import IGSearchError
from igsearch.retrieval.base import Hit, Retriever

logger = logging.getLogger(__name__)

EXAMPLE_REQUEST = '{"queries": ["who wrote Hamlet?"], "topk": 3, "return_scores": true}'


class RetrieveRequest(BaseModel):
    """The body of `POST /retrieve` (Search-R1's `QueryRequest`); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    queries: list[StrictStr]
    """The queries, answered in order."""
    topk: int | None = None
    """Passages per query; missing or null means the server's default."""
    return_scores: bool = False
    """Wrap each document as `{"document": ..., "score": ...}` (Search-R1's default is false)."""


class ApiError(Exception):
    """An error answered as `{"error": message}` with HTTP `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _settle(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Resolve `fut` unless its request was already cancelled (client gone)."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class MicroBatcher:
    """Coalesces requests that arrive while a search runs into one batched search per `topk`.

    Runs on the server's event loop; each search runs in the threadpool under a lock, so the
    retriever sees one call at a time. If a coalesced search fails, its requests are retried one
    by one so that a single bad request fails alone.
    """

    def __init__(self, retriever: Retriever):
        self.retriever = retriever
        self.lock = threading.Lock()
        self._pending: list[tuple[list[str], int, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None

    @property
    def pending_queries(self) -> int:
        """Queries waiting for the next search (for tests and monitoring)."""
        return sum(len(queries) for queries, _, _ in self._pending)

    async def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Answer `queries` with `k` hits each, sharing a batched search with concurrent requests."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((queries, k, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            by_k: dict[int, list[tuple[list[str], int, asyncio.Future]]] = {}
            for item in batch:
                by_k.setdefault(item[1], []).append(item)
            for k, group in by_k.items():
                await self._run_group(group, k)

    async def _run_group(self, group: list[tuple[list[str], int, asyncio.Future]], k: int) -> None:
        flat = [q for queries, _, _ in group for q in queries]
        try:
            hits = await run_in_threadpool(self._search, flat, k)
        except Exception as e:
            if len(group) == 1:
                _settle(group[0][2], exc=e)
            else:
                for item in group:
                    await self._run_group([item], k)
            return
        start = 0
        for queries, _, fut in group:
            _settle(fut, hits[start : start + len(queries)])
            start += len(queries)

    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        with self.lock:
            hits = self.retriever.search(queries, k)
        if len(hits) != len(queries):
            raise RuntimeError(
                f"the retriever answered {len(hits)} hit lists for {len(queries)} queries"
            )
        return hits


def render_result(hits: list[list[Hit]], return_scores: bool) -> bytes:
    """The JSON body `{"result": ...}` of a `/retrieve` answer."""
    if return_scores:
        result = [
            [{"document": h.doc.to_json(), "score": float(h.score)} for h in row] for row in hits
        ]
    else:
        result = [[h.doc.to_json() for h in row] for row in hits]
    return json.dumps({"result": result}, ensure_ascii=False).encode()


def _check_request(n_queries: int, k: int, max_topk: int, max_queries: int) -> None:
    """Reject a `topk` or a batch size outside the server's limits (422)."""
    if not 1 <= k <= max_topk:
        raise ApiError(
            422, f"topk must be between 1 and {max_topk}, got {k}; send e.g. {EXAMPLE_REQUEST}"
        )
    if n_queries > max_queries:
        raise ApiError(
            422,
            f"{n_queries} queries in one request but this server takes at most {max_queries}; "
            "split the batch or restart the server with a larger --max-queries",
        )


def create_app(
    retriever: Retriever,
    *,
    default_topk: int = 3,
    max_topk: int = 100,
    max_queries: int = 1024,
    info: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving `retriever` over Search-R1's `/retrieve` contract, plus `/health`.

    `info` is merged into `/health`'s answer (kind, doc_count, index path, ...).
    The app's `state.batcher` is its `MicroBatcher`.
    """
    if not 1 <= default_topk <= max_topk:
        raise IGSearchError(
            f"default topk {default_topk} must be between 1 and max topk {max_topk}"
        )
    if max_queries < 1:
        raise IGSearchError(f"max queries must be at least 1, got {max_queries}")
    health = {
        "status": "ok",
        "doc_count": len(retriever) if hasattr(retriever, "__len__") else None,  # type: ignore[arg-type]
        "kind": getattr(retriever, "kind", type(retriever).__name__),
        "default_topk": default_topk,
        "max_topk": max_topk,
        "max_queries": max_queries,
        **(info or {}),
    }
    app = FastAPI(title="igsearch retrieval server", description=__doc__)
    app.state.batcher = batcher = MicroBatcher(retriever)
    _install_error_handlers(app)

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        """Liveness, index kind and size, and the server's limits."""
        return health

    @app.post("/retrieve")
    async def retrieve(req: RetrieveRequest) -> Response:
        """Search-R1's contract: `k` passages for each query, best first."""
        k = default_topk if req.topk is None else req.topk
        _check_request(len(req.queries), k, max_topk, max_queries)
        if not req.queries:
            return Response(b'{"result": []}', media_type="application/json")
        try:
            hits = await batcher.search(list(req.queries), k)
        except Exception as e:
            logger.exception("retrieval failed for a request of %d queries", len(req.queries))
            raise ApiError(500, f"the retriever failed: {type(e).__name__}: {e}") from e
        body = await run_in_threadpool(render_result, hits, req.return_scores)
        return Response(body, media_type="application/json")

    return app


def _validation_message(request: Request, errors: list[dict[str, Any]]) -> tuple[int, str]:
    """(status, readable message) for a request body that failed validation."""
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(
            e.get("ctx", {}).get("error", "") for e in errors if e.get("type") == "json_invalid"
        )
        return 400, f"malformed JSON body ({reason}); send e.g. {EXAMPLE_REQUEST}"
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        return 422, (
            f"the body was not read as JSON (Content-Type {content_type or 'missing'!r}); "
            f"send it with Content-Type: application/json, e.g. {EXAMPLE_REQUEST}"
        )
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return 422, f"invalid request ({'; '.join(parts)}); send e.g. {EXAMPLE_REQUEST}"


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error as `{"error": message}` (validation errors keep FastAPI's `detail`)."""

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status, message = _validation_message(request, errors)
        return JSONResponse(
            {"error": message, "detail": jsonable_encoder(errors)}, status_code=status
        )

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}; this server answers POST /retrieve and GET /health"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


class ServerThread:
    """Runs an ASGI app with uvicorn in a background thread; a context manager.

    `ServerThread(app, port=0)` binds a free loopback port, waits until `/health` answers and
    exposes `.url` ("http://127.0.0.1:PORT"); leaving the block shuts the server down.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 15.0,
        log_level: str = "warning",
    ):
        self.app, self.host, self.port = app, host, port
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> ServerThread:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it every answer stalls ~40 ms on Nagle + delayed ACK.
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"uvicorn:{self.port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll until the server answers `GET /health` (any HTTP answer counts)."""
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    raise RuntimeError(
                        f"the server thread for {self.url} exited during startup (see its log)"
                    )
                if self._server.started:
                    try:
                        probe.get(f"{self.url}/health")
                        return
                    except httpx.TransportError:
                        pass
                time.sleep(0.01)
        raise TimeoutError(
            f"the server at {self.url} did not answer /health within {self.startup_timeout}s"
        )

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None


def serve(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    default_topk: int = 3,
    max_topk: int = 100,
    max_queries: int = 1024,
    log_level: str = "info",
) -> None:
    """Load the index folder `index_dir` and serve it over HTTP until interrupted (blocking)."""
    from igsearch.retrieval.index import load_index, read_manifest

    manifest = read_manifest(index_dir)
    kind, n_docs = manifest["kind"], manifest["doc_count"]
    logger.info("loading the %s index %s (%d passages)", kind, index_dir, n_docs)
    retriever = load_index(index_dir)
    info = {
        "kind": kind,
        "doc_count": n_docs,
        "index": str(Path(index_dir).resolve()),
        "corpus": manifest["corpus"]["path"],
    }
    app = create_app(
        retriever, default_topk=default_topk, max_topk=max_topk, max_queries=max_queries, info=info
    )
    # Pay one-off costs (bm25s compiles its numba kernels on first use, ~15-30 s on 2 cores)
    # before listening, so that the first client does not time out.
    logger.info("warming up the retriever with one search")
    started = time.perf_counter()
    retriever.search(["warm up"], 1)
    logger.info("warmed up in %.1fs", time.perf_counter() - started)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: anyone who can reach this port can query the index", host)
    url_host = f"[{host}]" if ":" in host else host
    logger.info("serving %s at http://%s:%d/retrieve", index_dir, url_host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
