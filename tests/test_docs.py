"""Docs stay true: every relative link in the course's markdown points to a file that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / path for path in tracked]


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [link for link in LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", link)]


@pytest.mark.parametrize("markdown", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(markdown: Path) -> None:
    broken = [link for link in _relative_links(markdown)
              if not (markdown.parent / link.split("#", 1)[0]).exists()]
    assert not broken, f"{markdown.relative_to(ROOT)} links to missing paths: {broken}"
