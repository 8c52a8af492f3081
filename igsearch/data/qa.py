"""QA data: FlashRAG jsonl (`id`, `question`, `golden_answers`, `metadata`) and Search-R1 parquet.

Search-R1's parquet rows carry the question inside a chat `prompt` (with its own instructions) and
the gold answers at `reward_model.ground_truth.target`. Reading them recovers the bare question
from `extra_info` / a `question` column when present, else from the prompt's last
"Question: ..." line, so igsearch can apply its own templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igsearch.data.jsonl import iter_jsonl, require, write_jsonl
from igsearch.errors import FormatError


@dataclass(frozen=True)
class QAExample:
    """One question with its gold answers (aliases)."""

    id: str
    """Example id, unique within its file."""
    question: str
    """The question text, without any template."""
    golden_answers: tuple[str, ...]
    """Accepted answers; exact match against any of them counts."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form extras (question type, hops, supporting passage ids, source)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "golden_answers": list(self.golden_answers),
            "metadata": self.metadata,
        }


def _example_from_obj(
    obj: dict[str, Any], path: Path | str, lineno: int, fallback_id: str
) -> QAExample:
    question = require(obj, "question", str, path, lineno)
    if not question.strip():
        raise FormatError(path, lineno, '"question" is empty')
    answers = require(obj, "golden_answers", (list, str), path, lineno)
    if isinstance(answers, str):
        answers = [answers]
    if not answers or not all(isinstance(a, str) for a in answers):
        raise FormatError(path, lineno, '"golden_answers" must be a non-empty list of strings')
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FormatError(
            path, lineno, f'"metadata" must be an object, got {type(metadata).__name__}'
        )
    qid = obj.get("id", fallback_id)
    return QAExample(str(qid), question, tuple(answers), metadata)


def read_qa_jsonl(path: str | Path) -> list[QAExample]:
    """Read a FlashRAG QA jsonl file. A missing `id` becomes "<file stem>-<line>"."""
    path = Path(path)
    return [
        _example_from_obj(obj, path, lineno, f"{path.stem}-{lineno}")
        for lineno, obj in iter_jsonl(path)
    ]


def write_qa_jsonl(path: str | Path, examples: Iterable[QAExample]) -> int:
    """Write examples as FlashRAG jsonl; returns the number written."""
    return write_jsonl(path, (ex.to_json() for ex in examples))


def _question_from_prompt(prompt: Any) -> str | None:
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if isinstance(prompt, list) and prompt:
        prompt = prompt[-1].get("content", "") if isinstance(prompt[-1], dict) else prompt[-1]
    if not isinstance(prompt, str) or "Question:" not in prompt:
        return None
    return prompt.rsplit("Question:", 1)[1].strip() or None


def _as_list(value: Any) -> list[str] | None:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def iter_search_r1_parquet(path: str | Path) -> Iterator[QAExample]:
    """Stream QA examples from a Search-R1 parquet file (row numbers count from 1 in errors)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rowno = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            rowno += 1
            yield _example_from_parquet_row(row, path, rowno)


def _example_from_parquet_row(row: dict[str, Any], path: Path, rowno: int) -> QAExample:
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict):
        raise FormatError(
            path, rowno, 'missing "reward_model" (expected reward_model.ground_truth.target)'
        )
    ground_truth = reward_model.get("ground_truth")
    target = _as_list(ground_truth.get("target")) if isinstance(ground_truth, dict) else None
    if not target:
        raise FormatError(
            path, rowno, 'missing "reward_model.ground_truth.target" (a list of answers)'
        )
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    question = row.get("question") or extra.get("question")
    if not isinstance(question, str) or not question.strip():
        if "prompt" not in row:
            raise FormatError(path, rowno, 'missing "prompt"')
        question = _question_from_prompt(row["prompt"])
    if not question:
        raise FormatError(
            path,
            rowno,
            'cannot find the question: no "question" column and no "Question:" in "prompt"',
        )
    qid = row.get("id") or extra.get("index")
    metadata = {
        "data_source": row.get("data_source"),
        **({"split": extra["split"]} if "split" in extra else {}),
    }
    return QAExample(
        str(qid if qid is not None else f"{path.stem}-{rowno}"),
        question.strip(),
        tuple(target),
        metadata,
    )


def read_qa(path: str | Path) -> list[QAExample]:
    """Read QA examples from `.jsonl` (FlashRAG) or `.parquet` (Search-R1), chosen by suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return list(iter_search_r1_parquet(path))
    if path.suffix in {".jsonl", ".json"}:
        return read_qa_jsonl(path)
    raise FormatError(
        path, None, "unknown QA file type: use .jsonl (FlashRAG) or .parquet (Search-R1)"
    )
