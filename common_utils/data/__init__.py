"""Course datasets: a registry of schemas, validation, loading, and "show me the loss tokens".

Datasets are small JSONL files built by `datasets/build_datasets.py`. Every load validates each row,
so a hand-edited file fails with `file:line: reason` instead of a confusing error deep in training.

This room imports no task module: each task (common_utils.tasks.*) registers the schema of its
dataset with `register_dataset`, so the data room stays at the bottom of the dependency graph.
`load_course_dataset` imports `common_utils.tasks` on first use (by name, at run time) so that a
notebook never has to remember which task module registers which dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASETS_ENV = "COURSE_DATASETS_DIR"
# Label of a token that carries no loss (PyTorch cross_entropy's default ignore_index).
IGNORE_INDEX = -100


class DatasetFormatError(ValueError):
    """A JSONL file has malformed rows; the message lists them as `file:line: reason`."""


@dataclass(frozen=True)
class Schema:
    """Required fields with their types, plus an optional row-level check returning a reason or None."""

    fields: dict[str, type]
    check: Callable[[dict[str, Any]], str | None] | None = field(default=None)


DATASET_SCHEMAS: dict[str, Schema] = {}


def register_dataset(name: str, schema: Schema) -> Schema:
    """Declare the schema of a course dataset (called by the task module that owns it)."""
    DATASET_SCHEMAS[name] = schema
    return schema


def dataset_schemas() -> dict[str, Schema]:
    """Every course dataset's schema (name -> Schema); the task modules register theirs on import."""
    import importlib

    importlib.import_module("common_utils.tasks")
    return DATASET_SCHEMAS


def datasets_dir() -> Path:
    """$COURSE_DATASETS_DIR, else the repository's `datasets/` folder (editable install)."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "datasets"


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

    schemas = dataset_schemas()
    if name not in schemas:
        raise KeyError(f"Unknown course dataset {name!r}; known: {', '.join(schemas)}")
    rows = validate_jsonl(datasets_dir() / name / f"{split}.jsonl", schemas[name])
    return Dataset.from_list(rows[:limit] if limit is not None else rows)


def loss_token_table(input_ids, labels, tokenizer) -> list[tuple[str, bool]]:
    """(token text, carries loss) for one example, padding dropped: the classic masking sanity check."""
    table = []
    for token_id, label in zip(list(input_ids), list(labels)):
        token_id, label = int(token_id), int(label)
        if token_id == tokenizer.pad_token_id and label == IGNORE_INDEX:
            continue
        table.append((tokenizer.decode([token_id]), label != IGNORE_INDEX))
    return table
