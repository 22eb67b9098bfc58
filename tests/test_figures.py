"""The theory diagrams (scripts/make_figures.py): each is a valid SVG carrying its labels and numbers,
and the committed copies in docs/figures/ are what the script draws now."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "lora.svg": ["W  (frozen)", "331,776 params", "A   (8 × 576)", "576 × 8", "= 9,216", "= 16/8 = 2",
                 "merge_and_unload()", "(a) Training:  y = Wx + (α/r)·BAx", "(b) Inference:  W′ = W + (α/r)·BA"],
    "zero_stages.svg": ["2 + 2 + 12 = 16 B/param", "2 + 2 + 12/4 = 7 B/param", "2 + (2 + 12)/4 = 5.5 B/param",
                        "(2 + 2 + 12)/4 = 4 B/param", "16 B", "7 B", "5.5 B", "4 B", "OS shard 3", "GPU 3"],
    "dpo_flow.svg": ["chosen: implicit reward", "rejected: implicit reward", "log 2 ≈ 0.693", "margin",
                     "PPO update", "(value model)", "preference pairs", "reward model $r_\\phi$"],
    "paged_kv.svg": ["block table", "free", "last block: 2/4 filled", "fathers", "times", "#7"],
}


def _load() -> ModuleType:
    return load_script("make_figures", "make_figures")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[ModuleType, dict[str, Path]]:
    make_figures = _load()
    paths = make_figures.write_all(tmp_path_factory.mktemp("figures"))
    return make_figures, {path.name: path for path in paths}


def test_every_figure_is_drawn(drawn) -> None:
    make_figures, paths = drawn
    assert set(paths) == set(EXPECTED) == set(make_figures.FIGURES_BY_NAME)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figure_is_an_svg_with_its_labels(drawn, name: str) -> None:
    make_figures, paths = drawn
    labels = make_figures.svg_labels(paths[name])  # parses the XML, checks the root is <svg>; one per line
    missing = [label for label in EXPECTED[name] if label not in labels]
    assert not missing, f"{name} lacks {missing}; it has {labels}"


def test_drawing_is_reproducible(drawn, tmp_path: Path) -> None:
    make_figures, paths = drawn
    again = make_figures.write_all(tmp_path)
    assert all(path.read_bytes() == paths[path.name].read_bytes() for path in again)


def test_committed_figures_are_up_to_date(drawn) -> None:
    make_figures, paths = drawn
    problems = make_figures.check(fresh_dir=paths["lora.svg"].parent)
    assert not problems, "\n".join(problems) + "\nrun: python scripts/make_figures.py"


def test_check_reports_a_missing_or_broken_figure(drawn, tmp_path: Path) -> None:
    make_figures, paths = drawn
    (tmp_path / "lora.svg").write_text("<svg", encoding="utf-8")
    problems = make_figures.check(tmp_path, fresh_dir=paths["lora.svg"].parent)
    assert any("lora.svg: not a valid SVG" in p for p in problems)
    assert any("zero_stages.svg: missing" in p for p in problems)
