"""The retrieval server against real HTTP: Search-R1's /retrieve contract, errors, batching, concurrency."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

from igsearch.cli import app as cli_app
from igsearch.retrieval import server as server_module
from igsearch.retrieval.base import Doc, Hit
from igsearch.retrieval.client import HttpRetriever
from igsearch.retrieval.index import build_index, load_index
from igsearch.retrieval.server import ServerThread, create_app

# (id, wiki-18 style contents with a quoted title, a query whose top hit it is)
PASSAGES = [
    (
        "d0",
        '"Paris"\nParis is the capital and largest city of France, on the river Seine.',
        "capital of France",
    ),
    (
        "d1",
        '"Mount Everest"\nMount Everest is the highest mountain on Earth, in the Himalayas.',
        "highest mountain Himalayas",
    ),
    (
        "d2",
        '"Python (language)"\nPython is a programming language created by Guido van Rossum.',
        "who created the Python programming language",
    ),
    (
        "d3",
        '"Photosynthesis"\nPhotosynthesis lets plants turn sunlight into sugar using chlorophyll.',
        "plants chlorophyll sunlight",
    ),
    (
        "d4",
        '"Jupiter"\nJupiter is the largest planet of the solar system, a gas giant.',
        "largest planet gas giant",
    ),
    (
        "d5",
        '"Hamlet"\nHamlet is a tragedy written by the playwright William Shakespeare.',
        "who wrote the tragedy Hamlet",
    ),
    (
        "d6",
        '"Amazon River"\nThe Amazon river flows through the rainforest of South America.',
        "river rainforest South America",
    ),
    (
        "d7",
        '"Ludwig van Beethoven"\nBeethoven was a German composer of nine symphonies who went deaf.',
        "deaf composer symphonies",
    ),
    (
        "d8",
        '"Penguin"\nPenguins are flightless birds that live mostly in Antarctica.',
        "flightless birds Antarctica",
    ),
    (
        "d9",
        '"Insulin"\nInsulin is a hormone made by the pancreas that controls blood sugar in diabetes.',
        "pancreas hormone diabetes",
    ),
]
QUERIES = [q for _, _, q in PASSAGES]
EXPECTED_TOP = {q: doc_id for doc_id, _, q in PASSAGES}
MAX_QUERIES = 20
MAX_QUERY_CHARS = 500


class CountingRetriever:
    """Wraps a retriever, recording every `search` call; a query "__boom__" makes it raise."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[int, int]] = []
        self.kind = "bm25"

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls.append((len(queries), k))
        if "__boom__" in queries:
            raise RuntimeError("index exploded on __boom__")
        return self.inner.search(queries, k)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    """A BM25 index folder over the ten passages above, built once for the module."""
    root = tmp_path_factory.mktemp("bm25")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c, _ in PASSAGES))
    build_index(corpus, "bm25", root / "index")
    return root / "index"


@pytest.fixture(scope="module")
def bm25(index_dir):
    retriever = load_index(index_dir)
    retriever.search(["warm up"], 1)  # the first numba search compiles for ~15 s; pay it here once
    return retriever


@pytest.fixture(scope="module")
def counting(bm25):
    return CountingRetriever(bm25)


@pytest.fixture(scope="module")
def server(counting):
    app = create_app(
        counting,
        default_topk=3,
        max_topk=100,
        max_queries=MAX_QUERIES,
        max_query_chars=MAX_QUERY_CHARS,
        info={"corpus": "test"},
    )
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _assert_serves(http: httpx.Client) -> None:
    """The server still answers a good request correctly."""
    r = http.post("/retrieve", json={"queries": ["capital of France"], "topk": 1})
    assert r.status_code == 200
    assert r.json()["result"][0][0]["id"] == "d0"


def test_health(http, server):
    assert server.url.startswith("http://127.0.0.1:")
    body = http.get("/health").json()
    assert body["status"] == "ok" and body["doc_count"] == 10 and body["kind"] == "bm25"
    assert body["corpus"] == "test" and body["max_queries"] == MAX_QUERIES


def test_small_requests_do_not_stall_on_nagle(http):
    """Without TCP_NODELAY each answer waits ~40 ms for a delayed ACK; a round trip takes ~1 ms."""
    times = []
    for _ in range(10):
        started = time.perf_counter()
        http.get("/health")
        times.append(time.perf_counter() - started)
    assert sorted(times)[5] < 0.02


