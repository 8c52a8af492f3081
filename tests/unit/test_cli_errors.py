"""Bad input on every subcommand, as a new user gives it: one line naming the input and the fix,
a non-zero exit, no traceback, and nothing already written lost."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from igsearch.cli import run_cli
from igsearch.retrieval.index import build_index


def igsearch(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the `igsearch` entry point; (exit code, stderr) with stdout checked to be quiet."""
    monkeypatch.setattr(sys, "argv", ["igsearch", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        run_cli()
    out = capsys.readouterr()
    return exc.value.code, out.err


def one_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        '{"id": "a", "contents": "Alpha\\nhello world"}\n{"id": "b", "contents": "Beta\\nfoo"}\n'
    )
    build_index(corpus, "bm25", root / "index")
    qa = root / "qa.jsonl"
    qa.write_text('{"id": "q1", "question": "who?", "golden_answers": ["x"]}\n')
    return {"root": root, "corpus": corpus, "index": root / "index", "qa": qa}


def _copy_index(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_index_missing_corpus(monkeypatch, capsys, tmp_path):
    code, err = igsearch(
        monkeypatch, capsys, "index", "--corpus", tmp_path / "nope.jsonl", "--out", tmp_path / "i"
    )
    one_line(code, err, "nope.jsonl", "corpus file not found", "give a jsonl")
    assert not (tmp_path / "i").exists()


def test_index_empty_corpus_keeps_the_existing_index(monkeypatch, capsys, files, tmp_path):
    out = _copy_index(files["index"], tmp_path / "index")
    (tmp_path / "empty.jsonl").write_text("\n")
    code, err = igsearch(
        monkeypatch, capsys, "index", "--corpus", tmp_path / "empty.jsonl", "--out", out
    )
    one_line(code, err, "empty.jsonl", "no passages", "give a jsonl")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files["index"].iterdir())


def test_index_out_is_a_file(monkeypatch, capsys, files, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    code, err = igsearch(
        monkeypatch, capsys, "index", "--corpus", files["corpus"], "--out", tmp_path / "afile"
    )
    one_line(code, err, "afile", "a file is in the way")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_search_corrupt_manifest(monkeypatch, capsys, files, tmp_path):
    index = _copy_index(files["index"], tmp_path / "index")
    (index / "manifest.json").write_text('{"kind": ')
    code, err = igsearch(monkeypatch, capsys, "search", "hello", "--index", index)
    one_line(code, err, "manifest.json", "not valid JSON", "rebuild the index with `igsearch index")


@pytest.mark.parametrize("name", ["offsets.npy", "vocab.index.json"])
def test_search_index_missing_a_file(monkeypatch, capsys, files, tmp_path, name):
    index = _copy_index(files["index"], tmp_path / "index")
    (index / name).unlink()
    code, err = igsearch(monkeypatch, capsys, "search", "hello", "--index", index)
    one_line(code, err, f"{name} is missing", "rebuild it with `igsearch index --corpus")


def test_search_topk_zero(monkeypatch, capsys, files):
    code, err = igsearch(monkeypatch, capsys, "search", "hello", "--index", files["index"], "-k", 0)
    assert code == 2 and "--topk must be at least 1, got 0" in err and "Traceback" not in err


def test_serve_port_in_use(monkeypatch, capsys, files):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = igsearch(
            monkeypatch, capsys, "serve", "--index", files["index"], "--port", port
        )
    one_line(code, err, f"--port {port}", "pick another --port")


def test_serve_bad_limit(monkeypatch, capsys, files):
    args = ("serve", "--index", files["index"], "--max-query-chars", 0)
    code, err = igsearch(monkeypatch, capsys, *args)
    one_line(code, err, "max_query_chars must be at least 1, got 0", "--max-query-chars")


def test_ask_missing_local_model(monkeypatch, capsys, files):
    args = ("ask", "who?", "--model", "./no-such-model", "--index", files["index"])
    code, err = igsearch(monkeypatch, capsys, *args)
    one_line(code, err, "./no-such-model", "no such model folder", "check the path")


def test_ask_hub_name_offline(monkeypatch, capsys, files):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ("ask", "who?", "--model", "Qwen/Qwen2.5-3B", "--index", files["index"])
    code, err = igsearch(monkeypatch, capsys, *args)
    one_line(code, err, "Qwen/Qwen2.5-3B", "offline mode (HF_HUB_OFFLINE=1)", "local model folder")


def test_ask_folder_without_a_model(monkeypatch, capsys, files):
    args = ("ask", "who?", "--model", files["root"], "--index", files["index"])
    code, err = igsearch(monkeypatch, capsys, *args)
    one_line(code, err, "not a model folder (no config.json)", "save_pretrained")


def test_eval_checks_the_model_before_the_index(monkeypatch, capsys, files, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ("eval", "--model", "Qwen/Qwen2.5-3B", "--index", tmp_path / "no-index")
    code, err = igsearch(monkeypatch, capsys, *args, "--data", f"x={files['qa']}")
    one_line(code, err, "Qwen/Qwen2.5-3B", "offline mode")


def test_train_config_not_found(monkeypatch, capsys, tmp_path):
    code, err = igsearch(monkeypatch, capsys, "train", "--config", tmp_path / "nope.yaml")
    one_line(code, err, "nope.yaml", "config file not found", "configs/")


def test_train_config_invalid_yaml(monkeypatch, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    code, err = igsearch(monkeypatch, capsys, "train", "--config", tmp_path / "bad.yaml")
    one_line(code, err, "bad.yaml", "not valid YAML", "line 2", "fix the file")


def test_train_config_missing_keys(monkeypatch, capsys, tmp_path):
    (tmp_path / "partial.yaml").write_text("model: runs/sft\n")
    code, err = igsearch(monkeypatch, capsys, "train", "--config", tmp_path / "partial.yaml")
    one_line(code, err, "partial.yaml", "missing required keys data, retriever", "add them")


def test_train_config_bad_value(monkeypatch, capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("model: m\ndata: {train: [a]}\nretriever: {index: i}\n")
    code, err = igsearch(
        monkeypatch, capsys, "train", "--config", tmp_path / "c.yaml", "train.steps=0"
    )
    one_line(code, err, "train.steps=0", "must be >= 1")


@pytest.mark.parametrize("model", ["./missing-policy", "Qwen/Qwen2.5-3B"])
def test_train_model_checked_before_transformers(monkeypatch, capsys, files, tmp_path, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"model": model, "data": {"train": [str(files["qa"])]}}
    cfg["retriever"] = {"index": str(files["index"])}
    cfg["train"] = {"output_dir": str(tmp_path / "run")}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    code, err = igsearch(monkeypatch, capsys, "train", "--config", tmp_path / "c.yaml")
    one_line(code, err, model)
    assert "couldn't connect" not in err and not (tmp_path / "run").exists()


def test_world_out_is_a_file(monkeypatch, capsys, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    code, err = igsearch(
        monkeypatch, capsys, "world", "--out", tmp_path / "afile", "--size", "tiny"
    )
    one_line(code, err, "afile", "a file is in the way")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_sft_missing_world(monkeypatch, capsys, tmp_path):
    args = ("sft", "--world", tmp_path / "no-world", "--out", tmp_path / "out")
    code, err = igsearch(monkeypatch, capsys, *args)
    one_line(code, err, "no-world", "igsearch world")
