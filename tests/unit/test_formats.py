"""Data formats: FlashRAG QA jsonl, Search-R1 parquet, corpus jsonl and the corpus store."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from igsearch.data.corpus import CorpusStore, iter_corpus, scan_corpus, write_corpus
from igsearch.data.qa import (
    QAExample,
    iter_search_r1_parquet,
    read_qa,
    read_qa_jsonl,
    write_qa_jsonl,
)
from igsearch.errors import FormatError
from igsearch.retrieval.base import Doc, split_contents


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- FlashRAG QA jsonl


def test_qa_jsonl_round_trip(tmp_path: Path) -> None:
    examples = [
        QAExample("q1", "Who wrote X?", ("Ann Lee", "A. Lee"), {"hops": 1, "supporting": ["p3"]}),
        QAExample("q2", "Où est Ÿ?", ("Ÿville",), {}),
    ]
    path = tmp_path / "qa.jsonl"
    assert write_qa_jsonl(path, examples) == 2
    assert read_qa_jsonl(path) == examples
    assert read_qa(path) == examples
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == {
        "id": "q1",
        "question": "Who wrote X?",
        "golden_answers": ["Ann Lee", "A. Lee"],
        "metadata": {"hops": 1, "supporting": ["p3"]},
    }


def test_qa_jsonl_defaults(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "dev.jsonl",
        [
            '{"question": "Q?", "golden_answers": "single"}',
            "",
            '{"id": 7, "question": "R?", "golden_answers": ["r"]}',
        ],
    )
    first, second = read_qa_jsonl(path)
    assert (first.id, first.golden_answers, first.metadata) == ("dev-1", ("single",), {})
    assert second.id == "7"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"question": "Q?", "golden_answers": ["a"]', "invalid JSON"),
        ('["Q?", ["a"]]', "expected a JSON object, got list"),
        ('{"golden_answers": ["a"]}', 'missing "question"'),
        ('{"question": "  ", "golden_answers": ["a"]}', '"question" is empty'),
        ('{"question": "Q?"}', 'missing "golden_answers"'),
        ('{"question": "Q?", "golden_answers": []}', '"golden_answers" must be a non-empty list'),
        ('{"question": "Q?", "golden_answers": [1]}', '"golden_answers" must be a non-empty list'),
        (
            '{"question": "Q?", "golden_answers": ["a"], "metadata": [1]}',
            '"metadata" must be an object',
        ),
    ],
)
def test_qa_jsonl_errors_name_file_line_and_problem(
    tmp_path: Path, line: str, problem: str
) -> None:
    good = '{"question": "Fine?", "golden_answers": ["yes"]}'
    path = _write_lines(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(FormatError) as info:
        read_qa_jsonl(path)
    err = info.value
    assert err.line == 3 and err.path == str(path)
    assert problem in err.problem
    assert f"{path} line 3: " in str(err)


def test_qa_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown QA file type"):
        read_qa(tmp_path / "qa.csv")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_qa(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- Search-R1 parquet


def _search_r1_row(i: int, question: str, targets: list[str]) -> dict:
    instructions = "Answer the given question. Reason inside <think> and </think>, search with <search> query </search>."
    return {
        "data_source": "nq",
        "prompt": [{"role": "user", "content": f"{instructions} Question: {question}\n"}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": targets}},
        "extra_info": {"split": "train", "index": i},
    }


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_search_r1_parquet(tmp_path: Path) -> None:
    path = _write_parquet(
        tmp_path / "train.parquet",
        [
            _search_r1_row(0, "Who wrote X?", ["a", "b"]),
            _search_r1_row(1, "When was Y built?", ["1901"]),
        ],
    )
    first, second = read_qa(path)
    assert first == QAExample(
        "0", "Who wrote X?", ("a", "b"), {"data_source": "nq", "split": "train"}
    )
    assert (second.id, second.question, second.golden_answers) == (
        "1",
        "When was Y built?",
        ("1901",),
    )
    assert list(iter_search_r1_parquet(path)) == [first, second]


def test_search_r1_parquet_prefers_question_column(tmp_path: Path) -> None:
    row = {**_search_r1_row(0, "ignored?", ["a"]), "question": "Bare question?"}
    (ex,) = read_qa(_write_parquet(tmp_path / "q.parquet", [row]))
    assert ex.question == "Bare question?"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.update(reward_model=None), 'missing "reward_model"'),
        (
            lambda r: r["reward_model"].update(ground_truth={"other": ["x"]}),
            "reward_model.ground_truth.target",
        ),
        (
            lambda r: r["reward_model"]["ground_truth"].update(target=[]),
            "reward_model.ground_truth.target",
        ),
        (
            lambda r: r.update(prompt=[{"role": "user", "content": "no marker here"}]),
            "cannot find the question",
        ),
    ],
)
def test_search_r1_parquet_errors(tmp_path: Path, change, problem: str) -> None:
    bad = _search_r1_row(1, "Broken?", ["b"])
    change(bad)
    path = _write_parquet(tmp_path / "bad.parquet", [_search_r1_row(0, "Fine?", ["a"]), bad])
    with pytest.raises(FormatError) as info:
        read_qa(path)
    assert info.value.line == 2 and problem in info.value.problem
    assert f"{path} line 2: " in str(info.value)


@pytest.mark.parametrize(
    ("column", "problem"),
    [("reward_model", 'missing "reward_model"'), ("prompt", 'missing "prompt"')],
)
def test_search_r1_parquet_missing_column(tmp_path: Path, column: str, problem: str) -> None:
    row = _search_r1_row(0, "Q?", ["a"])
    del row[column]
    path = _write_parquet(tmp_path / "bad.parquet", [row])
    with pytest.raises(FormatError, match=f"line 1: {problem}"):
        read_qa(path)


# ---------------------------------------------------------------- corpus jsonl


@pytest.mark.parametrize(
    ("contents", "title", "text"),
    [
        ("Aaron\nAaron is a prophet.", "Aaron", "Aaron is a prophet."),
        ('"Aaron"\nAaron is a prophet.', "Aaron", "Aaron is a prophet."),  # wiki-18 quotes titles
        ('"Title "with" quotes"\nbody\nmore', 'Title "with" quotes', "body\nmore"),
        ("no title line", "", "no title line"),
        ('"\ntext', '"', "text"),
    ],
)
def test_split_contents(contents: str, title: str, text: str) -> None:
    assert split_contents(contents) == (title, text)
    doc = Doc("1", contents)
    assert (doc.title, doc.text, doc.contents) == (title, text, contents)
    assert doc.to_json() == {"id": "1", "contents": contents, "title": title, "text": text}


def test_corpus_streaming_and_store(tmp_path: Path) -> None:
    docs = [Doc(str(i), f'"Entity {i}"\nEntity {i} is number {i}. ünïcode {i}') for i in range(25)]
    path = tmp_path / "corpus.jsonl"
    assert write_corpus(path, docs) == 25
    # blank lines anywhere are skipped, ids may be integers
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(
        "\n" + "".join(text[:10]) + "  \n" + "".join(text[10:]) + "\n", encoding="utf-8"
    )
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": 25, "contents": "Last\nlast one"}) + "\n")
    docs.append(Doc("25", "Last\nlast one"))

    assert list(iter_corpus(path)) == docs
    store = CorpusStore.build(path)
    try:
        assert len(store) == len(docs)
        assert [store[i] for i in range(len(store))] == docs
        assert store[-1] == docs[-1] and store[3:6] == docs[3:6]
        assert store.get_many([24, 0, 7]) == [docs[24], docs[0], docs[7]]
        assert [off for off, _ in scan_corpus(path)] == list(store.offsets)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "x"}', 'missing "contents"'),
        ('{"id": "x", "title": "T", "text": "t"}', 'found "title"/"text"'),
        ('{"contents": "T\\nt"}', 'missing "id"'),
        ('{"id": "x", "contents": 3}', '"contents" must be a string'),
        ('{"id": [1], "contents": "T\\nt"}', '"id" must be a string or integer'),
        ('{"id": "x", "contents": ', "invalid JSON"),
        ('"just a string"', "expected a JSON object"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = _write_lines(tmp_path / "corpus.jsonl", ['{"id": "a", "contents": "A\\na"}', "", line])
    with pytest.raises(FormatError) as info:
        list(iter_corpus(path))
    assert info.value.line == 3 and problem in info.value.problem
    assert f"{path} line 3: " in str(info.value)


def test_corpus_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        list(iter_corpus(tmp_path / "nope.jsonl"))
