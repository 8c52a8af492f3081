"""The retrieval server under concurrent load with hostile input mixed in, on loopback.

Bounded counts (a few hundred requests); nothing here measures time. The invariants: every valid
request is answered correctly, every hostile one gets a 4xx JSON error, none gets a 5xx, and no
merged search holds more than `max_batch_queries` queries.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.index import build_index, load_index
from igsearch.retrieval.server import ServerThread, create_app

N_PASSAGES = 300
MAX_QUERIES = 64
MAX_QUERY_CHARS = 256
MAX_BATCH = 48
JSON = {"content-type": "application/json"}
HOSTILE = [
    (b'{"queries": ["a"], "topk": NaN}', JSON),
    (b'{"queries": ["a"], "topk": Infinity}', JSON),
    (b'{"queries": ["a"], "topk": -Infinity}', JSON),
    (b'{"queries": ["a"], "topk": 1e400}', JSON),
    (b"NaN", JSON),
    (b'{"queries": ["a"], "topk": 2.5}', JSON),
    (b'{"queries": ["a"], "topk": "3"}', JSON),
    (b'{"queries": ["\\ud800"]}', JSON),
    (b'{"queries": ["\xff"]}', JSON),
    (json.dumps({"queries": ["x" * (MAX_QUERY_CHARS + 1)]}).encode(), JSON),
    (json.dumps({"queries": ["q"] * (MAX_QUERIES + 1)}).encode(), JSON),
    (b'{"queries": [1, 2]}', JSON),
    (b"{not json", JSON),
    (b'{"queries": ["a"]}', {"content-type": "text/plain"}),
]


class CallLog:
    """Wraps a retriever, recording the size of every search (called under the batcher's lock)."""

    def __init__(self, inner):
        self.inner, self.sizes = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries, k):
        self.sizes.append(len(queries))
        return self.inner.search(queries, k)


@pytest.fixture(scope="module")
def bm25(tmp_path_factory):
    """A BM25 index where passage i is the only one holding the words word{i}a and word{i}b."""
    root = tmp_path_factory.mktemp("load")
    lines = [
        json.dumps({"id": f"p{i}", "contents": f"Title {i}\nword{i}a word{i}b filler text"})
        for i in range(N_PASSAGES)
    ]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    build_index(root / "corpus.jsonl", "bm25", root / "index")
    retriever = load_index(root / "index")
    retriever.search(["warm up"], 1)
    return retriever


def _client_load(url: str, seed: int, n_requests: int) -> list[int]:
    """Send `n_requests` valid batches of 1-64 queries; check every answer; return statuses."""
    rng, statuses = random.Random(seed), []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(n_requests):
            ids = [rng.randrange(N_PASSAGES) for _ in range(rng.randint(1, MAX_QUERIES))]
            k = rng.randint(1, 3)
            r = client.post(
                "/retrieve", json={"queries": [f"word{i}a word{i}b" for i in ids], "topk": k}
            )
            statuses.append(r.status_code)
            if r.status_code == 200:
                rows = r.json()["result"]
                assert [row[0]["id"] for row in rows] == [f"p{i}" for i in ids]
                assert all(len(row) == k for row in rows)
    return statuses


def _client_hostile(url: str, rounds: int) -> list[tuple[int, str]]:
    """Send every hostile body `rounds` times; return (status, error message) pairs."""
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(rounds):
            for body, headers in HOSTILE:
                r = client.post("/retrieve", content=body, headers=headers)
                out.append((r.status_code, r.json().get("error", "")))
            r = client.get("/retrieve")
            out.append((r.status_code, r.json().get("error", "")))
    return out


def test_concurrent_load_with_hostile_input(bm25):
    log = CallLog(bm25)
    app = create_app(
        log,
        max_queries=MAX_QUERIES,
        max_query_chars=MAX_QUERY_CHARS,
        max_batch_queries=MAX_BATCH,
    )
    with ServerThread(app) as srv, ThreadPoolExecutor(32) as pool:
        loads = [pool.submit(_client_load, srv.url, seed, 2) for seed in range(24)]
        hostile = [pool.submit(_client_hostile, srv.url, 1) for _ in range(8)]
        statuses = [s for f in loads for s in f.result()]
        answers = [a for f in hostile for a in f.result()]
    assert statuses == [200] * (24 * 2)
    assert len(answers) == 8 * (len(HOSTILE) + 1)
    assert all(400 <= status < 500 and message for status, message in answers), answers
    assert max(log.sizes) <= MAX_BATCH


class GatedEcho:
    """Answers query q with one hit named q; its first search blocks until released."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def search(self, queries, k):
        self.calls.append(list(queries))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return [[Hit(Doc(q, f"T\n{q}"), 1.0)] * k for q in queries]


def _wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server never queued the requests"
        time.sleep(0.01)


def test_a_large_request_takes_turns_with_a_small_one_behind_it():
    gated = GatedEcho()
    app = create_app(gated, max_batch_queries=10)
    big = [f"big{i}" for i in range(40)]
    with ServerThread(app) as srv, ThreadPoolExecutor(3) as pool:

        def ask(queries: list[str]) -> httpx.Response:
            return httpx.post(f"{srv.url}/retrieve", json={"queries": queries}, timeout=10)

        first = pool.submit(ask, ["first"])
        assert gated.entered.wait(10)
        large = pool.submit(ask, big)
        _wait_until(lambda: app.state.batcher.pending_queries == 40)
        small = pool.submit(ask, ["small"])
        _wait_until(lambda: app.state.batcher.pending_queries == 41)
        gated.release.set()
        assert first.result().status_code == small.result().status_code == 200
        assert [row[0]["id"] for row in large.result().json()["result"]] == big
    # "first", then one 10-query slice of the large request, then the small request before the
    # large request's remaining 30 queries are done
    assert gated.calls[0] == ["first"] and gated.calls[1] == big[:10]
    assert "small" in gated.calls[2]
    assert all(len(call) <= 10 for call in gated.calls)
    assert [q for call in gated.calls[1:] for q in call if q != "small"] == big
