"""Static checks of every course notebook: no model, no kernel, a few seconds in all.

Notebooks are found with scripts/notebooks.py, the runner behind `make notebooks`, so these rules
cover exactly the notebooks CI executes.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load_runner() -> ModuleType:
    return load_script("notebooks", "course_notebook_runner")


RUNNER = _load_runner()
CHAPTERS: list[Path] = [ROOT / name for name in RUNNER.CHAPTERS if (ROOT / name).is_dir()]
NOTEBOOKS: list[Path] = RUNNER.find_notebooks([])
LABS: list[Path] = sorted(
    path for chapter in CHAPTERS for path in chapter.rglob("Lab-*")
    if path.is_dir() and ".ipynb_checkpoints" not in path.parts and "outputs" not in path.parts
)
MIN_STAGES = 4  # a lab has at least the four stages 01-04 (docs/AUTHORING.md section 1)
STAGE_NAME = re.compile(r"^(\d\d)-.+\.ipynb$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _code_cells(path: Path) -> list[tuple[int, str]]:
    return [(index, cell.source) for index, cell in enumerate(_read(path).cells) if cell.cell_type == "code"]


def _python_only(source: str) -> str:
    """The cell without IPython magics and shell escapes, which are not Python syntax."""
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())


notebook_params = pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_rel)


def test_course_has_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found under {RUNNER.CHAPTERS}: the notebook checks ran on nothing"


@notebook_params
def test_notebook_is_valid_nbformat4(notebook: Path) -> None:
    node = _read(notebook)
    assert node.nbformat == 4, f"{_rel(notebook)}: nbformat {node.nbformat}, expected 4"
    nbformat.validate(node)


@notebook_params
def test_no_stored_outputs(notebook: Path) -> None:
    dirty = [f"cell {i}" for i, cell in enumerate(_read(notebook).cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{_rel(notebook)}: outputs or execution counts stored in {dirty}; run `nbstripout` on it"


@notebook_params
def test_first_cell_is_markdown(notebook: Path) -> None:
    cells = _read(notebook).cells
    assert cells and cells[0].cell_type == "markdown", f"{_rel(notebook)}: must open with a markdown cell"


@notebook_params
def test_has_a_checkpoint_cell(notebook: Path) -> None:
    assert any(re.search(r"\bassert\b", source) for _, source in _code_cells(notebook)), (
        f"{_rel(notebook)}: no code cell with `assert` (every notebook ends its stages with checkpoint cells)"
    )


FORBIDDEN = {
    "sys.path manipulation (install the package instead: `pip install -e .`)": re.compile(r"\bsys\.path\b"),
    "%run (notebooks must run on their own)": re.compile(r"^\s*%run\b", re.MULTILINE),
    "pip install from a notebook (dependencies live in pyproject.toml)":
        re.compile(r"^\s*[!%]\s*pip3?\s+install\b", re.MULTILINE),
}


@notebook_params
def test_no_path_hacks_or_installs(notebook: Path) -> None:
    found = [f"cell {i}: {what}" for i, source in _code_cells(notebook)
             for what, pattern in FORBIDDEN.items() if pattern.search(source)]
    assert not found, f"{_rel(notebook)}:\n  " + "\n  ".join(found)


def _top_level_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(_python_only(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


@notebook_params
def test_imports_are_installed(notebook: Path) -> None:
    problems = []
    for index, source in _code_cells(notebook):
        try:
            modules = _top_level_imports(source)
        except SyntaxError as error:
            problems.append(f"cell {index}: syntax error: {error.msg} (line {error.lineno})")
            continue
        problems += [f"cell {index}: `{name}` is not installed in this environment"
                     for name in sorted(modules) if importlib.util.find_spec(name) is None]
    assert not problems, f"{_rel(notebook)}:\n  " + "\n  ".join(problems)


def stage_problems(names: list[str]) -> list[str]:
    """What is wrong with a lab's notebook names: every notebook is a numbered stage `NN-*.ipynb`,
    one notebook per stage, stages numbered contiguously from 01, at least 01-04. A first-pass lab
    may have a fifth stage (Lab-1.1's 05-Merge_and_Save); a gap or a duplicate is still an error."""
    problems = [f"{name} is not a numbered stage NN-*.ipynb" for name in names if not STAGE_NAME.match(name)]
    stages: dict[int, list[str]] = {}
    for name in names:
        match = STAGE_NAME.match(name)
        if match:
            stages.setdefault(int(match.group(1)), []).append(name)
    problems += [f"stage {n:02d} has {len(found)} notebooks {sorted(found)}, expected exactly one"
                 for n, found in sorted(stages.items()) if len(found) > 1]
    expected = range(1, max([MIN_STAGES, *stages]) + 1)
    problems += [f"missing stage {n:02d}-*.ipynb" for n in expected if n not in stages]
    return problems


@pytest.mark.parametrize(("names", "expected"), [
    (["01-Setup.ipynb", "02-Train.ipynb", "03-Inference.ipynb", "04-Deploy.ipynb"], []),
    (["01-a.ipynb", "02-b.ipynb", "03-c.ipynb", "04-d.ipynb", "05-e.ipynb"], []),
    (["01-a.ipynb", "02-b.ipynb", "03-c.ipynb"], ["missing stage 04-*.ipynb"]),
    (["01-a.ipynb", "02-b.ipynb", "03-c.ipynb", "04-d.ipynb", "06-f.ipynb"], ["missing stage 05-*.ipynb"]),
    (["02-b.ipynb", "03-c.ipynb", "04-d.ipynb", "05-e.ipynb"], ["missing stage 01-*.ipynb"]),
    (["01-a.ipynb", "02-b.ipynb", "02-x.ipynb", "03-c.ipynb", "04-d.ipynb"],
     ["stage 02 has 2 notebooks ['02-b.ipynb', '02-x.ipynb'], expected exactly one"]),
    (["01-a.ipynb", "02-b.ipynb", "03-c.ipynb", "04-d.ipynb", "scratch.ipynb"],
     ["scratch.ipynb is not a numbered stage NN-*.ipynb"]),
    ([], [f"missing stage 0{n}-*.ipynb" for n in range(1, 5)]),
])
def test_stage_rule_accepts_contiguous_stages_only(names: list[str], expected: list[str]) -> None:
    assert stage_problems(names) == expected


@pytest.mark.parametrize("lab", LABS, ids=_rel)
def test_lab_has_readme_and_numbered_stages(lab: Path) -> None:
    assert (lab / "README.md").is_file(), f"{_rel(lab)}: missing README.md"
    problems = stage_problems(sorted(path.name for path in lab.glob("*.ipynb")))
    assert not problems, f"{_rel(lab)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("chapter", [c for c in CHAPTERS if any(lab.is_relative_to(c) for lab in LABS)], ids=_rel)
def test_chapter_with_labs_has_theory(chapter: Path) -> None:
    assert (chapter / "01-Theory").is_dir(), f"{_rel(chapter)}: has labs but no 01-Theory folder"


@pytest.mark.parametrize("lab", LABS, ids=_rel)
def test_lab_yaml_is_well_formed(lab: Path) -> None:
    """Every lab declares its needs in lab.yaml, with known keys of the right types."""
    import yaml

    path = lab / "lab.yaml"
    assert path.exists(), f"{_rel(lab)} has no lab.yaml (accelerator, requires, min_vram_gb): see docs/AUTHORING.md"
    declared = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(declared) - set(RUNNER.LAB_KEYS)
    assert not unknown, f"{_rel(path)}: unknown keys {sorted(unknown)}; allowed: {sorted(RUNNER.LAB_KEYS)}"
    for key, kind in RUNNER.LAB_KEYS.items():
        if key in declared:
            assert isinstance(declared[key], kind), f"{_rel(path)}: {key} should be {kind}"
    assert declared.get("accelerator") in {"cpu", "cuda"}, f"{_rel(path)}: accelerator must be cpu or cuda"