def test_return_scores_true_wraps_documents_with_scores(http, bm25):
    r = http.post("/retrieve", json={"queries": QUERIES[:2], "topk": 2, "return_scores": True})
    assert r.status_code == 200
    result = r.json()["result"]
    expected = bm25.search(QUERIES[:2], 2)
    assert [len(row) for row in result] == [2, 2]
    for row, hits in zip(result, expected, strict=True):
        for item, hit in zip(row, hits, strict=True):
            assert set(item) == {"document", "score"}
            assert item["document"] == hit.doc.to_json()
            assert set(item["document"]) == {"id", "contents", "title", "text"}
            assert item["score"] == pytest.approx(hit.score)
    assert result[0][0]["document"]["id"] == "d0"
    assert result[0][0]["document"]["title"] == "Paris"
    assert result[0][0]["score"] >= result[0][1]["score"]


def test_return_scores_default_false_gives_documents_alone(http):
    r = http.post("/retrieve", json={"queries": ["highest mountain Himalayas"], "topk": 2})
    row = r.json()["result"][0]
    assert len(row) == 2
    assert set(row[0]) == {"id", "contents", "title", "text"}
    assert row[0]["id"] == "d1" and row[0]["text"].startswith("Mount Everest is")


@pytest.mark.parametrize("extra", [{}, {"topk": None}])
def test_missing_or_null_topk_uses_default(http, extra):
    r = http.post(
        "/retrieve", json={"queries": ["capital of France"], "return_scores": True, **extra}
    )
    assert r.status_code == 200 and len(r.json()["result"][0]) == 3


def test_unknown_fields_are_ignored_and_empty_query_list_is_answered(http, counting):
    r = http.post(
        "/retrieve", json={"queries": ["capital of France"], "topk": 1, "request_id": "x"}
    )
    assert r.status_code == 200 and r.json()["result"][0][0]["id"] == "d0"
    # Search-R1's trainer posts an empty list when no rollout searched; its server answers [].
    counting.calls.clear()
    r = http.post("/retrieve", json={"queries": [], "topk": 3, "return_scores": True})
    assert r.status_code == 200 and r.json() == {"result": []}
    assert counting.calls == []


