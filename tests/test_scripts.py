"""The maintainer scripts: rendering measured numbers into READMEs, and the notebook runner."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_metrics_fills_the_measured_block(tmp_path: Path) -> None:
    render_metrics = _load("render_metrics")
    lab = tmp_path / "Lab-99-Test"
    (lab / "outputs").mkdir(parents=True)
    (lab / "outputs" / "metrics.json").write_text(json.dumps({"base": {"exact_match": 0.125, "n": 40}}))
    (lab / "README.md").write_text("intro\n<!-- measured:start -->\nold\n<!-- measured:end -->\noutro\n")
    assert render_metrics.render(lab)
    text = (lab / "README.md").read_text()
    assert "| `base.exact_match` | 0.125 |" in text and "| `base.n` | 40 |" in text
    assert "old" not in text and text.startswith("intro") and text.endswith("outro\n")


def test_render_metrics_renders_lists_of_records_as_tables(tmp_path: Path) -> None:
    render_metrics = _load("render_metrics")
    lab = tmp_path / "PEFT_Labs"
    (lab / "outputs").mkdir(parents=True)
    methods = [{"method": "lora", "accuracy": 0.9, "cuda_peak_mb": None}, {"method": "bitfit", "accuracy": 0.85}]
    (lab / "outputs" / "metrics.json").write_text(json.dumps({"comparison": {"steps": 20, "methods": methods}}))
    (lab / "README.md").write_text("<!-- measured:start -->\n<!-- measured:end -->\n")
    assert render_metrics.render(lab)
    text = (lab / "README.md").read_text()
    assert "| `comparison.steps` | 20 |" in text and "comparison.methods` |" not in text
    assert "| method | accuracy | cuda_peak_mb |" in text
    assert "| lora | 0.9 | — |" in text and "| bitfit | 0.85 | — |" in text


def test_render_metrics_skips_a_lab_without_metrics(tmp_path: Path) -> None:
    assert not _load("render_metrics").render(tmp_path)


def test_notebook_runner_refuses_an_empty_selection(tmp_path: Path) -> None:
    notebooks = _load("notebooks")
    assert notebooks.find_notebooks([str(tmp_path)]) == []
    assert notebooks.run([str(tmp_path)]) == 1


def test_lab_yaml_is_read_from_the_nearest_lab_folder(tmp_path: Path, monkeypatch) -> None:
    notebooks = _load("notebooks")
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    lab = tmp_path / "Lab-99-Gpu"
    (lab / "sub").mkdir(parents=True)
    (lab / "lab.yaml").write_text("accelerator: cuda\nrequires: [no_such_module_xyz]\n")
    requirements = notebooks.lab_requirements(lab / "sub" / "01-Setup.ipynb")
    assert requirements["accelerator"] == "cuda"
    assert notebooks.lab_requirements(tmp_path / "01-Other.ipynb") == {}


def test_unmet_requirements_name_the_reason() -> None:
    notebooks = _load("notebooks")
    assert notebooks.unmet_requirement({}) is None
    assert notebooks.unmet_requirement({"accelerator": "cpu", "requires": ["json"]}) is None
    assert "no_such_module_xyz" in notebooks.unmet_requirement({"requires": ["no_such_module_xyz"]})
    import torch

    if not torch.cuda.is_available():
        assert "CUDA" in notebooks.unmet_requirement({"accelerator": "cuda"})


def test_partition_keeps_each_lab_whole_and_in_order(tmp_path: Path) -> None:
    notebooks = _load("notebooks")
    paths = [tmp_path / lab / f"0{i}-Stage.ipynb" for lab in ["Lab-A", "Lab-B", "Lab-C"] for i in range(1, 5)]
    paths.append(tmp_path / "Compare.ipynb")
    groups = notebooks.partition(paths, 2)
    assert sorted(p for g in groups for p in g) == sorted(paths)
    for group in groups:
        for lab in {notebooks.lab_folder(p) for p in group}:
            stages = [p for p in group if notebooks.lab_folder(p) == lab]
            assert stages == [p for p in paths if notebooks.lab_folder(p) == lab]  # whole lab, file order
    assert [len(g) for g in notebooks.partition(paths, 1)] == [len(paths)]
    assert sorted(len(g) for g in groups) == [5, 8]
