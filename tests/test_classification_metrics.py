"""common_utils.evaluation.classification against scikit-learn on random and hand-checked cases."""

from __future__ import annotations

import random

from common_utils.evaluation.classification import (
    accuracy,
    classification_summary,
    confusion_matrix,
    macro_f1,
    per_class_scores,
)

import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
LABELS = ["a", "b", "c"]


def test_hand_computed_example() -> None:
    refs = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "<invalid>", "a"]
    scores = per_class_scores(refs, preds, LABELS)
    assert scores["a"] == {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    assert scores["b"]["precision"] == 0.5 and scores["b"]["recall"] == 0.5
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert macro_f1(refs, preds, LABELS) == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert accuracy(refs, preds) == pytest.approx(3 / 6)
    assert confusion_matrix(refs, preds, LABELS + ["<invalid>"]) == [
        [2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("seed", range(20))
def test_equals_scikit_learn_on_random_predictions(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    refs = [rng.choice(LABELS) for _ in range(n)]
    preds = [rng.choice(LABELS + ["<invalid>"]) for _ in range(n)]
    ours = classification_summary(refs, preds, LABELS, extra_columns=["<invalid>"])
    theirs = sklearn_metrics.f1_score(refs, preds, labels=LABELS, average="macro", zero_division=0)
    assert ours["macro_f1"] == pytest.approx(theirs, abs=1e-12)
    assert ours["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds), abs=1e-12)
    order = LABELS + ["<invalid>"]
    assert ours["confusion"] == sklearn_metrics.confusion_matrix(refs, preds, labels=order).tolist()
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        refs, preds, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        row = ours["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]), abs=1e-12)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="references"):
        confusion_matrix(["a"], [], LABELS)
    with pytest.raises(ValueError, match="non-empty"):
        accuracy([], [])
