"""A retrieval server speaking Search-R1's `POST /retrieve` contract, and a thread to run it in.

`POST /retrieve` takes `{"queries": [str], "topk": int | null, "return_scores": bool}` and answers
`{"result": [[{"document": {"id", "contents", "title", "text"}, "score": float}, ...], ...]}`;
with `return_scores: false` (the default, as in Search-R1) each query's list holds the document
objects alone. Search-R1's trainer and verl's SearchTool work against it unchanged.
`GET /health` reports the index kind, its size and the server's limits.

Where it departs from Search-R1's `retrieval_server.py`, and why:
- Every malformed request gets a 4xx `{"error": "..."}` naming the field and the fix (checked by
  igsearch.retrieval.request, see there for the full list: non-JSON bodies, JSON's `NaN` and
  `Infinity`, numbers overflowing to infinity, non-integer `topk`, wrong types, lone surrogates,
  queries over `max_query_chars`, more than `max_queries` queries, a Content-Type other than JSON,
  a wrong method or path); only a failing retriever gets a 500, and the server keeps serving.
- `topk` <= 0 or > `max_topk` is rejected (Search-R1 silently treats 0 as its default).
- An empty query list is answered `{"result": []}` as Search-R1 does: its trainer sends one
  whenever no rollout in a batch searched, so rejecting it would break training.
- Requests that arrive while a search runs are merged into batched searches of at most
  `max_batch_queries` queries (igsearch.retrieval.batcher), so one large request cannot stall the
  others; searches run one at a time off the event loop, since bm25s and faiss are not
  guaranteed thread-safe.
- `serve` binds 127.0.0.1 unless told otherwise, and warns when it binds anything else.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from igsearch.errors import IGSearchError
from igsearch.retrieval.base import Hit, Retriever
from igsearch.retrieval.batcher import MicroBatcher
from igsearch.retrieval.request import (
    ApiError,
    RetrieveRequest,
    ServerLimits,
    body_too_large,
    check_headers,
    parse_retrieve_body,
)

logger = logging.getLogger(__name__)


def render_result(hits: list[list[Hit]], return_scores: bool) -> bytes:
    """The JSON body `{"result": ...}` of a `/retrieve` answer."""
    if return_scores:
        result = [
            [{"document": h.doc.to_json(), "score": float(h.score)} for h in row] for row in hits
        ]
    else:
        result = [[h.doc.to_json() for h in row] for row in hits]
    return json.dumps({"result": result}, ensure_ascii=False).encode()


def create_app(
    retriever: Retriever,
    *,
    default_topk: int = 3,
    max_topk: int = 100,
    max_queries: int = 1024,
    max_query_chars: int = 4096,
    max_batch_queries: int = 256,
    info: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving `retriever` over Search-R1's `/retrieve` contract, plus `/health`.

    The limits are those of `ServerLimits`; `info` is merged into `/health`'s answer (kind,
    doc_count, index path, ...). The app's `state.batcher` is its `MicroBatcher`.
    """
    try:
        limits = ServerLimits(
            default_topk, max_topk, max_queries, max_query_chars, max_batch_queries
        )
    except ValueError as e:
        raise IGSearchError(str(e)) from None
    health = {
        "status": "ok",
        "doc_count": len(retriever) if hasattr(retriever, "__len__") else None,  # type: ignore[arg-type]
        "kind": getattr(retriever, "kind", type(retriever).__name__),
        **asdict(limits),
        **(info or {}),
    }
    app = FastAPI(title="igsearch retrieval server", description=__doc__)
    app.state.batcher = batcher = MicroBatcher(retriever, limits.max_batch_queries)
    app.state.limits = limits
    _install_error_handlers(app)

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        """Liveness, index kind and size, and the server's limits."""
        return health

    @app.post("/retrieve")
    async def retrieve(request: Request) -> Response:
        """Search-R1's contract: `topk` passages for each query, best first."""
        req = await _read_request(request, limits)
        if not req.queries:
            return Response(b'{"result": []}', media_type="application/json")
        try:
            hits = await batcher.search(req.queries, req.topk)
        except Exception as e:
            logger.exception("retrieval failed for a request of %d queries", len(req.queries))
            raise ApiError(500, f"the retriever failed: {type(e).__name__}: {e}") from e
        body = await run_in_threadpool(render_result, hits, req.return_scores)
        return Response(body, media_type="application/json")

    return app


async def _read_request(request: Request, limits: ServerLimits) -> RetrieveRequest:
    """Read and check a `/retrieve` body, refusing it as soon as it is over the size limit."""
    headers = request.headers
    check_headers(headers.get("content-type"), headers.get("content-length"), limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise body_too_large(size, limits)
        chunks.append(chunk)
    body = b"".join(chunks)
    if size > 1 << 16:  # keep the event loop free while a large body is parsed
        return await run_in_threadpool(parse_retrieve_body, body, limits)
    return parse_retrieve_body(body, limits)


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error as `{"error": message}`: 4xx for bad requests, 500 for a failing retriever."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (
            f"{request.method} {request.url.path}: {exc.detail}; "
            "this server answers POST /retrieve and GET /health"
        )
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"[:1000]
        return JSONResponse({"error": message}, status_code=500)


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


def _check_port(host: str, port: int) -> None:
    """Fail with one line when `host:port` cannot be bound (a bad port, or one in use)."""
    if not 0 <= port <= 65535:
        raise IGSearchError(f"--port {port} is not a TCP port; give one in 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            fix = (
                "stop the program using that port or pick another --port"
                if e.errno == errno.EADDRINUSE
                else "give an address of this machine with --host (default 127.0.0.1)"
            )
            raise IGSearchError(
                f"--host {host} --port {port}: cannot listen there ({e.strerror}); {fix}"
            ) from None


def serve(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    default_topk: int = 3,
    max_topk: int = 100,
    max_queries: int = 1024,
    log_level: str = "info",
    *,
    max_query_chars: int = 4096,
    max_batch_queries: int = 256,
) -> None:
    """Load the index folder `index_dir` and serve it over HTTP until interrupted (blocking)."""
    from igsearch.retrieval.index import load_index, read_manifest

    limits = {
        "default_topk": default_topk,
        "max_topk": max_topk,
        "max_queries": max_queries,
        "max_query_chars": max_query_chars,
        "max_batch_queries": max_batch_queries,
    }
    try:
        ServerLimits(**limits)  # bad flags fail before the index loads
    except ValueError as e:
        raise IGSearchError(str(e)) from None
    _check_port(host, port)  # before the index loads, which can take minutes
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
    app = create_app(retriever, **limits, info=info)
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
