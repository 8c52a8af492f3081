"""HttpRetriever: request shape, both answer shapes, retries, errors (mock transport and real sockets)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from igsearch.errors import RetrieverError
from igsearch.retrieval.base import Doc, Hit, Retriever
from igsearch.retrieval.client import HttpRetriever, retrieve_url
from igsearch.retrieval.server import ServerThread, create_app

URL = "http://retriever.test:8000/retrieve"


class Scripted:
    """A mock transport answering from a list of (status, body) or exceptions, recording requests."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    def client(self, **kwargs) -> HttpRetriever:
        kwargs.setdefault("backoff", 0.0)
        return HttpRetriever(URL, transport=httpx.MockTransport(self), **kwargs)


def _scored(doc_id: str, contents: str, score: float) -> dict:
    return {"document": {"id": doc_id, "contents": contents}, "score": score}


OK = (
    200,
    {
        "result": [
            [_scored("a", "A\ntext a", 2.0), _scored("b", "B\ntext b", 1.0)],
            [_scored("c", "C\nc", 0.5)],
        ]
    },
)


def test_is_a_retriever_and_sends_one_search_r1_post():
    script = Scripted(OK)
    with script.client() as remote:
        assert isinstance(remote, Retriever)
        hits = remote.search(["q1", "q2"], 2)
    assert len(script.requests) == 1
    request = script.requests[0]
    assert request.method == "POST" and str(request.url) == URL
    assert json.loads(request.content) == {
        "queries": ["q1", "q2"],
        "topk": 2,
        "return_scores": True,
    }
    assert hits == [
        [Hit(Doc("a", "A\ntext a"), 2.0), Hit(Doc("b", "B\ntext b"), 1.0)],
        [Hit(Doc("c", "C\nc"), 0.5)],
    ]


def test_parses_documents_without_scores_ids_or_contents():
    body = {
        "result": [
            [
                {"id": 7, "contents": "T\nx"},
                {"title": "Only", "text": "title and text"},
                {"contents": "N\ny"},
            ]
        ]
    }
    hits = Scripted((200, body)).client().search(["q"], 5)
    assert hits == [
        [
            Hit(Doc("7", "T\nx"), 0.0),
            Hit(Doc("", "Only\ntitle and text"), 0.0),
            Hit(Doc("", "N\ny"), 0.0),
        ]
    ]
    assert hits[0][1].title == "Only" and hits[0][1].text == "title and text"


def test_keeps_at_most_k_hits_and_skips_the_network_for_no_queries():
    script = Scripted(OK)
    remote = script.client()
    assert remote.search([], 3) == []
    assert script.requests == []
    assert [len(row) for row in remote.search(["q1", "q2"], 1)] == [1, 1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1", "http://h:1/retrieve"),
        ("http://h:1/", "http://h:1/retrieve"),
        ("http://h:1/retrieve", "http://h:1/retrieve"),
        ("https://h/api/retrieve/", "https://h/api/retrieve"),
    ],
)
def test_accepts_base_or_endpoint_url(url, expected):
    assert retrieve_url(url) == expected
    assert HttpRetriever(url).base_url == expected.removesuffix("/retrieve")


def test_rejects_a_url_without_scheme():
    with pytest.raises(RetrieverError, match="not an http"):
        HttpRetriever("127.0.0.1:8000")


def test_retries_a_5xx_once_then_succeeds():
    script = Scripted((503, {"error": "warming up"}), OK)
    hits = script.client(retries=3).search(["q1", "q2"], 2)
    assert len(script.requests) == 2
    assert hits[1] == [Hit(Doc("c", "C\nc"), 0.5)]


def test_retries_connection_errors_and_timeouts():
    script = Scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), OK)
    assert len(script.client(retries=2).search(["q1", "q2"], 2)) == 2
    assert len(script.requests) == 3


def test_gives_up_after_bounded_retries_with_the_last_problem():
    script = Scripted((500, {"error": "the retriever failed: RuntimeError: disk gone"}))
    with pytest.raises(
        RetrieverError, match="HTTP 500: the retriever failed: RuntimeError: disk gone"
    ) as e:
        script.client(retries=2).search(["q"], 1)
    assert len(script.requests) == 3
    assert URL in str(e.value) and "3 attempts" in str(e.value)


def test_4xx_is_not_retried_and_names_url_status_and_message():
    script = Scripted((422, {"error": "topk must be between 1 and 100, got 0"}))
    with pytest.raises(RetrieverError) as e:
        script.client(retries=3).search(["q"], 0)
    assert len(script.requests) == 1
    assert str(e.value) == f"{URL}: HTTP 422: topk must be between 1 and 100, got 0"


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        ((200, {"result": [[]]}), "1 result lists for 2 queries"),
        ((200, {"results": [[], []]}), 'no "result" list'),
        ((200, [[], []]), 'no "result" list'),
        ((200, {"result": ["doc", []]}), "result[0] is a str"),
        ((200, {"result": [[1], []]}), "result[0] holds a int"),
        ((200, {"result": [[{"id": "x"}], []]}), 'without "contents"'),
        (
            (200, {"result": [[{"document": {"contents": "a"}, "score": "high"}], []]}),
            "non-numeric score 'high'",
        ),
        ((200, "<html>oops</html>"), "not JSON"),
    ],
)
def test_a_malformed_answer_raises_naming_the_problem(answer, needle):
    script = Scripted(answer)
    with pytest.raises(RetrieverError) as e:
        script.client(retries=3).search(["q1", "q2"], 3)
    assert needle in str(e.value) and URL in str(e.value)
    assert len(script.requests) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_fails_fast_after_bounded_retries():
    port = _closed_port()
    started = time.monotonic()
    with HttpRetriever(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as remote:
        with pytest.raises(RetrieverError, match="connection failed") as e:
            remote.search(["q"], 1)
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}/retrieve" in str(e.value) and "3 attempts" in str(e.value)


class Echo:
    """An in-memory retriever: query q gets hits q/0, q/1, ... with falling (numpy) scores."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [
            [
                Hit(Doc(f"{q}/{j}", f"Title {q}\ntext {j}"), np.float32(1 / (j + 1)))
                for j in range(k)
            ]
            for q in queries
        ]


def test_round_trip_through_a_real_server():
    with (
        ServerThread(create_app(Echo(), info={"kind": "echo"})) as srv,
        HttpRetriever(srv.url) as remote,
    ):
        assert remote.search(["x", "y"], 2) == Echo().search(["x", "y"], 2)
        assert remote.health()["kind"] == "echo"
        with pytest.raises(
            RetrieverError, match="HTTP 422: topk: must be between 1 and 100, got 101"
        ):
            remote.search(["x"], 101)


def test_a_real_timeout_is_a_retriever_error():
    slow = FastAPI()

    @slow.post("/retrieve")
    async def retrieve() -> dict:
        await asyncio.sleep(0.8)
        return {"result": [[]]}

    with ServerThread(slow) as srv:
        started = time.monotonic()
        with pytest.raises(
            RetrieverError, match=r"timed out after 0.2s \(ReadTimeout\).*2 attempts"
        ):
            HttpRetriever(srv.url, timeout=0.2, retries=1, backoff=0.01).search(["q"], 1)
        assert time.monotonic() - started < 1.0
