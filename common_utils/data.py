"""Course datasets: locate, validate, load, format as chat, and show which tokens carry the loss.

Datasets are small JSONL files built by `datasets/build_datasets.py`. Every load validates each row,
so a hand-edited file fails with `file:line: reason` instead of a confusing error deep in training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASETS_ENV = "COURSE_DATASETS_DIR"
LOSS_IGNORE_INDEX = -100


class DatasetFormatError(ValueError):
    """A JSONL file has malformed rows; the message lists them as `file:line: reason`."""


@dataclass(frozen=True)
class Schema:
    """Required fields with their types, plus an optional row-level check returning a reason or None."""

    fields: dict[str, type]
    check: Callable[[dict[str, Any]], str | None] | None = field(default=None)


def _check_extraction(row: dict[str, Any]) -> str | None:
    try:
        answer = json.loads(row["output"])
    except json.JSONDecodeError as error:
        return f"'output' is not valid JSON ({error.msg})"
    if not isinstance(answer, dict) or set(answer) != {"name", "age", "city"}:
        return "'output' must be a JSON object with exactly the keys name, age, city"
    if not isinstance(answer["age"], int):
        return "'output'.age must be an integer"
    return None


def _check_classification(row: dict[str, Any]) -> str | None:
    return None if row["label"] >= 0 else "'label' must be >= 0"


def _check_preference(row: dict[str, Any]) -> str | None:
    from .alignment import KINDS, judge

    if row["kind"] not in KINDS:
        return f"'kind' must be one of {', '.join(KINDS)}"
    if not judge(row["kind"], row["chosen"]):
        return "'chosen' does not pass the judge for its kind"
    if judge(row["kind"], row["rejected"]):
        return "'rejected' passes the judge for its kind: the pair prefers nothing"
    return None


DATASET_SCHEMAS: dict[str, Schema] = {
    "person_extraction": Schema({"id": str, "instruction": str, "input": str, "output": str}, _check_extraction),
    "topic_classification": Schema({"id": str, "text": str, "label": int, "label_text": str},
                                   _check_classification),
    "preference_format": Schema({"id": str, "kind": str, "system": str, "prompt": str, "chosen": str,
                                 "rejected": str}, _check_preference),
}


def datasets_dir() -> Path:
    """$COURSE_DATASETS_DIR, else the repository's `datasets/` folder (editable install)."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "datasets"


def _row_problem(row: Any, schema: Schema) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    for name, kind in schema.fields.items():
        if name not in row:
            return f"missing field {name!r}"
        value = row[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} should be {kind.__name__}, got {type(value).__name__}"
        if kind is str and not value.strip():
            return f"field {name!r} is empty"
    return schema.check(row) if schema.check else None


def validate_jsonl(path: str | Path, schema: Schema, max_errors: int = 10) -> list[dict[str, Any]]:
    """Parse and check every line; raise DatasetFormatError listing `file:line: reason` for bad rows."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Rebuild the course data: `python datasets/build_datasets.py`.")
    rows, errors = [], []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                errors.append(f"{path}:{line_number}: empty line")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                errors.append(f"{path}:{line_number}: invalid JSON ({error.msg} at column {error.colno})")
                continue
            problem = _row_problem(row, schema)
            if problem:
                errors.append(f"{path}:{line_number}: {problem}")
            else:
                rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:max_errors])
        more = f"\n  ... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise DatasetFormatError(f"{len(errors)} malformed row(s):\n  {shown}{more}\n"
                                 f"Fix the rows, or rebuild the course data: `python datasets/build_datasets.py`.")
    if not rows:
        raise DatasetFormatError(f"{path}: no rows")
    return rows


def load_course_dataset(name: str, split: str, limit: int | None = None):
    """A validated course dataset split as a `datasets.Dataset` (first `limit` rows if given)."""
    from datasets import Dataset

    if name not in DATASET_SCHEMAS:
        raise KeyError(f"Unknown course dataset {name!r}; known: {', '.join(DATASET_SCHEMAS)}")
    rows = validate_jsonl(datasets_dir() / name / f"{split}.jsonl", DATASET_SCHEMAS[name])
    return Dataset.from_list(rows[:limit] if limit is not None else rows)


def extraction_messages(row: dict[str, Any], with_answer: bool = False) -> list[dict[str, str]]:
    """Chat messages for one person_extraction row; the same template for training and evaluation.

    The instruction goes in the system turn: it replaces the chat template's default system prompt,
    which keeps examples short (~70 tokens), and that is most of what a CPU training step costs."""
    messages = [{"role": "system", "content": row["instruction"]}, {"role": "user", "content": row["input"]}]
    if with_answer:
        messages.append({"role": "assistant", "content": row["output"]})
    return messages


def to_prompt_completion(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion format: loss on the completion (answer + EOS) only."""
    messages = extraction_messages(row, with_answer=True)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def loss_token_table(input_ids, labels, tokenizer) -> list[tuple[str, bool]]:
    """(token text, carries loss) for one example, padding dropped: the classic masking sanity check."""
    table = []
    for token_id, label in zip(list(input_ids), list(labels)):
        token_id, label = int(token_id), int(label)
        if token_id == tokenizer.pad_token_id and label == LOSS_IGNORE_INDEX:
            continue
        table.append((tokenizer.decode([token_id]), label != LOSS_IGNORE_INDEX))
    return table
