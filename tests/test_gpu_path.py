"""The GPU path, checked on a CPU machine: the CI workflow calls real make targets, the GPU check
script lists existing notebooks and its budget, and `make test-gpu` refuses quickly without CUDA."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "course.yml"
MAKE_CALL = re.compile(r"(?:^|[\s;&|(])make\s+((?:[A-Za-z_][\w.-]*\s*)+)")
TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", re.MULTILINE)


def makefile_targets() -> set[str]:
    """Targets defined in the Makefile (rules `a b: deps`, not `X := value` assignments)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {name for match in TARGET.finditer(text) for name in match.group(1).split()} - {".PHONY"}


def workflow_make_targets(workflow: dict) -> dict[str, list[str]]:
    """Per job, the make targets its run steps call (`VAR=x` arguments are not targets)."""
    calls: dict[str, list[str]] = {}
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            for match in MAKE_CALL.finditer(step.get("run", "")):
                words = [w for w in match.group(1).split() if "=" not in w and not w.startswith("-")]
                calls.setdefault(job_name, []).extend(words)
    return calls


def test_workflow_jobs_call_targets_the_makefile_defines() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    targets = makefile_targets()
    calls = workflow_make_targets(workflow)
    assert calls.get("cpu") == ["test"] and calls.get("gpu") == ["test-gpu"], calls
    for job, called in calls.items():
        assert set(called) <= targets, f"job {job} calls make {sorted(set(called) - targets)}, not in the Makefile"
    gpu = workflow["jobs"]["gpu"]
    assert set(gpu["runs-on"]) == {"self-hosted", "gpu-16g"}
    uploads = [s for s in gpu["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"].rstrip("/") == ".course_reports"
    cached = " ".join(s["with"]["path"] for s in gpu["steps"] if str(s.get("uses", "")).startswith("actions/cache"))
    assert all(folder in cached for folder in ["~/.cache/pip", "~/.cache/llm-course", "~/.cache/huggingface"])
    assert workflow["jobs"]["cpu"]["runs-on"] == "ubuntu-latest"


def test_makefile_target_parser_sees_rules_not_assignments() -> None:
    targets = makefile_targets()
    assert {"test", "test-gpu", "unit", "notebooks", "smoke", "timing", "install", "provision"} <= targets
    assert "PY" not in targets and "VENV" not in targets


def test_gpu_check_dry_run_lists_existing_notebooks_and_a_budget() -> None:
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = re.findall(r"^\s+\d+\. (\S+\.ipynb)", result.stdout, re.MULTILINE)
    assert len(listed) >= 8, result.stdout
    assert all((ROOT / path).is_file() for path in listed), result.stdout
    assert len({Path(path).parent for path in listed}) == len(listed), "one notebook per lab"
    assert re.search(r"per-notebook budget \d+ s, total budget \d+ s", result.stdout), result.stdout


def test_gpu_check_dry_run_fails_on_a_missing_notebook() -> None:
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "No-Such/01-Setup.ipynb"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "MISSING No-Such/01-Setup.ipynb" in result.stdout


def test_make_test_gpu_refuses_quickly_without_cuda() -> None:
    """VENV is the environment running these tests: torch is importable there, so the guard asks torch
    and stops before any install."""
    import torch

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: make test-gpu would run the whole GPU check")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "python").exists():
        pytest.skip("tests do not run inside a virtual environment that make could use as VENV")
    started = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", "test-gpu", f"VENV={venv}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "CUDA" in result.stdout + result.stderr
    assert "install.sh" not in result.stdout + result.stderr
    assert time.monotonic() - started < 60
