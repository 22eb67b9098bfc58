"""Export the code a notebook teaches into common_utils/reference (d2l's `#@save` style).

    python scripts/export_reference.py           write every reference module from its notebooks
    python scripts/export_reference.py --check   exit 1, naming the module, when a file is stale

A code cell whose first line is `#@save <module>` is the single source of that code. Cells are
collected in course order (sorted notebook paths, then cell order) and concatenated, each preceded
by a comment naming its notebook, under a header that says where the code is taught. Cells must be
self-contained: their imports go inside the cell, since the module is built from these cells alone.
tests/test_reference_export.py runs the check, so a notebook edit without a re-export fails CI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "common_utils" / "reference"
MARKER = re.compile(r"^#@save\s+(?P<module>[a-z_][a-z0-9_]*)\s*$")
CHAPTER = re.compile(r"^[0-9][0-9]-")


def course_notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook of every chapter folder (`NN-*`), in course order."""
    chapters = sorted(p for p in root.iterdir() if p.is_dir() and CHAPTER.match(p.name))
    return [nb for chapter in chapters for nb in sorted(chapter.rglob("*.ipynb"))
            if ".ipynb_checkpoints" not in nb.parts and "outputs" not in nb.parts]


def saved_cells(notebook: Path) -> list[tuple[str, str]]:
    """(module, code without the marker line) for each `#@save` cell of one notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        match = MARKER.match(lines[0]) if lines else None
        if match:
            found.append((match["module"], "\n".join(lines[1:]).strip("\n")))
    return found


def render_modules(root: Path = ROOT) -> dict[str, str]:
    """Module name -> the text its reference file must have."""
    parts: dict[str, list[tuple[str, str]]] = {}
    for notebook in course_notebooks(root):
        where = notebook.relative_to(root).as_posix()
        for module, code in saved_cells(notebook):
            parts.setdefault(module, []).append((where, code))
    rendered = {}
    for module, cells in parts.items():
        sources = sorted({where for where, _ in cells})
        header = ('"""Reference code exported from the notebooks that teach it; do not edit by hand.\n\n'
                  "Taught in:\n" + "".join(f"    {s}\n" for s in sources) +
                  "\nEdit the notebook's `#@save " + module + "` cell, then run `python scripts/export_reference.py`.\n"
                  '"""\n\nfrom __future__ import annotations\n')
        body = "\n\n".join(f"# ---- from {where} ----\n{code}" for where, code in cells)
        rendered[module] = header + "\n\n" + body + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = []
    for module, text in render_modules().items():
        path = REFERENCE / f"{module}.py"
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(module)
        if not args.check:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"stale reference modules: {', '.join(stale)}: run `python scripts/export_reference.py`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
