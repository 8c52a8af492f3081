"""Retrieval server under load: latency percentiles with 32 concurrent clients, and hostile input.

Builds a BM25 index over a seeded synthetic corpus (benchmarks/retrieval.py's generator), starts
`igsearch serve` in its own process on 127.0.0.1, and runs 32 client threads, each sending
batches of 1-64 queries (random topk 1-5) over one persistent connection, while 4 more threads
send every hostile body of `HOSTILE` (non-finite numbers, lone surrogates, oversized queries, ...).
It reports request latency p50 / p99 / max, queries and requests per second, the server's RSS, and
the hostile bodies' answers counted by HTTP status. The run is repeated with the batcher's bound
lifted (`--max-batch-queries` far above any load), which is how merged searches behaved before
they were bounded. Writes `benchmarks/results/server_load.{json,md}`.

    python benchmarks/server_load.py                  # full run (about 2 minutes on one core)
    python benchmarks/server_load.py --quick          # smoke test, nothing written
    python benchmarks/server_load.py --note "..."     # record what else ran on the machine
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _machine
import httpx
from retrieval import write_corpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from igsearch.retrieval.index import build_index  # noqa: E402

JSON = {"content-type": "application/json"}
HOSTILE: dict[str, tuple[bytes, dict[str, str]]] = {
    "topk NaN": (b'{"queries": ["a"], "topk": NaN}', JSON),
    "topk Infinity": (b'{"queries": ["a"], "topk": Infinity}', JSON),
    "topk -Infinity": (b'{"queries": ["a"], "topk": -Infinity}', JSON),
    "topk 1e400": (b'{"queries": ["a"], "topk": 1e400}', JSON),
    "bare NaN body": (b"NaN", JSON),
    "topk 2.5": (b'{"queries": ["a"], "topk": 2.5}', JSON),
    "topk string": (b'{"queries": ["a"], "topk": "3"}', JSON),
    "lone surrogate": (b'{"queries": ["\\udc80 x"]}', JSON),
    "invalid UTF-8": (b'{"queries": ["\xff\xfe"]}', JSON),
    "1 MB query": (json.dumps({"queries": ["word " * 200_000]}).encode(), JSON),
    "query over 4096 chars": (json.dumps({"queries": ["q" * 4097]}).encode(), JSON),
    "1025 queries": (json.dumps({"queries": ["q"] * 1025}).encode(), JSON),
    "query not a string": (b'{"queries": ["a", 7]}', JSON),
    "not JSON": (b"{queries: [a]", JSON),
    "text/plain body": (b'{"queries": ["a"]}', {"content-type": "text/plain"}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of process `pid`, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields.get("VmRSS", 0.0), "peak_rss_mib": fields.get("VmHWM", 0.0)}


def start_server(index: Path, max_batch_queries: int) -> tuple[subprocess.Popen, str]:
    """`igsearch serve` in its own process; returns it and its base URL once /health answers."""
    port = free_port()
    code = "from igsearch.cli import run_cli; run_cli()"
    cmd = [sys.executable, "-c", code, "serve", "--index", str(index), "--port", str(port)]
    cmd += ["--max-batch-queries", str(max_batch_queries)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the server did not answer /health within 180 s")


def load_client(url: str, questions: list[str], seed: int, n: int) -> list[tuple[float, int, int]]:
    """`n` requests of 1-64 queries; (seconds, queries, status) each."""
    rng, out = random.Random(seed), []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(n):
            queries = rng.sample(questions, rng.randint(1, 64))
            body = {"queries": queries, "topk": rng.randint(1, 5), "return_scores": True}
            t0 = time.perf_counter()
            r = client.post("/retrieve", json=body)
            if r.status_code == 200:
                assert len(r.json()["result"]) == len(queries)
            out.append((time.perf_counter() - t0, len(queries), r.status_code))
    return out


def hostile_client(url: str, rounds: int, counts: Counter, lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(rounds):
            for name, (body, headers) in HOSTILE.items():
                r = client.post("/retrieve", content=body, headers=headers)
                with lock:
                    counts[(name, r.status_code)] += 1


def run_load(index: Path, questions: list[str], args: argparse.Namespace, bound: int) -> dict:
    """One load run against a fresh server with `--max-batch-queries bound`."""
    proc, url = start_server(index, bound)
    try:
        rss_idle = rss_mib(proc.pid)
        counts: Counter = Counter()
        lock = threading.Lock()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients + args.hostile_clients) as pool:
            loads = [
                pool.submit(load_client, url, questions, seed, args.requests)
                for seed in range(args.clients)
            ]
            for _ in range(args.hostile_clients):
                pool.submit(hostile_client, url, args.hostile_rounds, counts, lock)
            samples = [s for f in loads for s in f.result()]
        wall = time.perf_counter() - t0
        rss = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    lat = sorted(s for s, _, _ in samples)
    quantiles = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "max_batch_queries": bound,
        "requests": len(samples),
        "queries": sum(q for _, q, _ in samples),
        "statuses": dict(Counter(str(c) for _, _, c in samples)),
        "wall_s": round(wall, 2),
        "qps": round(sum(q for _, q, _ in samples) / wall, 1),
        "requests_per_s": round(len(samples) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * quantiles[98], 1),
        "max_ms": round(1000 * lat[-1], 1),
        "server_rss_idle_mib": rss_idle["rss_mib"],
        **{f"server_{k}": v for k, v in rss.items()},
        "hostile": {f"{name} -> {status}": n for (name, status), n in sorted(counts.items())},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: small corpus, few requests")
    p.add_argument("--docs", type=int, default=5000, help="passages in the BM25 index")
    p.add_argument("--clients", type=int, default=32, help="concurrent load client threads")
    p.add_argument("--requests", type=int, default=25, help="requests per load client")
    p.add_argument("--hostile-clients", type=int, default=4, help="threads sending bad input")
    p.add_argument("--hostile-rounds", type=int, default=5, help="times each sends every body")
    p.add_argument("--unbounded", type=int, default=1 << 20, help="the bound of the comparison run")
    p.add_argument("--note", default="", help="what else ran on the machine (recorded)")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.clients, args.requests = 500, 8, 3
        args.hostile_clients, args.hostile_rounds = 1, 1
    elif args.out is None:
        args.out = ROOT / "benchmarks" / "results"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict = {
        "benchmark": "server_load",
        "machine": _machine.machine_info(note=args.note, affinity=sorted(os.sched_getaffinity(0))),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "note")},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        questions = [q for q, _ in write_corpus(work / "corpus.jsonl", args.docs, 0, 2000)]
        build_index(work / "corpus.jsonl", "bm25", work / "index")
        results["runs"] = [
            run_load(work / "index", questions, args, bound) for bound in (256, args.unbounded)
        ]
    results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report = markdown(results)
    print(report)
    bad = [k for r in results["runs"] for k in r["hostile"] if not 400 <= int(k[-3:]) < 500]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "server_load.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "server_load.md").write_text(report)
    return 1 if bad else 0


def markdown(r: dict) -> str:
    """Machine header, the latency table of both runs and the hostile-input counts."""
    m, c = r["machine"], r["config"]
    lines = [
        "# Retrieval server under load",
        "",
        f"{m['date']}; {m['nproc']} CPU(s) allowed ({m['cpu_model']}, affinity {m['affinity']}); "
        f"Python {m['python']}; load average {m['load_avg_1m_at_start']} at start, "
        f"{m['load_avg_1m_at_end']} at end."
        + (f" Also running: {m['note']}." if m["note"] else ""),
        f"`igsearch serve` (BM25, {c['docs']:,} synthetic passages) in its own process on "
        f"127.0.0.1; {c['clients']} client threads in one process each send {c['requests']} "
        f"requests of 1-64 queries (topk 1-5, scores returned) over a persistent connection, "
        f"while {c['hostile_clients']} threads send each hostile body {c['hostile_rounds']} times."
        + (" **Quick run (smoke test).**" if c["quick"] else ""),
        "",
        "| --max-batch-queries | requests | queries/s | requests/s | p50 ms | p99 ms | max ms "
        "| p99/p50 | server RSS MiB (peak) | statuses |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in r["runs"]:
        label = str(run["max_batch_queries"])
        if run["max_batch_queries"] == c["unbounded"]:
            label += " (no bound)"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run["statuses"].items()))
        lines.append(
            f"| {label} | {run['requests']} | {run['qps']:,.0f} | {run['requests_per_s']:.0f} "
            f"| {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['max_ms']:.1f} "
            f"| {run['p99_ms'] / run['p50_ms']:.1f} | {run['server_rss_mib']:.0f} "
            f"({run['server_peak_rss_mib']:.0f}) | {statuses} |"
        )
    lines += ["", "Hostile input (both runs), answers by status:", ""]
    lines += ["| body | status | count |", "|---|---:|---:|"]
    merged: Counter = Counter()
    for run in r["runs"]:
        merged.update(run["hostile"])
    for key, n in sorted(merged.items()):
        name, status = key.rsplit(" -> ", 1)
        lines.append(f"| {name} | {status} | {n} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
