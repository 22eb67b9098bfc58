from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _course_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "common_utils", *args], cwd=cwd, env=OFFLINE_ENV,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_doctor_reports_the_embedded_models_ready(repo_root: Path) -> None:
    result = _course_cli("doctor", cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smollm2-135m-instruct" in result.stdout
    assert "ready" in result.stdout
    assert "hub offline mode: True" in result.stdout


def test_validate_data_accepts_the_course_data(repo_root: Path) -> None:
    result = _course_cli("validate-data", cwd=repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted((repo_root / "datasets").glob("*/*.jsonl"))
    assert len(files) >= 9  # person_extraction, topic_classification, preference_format x train/valid/test
    assert result.stdout.count("rows OK") == len(files)


def test_validate_data_rejects_a_bad_file(repo_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "person_extraction" / "train.jsonl"  # the folder name selects the schema
    bad.parent.mkdir()
    bad.write_text(json.dumps({"id": "x", "instruction": "i", "input": "t"}) + "\n", encoding="utf-8")
    result = _course_cli("validate-data", str(bad), cwd=repo_root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{bad}:1: missing field 'output'" in result.stdout


def test_validate_data_rejects_a_folder_without_schema(repo_root: Path, tmp_path: Path) -> None:
    stray = tmp_path / "stray.jsonl"
    stray.write_text("{}\n", encoding="utf-8")
    result = _course_cli("validate-data", str(stray), cwd=repo_root)
    assert result.returncode == 1
    assert "no schema" in result.stdout
