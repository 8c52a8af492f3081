"""Benchmark registry, FlashRAG layout resolution and metric aggregation against hand-computed tables."""

import json

import pytest

from igsearch.errors import IGSearchError
from igsearch.eval.benchmarks import PAPER_BENCHMARKS, resolve_files, resolve_sets, select
from igsearch.eval.evaluate import aggregate, summarize
from igsearch.eval.report import results_table


def rec(em, f1, acc, searches=1, turns=2, wf=1.0, lat=0.5):
    return {
        "em": em,
        "f1": f1,
        "acc": acc,
        "searches": searches,
        "turns": turns,
        "well_formed": wf,
        "latency_s": lat,
    }


def test_registry_matches_the_paper():
    assert [(b.name, b.split, b.hops) for b in PAPER_BENCHMARKS.values()] == [
        ("nq", "test", "single"),
        ("triviaqa", "test", "single"),
        ("popqa", "test", "single"),
        ("hotpotqa", "dev", "multi"),
        ("2wikimultihopqa", "dev", "multi"),
        ("musique", "dev", "multi"),
        ("bamboogle", "test", "multi"),
    ]
    assert [b.name for b in select("nq, hotpotqa")] == ["nq", "hotpotqa"]
    with pytest.raises(IGSearchError, match="unknown benchmark 'webq'; choose from: all, nq"):
        select("nq,webq")


def test_flashrag_layout_and_missing_files_listed(tmp_path):
    (tmp_path / "nq").mkdir()
    (tmp_path / "nq" / "test.jsonl").write_text('{"question": "q?", "golden_answers": ["a"]}\n')
    assert resolve_files(select("nq"), tmp_path) == {"nq": tmp_path / "nq" / "test.jsonl"}
    with pytest.raises(IGSearchError) as e:
        resolve_files(select("nq,hotpotqa,musique"), tmp_path)
    msg = str(e.value)
    assert (
        "hotpotqa: " + str(tmp_path / "hotpotqa" / "dev.jsonl") in msg
        and "musique" in msg
        and "nq:" not in msg
    )


def test_resolve_sets_checks_every_source_before_loading(tmp_path):
    with pytest.raises(IGSearchError, match="needs --data-dir"):
        resolve_sets("nq")
    with pytest.raises(IGSearchError, match="expected name=path"):
        resolve_sets(data=["nq.jsonl"])
    with pytest.raises(IGSearchError, match="missing world test split"):
        resolve_sets(world=tmp_path)
    with pytest.raises(IGSearchError, match="nothing to evaluate"):
        resolve_sets()
    f = tmp_path / "x.jsonl"
    f.write_text(
        "".join(
            json.dumps({"question": f"q{i}?", "golden_answers": ["a"]}) + "\n" for i in range(5)
        )
    )
    assert [len(v) for v in resolve_sets(data=[f"mine={f}"], limit=3).values()] == [3]


def test_aggregation_hand_computed():
    a = aggregate([rec(1, 1, 1, searches=2), rec(0, 0.5, 1, searches=0), rec(0, 0, 0, searches=1)])
    assert a["n"] == 3 and a["em"] == pytest.approx(1 / 3) and a["f1"] == pytest.approx(0.5)
    assert a["acc"] == pytest.approx(2 / 3) and a["searches"] == pytest.approx(1.0)
    res = summarize(
        {
            "nq": [rec(1, 1, 1), rec(0, 0, 0)],  # em 0.5
            "popqa": [rec(1, 1, 1)],  # em 1.0
            "hotpotqa": [rec(0, 0.4, 0)] * 4,  # em 0.0, f1 0.4
        }
    )
    assert res["benchmarks"]["nq"]["em"] == 0.5 and res["benchmarks"]["hotpotqa"]["hops"] == "multi"
    assert res["average"]["em"] == pytest.approx(
        (0.5 + 1.0 + 0.0) / 3
    )  # unweighted over benchmarks
    assert res["average"]["n"] == 7 and res["average"]["benchmarks"] == 3
    assert res["single_hop"]["em"] == pytest.approx(0.75) and res["multi_hop"][
        "f1"
    ] == pytest.approx(0.4)
    table = results_table({"m": res})
    assert (
        table.splitlines()[0]
        == "| method | nq | popqa | hotpotqa | single-hop avg | multi-hop avg | average |"
    )
    assert "| m | 0.500 | 1.000 | 0.000 | 0.750 | 0.000 | 0.500 |" in table
