"""common_utils.project: the capstone's definition, validation CLI, report and card (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

from common_utils.__main__ import main
from common_utils.project.definition import DefinitionError, init_project, load_definition, parse_definition
from common_utils.project.report import evaluation_report, read_report, write_report
from common_utils.project.validate import load_split, validate_project
from common_utils.tasks.tickets import INVALID, TICKET_LABELS, parse_label

import pytest

LAB = Path(__file__).resolve().parents[1] / "04-Evaluation_and_Data_Engineering/02-Labs/Lab-4.3-Fine_Tuning_Project_Workflow"


def write_rows(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_init_then_validate_passes(tmp_path, capsys) -> None:
    assert main(["project", "init", str(tmp_path / "p")]) == 0
    assert main(["project", "validate", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "validation: OK" in out and "positive" in out
    assert main(["project", "init", str(tmp_path / "p")]) == 1  # never overwrites silently


def test_validate_reports_file_line_errors_and_exits_nonzero(tmp_path, capsys) -> None:
    init_project(tmp_path)
    good = '{"id": "train-0001", "text": "Great.", "label": "positive"}'
    write_rows(tmp_path / "data" / "train.jsonl", [
        good,
        '{"id": "train-0002", "text": "Bad", "label": "negative"',           # malformed JSON
        '{"id": "train-0003", "text": "Fine.", "label": "angry"}',           # label not in the definition
        '{"id": "train-0004", "text": "   ", "label": "neutral"}',           # empty text
    ])
    write_rows(tmp_path / "data" / "valid.jsonl", [good.replace("Great", "Nice")])  # duplicate id across files
    assert main(["project", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    train = tmp_path / "data" / "train.jsonl"
    assert f"{train}:2: invalid JSON" in out
    assert f"{train}:3: label 'angry' is not in the definition's labels" in out
    assert f"{train}:4: field 'text' is empty" in out
    # duplicate ids are checked in files that parse (row i is line i + 1 there)
    write_rows(train, [good, '{"id": "train-0005", "text": "Meh.", "label": "neutral"}'])
    assert main(["project", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'data' / 'valid.jsonl'}:1: duplicate id 'train-0001' (first at {train}:1)" in out


def test_missing_training_label_is_an_error_and_imbalance_a_warning(tmp_path) -> None:
    init_project(tmp_path)
    rows = [json.dumps({"id": f"t{i}", "text": f"text {i}", "label": "positive" if i < 8 else "negative"})
            for i in range(10)]
    write_rows(tmp_path / "data" / "train.jsonl", rows)
    report = validate_project(load_definition(tmp_path))
    assert not report.ok and any("no training rows for ['neutral']" in e for e in report.errors)
    assert report.counts["train"] == {"positive": 8, "negative": 2, "neutral": 0}
    write_rows(tmp_path / "data" / "train.jsonl", rows + [json.dumps({"id": "t10", "text": "x", "label": "neutral"})])
    report = validate_project(load_definition(tmp_path))
    assert report.ok and report.imbalance_ratio("train") == 8.0
    assert any("class imbalance" in w for w in report.warnings)


def test_leakage_warning(tmp_path) -> None:
    init_project(tmp_path)
    write_rows(tmp_path / "data" / "test.jsonl", ['{"id": "test-9", "text": "It broke after one day.", "label": "negative"}'])
    report = validate_project(load_definition(tmp_path))
    assert any("test.jsonl:1: the same text is in train" in w for w in report.warnings)


@pytest.mark.parametrize("change, message", [
    ({"labels": ["yes"]}, "at least two"),
    ({"labels": ["Yes", "no"]}, "lower-case"),
    ({"labels": ["yes", "yes"]}, "duplicate labels"),
    ({"metric": "bleu"}, "not supported"),
    ({"threshold": 80}, "threshold"),
    ({"instruction": ""}, "instruction"),
])
def test_bad_definitions_name_the_field(change, message) -> None:
    raw = {"name": "x", "labels": ["yes", "no"], "instruction": "Answer {labels}.", **change}
    with pytest.raises(DefinitionError, match=message):
        parse_definition(raw)


def test_the_lab_definition_and_course_data_validate() -> None:
    definition = load_definition(LAB)
    assert definition.labels == TICKET_LABELS and definition.metric == "macro_f1"
    assert "billing, shipping" in definition.instruction_text
    report = validate_project(definition)
    assert report.ok, report.errors
    assert report.imbalance_ratio("train") > 2  # imbalanced on purpose: macro-F1 differs from accuracy
    assert len(load_split(definition, "test")) == 60


def test_parse_label() -> None:
    assert parse_label(" Refund.", TICKET_LABELS) == "refund"
    assert parse_label("The ticket is about billing", TICKET_LABELS) == INVALID
    assert parse_label("", TICKET_LABELS) == INVALID


def test_report_pass_fail_and_yaml_round_trip(tmp_path) -> None:
    from common_utils.evaluation.classification import classification_summary

    definition = load_definition(LAB)
    refs = [*definition.labels, "billing"]
    good = classification_summary(refs, refs, definition.labels)
    bad = classification_summary(refs, ["billing", INVALID] + ["billing"] * (len(refs) - 2), definition.labels)
    report = evaluation_report(definition, {"base": bad, "lora": good}, "lora", errors=[])
    assert report["passed"] and report["value"] == pytest.approx(good["macro_f1"])
    assert not evaluation_report(definition, {"base": bad}, "base", errors=[])["passed"]
    path = write_report(tmp_path / "evaluation_report.yaml", report)
    assert read_report(path) == json.loads(json.dumps(report))


def test_model_card_metadata_round_trips(tmp_path) -> None:
    from common_utils.core.runtime import lab_sizes
    from common_utils.evaluation.classification import classification_summary
    from common_utils.project.card import model_card

    from huggingface_hub import ModelCard

    definition = load_definition(LAB)
    refs = list(definition.labels)
    report = evaluation_report(definition, {"lora": classification_summary(refs, refs, definition.labels)}, "lora", [])
    card = model_card(definition, report, lab_sizes(LAB, "smoke"), "me/support-ticket-intent")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and loaded.data.license == "apache-2.0"
    assert loaded.data.eval_results[0].metric_value == 1.0 and "PASSED" in loaded.text


def test_serve_adapter_refuses_a_folder_without_an_adapter(tmp_path) -> None:
    from common_utils.project.serve import serve_adapter

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        with serve_adapter("smollm2-135m-instruct", tmp_path, tmp_path / "log.txt"):
            pass
