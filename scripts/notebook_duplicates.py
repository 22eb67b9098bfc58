"""Find code copied between course notebooks: pairs of notebooks sharing runs of >= 6 normalised lines.

    python scripts/notebook_duplicates.py [--max N] [--min-lines 6] [--export DIR]

Copied code drifts: a fix lands in one lab and not in its copies. Shared logic belongs in
common_utils, so the number of notebook pairs that still share a run of lines is tracked and may
only go down (MAX_NOTEBOOK_DUPLICATE_PAIRS, asserted by tests/test_notebook_duplicates.py).

Lines are compared after normalising away what is not logic: surrounding and repeated whitespace,
blank lines, comment-only lines, lines of lone punctuation (a closing bracket) and import lines
(every notebook imports the same things). Only pairs of different notebooks count, each pair once.
Line numbers refer to the notebook's code exported as a .py file (--export DIR writes those files).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
MIN_LINES = 6
# Notebook pairs sharing a run: 16 measured when the check was added (2026-11-30); lower it as copies move
# to common_utils (target: 30 or fewer once chapters 02-04 exist), never raise it.
MAX_NOTEBOOK_DUPLICATE_PAIRS = 0  # measured 2026-11-30: no exact six-line run is shared (130 pairs by the review's scan before)
CELL_MARKER = "# %% cell {index}"
PUNCTUATION_ONLY = re.compile(r"^[\s()\[\]{},:;.\\]*$")
IMPORT = re.compile(r"^(import\s+\w|from\s+[\w.]+\s+import\b)")


def _runner() -> ModuleType:
    """scripts/notebooks.py, which knows which notebooks the course has (the ones CI runs)."""
    spec = importlib.util.spec_from_file_location("course_notebook_runner", Path(__file__).with_name("notebooks.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def course_notebooks() -> list[Path]:
    """Every notebook of every chapter, exactly as the notebook runner finds them."""
    return _runner().find_notebooks([])


def code_cells(notebook: Path) -> list[str]:
    """Sources of the notebook's code cells, in order (read as plain JSON: no nbformat needed)."""
    cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    sources = [cell.get("source", "") for cell in cells if cell.get("cell_type") == "code"]
    return ["".join(source) if isinstance(source, list) else source for source in sources]


def export_code(notebook: Path) -> str:
    """The notebook's code cells as one .py text, each cell under a `# %% cell N` marker."""
    cells = enumerate(code_cells(notebook))
    return "\n".join(f"{CELL_MARKER.format(index=index)}\n{source.rstrip()}\n" for index, source in cells)


def export_all(notebooks: list[Path], folder: Path) -> list[Path]:
    """Write each notebook's exported code below `folder`, mirroring its path; returns the files written."""
    written = []
    for notebook in notebooks:
        relative = _rel(notebook)  # a notebook outside the repository keeps its whole path, below `folder`
        target = folder / Path(*relative.parts[1:] if relative.is_absolute() else relative.parts).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(export_code(notebook), encoding="utf-8")
        written.append(target)
    return written


def normalise_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, normalised line) for the lines that carry logic; see the module docstring."""
    kept: list[tuple[int, str]] = []
    in_import = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = " ".join(raw.split())
        if in_import:  # inside `from x import (` ... `)`
            in_import = ")" not in line
            continue
        if IMPORT.match(line):
            in_import = line.endswith("(")
            continue
        if not line or line.startswith("#") or PUNCTUATION_ONLY.match(line):
            continue
        kept.append((number, line))
    return kept


class SharedRun(NamedTuple):
    """One maximal run of equal normalised lines in two notebooks, as line ranges of their exports."""

    first: Path
    first_lines: tuple[int, int]
    second: Path
    second_lines: tuple[int, int]
    length: int  # normalised lines

    def describe(self) -> str:
        return (f"{_rel(self.first)}:{self.first_lines[0]}-{self.first_lines[1]} == "
                f"{_rel(self.second)}:{self.second_lines[0]}-{self.second_lines[1]} ({self.length} lines)")


def find_duplicates(notebooks: list[Path], min_lines: int = MIN_LINES) -> dict[tuple[Path, Path], list[SharedRun]]:
    """Per pair of different notebooks sharing at least one run of `min_lines` normalised lines, those runs.

    Every window of `min_lines` consecutive normalised lines is indexed; two notebooks holding the same
    window share a run. Matching windows on one diagonal are then joined into maximal runs for the report.
    """
    lines = {notebook: normalise_lines(export_code(notebook)) for notebook in notebooks}
    windows: dict[tuple[str, ...], dict[Path, list[int]]] = defaultdict(lambda: defaultdict(list))
    for notebook, kept in lines.items():
        texts = [text for _, text in kept]
        for start in range(len(texts) - min_lines + 1):
            windows[tuple(texts[start:start + min_lines])][notebook].append(start)
    matches: dict[tuple[Path, Path], set[tuple[int, int]]] = defaultdict(set)
    for places in windows.values():
        for first, second in combinations(sorted(places), 2):
            matches[(first, second)].update((i, j) for i in places[first] for j in places[second])
    return {pair: _runs(pair, found, lines, min_lines) for pair, found in sorted(matches.items())}


def _runs(pair: tuple[Path, Path], starts: set[tuple[int, int]], lines: dict[Path, list[tuple[int, str]]],
          min_lines: int) -> list[SharedRun]:
    """Join window matches (i, j), (i+1, j+1), ... into maximal runs with their export line ranges."""
    first, second = pair
    runs = []
    for i, j in sorted(starts):
        if (i - 1, j - 1) in starts:
            continue  # not the start of a run
        extra = 0
        while (i + extra + 1, j + extra + 1) in starts:
            extra += 1
        last = min_lines + extra - 1
        runs.append(SharedRun(first, (lines[first][i][0], lines[first][i + last][0]),
                              second, (lines[second][j][0], lines[second][j + last][0]), last + 1))
    return runs


def _rel(path: Path) -> Path:
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=MAX_NOTEBOOK_DUPLICATE_PAIRS,
                        help=f"most notebook pairs allowed to share a run (default {MAX_NOTEBOOK_DUPLICATE_PAIRS})")
    parser.add_argument("--min-lines", type=int, default=MIN_LINES, help="shortest run that counts")
    parser.add_argument("--export", type=Path, help="also write each notebook's code as .py below this folder")
    args = parser.parse_args(argv)
    notebooks = course_notebooks()
    if not notebooks:
        print("No notebooks found: nothing was checked.", file=sys.stderr)
        return 1
    if args.export:
        print(f"Exported {len(export_all(notebooks, args.export))} notebook(s) to {args.export}")
    pairs = find_duplicates(notebooks, args.min_lines)
    for (first, second), runs in pairs.items():
        print(f"{_rel(first)} <-> {_rel(second)}: {len(runs)} shared run(s)")
        for run in runs:
            print(f"  {run.describe()}")
    print(f"{len(pairs)} notebook pair(s) share a run of >= {args.min_lines} normalised lines "
          f"({len(notebooks)} notebooks; allowed: {args.max}).")
    return 1 if len(pairs) > args.max else 0


if __name__ == "__main__":
    sys.exit(main())
