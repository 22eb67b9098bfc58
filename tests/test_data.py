from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from common_utils import extraction_messages, load_course_dataset, loss_token_table
from common_utils.data import IGNORE_INDEX, DatasetFormatError, dataset_schemas, datasets_dir, validate_jsonl
from common_utils.tasks.extraction import to_prompt_completion

import pytest

EXTRACTION = dataset_schemas()["person_extraction"]
GOOD_ROW = {
    "id": "t-0001",
    "instruction": "Extract the person's name, age and city from the text. Reply with JSON only.",
    "input": "Alice Silva is 31 years old and lives in Lisbon.",
    "output": json.dumps({"name": "Alice Silva", "age": 31, "city": "Lisbon"}),
}
SIZES = {
    "person_extraction": {"train": 400, "valid": 40, "test": 60},
    "topic_classification": {"train": 320, "valid": 80, "test": 160},
}


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rows(name: str, split: str) -> list[dict]:
    return validate_jsonl(datasets_dir() / name / f"{split}.jsonl", dataset_schemas()[name])


def test_validate_jsonl_accepts_good_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "good.jsonl", [json.dumps(GOOD_ROW), json.dumps({**GOOD_ROW, "id": "t-0002"})])
    assert [row["id"] for row in validate_jsonl(path, EXTRACTION)] == ["t-0001", "t-0002"]


def test_validate_jsonl_reports_every_bad_line(tmp_path: Path) -> None:
    missing_input = {k: v for k, v in GOOD_ROW.items() if k != "input"}
    lines = [
        json.dumps(GOOD_ROW),                                                 # 1 ok
        '{"id": "t-2", "instruction": ',                                      # 2 bad JSON
        json.dumps(missing_input),                                            # 3 missing field
        json.dumps({**GOOD_ROW, "id": 5}),                                    # 4 wrong type
        "",                                                                   # 5 empty line
        json.dumps({**GOOD_ROW, "output": "name: Alice"}),                    # 6 output is not JSON
        json.dumps({**GOOD_ROW, "output": json.dumps({"name": "Alice"})}),    # 7 wrong output keys
        json.dumps(GOOD_ROW),                                                 # 8 ok
    ]
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetFormatError) as error:
        validate_jsonl(path, EXTRACTION)
    message = str(error.value)
    reported = {}  # line number -> reason, from the `file:LINE: reason` lines of the message
    for entry in message.splitlines():
        location, _, reason = entry.strip().partition(": ")
        if location.startswith(f"{path}:"):
            reported[int(location.rsplit(":", 1)[1])] = reason
    expected = {
        2: "invalid JSON",
        3: "missing field 'input'",
        4: "field 'id' should be str, got int",
        5: "empty line",
        6: "'output' is not valid JSON",
        7: "exactly the keys name, age, city",
    }
    assert sorted(reported) == sorted(expected), message
    for line, reason in expected.items():
        assert reason in reported[line], f"line {line}: expected {reason!r}, got {reported[line]!r}"
    assert "6 malformed row(s)" in message


def test_validate_jsonl_missing_file_says_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_datasets.py"):
        validate_jsonl(tmp_path / "nope.jsonl", EXTRACTION)


@pytest.mark.parametrize("name,split,size", [(n, s, k) for n, sizes in SIZES.items() for s, k in sizes.items()])
def test_load_course_dataset_sizes(name: str, split: str, size: int) -> None:
    dataset = load_course_dataset(name, split)
    assert len(dataset) == size
    assert set(dataset.column_names) == set(dataset_schemas()[name].fields)


def test_load_course_dataset_limit_and_unknown_name() -> None:
    assert len(load_course_dataset("person_extraction", "train", limit=5)) == 5
    with pytest.raises(KeyError, match="person_extraction"):
        load_course_dataset("no_such_dataset", "train")


def test_extraction_people_do_not_leak_from_train() -> None:
    train_rows = _rows("person_extraction", "train")
    train_names = {json.loads(row["output"])["name"] for row in train_rows}
    train_text = "\n".join(row["input"] for row in train_rows)
    for split in ["valid", "test"]:
        names = {json.loads(row["output"])["name"] for row in _rows("person_extraction", split)}
        assert not names & train_names, f"{split} people also in train: {sorted(names & train_names)[:5]}"
        leaked = [name for name in names if name in train_text]
        assert not leaked, f"{split} names occur in train inputs: {leaked[:5]}"


def test_topic_sentences_disjoint_and_classes_balanced() -> None:
    splits = {split: _rows("topic_classification", split) for split in SIZES["topic_classification"]}
    texts = {split: {row["text"] for row in rows} for split, rows in splits.items()}
    assert not texts["train"] & texts["valid"]
    assert not texts["train"] & texts["test"]
    assert not texts["valid"] & texts["test"]
    label_names: dict[int, set[str]] = {}
    for split, rows in splits.items():
        counts = Counter(row["label"] for row in rows)
        assert len(set(counts.values())) == 1, f"{split} classes unbalanced: {dict(counts)}"
        for row in rows:
            label_names.setdefault(row["label"], set()).add(row["label_text"])
    assert all(len(names) == 1 for names in label_names.values()), f"label ids map to several names: {label_names}"
    assert sorted(label_names) == list(range(len(label_names)))


def test_committed_datasets_are_reproducible(repo_root: Path) -> None:
    result = subprocess.run([sys.executable, "datasets/build_datasets.py", "--check"], cwd=repo_root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_extraction_messages_and_prompt_completion() -> None:
    prompt_only = extraction_messages(GOOD_ROW)
    assert [m["role"] for m in prompt_only] == ["system", "user"]
    assert prompt_only[0]["content"] == GOOD_ROW["instruction"]
    assert prompt_only[1]["content"] == GOOD_ROW["input"]
    assert [m["role"] for m in extraction_messages(GOOD_ROW, with_answer=True)] == ["system", "user", "assistant"]

    example = to_prompt_completion(GOOD_ROW)
    assert example["prompt"] == prompt_only
    assert example["completion"] == [{"role": "assistant", "content": GOOD_ROW["output"]}]


class _FakeTokenizer:
    pad_token_id = 0
    vocabulary = {0: "<pad>", 5: "Hi", 6: " there", 7: "!"}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocabulary[i] for i in ids)


def test_loss_token_table_drops_padding() -> None:
    ignore = IGNORE_INDEX
    table = loss_token_table([5, 6, 7, 0, 0], [ignore, 6, 7, ignore, ignore], _FakeTokenizer())
    assert table == [("Hi", False), (" there", True), ("!", True)]


def test_loss_token_table_keeps_a_pad_token_that_carries_loss() -> None:
    """When pad doubles as a real token (e.g. pad == EOS), a pad id with a label is content, not padding."""
    table = loss_token_table([5, 0, 0], [IGNORE_INDEX, 0, IGNORE_INDEX], _FakeTokenizer())
    assert table == [("Hi", False), ("<pad>", True)]


@pytest.mark.slow
def test_loss_token_table_with_the_real_tokenizer(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    prompt = tokenizer.apply_chat_template(extraction_messages(GOOD_ROW), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(GOOD_ROW["output"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    padding = [tokenizer.pad_token_id] * 4
    input_ids = prompt_ids + answer_ids + padding
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * len(padding)

    table = loss_token_table(input_ids, labels, tokenizer)
    assert len(table) == len(prompt_ids) + len(answer_ids)
    assert "".join(text for text, carries_loss in table if carries_loss) == GOOD_ROW["output"] + tokenizer.eos_token
    assert not any(carries_loss for _, carries_loss in table[:len(prompt_ids)])
