"""Classification metrics written out: confusion matrix, per-class precision/recall/F1, macro-F1.

Small on purpose so a student can read it (Lab-4.3 prints it and asserts it equals scikit-learn's
`confusion_matrix` and `f1_score(average="macro")`). Conventions, the same as scikit-learn's with
`labels=` given and `zero_division=0`:
  * classes are the task's labels; a prediction outside them (e.g. "<invalid>") is a wrong answer for
    its true class but never a class of its own, so it cannot add a zero to the macro average;
  * a class that is never predicted has precision 0; a class absent from the references has recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def confusion_matrix(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """matrix[i][j] = rows whose reference is labels[i] and whose prediction is labels[j]. Pairs with a
    value outside `labels` are not counted (pass labels + ["<invalid>"] to see invalid answers)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for reference, prediction in zip(references, predictions):
        if reference in index and prediction in index:
            matrix[index[reference]][index[prediction]] += 1
    return matrix


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def per_class_scores(references: Sequence[str], predictions: Sequence[str],
                     labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label: precision = TP / predicted as it, recall = TP / truly it, F1 = their harmonic mean,
    support = truly it. Predictions outside `labels` count as misses (false negatives) only."""
    scores = {}
    for label in labels:
        tp = sum(r == label and p == label for r, p in zip(references, predictions))
        predicted = sum(p == label for p in predictions)
        support = sum(r == label for r in references)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        f1 = _ratio(2 * tp, predicted + support)  # = 2PR / (P + R), and 0 when both are 0
        scores[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return scores


def macro_f1(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of the per-class F1 over `labels`: every class counts the same, however rare."""
    scores = per_class_scores(references, predictions, labels)
    return sum(s["f1"] for s in scores.values()) / len(labels)


def accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Share of rows whose prediction equals the reference."""
    if len(references) != len(predictions) or not references:
        raise ValueError(f"need equal, non-empty lists; got {len(references)} and {len(predictions)}")
    return sum(r == p for r, p in zip(references, predictions)) / len(references)


def classification_summary(references: Sequence[str], predictions: Sequence[str], labels: Sequence[str],
                           extra_columns: Sequence[str] = ()) -> dict[str, Any]:
    """Everything a report needs: accuracy, macro-F1, per-class scores, and the confusion matrix over
    labels + extra_columns (e.g. ["<invalid>"]) with its row/column order."""
    order = list(labels) + [c for c in extra_columns if c not in labels]
    return {"n": len(references), "accuracy": accuracy(references, predictions),
            "macro_f1": macro_f1(references, predictions, labels),
            "per_class": per_class_scores(references, predictions, labels),
            "confusion_labels": order, "confusion": confusion_matrix(references, predictions, order)}
