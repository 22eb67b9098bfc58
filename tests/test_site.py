"""The course site (`make site`, scripts/build_site.py): it builds, its links resolve, a lab page renders.

Marked `site`: `make unit` leaves these out and `make test` runs them after the notebook run, on the
site that `make site` built from the run's executed snapshots ($COURSE_SITE_DIR names it). Run alone
(`pytest tests/test_site.py`, a fresh clone without build/), the module builds its own site into a
temporary folder from whatever snapshots exist, so it passes before any notebook has run.

The render check opens one built lab page in headless Chromium (Debian package `chromium`; .ci/run
installs it), saves a screenshot under build/site-check/ and reads the page's DOM: the math must be
typeset, and when the notebook has an executed snapshot, the text its checkpoint cell printed must
be on the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from html import unescape
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from script_loader import load_script

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
SITE_ENV = "COURSE_SITE_DIR"  # set by `make site-check`: check this built site instead of building one
SNAPSHOT_ENV = "COURSE_SNAPSHOT_DIR"
SCREENSHOTS = ROOT / "build" / "site-check"
REFERENCE_NOTEBOOK = "01-Core_Training_Techniques/02-Labs/PEFT_Labs/Lab-01-LoRA/02-Train.ipynb"
CHECKPOINT_HEADING = re.compile(r"^#+ .*(檢查點|[Cc]heckpoint)", re.MULTILINE)


def _load_builder() -> ModuleType:
    return load_script("build_site", "course_build_site")


builder = _load_builder()


def _snapshots() -> Path:
    return Path(os.environ.get(SNAPSHOT_ENV) or builder.EXECUTED)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(SITE_ENV)
    if given:
        site = Path(given).resolve()
        assert (site / "index.html").is_file(), f"${SITE_ENV}={given} has no index.html: run `make site` first"
        return site
    out = tmp_path_factory.mktemp("course-site") / "site"
    result = builder.build(out, _snapshots(), cache_dir=out.parent / "cache")
    assert result["pages"] > 0
    return out


def test_every_course_page_is_built_and_in_the_nav(site: Path) -> None:
    pages = builder.course_pages(ROOT)
    assert REFERENCE_NOTEBOOK in pages
    missing = [page for page in pages if not (site / builder.page_url(page)).is_file()]
    assert not missing, f"pages not built: {missing}"
    home = (site / "index.html").read_text(encoding="utf-8")
    for chapter in builder.chapter_folders(ROOT):  # found by pattern: a new chapter is in the nav at once
        if any(page.startswith(f"{chapter.name}/") for page in pages):
            assert chapter.name in home, f"{chapter.name} is not in the site's navigation"
    lab = site / builder.page_url(REFERENCE_NOTEBOOK)
    assert "Lab-01-LoRA" in lab.read_text(encoding="utf-8")


def test_internal_links_resolve(site: Path) -> None:
    broken = builder.check_links(site)
    assert not broken, f"{len(broken)} internal link(s) lead nowhere, e.g. {broken[:10]}"


def test_link_checker_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text(
        '<a href="../b.html#x">ok</a><img src="../missing.png"><a href="https://example.org/">ext</a>'
        '<a href="mailto:x@y">m</a><a href="#top">t</a><script src="../../outside.js"></script>')
    (tmp_path / "b.html").write_text('<link href="a/">')
    assert builder.check_links(tmp_path) == ["a/index.html: ../missing.png", "a/index.html: ../../outside.js"]


def test_math_is_served_from_the_site(site: Path) -> None:
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file(), "MathJax was not copied into the site"
    assert (site / "assets" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()


# --- headless Chromium -------------------------------------------------------------------------------

def _chromium() -> str:
    exe = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
    if exe is None:
        message = "headless Chromium is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


def _browse(page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="course-chromium-") as profile:
        command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                   "--virtual-time-budget=15000", *args, page.as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def _text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def reference_dom(site: Path) -> str:
    page = site / builder.page_url(REFERENCE_NOTEBOOK)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "Lab-01-LoRA_02-Train.png"
    shot.unlink(missing_ok=True)
    done = _browse(page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), f"Chromium wrote no screenshot: {done.stderr[-2000:]}"
    assert _png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 50_000, "the screenshot is nearly empty: the page did not render"
    dom = _browse(page, "--dump-dom")
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    return dom.stdout


def test_lab_page_renders_in_headless_chromium(reference_dom: str) -> None:
    text = _text(reference_dom)
    assert "Lab-01" in text and "LoRA" in text, "the lab's title is not on the page"
    assert 'class="MathJax' in reference_dom, "MathJax typeset nothing on a page full of $...$"
    assert "Math Processing Error" not in reference_dom


def checkpoint_line(snapshot: Path) -> str | None:
    """The first line the checkpoint cell printed: the first code cell with text output after the
    checkpoint heading (else the last code cell with an assert that printed something)."""
    nb = nbformat.read(str(snapshot), as_version=4)
    after_heading = False
    candidates: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and CHECKPOINT_HEADING.search(cell.source):
            after_heading = True
            continue
        if cell.cell_type != "code":
            continue
        lines = [line.strip() for out in cell.get("outputs", []) if out.get("output_type") == "stream"
                 and out.get("name") == "stdout" for line in out.get("text", "").splitlines() if line.strip()]
        if lines and after_heading:
            return lines[0]
        if lines and "assert" in cell.source:
            candidates.append(lines[0])
    return candidates[-1] if candidates else None


def test_lab_page_shows_the_checkpoint_output_of_the_executed_snapshot(reference_dom: str) -> None:
    snapshot = _snapshots() / REFERENCE_NOTEBOOK
    if not snapshot.is_file():
        pytest.skip(f"no executed snapshot of {REFERENCE_NOTEBOOK} yet (fresh clone, before the notebook run): "
                    "the page shows the committed notebook without outputs; `make test` checks the outputs")
    line = checkpoint_line(snapshot)
    if line is None:
        pytest.skip(f"the snapshot {snapshot} holds no checkpoint output (its run stopped earlier)")
    assert re.sub(r"\s+", " ", line) in _text(reference_dom), f"checkpoint output {line!r} is not on the page"
    assert "沒有輸出 (no outputs)" not in _text(reference_dom)


# --- staging rules, on a small made-up repository (no MkDocs build, milliseconds) --------------------

def _fake_repo(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Course\n")
    (root / "docs" / "guide.md").write_text("# Guide\n")
    lab = root / "01-Chapter" / "02-Labs" / "Lab-A"
    lab.mkdir(parents=True)
    (root / "01-Chapter" / "README.md").write_text("# Chapter\n")
    (lab / "lab.yaml").write_text("sizes: {}\n")
    (lab / "01-Setup.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return root


def test_links_are_rewritten_for_a_static_site(tmp_path: Path) -> None:
    root = _fake_repo(tmp_path / "repo")
    stage = builder.Stage(root, tmp_path / "stage", tmp_path / "executed")
    stage.pages = builder.course_pages(root)
    text = ("See [the chapter](01-Chapter/), [labs](01-Chapter/02-Labs/), [sizes](01-Chapter/02-Labs/Lab-A/lab.yaml), "
            "[guide](docs/guide.md#part), [soon](02-Next/), [web](https://example.org) and\n"
            "```\n[not a link](nowhere/)\n```\nA list right after a line:\n- item\n   - nested\n<details><summary>s</summary>\n")
    out = stage.rewrite_markdown("README.md", text)
    assert "[the chapter](01-Chapter/README.md)" in out
    assert "[labs](01-Chapter/02-Labs/index.md)" in out and "01-Chapter/02-Labs" in stage.indexes
    assert "[sizes](01-Chapter/02-Labs/Lab-A/lab.yaml)" in out
    assert (tmp_path / "stage" / "01-Chapter" / "02-Labs" / "Lab-A" / "lab.yaml").is_file()
    assert "[guide](docs/guide.md#part)" in out and "[web](https://example.org)" in out
    assert "soon" in out and "(02-Next/)" not in out
    assert stage.warnings == ["README.md: link to 02-Next/ does not resolve in the site; shown as text"]
    assert "[not a link](nowhere/)" in out, "code blocks are left alone"
    assert "after a line:\n\n- item\n    - nested" in out and '<details markdown="1">' in out
    in_notebook = stage.rewrite_markdown("01-Chapter/02-Labs/Lab-A/01-Setup.ipynb",
                                         "[home](../../../README.md) [guide](../../../docs/guide.md) [lab](./)",
                                         for_notebook=True)
    assert in_notebook == "[home](../../../index.html) [guide](../../../docs/guide.html) [lab](index.html)"


def test_notebook_banners_say_where_outputs_come_from() -> None:
    failed = builder.snapshot_banner({"status": "failed", "failing_cell": 3, "error": "AssertionError: <x>",
                                      "executed_utc": "2026-11-30T14:49:00+00:00", "profile": "smoke",
                                      "device": "CPU"}, stale=True)
    assert 'class="admonition failure"' in failed
    assert "2026-11-30 14:49 UTC" in failed and "<code>smoke</code> profile" in failed and "CPU" in failed
    assert "第 4 個 cell 失敗" in failed and "AssertionError: &lt;x&gt;" in failed
    assert "notebook 在這次執行之後改過" in failed
    passed = builder.snapshot_banner({"status": "passed"}, stale=False)
    assert 'class="admonition info"' in passed and "失敗" not in passed
    assert "沒有輸出 (no outputs)" in builder.no_output_banner("")
