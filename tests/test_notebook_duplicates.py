"""scripts/notebook_duplicates.py: the detector on small synthetic notebooks, and the ratchet on the course."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    return load_script("notebook_duplicates", "notebook_duplicates")


DUP = _load()
SHARED = [f"value_{i} = compute({i}, scale=2)" for i in range(6)]  # six distinct logic lines


def _notebook(path: Path, *cells: str) -> Path:
    """An nbformat-4 notebook with a markdown cell and these code cells (sources stored as line lists)."""
    nb_cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "value_0 = compute(0, scale=2)"]}]
    nb_cells += [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                  "source": [line + "\n" for line in cell.splitlines()]} for cell in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cells": nb_cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_normalising_drops_what_is_not_logic() -> None:
    text = "\n".join([
        "import torch", "from x.y import (", "    a,", "    b,", ")", "from z import w",
        "", "# a comment", "   total  =   a +   b   ", "foo(", "    1,", ")", "]", "print(total)  # kept",
    ])
    assert DUP.normalise_lines(text) == [(9, "total = a + b"), (10, "foo("), (11, "1,"), (14, "print(total) # kept")]


def test_export_keeps_code_cells_only_under_cell_markers(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "Lab-A" / "01-Setup.ipynb", "a = 1", "b = 2\nc = 3")
    text = DUP.export_code(nb)
    assert text.splitlines() == ["# %% cell 0", "a = 1", "", "# %% cell 1", "b = 2", "c = 3"]
    assert "Title" not in text
    written = DUP.export_all([nb], tmp_path / "export")
    assert written[0].read_text() == text and written[0].suffix == ".py"


def test_a_shared_run_of_six_lines_makes_one_pair_with_line_ranges(tmp_path: Path) -> None:
    a = _notebook(tmp_path / "Lab-A" / "02-Train.ipynb", "import os\nsetup_a()", "\n".join(SHARED))
    # the copy differs only in whitespace, comments, blank lines and imports: still the same run
    copied = ["# copied", "import sys", *[f"  {line.replace(' = ', '   =   ')}" for line in SHARED[:3]], "",
              *SHARED[3:], "other_b()"]
    b = _notebook(tmp_path / "Lab-B" / "02-Train.ipynb", "\n".join(copied))
    pairs = DUP.find_duplicates([a, b])
    assert list(pairs) == [(a, b)]
    [run] = pairs[(a, b)]
    assert run.length == 6
    assert run.first_lines == (6, 11)  # export of a: marker, 2 lines, blank, marker, then the run
    assert run.second_lines == (4, 10)
    assert "02-Train.ipynb:6-11 ==" in run.describe()


def test_five_shared_lines_are_not_a_duplicate(tmp_path: Path) -> None:
    a = _notebook(tmp_path / "A.ipynb", "\n".join(SHARED[:5] + ["only_in_a()"]))
    b = _notebook(tmp_path / "B.ipynb", "\n".join(SHARED[:5] + ["only_in_b()"]))
    assert DUP.find_duplicates([a, b]) == {}
    assert list(DUP.find_duplicates([a, b], min_lines=5)) == [(a, b)]


def test_each_pair_counts_once_and_one_notebook_never_pairs_with_itself(tmp_path: Path) -> None:
    other = [f"other_{i}(x)" for i in range(6)]
    block = "\n".join(SHARED + ["separator_a()"] + other)
    a = _notebook(tmp_path / "A.ipynb", block, "\n".join(SHARED))  # repeats its own run: no self-pair
    b = _notebook(tmp_path / "B.ipynb", block)
    c = _notebook(tmp_path / "C.ipynb", "\n".join(SHARED))
    d = _notebook(tmp_path / "D.ipynb", "\n".join(f"unrelated_{i}()" for i in range(10)))
    pairs = DUP.find_duplicates([a, b, c, d])
    assert sorted(pairs) == sorted([(a, b), (a, c), (b, c)])
    assert len(pairs[(a, b)]) >= 2  # two runs (SHARED, other_*) in one pair, still one pair


def test_cli_fails_above_the_allowed_number_of_pairs(tmp_path: Path, monkeypatch, capsys) -> None:
    a = _notebook(tmp_path / "A.ipynb", "\n".join(SHARED))
    b = _notebook(tmp_path / "B.ipynb", "\n".join(SHARED))
    monkeypatch.setattr(DUP, "course_notebooks", lambda: [a, b])
    assert DUP.main(["--max", "1"]) == 0
    assert DUP.main(["--max", "0", "--export", str(tmp_path / "export")]) == 1
    out = capsys.readouterr().out
    assert "A.ipynb:2-7 ==" in out and "1 notebook pair(s) share a run" in out
    assert (tmp_path / "export").is_dir()


def test_course_notebook_duplicates_do_not_grow() -> None:
    notebooks = DUP.course_notebooks()
    assert notebooks, "no course notebooks found"
    pairs = DUP.find_duplicates(notebooks)
    print(f"{len(pairs)} notebook pair(s) share a run of >= {DUP.MIN_LINES} lines "
          f"(allowed {DUP.MAX_NOTEBOOK_DUPLICATE_PAIRS})")
    listing = "\n".join(run.describe() for runs in pairs.values() for run in runs)
    assert len(pairs) <= DUP.MAX_NOTEBOOK_DUPLICATE_PAIRS, (
        f"{len(pairs)} notebook pairs share copied code (allowed {DUP.MAX_NOTEBOOK_DUPLICATE_PAIRS}); move the "
        f"shared lines into common_utils:\n{listing}")
