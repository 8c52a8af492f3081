"""`igsearch eval` end to end on a 5-question slice, and `igsearch demo --quick` with stage reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from igsearch.cli import app
from igsearch.experiment import machine_cpus
from igsearch.train.models import init_model, load_tokenizer, save_tokenizer

RESULT_KEYS = {"em", "f1", "acc", "n", "searches", "turns", "well_formed", "latency_s", "hops"}


def check_results_schema(results: dict) -> None:
    assert set(results) >= {"benchmarks", "average", "single_hop", "multi_hop", "config"}
    for name, m in results["benchmarks"].items():
        assert RESULT_KEYS <= set(m), name
        assert 0 <= m["em"] <= m["acc"] + 1e-9 <= 1 + 1e-9 or m["em"] <= 1
    assert {"em", "f1", "acc", "n"} <= set(results["average"])


@pytest.fixture(scope="module")
def policy(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy")
    tok = load_tokenizer(tiny_world / "tokenizer")
    init_model("nano", tok).save_pretrained(out)
    save_tokenizer(tok, out)
    (out / "igsearch.json").write_text(json.dumps({"prompt_style": "bare", "tagset": "search-r1"}))
    return out


def test_eval_on_a_slice_writes_valid_results(tiny_world, policy, tmp_path):
    data = tiny_world / "dev.jsonl"
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(policy),
            "--index",
            str(tiny_world / "index"),
            "--data",
            f"worlddev={data}",
            "--world",
            str(tiny_world),
            "--limit",
            "5",
            "--out",
            str(out),
            "--max-turns",
            "1",
            "--batch-size",
            "8",
            "--max-new-tokens",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    check_results_schema(results)
    assert set(results["benchmarks"]) == {
        "worlddev",
        "single_hop",
        "bridge",
        "comparison",
        "compositional",
    }
    assert all(m["n"] == 5 for m in results["benchmarks"].values())
    assert results["config"]["rollout"]["prompt_style"] == "bare"
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 25 and {"benchmark", "prediction", "em", "queries"} <= set(preds[0])
    assert "| method |" in (out / "results.md").read_text()


def test_eval_fails_before_loading_a_model_when_a_file_is_missing(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path / "no-such-model"),
            "--index",
            str(tmp_path),
            "--benchmarks",
            "nq,bamboogle",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0
    assert "nq/test.jsonl" in str(result.exception) and "bamboogle/test.jsonl" in str(
        result.exception
    )


def test_demo_quick_writes_the_report_and_reuses_stages(tmp_path):
    out = tmp_path / "demo"
    first = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert first.exit_code == 0, first.output
    report = (out / "report.md").read_text()
    assert "| SFT |" in report and "| GRPO |" in report and "| IG-Search |" in report
    for png in ("dev_em.png", "ig_by_step.png", "all_fail.png", "step_time.png"):
        assert (out / png).stat().st_size > 1000, png
    if len(machine_cpus()) > 1:  # the two RL runs trained side by side, each logging to its file
        for name in ("grpo-s0", "ig_grpo-s0"):
            assert "evaluate " + name in (out / "logs" / f"{name}.log").read_text()
    second = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert second.output.count("already done, reused") == 7  # world, sft, 2 RL runs, 3 evaluations
