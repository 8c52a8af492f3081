"""Dynamic micro-batching for the retrieval server, with bounded work per search.

Requests that arrive while a search runs are merged into the next search (one `retriever.search`
call per `topk`), but one search holds at most `max_batch_queries` queries. A larger request is
searched in slices that take turns with the requests queued behind it: after each slice it goes to
the back of the queue. So a search never costs more than `max_batch_queries` queries, and a small
request waits for at most the search in flight plus one search per request ahead of it, however
large those are. Searches run one at a time off the event loop (bm25s and faiss are not guaranteed
thread-safe). If a merged search fails, its requests are retried one by one so that a single bad
request fails alone.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from igsearch.retrieval.base import Hit, Retriever


@dataclass(eq=False)
class _Job:
    """One request's queries, its topk, the hits found so far and the future its handler awaits."""

    queries: list[str]
    k: int
    fut: asyncio.Future
    hits: list[list[Hit]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.queries) - len(self.hits)


def _settle(fut: asyncio.Future, result: object = None, exc: BaseException | None = None) -> None:
    """Resolve `fut` unless its request was already cancelled (client gone)."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class MicroBatcher:
    """Merges concurrent requests into searches of at most `max_batch_queries` queries (see above).

    Runs on the server's event loop; each search runs in the threadpool under a lock, so the
    retriever sees one call at a time.
    """

    def __init__(self, retriever: Retriever, max_batch_queries: int = 256):
        if max_batch_queries < 1:
            raise ValueError(f"max_batch_queries must be at least 1, got {max_batch_queries}")
        self.retriever = retriever
        self.max_batch_queries = max_batch_queries
        self.lock = threading.Lock()
        self._pending: list[_Job] = []
        self._runner: asyncio.Task | None = None
        self._in_flight = 0

    @property
    def pending_queries(self) -> int:
        """Queries waiting for a search, not counting the search in flight (for tests, monitoring)."""
        return sum(job.remaining for job in self._pending) - self._in_flight

    async def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Answer `queries` with `k` hits each, sharing batched searches with concurrent requests."""
        job = _Job(queries, k, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await job.fut

    def _next_slices(self) -> list[tuple[_Job, int, int]]:
        """(job, start, stop) slices for the next search: the oldest job's topk, then later jobs
        of that topk in arrival order, until `max_batch_queries` queries."""
        self._pending = [job for job in self._pending if not job.fut.done()]  # clients gone
        if not self._pending:
            return []
        k, room, slices = self._pending[0].k, self.max_batch_queries, []
        for job in self._pending:
            if room == 0:
                break
            if job.k == k:
                start = len(job.hits)
                stop = min(len(job.queries), start + room)
                slices.append((job, start, stop))
                room -= stop - start
        return slices

    async def _drain(self) -> None:
        while slices := self._next_slices():
            await self._run(slices, slices[0][0].k)

    async def _run(self, slices: list[tuple[_Job, int, int]], k: int) -> None:
        flat = [q for job, start, stop in slices for q in job.queries[start:stop]]
        self._in_flight = len(flat)
        try:
            hits = await run_in_threadpool(self._search, flat, k)
        except Exception as e:
            self._in_flight = 0
            if len(slices) == 1:
                self._finish(slices[0][0], exc=e)
            else:
                for item in slices:
                    await self._run([item], k)
            return
        self._in_flight = 0
        at = 0
        for job, start, stop in slices:
            job.hits.extend(hits[at : at + stop - start])
            at += stop - start
            if job.remaining == 0:
                self._finish(job)
            elif job in self._pending:  # a slice of a large request: back of the queue
                self._pending.remove(job)
                self._pending.append(job)

    def _finish(self, job: _Job, exc: BaseException | None = None) -> None:
        if job in self._pending:
            self._pending.remove(job)
        _settle(job.fut, job.hits, exc)

    def _search(self, queries: list[str], k: int) -> list[list[Hit]]:
        with self.lock:
            hits = self.retriever.search(queries, k)
        if len(hits) != len(queries):
            raise RuntimeError(
                f"the retriever answered {len(hits)} hit lists for {len(queries)} queries"
            )
        return hits
