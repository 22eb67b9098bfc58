"""The course multiple-choice benchmark (Lab-4.1): schema, splits, prompts and letter scoring."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from common_utils.data import DatasetFormatError, dataset_schemas, datasets_dir, validate_jsonl
from common_utils.tasks.multiple_choice import (
    LETTERS,
    MC_DATASET,
    choices,
    cloze_prompt,
    gold_index,
    letter_accuracy,
    lettered_messages,
    parse_letter,
)

import pytest

SCHEMA = dataset_schemas()[MC_DATASET]
ROW = {"id": "t-1", "subject": "capitals_en", "language": "en", "question": "What is the capital of France?",
       "A": "Rome", "B": "Paris", "C": "Oslo", "D": "Lima", "answer": "B"}


def _rows(split: str) -> list[dict]:
    return validate_jsonl(datasets_dir() / MC_DATASET / f"{split}.jsonl", SCHEMA)


def test_splits_sizes_balance_and_disjoint_questions() -> None:
    dev, test, leak = _rows("dev"), _rows("test"), _rows("leak")
    assert len(dev) == 40 and len(test) == 120 and len(leak) > 0
    assert set(Counter(r["subject"] for r in test).values()) == {15}
    assert set(Counter(r["subject"] for r in dev).values()) == {5}
    assert {r["language"] for r in test} == {"en", "zh-TW"}
    assert not {r["question"] for r in dev} & {r["question"] for r in test}, "a few-shot exemplar is a test item"
    # interleaved: the first 8 test rows cover all 8 subjects, so a smoke prefix is balanced
    assert len({r["subject"] for r in test[:8]}) == 8
    # answers are spread over the letters (no letter bias a model could exploit)
    assert min(Counter(r["answer"] for r in test).values()) >= 15


def test_leak_corpus_plants_test_items_and_dev_copies() -> None:
    test_ids = {r["id"] for r in _rows("test")}
    leak = _rows("leak")
    planted = [d for d in leak if d["kind"] == "leak"]
    assert planted and all(d["source_id"] in test_ids for d in planted)
    assert all(d["source_id"].startswith("dev-") for d in leak if d["kind"] == "dev_copy")
    assert all(d["source_id"] == "none" for d in leak if d["kind"] == "clean")


def test_schema_rejects_bad_rows_with_line_numbers(tmp_path: Path) -> None:
    bad = [json.dumps({**ROW, "answer": "E"}), json.dumps({**ROW, "C": "Rome"}), json.dumps({**ROW, "language": "fr"}),
           json.dumps({k: v for k, v in ROW.items() if k != "D"}),
           json.dumps({"id": "leak-1", "subject": "corpus", "language": "en", "text": "x", "kind": "?", "source_id": "none"})]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + "\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError) as error:
        validate_jsonl(path, SCHEMA)
    message = str(error.value)
    for line, reason in [(2, "'answer' must be one of"), (3, "the four options must differ"), (4, "'language' must be"),
                         (5, "missing or empty field 'D'"), (6, "'kind' must be one of")]:
        assert f"bad.jsonl:{line}: {reason}" in message


def test_cloze_prompt_matches_lm_eval_layout() -> None:
    shot = {**ROW, "question": "What is the capital of Peru?", "A": "Lima", "answer": "A"}
    assert cloze_prompt(ROW) == "Question: What is the capital of France?\nAnswer:"
    assert cloze_prompt(ROW, [shot]) == ("Question: What is the capital of Peru?\nAnswer: Lima\n\n"
                                         "Question: What is the capital of France?\nAnswer:")
    assert choices(ROW) == ["Rome", "Paris", "Oslo", "Lima"] and gold_index(ROW) == 1


def test_parse_letter_and_accuracy() -> None:
    assert [parse_letter(r) for r in ["B", "b.", "Answer: C", "(D) Lima", "Paris", "", "A lot"]] == \
        ["B", "B", "C", "D", None, None, "A"]
    assert letter_accuracy(["B", "Paris"], [ROW, ROW]) == 0.5
    with pytest.raises(ValueError):
        letter_accuracy([], [])
    messages = lettered_messages(ROW)
    assert messages[0]["role"] == "system" and all(f"{x}. " in messages[1]["content"] for x in LETTERS)
