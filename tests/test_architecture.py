"""The package's shape: rooms without import cycles, a small facade, taught code exported from notebooks,
and notebooks that never branch on the profile (sizes come from lab.yaml)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import common_utils

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "common_utils"
MAX_FACADE_NAMES = 40
# The layering documented in common_utils/__init__.py: a room may import only rooms listed before it.
ROOM_ORDER = ["core", "data", "tasks", "reference", "peft", "training", "evaluation", "inference", "compression",
              "project"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOM_ORDER else None


def imported_modules(path: Path) -> set[str]:
    """common_utils modules one file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("common_utils"):
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names
                          if _is_module(f"{node.module}.{alias.name}")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package uses absolute imports only")
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("common_utils")}
    return found


def _is_module(dotted: str) -> bool:
    """Whether `from package import name` names a submodule (a file or folder), not an attribute."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def room_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {room: set() for room in ROOM_ORDER}
    for path in PACKAGE.rglob("*.py"):
        source = _room(_module_name(path))
        if source is None:
            continue
        for module in imported_modules(path):
            target = _room(module)
            if target and target != source:
                edges[source].add(target)
    return edges


def test_rooms_import_only_rooms_below_them() -> None:
    upward = [(a, b) for a, targets in room_edges().items() for b in targets
              if ROOM_ORDER.index(b) > ROOM_ORDER.index(a)]
    assert not upward, f"room imports against the layering {ROOM_ORDER}: {upward}"


def test_no_import_cycle_between_modules() -> None:
    graph = {_module_name(p): {m for m in imported_modules(p) if m != _module_name(p)} for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(trail + [node, nxt])}")
            if nxt in graph and not state.get(nxt):
                visit(nxt, trail + [node])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [])


def test_the_facade_is_small_and_every_name_resolves() -> None:
    assert len(common_utils.__all__) <= MAX_FACADE_NAMES, f"{len(common_utils.__all__)} facade names"
    for name in common_utils.__all__:
        assert getattr(common_utils, name) is not None


def test_importing_the_package_is_cheap_and_silent() -> None:
    code = "import sys, common_utils; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr


def test_reference_modules_match_their_notebooks() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for path in (PACKAGE / "reference").glob("*.py"):
        if path.name != "__init__.py":
            assert "do not edit by hand" in path.read_text(encoding="utf-8"), f"{path} was not exported from a notebook"


def _notebook_code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_no_notebook_branches_on_the_profile() -> None:
    pattern = re.compile(r"profile\.name|sizes\.profile\s*[=!]=|SIZES\[|==\s*[\"'](smoke|full)[\"']")
    offenders = [f"{nb.relative_to(ROOT)}: {m.group(0)}" for nb in sorted(ROOT.glob("[0-9][0-9]-*/**/*.ipynb"))
                 for m in [pattern.search(_notebook_code(nb))] if m]
    assert not offenders, "read sizes from lab.yaml with lab_sizes() instead:\n" + "\n".join(offenders)


HEAVY_LIBRARIES = ("peft", "trl", "transformers", "bitsandbytes", "deepspeed", "accelerate")


def test_notebooks_import_common_utils_before_the_libraries_it_quiets() -> None:
    """common_utils silences known start-up noise of these libraries (core/noise.py) only if it loads first."""
    pattern = re.compile(r"^\s*(?:from|import)\s+([\w.]+)", re.M)
    offenders = []
    for notebook in sorted(ROOT.glob("[0-9][0-9]-*/**/*.ipynb")):
        modules = [m.split(".")[0] for m in pattern.findall(_notebook_code(notebook))]
        first_heavy = next((i for i, m in enumerate(modules) if m in HEAVY_LIBRARIES), None)
        if first_heavy is not None and "common_utils" in modules and modules.index("common_utils") > first_heavy:
            offenders.append(f"{notebook.relative_to(ROOT)} imports {modules[first_heavy]} before common_utils")
    assert not offenders, "\n".join(offenders)
