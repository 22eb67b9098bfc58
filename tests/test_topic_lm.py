"""Lab-1.1's shared pieces: topic prompt, scoring, config builders, and the adapter rebuild helper."""

from __future__ import annotations

from pathlib import Path

from common_utils import lab_sizes
from common_utils.core.runtime import Sizes
from common_utils.tasks import topic as topic_lm

import pytest

LABELS = ["sports", "technology", "food", "travel"]


@pytest.fixture(scope="module")
def sizes(repo_root: Path) -> Sizes:
    """Lab-1.1's own smoke sizes (its lab.yaml), the ones its notebooks and the rebuild recipe read."""
    return lab_sizes(repo_root / "01-Core_Training_Techniques" / "02-Labs" / "Lab-1.1-PEFT_with_HuggingFace", "smoke")


def test_data_files_point_at_every_split() -> None:
    files = topic_lm.topic_data_files()
    assert set(files) == {"train", "valid", "test"}
    assert all(Path(path).exists() for path in files.values())


def test_missing_split_names_the_rebuild_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATASETS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="build_datasets.py"):
        topic_lm.topic_data_files()


def test_labels_ordered_by_id_and_gaps_rejected() -> None:
    assert topic_lm.topic_labels({"label": [2, 0, 1, 0], "label_text": ["c", "a", "b", "a"]}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="label ids"):
        topic_lm.topic_labels({"label": [0, 2], "label_text": ["a", "c"]})


def test_prompt_completion_puts_only_the_label_in_the_completion() -> None:
    row = {"text": "The striker scored twice.", "label_text": "sports"}
    example = topic_lm.topic_prompt_completion(row, LABELS)
    assert [m["role"] for m in example["prompt"]] == ["system", "user"]
    assert example["completion"] == [{"role": "assistant", "content": "sports"}]
    assert all(label in example["prompt"][0]["content"] for label in LABELS)
    assert topic_lm.topic_messages(row["text"], LABELS) == example["prompt"]


@pytest.mark.parametrize(("reply", "word"), [("Sports.", "sports"), ("  travel, surely", "travel"), ("", "")])
def test_first_word(reply: str, word: str) -> None:
    assert topic_lm.first_word(reply) == word


def test_accuracy_counts_first_words_and_rejects_mismatched_lists() -> None:
    assert topic_lm.topic_accuracy(["Sports", "food is it", "The topic is travel"], ["sports", "food", "travel"]) == 2 / 3
    with pytest.raises(ValueError):
        topic_lm.topic_accuracy(["sports"], [])


def test_configs_read_the_lab_sizes(sizes: Sizes, tmp_path: Path) -> None:
    lora = topic_lm.topic_lora_config(sizes.with_overrides(lora_r=4, lora_alpha=8))
    assert (lora.r, lora.lora_alpha, lora.target_modules) == (4, 8, "all-linear")
    sft = topic_lm.topic_sft_config(sizes, tmp_path)
    assert (sft.max_steps, sft.per_device_train_batch_size, sft.learning_rate, sft.max_length) == (
        sizes.train_steps, sizes.batch_size, sizes.learning_rate, sizes.max_length)
    assert not sft.bf16  # CPU test run: trl's default bf16=True would fail here


def test_ensure_reuses_a_saved_adapter_and_rebuilds_a_missing_one(
        sizes: Sizes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls: list[Path] = []

    def fake_train(sizes: Sizes, run_dir: Path) -> Path:
        calls.append(Path(run_dir))
        (Path(run_dir) / "adapter").mkdir(parents=True)
        (Path(run_dir) / "adapter" / "adapter_config.json").write_text("{}")
        return Path(run_dir) / "adapter"

    monkeypatch.setattr(topic_lm, "train_topic_lora", fake_train)
    assert topic_lm.ensure_topic_adapter(sizes, tmp_path) == tmp_path / "adapter"
    assert "not found" in capsys.readouterr().out
    assert topic_lm.ensure_topic_adapter(sizes, tmp_path) == tmp_path / "adapter"
    assert "reusing" in capsys.readouterr().out
    assert calls == [tmp_path]  # rebuilt once, reused the second time


def test_hf_model_source_of_the_embedded_model_is_a_folder() -> None:
    assert (Path(topic_lm.hf_model_source("smollm2-135m-instruct")) / "config.json").exists()
