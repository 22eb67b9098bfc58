"""Keyword arguments of config classes still exist in the installed trl / transformers / peft.

These libraries rename arguments between releases (e.g. SFTConfig's max_seq_length -> max_length),
and some configs (BitsAndBytesConfig) swallow unknown keywords with only a log line. Checking the
source statically catches a rename before any notebook runs into it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import warnings
from functools import cache
from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

# class name -> module that provides it; imported only when a call to it is found.
CHECKED_CLASSES = {
    "SFTConfig": "trl",
    "DPOConfig": "trl",
    "ORPOConfig": "trl.experimental.orpo",
    "TrainingArguments": "transformers",
    "BitsAndBytesConfig": "transformers",
    "LoraConfig": "peft",
    "PromptTuningConfig": "peft",
    "PrefixTuningConfig": "peft",
    "PromptEncoderConfig": "peft",
    "IA3Config": "peft",
}


class ConfigCall(NamedTuple):
    where: str  # file, with notebook cell and line
    cls: str
    keywords: tuple[str, ...]


def _find_notebooks() -> list[Path]:
    spec = importlib.util.spec_from_file_location("course_notebook_runner", ROOT / "scripts" / "notebooks.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner.find_notebooks([])


def _python_only(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())


def _calls_in(source: str, where: str) -> list[ConfigCall]:
    try:
        tree = ast.parse(_python_only(source))
    except SyntaxError:
        return []  # reported by test_notebooks_hygiene
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        keywords = tuple(k.arg for k in node.keywords if k.arg is not None)  # skip **kwargs expansions
        if name in CHECKED_CLASSES and keywords:
            calls.append(ConfigCall(f"{where}:{node.lineno}", name, keywords))
    return calls


def _collect_calls() -> list[ConfigCall]:
    calls = []
    for path in sorted((ROOT / "common_utils").rglob("*.py")):
        calls += _calls_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    for path in _find_notebooks():
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                calls += _calls_in(cell.source, f"{path.relative_to(ROOT)}[cell {index}]")
    return calls


CALLS = _collect_calls()


@cache
def _accepted_keywords(class_name: str) -> frozenset[str]:
    """Named parameters of the class (dataclass init fields and __init__ parameters), never **kwargs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns on import
        cls = getattr(importlib.import_module(CHECKED_CLASSES[class_name]), class_name)
    names = {f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set()
    names |= {name for name, p in inspect.signature(cls).parameters.items()
              if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return frozenset(names)


def test_config_calls_were_found() -> None:
    found = {call.cls for call in CALLS}
    assert {"LoraConfig", "BitsAndBytesConfig"} <= found, f"the checker found only {sorted(found)}"


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"{call.where}:{call.cls}")
def test_keywords_exist_in_the_installed_class(call: ConfigCall) -> None:
    accepted = _accepted_keywords(call.cls)
    unknown = [keyword for keyword in call.keywords if keyword not in accepted]
    assert not unknown, "\n".join(
        f"{call.where}: {call.cls}({keyword}=...) is not accepted by the installed {call.cls}" for keyword in unknown
    )
