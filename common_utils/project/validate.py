"""Check a project's data against its task_definition.yaml before training on it.

Each split file is parsed with the course's one JSONL validator (`common_utils.data.validate_jsonl`,
`file:line: reason` errors) under a schema built from the definition: id, input and output fields as
non-empty strings, the output one of the labels. On top of that: ids unique across all splits, every
label present in train, test texts that also occur in train (leakage), and the class-imbalance report
that says whether accuracy alone would mislead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common_utils.data import DatasetFormatError, Schema, validate_jsonl
from common_utils.project.definition import SPLITS, TaskDefinition

# Largest / smallest class count above which the report recommends macro-F1 over accuracy.
IMBALANCE_WARNING_RATIO = 3.0


@dataclass
class ValidationReport:
    """What `validate_project` found: errors block training, warnings are for a human to read."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> rows
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def imbalance_ratio(self, split: str = "train") -> float:
        """Largest class count / smallest (a label with no rows counts as 0: ratio inf)."""
        counts = list(self.counts.get(split, {}).values())
        return max(counts) / min(counts) if counts and min(counts) else float("inf")

    def imbalance_table(self, labels: tuple[str, ...]) -> str:
        """Rows per label and split, with each label's share of its split: the class-imbalance report."""
        splits = [s for s in SPLITS if s in self.counts]
        header = f"{'label':12s}" + "".join(f"{s:>16s}" for s in splits)
        lines = [header]
        for label in labels:
            cells = []
            for split in splits:
                n, total = self.counts[split].get(label, 0), sum(self.counts[split].values()) or 1
                cells.append(f"{n:>8d} ({n / total:5.1%})")
            lines.append(f"{label:12s}" + "".join(cells))
        lines.append("max/min" + " " * 5 + "".join(f"{self.imbalance_ratio(s):>16.1f}" for s in splits))
        return "\n".join(lines)

    def summary(self, labels: tuple[str, ...]) -> str:
        status = "OK" if self.ok else f"{len(self.errors)} error(s)"
        parts = [f"validation: {status}, {len(self.warnings)} warning(s)"]
        parts += [f"ERROR {e}" for e in self.errors] + [f"WARNING {w}" for w in self.warnings]
        if self.counts:
            parts.append(self.imbalance_table(labels))
        return "\n".join(parts)


def project_schema(definition: TaskDefinition) -> Schema:
    """The row schema a definition implies: id, input and output fields as strings, output a label."""

    def check(row: dict[str, Any]) -> str | None:
        answer = row[definition.output_field]
        if answer not in definition.labels:
            return (f"label {answer!r} is not in the definition's labels ({', '.join(definition.labels)}); "
                    f"fix the row or add the label to task_definition.yaml")
        return None

    return Schema({"id": str, definition.input_field: str, definition.output_field: str}, check)


def load_split(definition: TaskDefinition, split: str) -> list[dict[str, Any]]:
    """One split's rows, validated against the definition (raises DatasetFormatError with file:line)."""
    return validate_jsonl(definition.split_path(split), project_schema(definition), max_errors=20)


def validate_project(definition: TaskDefinition, splits: tuple[str, ...] = SPLITS) -> ValidationReport:
    """Check every split file of the project; never raises for bad data, it reports it."""
    report = ValidationReport()
    schema = project_schema(definition)
    seen_ids: dict[str, str] = {}  # id -> "file:line" of its first occurrence
    for split in splits:
        path = definition.split_path(split)
        if not path.exists():
            report.errors.append(f"{path}: missing split file; every project needs {', '.join(SPLITS)}")
            continue
        try:
            rows = validate_jsonl(path, schema, max_errors=1000)
        except DatasetFormatError as error:
            report.errors.extend(line.strip() for line in str(error).splitlines()
                                 if line.startswith("  ") and ":" in line and not line.strip().startswith("..."))
            continue
        # a file without format errors has one row per line, so row i is line i + 1
        for line, row in enumerate(rows, start=1):
            where = f"{path}:{line}"
            if row["id"] in seen_ids:
                report.errors.append(f"{where}: duplicate id {row['id']!r} (first at {seen_ids[row['id']]})")
            else:
                seen_ids[row["id"]] = where
        report.rows[split] = rows
        counts = Counter(row[definition.output_field] for row in rows)
        report.counts[split] = {label: counts.get(label, 0) for label in definition.labels}
    _check_classes(definition, report)
    _check_leakage(definition, report)
    return report


def _check_classes(definition: TaskDefinition, report: ValidationReport) -> None:
    for split, counts in report.counts.items():
        missing = [label for label, n in counts.items() if n == 0]
        if missing and split == "train":
            report.errors.append(f"{definition.split_path(split)}: no training rows for {missing}; the model "
                                 f"cannot learn a label it never sees (add rows or drop the label)")
        elif missing:
            report.warnings.append(f"{definition.split_path(split)}: no rows for {missing}; their F1 is undefined "
                                   f"there (scored 0), which lowers macro-F1")
    if "train" in report.counts and report.imbalance_ratio("train") > IMBALANCE_WARNING_RATIO:
        report.warnings.append(f"class imbalance: largest/smallest train class = {report.imbalance_ratio('train'):.1f} "
                               f"(> {IMBALANCE_WARNING_RATIO:.0f}); accuracy hides the small classes, judge by macro-F1")


def _check_leakage(definition: TaskDefinition, report: ValidationReport) -> None:
    train_texts = {row[definition.input_field].strip().lower() for row in report.rows.get("train", [])}
    for split in ("valid", "test"):
        for line, row in enumerate(report.rows.get(split, []), start=1):
            if row[definition.input_field].strip().lower() in train_texts:
                report.warnings.append(f"{definition.split_path(split)}:{line}: the same text is in train "
                                       f"(leakage: the score would overstate generalisation)")
