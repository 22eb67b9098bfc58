"""The maintainer scripts: rendering measured numbers into READMEs, and the notebook runner."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from script_loader import load_script, write_notebook

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    return load_script(name)


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



def test_chapters_are_found_by_folder_pattern(tmp_path: Path, monkeypatch) -> None:
    """A new chapter needs no code change: any top-level `NN-Name` folder is searched."""
    notebooks = _load("notebooks")
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    new = write_notebook(tmp_path / "07-Some_New_Chapter" / "02-Labs" / "Lab-7.1-X" / "01-Setup.ipynb")
    first = write_notebook(tmp_path / "00-Course_Setup" / "01-Environment_Check.ipynb")
    write_notebook(tmp_path / "docs" / "not_a_chapter.ipynb")
    write_notebook(tmp_path / "7-Too_Short" / "x.ipynb")
    write_notebook(tmp_path / "07-Some_New_Chapter" / "02-Labs" / "Lab-7.1-X" / "outputs" / "copy.ipynb")
    assert [p.name for p in notebooks.chapter_folders()] == ["00-Course_Setup", "07-Some_New_Chapter"]
    assert notebooks.find_notebooks([]) == [first, new]


def test_lab_yaml_accepts_sizes_and_names_problems() -> None:
    notebooks = _load("notebooks")
    assert "sizes" in notebooks.LAB_KEYS
    good = {"accelerator": "cpu", "requires": [], "min_vram_gb": 16,
            "sizes": {"smoke": {"steps": 20}, "full": {"steps": 200}}}
    assert notebooks.lab_yaml_problems(good) == []
    problems = notebooks.lab_yaml_problems({"accelerator": "tpu", "colour": 1, "sizes": {"huge": {}, "full": 3}})
    assert any("colour" in p for p in problems) and any("accelerator" in p for p in problems)
    assert any("huge" in p for p in problems) and any("sizes.full" in p for p in problems)


def test_workers_default_to_env_else_constant(monkeypatch) -> None:
    notebooks = _load("notebooks")
    monkeypatch.delenv("COURSE_NOTEBOOK_WORKERS", raising=False)
    assert notebooks.default_workers() == notebooks.DEFAULT_WORKERS
    monkeypatch.setenv("COURSE_NOTEBOOK_WORKERS", "3")
    assert notebooks.default_workers() == 3
    assert notebooks.threads_per_worker(10**6) == 1


def test_dry_run_lists_each_workers_labs_and_skips_without_running(tmp_path: Path, monkeypatch, capsys) -> None:
    notebooks = _load("notebooks")
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    monkeypatch.setattr(notebooks, "_pytest", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    chapter = tmp_path / "01-Chapter" / "02-Labs"
    for lab in ["Lab-A", "Lab-B"]:
        for stage in ["01-Setup", "02-Train"]:
            write_notebook(chapter / lab / f"{stage}.ipynb")
    write_notebook(chapter / "Lab-C" / "01-Setup.ipynb")
    (chapter / "Lab-C" / "lab.yaml").write_text("accelerator: cpu\nrequires: [no_such_module_xyz]\n")
    assert notebooks.run(["--dry-run", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "worker 1: 2 notebook(s), 1 lab(s)" in out and "worker 2: 2 notebook(s), 1 lab(s)" in out
    assert "01-Chapter/02-Labs/Lab-A/01-Setup.ipynb" in out
    assert "Lab-C/01-Setup.ipynb: needs no_such_module_xyz" in out


def test_a_run_where_pytest_collects_nothing_fails(tmp_path: Path, monkeypatch) -> None:
    """pytest's exit 5 (no tests collected) must never read as success."""
    notebooks = _load("notebooks")

    class Finished:
        def __init__(self, code: int) -> None:
            self.code = code

        def wait(self, timeout: float | None = None) -> int:
            return self.code

        def poll(self) -> int:
            return self.code

    monkeypatch.setenv("COURSE_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setattr(notebooks, "_pytest", lambda *a, **k: Finished(5))
    nb = write_notebook(tmp_path / "Lab-A" / "01-Setup.ipynb")
    assert notebooks.run(["--workers", "1", str(nb)]) == 1


def test_gpu_peaks_keep_each_notebooks_maximum_and_name_overruns(tmp_path: Path) -> None:
    notebooks = _load("notebooks")
    gib = notebooks.GIB
    records = [{"notebook": notebook, "max_allocated": alloc * gib, "max_reserved": reserved * gib, "model": "G"}
               for notebook, alloc, reserved in [("/x/Lab-A/02-Train.ipynb", 2, 3), ("/x/Lab-A/02-Train.ipynb", 9, 16),
                                                 ("/x/Lab-B/01-Setup.ipynb", 1, 1)]]
    path = tmp_path / "gpu_peaks.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    peaks = notebooks.read_gpu_peaks(path)
    assert peaks["/x/Lab-A/02-Train.ipynb"].max_reserved == 16 * gib
    assert peaks["/x/Lab-A/02-Train.ipynb"].max_allocated == 9 * gib
    over = notebooks.gpu_over_limit(peaks, 15)
    assert len(over) == 1 and "Lab-A/02-Train.ipynb" in over[0] and "16.00 GiB" in over[0]
    assert notebooks.read_gpu_peaks(tmp_path / "missing.jsonl") == {}


def test_report_merges_seconds_gpu_peaks_and_first_error_lines(tmp_path: Path, capsys) -> None:
    notebooks = _load("notebooks")
    junit = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="a.ipynb" name="a.ipynb" time="12.5"><properties>
<property name="notebook" value="/x/Lab-A/02-Train.ipynb" /></properties></testcase>
<testcase classname="b.ipynb" name="b.ipynb" time="95.0"><properties>
<property name="notebook" value="/x/Lab-B/01-Setup.ipynb" /></properties>
<failure message="NBMAKE INTERNAL ERROR">cell 3\n#x1B[31mValueError#x1B[39m: bad shape\nmore</failure></testcase>
</testsuite></testsuites>"""
    (tmp_path / "notebooks.xml").write_text(junit)
    peak = {"notebook": "/x/Lab-A/02-Train.ipynb", "max_allocated": 3 * notebooks.GIB,
            "max_reserved": 4 * notebooks.GIB, "model": "Test GPU"}
    (tmp_path / "gpu_peaks.jsonl").write_text(json.dumps(peak) + "\n")
    written = tmp_path / "timings.md"
    assert notebooks.report(["--dir", str(tmp_path), "--write", str(written)]) == 0
    out = capsys.readouterr().out
    assert "| seconds | peak GiB (alloc/reserved) | status | notebook |" in out
    assert "| 12.5 | 3.00 / 4.00 | passed | /x/Lab-A/02-Train.ipynb |" in out
    assert "| 95.0 ⚠ | — | failed | /x/Lab-B/01-Setup.ipynb |" in out
    assert "FAILED /x/Lab-B/01-Setup.ipynb: ValueError: bad shape" in out
    assert "3.00 / 4.00" in written.read_text()
    assert notebooks.report(["--dir", str(tmp_path / "empty")]) == 1


def test_first_error_line_prefers_the_exception() -> None:
    first = _load("notebooks").first_error_line
    assert first("Traceback\n  File x\n\x1b[31mKeyError\x1b[39m: 'k'\n") == "KeyError: 'k'"
    assert first("\nsomething odd\n") == "something odd"
    assert first("") == "(no message)"


def test_run_records_the_gpu_peak_from_inside_the_kernel(tmp_path: Path, monkeypatch, capsys) -> None:
    """The whole chain on a CPU: runner -> pytest plugin -> IPython startup file -> JSONL -> limit check.

    The notebook stands in a fake `torch` whose CUDA reports 17 GiB reserved; a few seconds (one kernel).
    """
    notebooks = _load("notebooks")
    fake_torch = (
        "import sys, types\n"
        "cuda = types.SimpleNamespace(is_initialized=lambda: True, max_memory_allocated=lambda: 3 * 1024**3,\n"
        "    max_memory_reserved=lambda: 17 * 1024**3, get_device_name=lambda: 'Fake GPU')\n"
        "sys.modules['torch'] = types.SimpleNamespace(cuda=cuda)")
    nb = write_notebook(tmp_path / "Lab-Z" / "01-Setup.ipynb", fake_torch, "x = 1")
    reports = tmp_path / "reports"
    monkeypatch.setenv("COURSE_REPORT_DIR", str(reports))
    assert notebooks.run(["--workers", "1", "--max-gpu-gib", "15", str(nb)]) == 1
    captured = capsys.readouterr()
    assert "01-Setup.ipynb reserved 17.00 GiB > 15 GiB" in captured.err
    peaks = notebooks.read_gpu_peaks(reports / "gpu_peaks.jsonl")
    gib = notebooks.GIB
    assert [(p.max_allocated, p.max_reserved, p.model) for p in peaks.values()] == [(3 * gib, 17 * gib, "Fake GPU")]
    assert "| 3.00 / 17.00 | passed |" in (reports / "notebook_timings.md").read_text()
    assert notebooks.run(["--workers", "1", "--max-gpu-gib", "20", str(nb)]) == 0


def test_runner_waits_for_its_pytest_even_when_sigterm_comes_twice(tmp_path: Path) -> None:
    """GNU timeout signals the runner and then its group; the runner must still outlive its children,
    or a child writes its report after the caller has already read or replaced it."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "child-finished"
    child = ("import signal, sys, time\n"
             f"def stop(*_):\n    time.sleep(1.0)\n    open({str(marker)!r}, 'w').close()\n    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    runner = ("import importlib.util, subprocess, sys\n"
              f"spec = importlib.util.spec_from_file_location('r', {str(ROOT / 'scripts' / 'notebooks.py')!r})\n"
              "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
              f"child = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
              "child.stdout.readline()\n"
              "import signal, threading, time\n"
              "def announce():  # ready once _wait_all has installed its SIGTERM handler\n"
              "    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:\n"
              "        time.sleep(0.01)\n"
              "    print('ready', flush=True)\n"
              "threading.Thread(target=announce, daemon=True).start()\n"
              "module._wait_all([child])\n")
    process = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # the second one, as GNU timeout sends it to the group
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert marker.exists(), "the runner exited before its child finished"