JSON = {"content-type": "application/json"}
BAD_REQUESTS = [
    ("malformed-json", b'{"queries": ["a"', JSON, 400, "body: malformed JSON"),
    ("body-array", b'["a", "b"]', JSON, 422, "body: must be a JSON object, got a list"),
    ("body-string", b'"capital of France"', JSON, 422, "body: must be a JSON object, got a str"),
    ("body-missing", b"", JSON, 400, "body: empty"),
    ("body-bare-nan", b"NaN", JSON, 400, "NaN is not valid JSON"),
    ("body-nested-deeply", b"[" * 20_000 + b"]" * 20_000, JSON, 400, "nested too deeply"),
    ("body-not-utf8", b'{"queries": ["\xff\xfe"]}', JSON, 400, "body: not valid UTF-8"),
    ("queries-missing", b'{"topk": 3}', JSON, 422, "queries: field required"),
    (
        "queries-not-list",
        b'{"queries": "capital of France"}',
        JSON,
        422,
        "queries: must be a list of strings, got str",
    ),
    ("query-not-string", b'{"queries": ["ok", 7]}', JSON, 422, "queries.1: must be a string"),
    (
        "query-lone-surrogate",
        b'{"queries": ["ok", "a\\ud800b"]}',
        JSON,
        422,
        "queries.1: holds invalid Unicode",
    ),
    (
        "topk-zero",
        b'{"queries": ["a"], "topk": 0}',
        JSON,
        422,
        "topk: must be between 1 and 100, got 0",
    ),
    ("topk-negative", b'{"queries": ["a"], "topk": -2}', JSON, 422, "between 1 and 100, got -2"),
    ("topk-too-big", b'{"queries": ["a"], "topk": 101}', JSON, 422, "between 1 and 100, got 101"),
    (
        "topk-not-int",
        b'{"queries": ["a"], "topk": "many"}',
        JSON,
        422,
        "topk: must be a whole number",
    ),
    (
        "topk-fraction",
        b'{"queries": ["a"], "topk": 2.5}',
        JSON,
        422,
        "topk: must be a whole number, got 2.5",
    ),
    (
        "topk-bool",
        b'{"queries": ["a"], "topk": true}',
        JSON,
        422,
        "topk: must be a whole number or null",
    ),
    ("topk-nan", b'{"queries": ["a"], "topk": NaN}', JSON, 400, "NaN is not valid JSON"),
    ("topk-infinity", b'{"queries": ["a"], "topk": Infinity}', JSON, 400, "Infinity is not valid"),
    (
        "topk-minus-infinity",
        b'{"queries": ["a"], "topk": -Infinity}',
        JSON,
        400,
        "-Infinity is not valid",
    ),
    ("topk-overflow", b'{"queries": ["a"], "topk": 1e400}', JSON, 400, "1e400 overflows"),
    (
        "topk-huge-int",
        b'{"queries": ["a"], "topk": 1' + b"0" * 400 + b"}",
        JSON,
        422,
        "topk: must be between",
    ),
    (
        "return-scores-not-bool",
        b'{"queries": ["a"], "return_scores": "yes"}',
        JSON,
        422,
        "return_scores: must be true or false",
    ),
    (
        "too-many-queries",
        json.dumps({"queries": ["a"] * (MAX_QUERIES + 1)}).encode(),
        JSON,
        413,
        f"at most {MAX_QUERIES}",
    ),
    (
        "query-too-long",
        json.dumps({"queries": ["x" * (MAX_QUERY_CHARS + 1)]}).encode(),
        JSON,
        413,
        f"queries.0: {MAX_QUERY_CHARS + 1} characters, over this server's cap of {MAX_QUERY_CHARS}",
    ),
    (
        "body-too-large",
        b'{"queries": ["' + b"y" * 2_000_000 + b'"]}',
        JSON,
        413,
        "bytes is more than",
    ),
    (
        "not-json-content-type",
        b'{"queries": ["a"]}',
        {"content-type": "text/plain"},
        415,
        "Content-Type: application/json",
    ),
    ("no-content-type", b'{"queries": ["a"]}', {"content-type": ""}, 415, "Content-Type"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [b[1:] for b in BAD_REQUESTS],
    ids=[b[0] for b in BAD_REQUESTS],
)
def test_bad_input_gets_4xx_json_error_and_server_keeps_serving(
    http, body, headers, status, needle
):
    r = http.post("/retrieve", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    _assert_serves(http)


def test_unknown_route_and_method_get_json_errors(http):
    r = http.get("/retrieve")
    assert r.status_code == 405 and "POST /retrieve" in r.json()["error"]
    r = http.post("/search", json={"queries": ["a"]})
    assert r.status_code == 404 and "/search" in r.json()["error"]


def test_retriever_exception_is_500_logged_and_server_keeps_serving(http, caplog):
    r = http.post("/retrieve", json={"queries": ["fine", "__boom__"]})
    assert r.status_code == 500
    assert "RuntimeError: index exploded on __boom__" in r.json()["error"]
    assert "retrieval failed" in caplog.text
    _assert_serves(http)


def test_a_batched_request_is_one_search_call(http, counting):
    counting.calls.clear()
    queries = QUERIES + QUERIES[:6]
    r = http.post("/retrieve", json={"queries": queries, "topk": 2, "return_scores": True})
    assert counting.calls == [(16, 2)]
    assert [row[0]["document"]["id"] for row in r.json()["result"]] == [
        EXPECTED_TOP[q] for q in queries
    ]


def test_concurrent_requests_are_all_answered_correctly(server):
    def worker(t: int) -> list[tuple[str, str]]:
        got = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(t, 50, 8):  # 50 requests over 8 threads
                queries = [QUERIES[i % 10], QUERIES[(i + 3) % 10]]
                r = client.post(
                    "/retrieve", json={"queries": queries, "topk": 1 + i % 3, "return_scores": True}
                )
                assert r.status_code == 200, r.text
                rows = r.json()["result"]
                assert [len(row) for row in rows] == [1 + i % 3] * 2
                got += [(q, row[0]["document"]["id"]) for q, row in zip(queries, rows, strict=True)]
        return got

    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(worker, range(8)) for a in part]
    assert len(answers) == 100
    assert all(EXPECTED_TOP[q] == doc_id for q, doc_id in answers)


class GatedRetriever:
    """Answers each query q with hits "q/0", "q/1", ...; its first call blocks until released."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.calls.append(list(queries))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if "__boom__" in queries:
            raise ValueError("bad query")
        return [[Hit(Doc(f"{q}/{j}", f"T\n{q}"), 1.0 / (j + 1)) for j in range(k)] for q in queries]


def test_requests_arriving_during_a_search_are_coalesced():
    gated = GatedRetriever()
    app = create_app(gated)
    with ServerThread(app) as srv, ThreadPoolExecutor(8) as pool:

        def ask(query: str, k: int) -> httpx.Response:
            return httpx.post(
                f"{srv.url}/retrieve", json={"queries": [query], "topk": k}, timeout=10
            )

        first = pool.submit(ask, "first", 1)
        assert gated.entered.wait(10)
        later = [pool.submit(ask, f"q{i}", 1 + i % 2) for i in range(6)] + [
            pool.submit(ask, "__boom__", 1)
        ]
        deadline = time.monotonic() + 10
        while app.state.batcher.pending_queries < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.release.set()
        assert [d["id"] for d in first.result().json()["result"][0]] == ["first/0"]
        for i, fut in enumerate(later[:6]):
            assert [d["id"] for d in fut.result().json()["result"][0]] == [
                f"q{i}/{j}" for j in range(1 + i % 2)
            ]
        assert later[6].result().status_code == 500
    # one search for "first", then one per distinct topk for the coalesced rest; the topk=1
    # group held "__boom__", failed, and was answered request by request
    assert gated.calls[0] == ["first"] and len(gated.calls) == 7
    merged = sorted(sorted(call) for call in gated.calls[1:] if len(call) > 1)
    assert merged == [["__boom__", "q0", "q2", "q4"], ["q1", "q3", "q5"]]
    assert sorted(call[0] for call in gated.calls[1:] if len(call) == 1) == [
        "__boom__",
        "q0",
        "q2",
        "q4",
    ]


def _passages2string(retrieval_result) -> str:
    """Search-R1's `LLMGenerationManager._passages2string`, verbatim in behaviour."""
    format_reference = ""
    for idx, doc_item in enumerate(retrieval_result):
        content = doc_item["document"]["contents"]
        title = content.split("\n")[0]
        text = "\n".join(content.split("\n")[1:])
        format_reference += f"Doc {idx + 1}(Title: {title}) {text}\n"
    return format_reference


def test_search_r1_batch_search_works_unchanged(server):
    """Search-R1's `batch_search`: POST {queries, topk, return_scores: True}, read ["result"]."""
    payload = {
        "queries": ["capital of France", "who wrote the tragedy Hamlet"],
        "topk": 1,
        "return_scores": True,
    }
    results = httpx.post(f"{server.url}/retrieve", json=payload).json()["result"]
    strings = [_passages2string(result) for result in results]
    assert strings == [
        'Doc 1(Title: "Paris") Paris is the capital and largest city of France, on the river Seine.\n',
        'Doc 1(Title: "Hamlet") Hamlet is a tragedy written by the playwright William Shakespeare.\n',
    ]


def test_http_retriever_round_trip_matches_in_process(server, bm25):
    with HttpRetriever(server.url + "/retrieve", retries=0) as remote:
        assert remote.search(QUERIES, 3) == bm25.search(QUERIES, 3)
        assert remote.health()["doc_count"] == 10


def test_serve_loads_the_index_and_runs_uvicorn(index_dir, bm25, monkeypatch):
    ran = {}
    monkeypatch.setattr(server_module.uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    server_module.serve(index_dir, port=8123, default_topk=2)
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8123
    with ServerThread(ran["app"]) as srv:
        health = httpx.get(f"{srv.url}/health").json()
        assert (health["kind"], health["doc_count"], health["default_topk"]) == ("bm25", 10, 2)
        r = httpx.post(f"{srv.url}/retrieve", json={"queries": ["capital of France"]})
        assert [d["id"] for d in r.json()["result"][0]][:1] == ["d0"] and len(
            r.json()["result"][0]
        ) == 2


def test_serve_help():
    result = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Search-R1" in result.output and "/retrieve" in result.output
    for option in (
        "--index",
        "--host",
        "--port",
        "--topk",
        "--max-topk",
        "--max-queries",
        "--max-query-chars",
        "--max-batch-queries",
    ):
        assert option in result.output
