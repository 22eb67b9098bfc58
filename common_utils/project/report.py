"""The evaluation report of a project: base vs fine-tuned metrics, error samples, pass/fail.

`evaluation_report` turns predictions into the report dict; `write_report` saves it as YAML
atomically; `plot_confusion_matrix` draws a confusion matrix in the course's chart style.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common_utils.project.definition import TaskDefinition


def error_samples(rows: list[dict[str, Any]], replies: list[str], predictions: list[str],
                  definition: TaskDefinition, limit: int = 8) -> list[dict[str, str]]:
    """The first `limit` wrong answers: id, text, reference, prediction and the raw reply."""
    wrong = [{"id": row["id"], "text": row[definition.input_field], "reference": row[definition.output_field],
              "prediction": prediction, "reply": reply}
             for row, reply, prediction in zip(rows, replies, predictions)
             if prediction != row[definition.output_field]]
    return wrong[:limit]


def evaluation_report(definition: TaskDefinition, summaries: dict[str, dict[str, Any]], candidate: str,
                      errors: list[dict[str, str]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report: per model its metrics; the candidate's metric against the definition's threshold
    decides `passed`. `summaries` maps model name -> classification_summary(...)."""
    value = summaries[candidate][definition.metric]
    return {
        "task": definition.name, "metric": definition.metric, "threshold": definition.threshold,
        "candidate": candidate, "value": float(value), "passed": bool(value >= definition.threshold),
        "labels": list(definition.labels),
        "models": {name: _plain(summary) for name, summary in summaries.items()},
        "error_samples": errors, **(extra or {}),
    }


def _plain(value: Any) -> Any:
    """Nested dicts/lists of Python scalars only, so yaml.safe_dump writes them (no numpy types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Save the report as YAML, atomically (a reader never sees half a report)."""
    from common_utils.core.artifacts import atomic_file

    import yaml

    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(report), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by `write_report`."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], title: str = "Confusion matrix"):
    """Rows = reference, columns = prediction, each cell's count written on it. Returns the figure."""
    from common_utils.core.plots import apply_course_style

    import matplotlib.pyplot as plt

    apply_course_style()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.grid(False)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set(xlabel="prediction", ylabel="reference", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def predict_labels(model, tokenizer, definition: TaskDefinition, rows: list[dict[str, Any]],
                   max_new_tokens: int) -> tuple[list[str], list[str]]:
    """(raw greedy replies, parsed labels) for rows, with the chat format the model was trained on;
    batched and left-padded (the course's generate_batch). A reply naming no label parses to INVALID."""
    from common_utils.core.generation import generate_batch
    from common_utils.tasks.tickets import label_messages, parse_label

    conversations = [label_messages(row[definition.input_field], definition.instruction_text) for row in rows]
    replies = generate_batch(model, tokenizer, conversations, max_new_tokens, show_progress=False)
    return replies, [parse_label(reply, definition.labels) for reply in replies]
