"""One Traditional Chinese term per concept: the variants docs/glossary.md lists under 避免 must not appear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"


def forbidden_variants() -> dict[str, str]:
    """Variant -> the term to use instead, from the glossary table's third column (、-separated)."""
    variants = {}
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in {"中文", "---"} and cells[2]:
            variants.update({v.strip(): cells[0] for v in cells[2].split("、") if v.strip()})
    return variants


def course_texts() -> list[tuple[Path, str]]:
    """Every Markdown file and every notebook's markdown cells (the prose a student reads)."""
    texts = []
    for path in sorted(ROOT.rglob("*.md")):
        if not {".venv", "node_modules", "outputs", "build"} & set(path.parts) and path != GLOSSARY:
            texts.append((path, path.read_text(encoding="utf-8")))
    for path in sorted(ROOT.glob("[0-9][0-9]-*/**/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts.append((path, "\n".join("".join(c["source"]) for c in cells)))
    return texts


def test_the_glossary_lists_variants() -> None:
    variants = forbidden_variants()
    assert {"激活", "顯存", "啟動值"} <= set(variants), variants


@pytest.mark.parametrize("variant", sorted(forbidden_variants()))
def test_no_forbidden_variant(variant: str) -> None:
    use = forbidden_variants()[variant]
    hits = [f"{path.relative_to(ROOT)}:{text[:text.index(variant)].count(chr(10)) + 1}"
            for path, text in course_texts() if variant in text]
    assert not hits, f"{variant!r} found; docs/glossary.md says to write {use!r}: {hits}"
