"""Executed snapshots: `notebooks.py run --snapshots DIR` keeps each notebook as the test ran it.

One real nbmake run (two tiny notebooks, one kernel each, a few seconds): the snapshot holds the
outputs of that very execution, a failing notebook still gets one (with its error), and the committed
notebook is never modified.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import nbformat
from script_loader import load_script, write_notebook

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    return load_script(name, f"_snapshot_test_{name}")



def test_snapshots_keep_the_executed_outputs_without_touching_the_notebook(tmp_path: Path, monkeypatch) -> None:
    notebooks = _load("notebooks")
    good = write_notebook(tmp_path / "Lab-S" / "01-Good.ipynb", "print('snapshot says hello', 6 * 7)", "x = 1\nx + 1")
    bad = write_notebook(tmp_path / "Lab-S" / "02-Bad.ipynb", "print('before the error')", "raise ValueError('on purpose')",
                    "print('never runs')")
    committed = {path: path.read_bytes() for path in (good, bad)}
    snapshots = tmp_path / "executed"
    stale = notebooks.snapshot_file(bad, snapshots)
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")  # an old snapshot of a selected notebook never survives a run
    monkeypatch.setenv("COURSE_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("COURSE_SNAPSHOT_DIR", raising=False)

    assert notebooks.run(["--workers", "1", "--snapshots", str(snapshots), str(tmp_path / "Lab-S")]) == 1

    assert {path: path.read_bytes() for path in (good, bad)} == committed, "the committed notebooks changed"
    passed = nbformat.read(notebooks.snapshot_file(good, snapshots), as_version=4)
    assert passed.cells[0].outputs[0]["text"] == "snapshot says hello 42\n"
    assert passed.cells[1].outputs[0]["data"]["text/plain"] == "2"
    assert passed.metadata["course_snapshot"]["status"] == "passed"
    assert passed.metadata["course_snapshot"]["device"]

    failed = nbformat.read(notebooks.snapshot_file(bad, snapshots), as_version=4)
    assert failed.cells[0].outputs[0]["text"] == "before the error\n"
    assert failed.cells[1].outputs[0]["output_type"] == "error"
    assert failed.cells[1].outputs[0]["ename"] == "ValueError"
    assert failed.cells[2].outputs == []
    note = failed.metadata["course_snapshot"]
    assert note["status"] == "failed" and note["failing_cell"] == 1 and "on purpose" in note["error"]

