"""Draw the theory chapters' diagrams as SVG files in docs/figures/ (generated, never hand-drawn).

    python scripts/make_figures.py                 write every figure into docs/figures/
    python scripts/make_figures.py --out DIR       write them somewhere else
    python scripts/make_figures.py --preview DIR   also write PNG copies (800 px wide) to look at
    python scripts/make_figures.py --check         fail when a committed figure is missing, is not an SVG,
                                                   or differs from what this script draws now

The SVGs are reproducible: a fixed `svg.hashsalt` and no date in the metadata, so the same matplotlib
writes the same bytes. Text is drawn as paths (no font needed to view it) and matplotlib keeps every
string as an XML comment next to it; `svg_labels` reads those back, which is what the tests and
`--check` compare across matplotlib versions. Edit a figure here, run the script, commit the SVG.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
PREVIEW_DPI = 80  # every figure is 10 in wide: 800 px

STYLE = {
    "svg.hashsalt": "llm-course-figures",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 11,
    "mathtext.fontset": "dejavusans",
}

FROZEN = "#c9ced6"
TRAINABLE = "#f6a04d"
MERGED = "#8fbfe0"
INPUT = "#e8eef7"
LOSS = "#f4b6b6"
P_COLOR, G_COLOR, OS_COLOR = "#4e79a7", "#59a14f", "#e15759"
SEQ_A, SEQ_B = "#9ecae1", "#fdd0a2"
EDGE = "#333333"


# ----------------------------------------------------------------------------------------------- helpers
def _canvas(width: float, height: float) -> tuple[Figure, object]:
    """A figure whose data coordinates are inches: (0, 0) bottom-left, (width, height) top-right."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _rect(ax, x, y, w, h, fill, text=None, size=11, edge=EDGE, style="-", **text_kw) -> None:
    ax.add_patch(Rectangle((x, y), w, h, facecolor=fill, edgecolor=edge, linewidth=1, linestyle=style))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, **text_kw)


def _box(ax, cx, cy, w, h, text, fill, size=11, **text_kw) -> None:
    """A rounded box centred on (cx, cy)."""
    ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=fill, edgecolor=EDGE, linewidth=1.1))
    ax.text(cx, cy, text, ha="center", va="center", fontsize=size, linespacing=1.35, **text_kw)


def _arrow(ax, start, end, color=EDGE, style="-", curve=0.0, width=1.4) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color=color,
                                 linewidth=width, linestyle=style, connectionstyle=f"arc3,rad={curve}",
                                 shrinkA=0, shrinkB=0))


def _polyline_arrow(ax, points, color=EDGE, style="-") -> None:
    """Straight segments through `points`, with an arrowhead on the last one."""
    xs, ys = zip(*points[:-1])
    ax.plot(xs, ys, color=color, linewidth=1.4, linestyle=style, solid_capstyle="butt")
    _arrow(ax, points[-2], points[-1], color=color, style=style)


# ----------------------------------------------------------------------------------------------- figures
def lora_figure() -> Figure:
    """LoRA on SmolLM2-135M's q_proj: y = Wx + (alpha/r)BAx while training, one merged W' after."""
    d_in = d_out = 576
    r, alpha = 8, 16
    frozen, trainable = d_out * d_in, r * (d_in + d_out)
    fig, ax = _canvas(10, 6.5)
    side, thin, vec = 1.9, 0.24, 0.16  # d = 576 -> 1.9 in; r = 8 drawn 0.24 in (true scale: 0.026 in)

    # (a) training: the frozen path and the low-rank path side by side
    ax.text(0.2, 6.22, "(a) Training:  y = Wx + (α/r)·BAx", fontsize=14, weight="bold", va="center")
    ax.text(5.05, 6.22, "W frozen, only A and B receive gradients", fontsize=11.5, va="center",
            color="#444444")
    y0 = 3.6
    cy = y0 + side / 2
    _rect(ax, 0.3, y0, vec, side, INPUT)
    ax.text(0.38, y0 + side + 0.15, "y", ha="center", fontsize=13, style="italic")
    ax.text(0.38, y0 - 0.22, "576", ha="center", fontsize=10)
    ax.text(0.72, cy, "=", ha="center", va="center", fontsize=18)
    _rect(ax, 0.98, y0, side, side, FROZEN, f"W  (frozen)\n\n{d_out} × {d_in}\n(d_out × d_in)\n\n{frozen:,} params",
          size=11)
    _rect(ax, 3.0, y0, vec, side, INPUT)
    ax.text(3.08, y0 + side + 0.15, "x", ha="center", fontsize=13, style="italic")
    ax.text(3.08, y0 - 0.22, "576", ha="center", fontsize=10)
    ax.text(3.5, cy, "+", ha="center", va="center", fontsize=18)
    ax.text(4.0, cy + 0.12, "α/r", ha="center", va="center", fontsize=15)
    ax.text(4.0, cy - 0.25, f"= {alpha}/{r} = {alpha // r}", ha="center", va="center", fontsize=10)
    bx = 4.55
    _rect(ax, bx, y0, thin, side, TRAINABLE)
    ax.text(bx + thin / 2, y0 + side + 0.15, "B", ha="center", fontsize=13, weight="bold")
    ax.text(bx + thin / 2, y0 - 0.22, f"{d_out} × {r}", ha="center", fontsize=10)
    ax_ = bx + thin + 0.12
    _rect(ax, ax_, cy - thin / 2, side, thin, TRAINABLE)
    ax.text(ax_ + side / 2, cy + thin / 2 + 0.1, f"A   ({r} × {d_in})", ha="center", va="bottom", fontsize=11,
            weight="bold")
    ax.text(ax_ + side / 2, cy - thin / 2 - 0.1, "init: A random, B = 0\n→ BA = 0 at step 0", ha="center",
            va="top", fontsize=10, color="#444444")
    _rect(ax, ax_ + side + 0.15, y0, vec, side, INPUT)
    ax.text(ax_ + side + 0.23, y0 + side + 0.15, "x", ha="center", fontsize=13, style="italic")
    ax.text(ax_ + side + 0.23, y0 - 0.22, "576", ha="center", fontsize=10)
    note = (f"trainable (A and B):\nr·(d_in + d_out)\n= {r}·({d_in} + {d_out})\n= {trainable:,}\n\n"
            f"frozen W: {frozen:,}\n→ {100 * trainable / frozen:.1f}% of W")
    ax.text(7.75, cy, note, ha="left", va="center", fontsize=11, linespacing=1.4,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "#fff4e8", "edgecolor": TRAINABLE})
    ax.text(0.2, 3.05, "SmolLM2-135M q_proj, r = 8, lora_alpha = 16.  r is drawn wider than scale "
            "(8/576 of W's side).", fontsize=9.5, color="#555555", va="center")
    ax.plot([0.15, 9.85], [2.82, 2.82], color="#bbbbbb", linewidth=0.8)

    # (b) inference: merge once
    ax.text(0.2, 2.55, "(b) Inference:  W′ = W + (α/r)·BA", fontsize=14, weight="bold", va="center")
    ax.text(5.05, 2.55, "merged once, one matrix, no extra latency", fontsize=11.5, va="center",
            color="#444444")
    side_b = 1.75
    y1 = 0.3
    cyb = y1 + side_b / 2
    _rect(ax, 0.3, y1, side_b, side_b, FROZEN, f"W\n\n{d_out} × {d_in}", size=11)
    ax.text(2.33, cyb, "+", ha="center", va="center", fontsize=18)
    ax.text(2.8, cyb, "α/r ·", ha="center", va="center", fontsize=15)
    bx = 3.25
    _rect(ax, bx, y1, thin, side_b, TRAINABLE)
    ax.text(bx + thin / 2, y1 + side_b + 0.08, "B", ha="center", fontsize=12, weight="bold")
    _rect(ax, bx + thin + 0.12, cyb - thin / 2, side_b, thin, TRAINABLE)
    ax.text(bx + thin + 0.12 + side_b / 2, cyb + thin / 2 + 0.1, "A", ha="center", va="bottom", fontsize=12,
            weight="bold")
    ax.text(bx + thin + 0.12 + side_b / 2, cyb - thin / 2 - 0.1, f"BA: {d_out} × {d_in}", ha="center",
            va="top", fontsize=10, color="#444444")
    ax.text(5.7, cyb, "=", ha="center", va="center", fontsize=18)
    _rect(ax, 6.0, y1, side_b, side_b, MERGED, f"W′\n\n{d_out} × {d_in}\nsame shape as W", size=11)
    ax.text(8.0, cyb, "peft:\nmerge_and_unload()\n\nserved like the\nbase model", ha="left", va="center",
            fontsize=11, linespacing=1.4)
    return fig


def zero_figure(ranks: int = 4) -> Figure:
    """Which share of P / G / OS each of `ranks` data-parallel ranks holds under ZeRO stages 0-3."""
    sizes = {"P": 2, "G": 2, "OS": 12}  # bytes per parameter, mixed-precision Adam (ZeRO paper, K = 12)
    colors = {"P": P_COLOR, "G": G_COLOR, "OS": OS_COLOR}
    stages = [
        ("Stage 0: DDP baseline (every rank holds a full copy)", set(), "2 + 2 + 12"),
        ("ZeRO-1 ($P_{os}$): optimizer states partitioned", {"OS"}, f"2 + 2 + 12/{ranks}"),
        ("ZeRO-2 ($P_{os+g}$): + gradients partitioned", {"OS", "G"}, f"2 + (2 + 12)/{ranks}"),
        ("ZeRO-3 ($P_{os+g+p}$): + parameters partitioned", {"OS", "G", "P"}, f"(2 + 2 + 12)/{ranks}"),
    ]
    fig, ax = _canvas(10, 10.0)
    unit = 0.38  # inches per byte: 16 bytes -> 6.08 in
    x0 = 1.05
    starts = {"P": 0, "G": 2, "OS": 4}
    row_h, row_gap, panel_h = 0.27, 0.09, 1.95

    ax.text(0.2, 9.72, "ZeRO: bytes per parameter held by each rank (mixed-precision Adam, $N_d$ = "
            f"{ranks} ranks)", fontsize=13.5, weight="bold", va="center")
    legend = [("P", "P = fp16 parameters, 2 B", 0.2, 9.3), ("G", "G = fp16 gradients, 2 B", 3.3, 9.3),
              ("OS", "OS = optimizer states: fp32 parameter copy 4 B + Adam momentum 4 B + variance 4 B = 12 B",
               0.2, 8.98)]
    for key, label, x, y in legend:
        ax.add_patch(Rectangle((x, y - 0.09), 0.18, 0.18, facecolor=colors[key], edgecolor=EDGE, linewidth=0.8))
        ax.text(x + 0.28, y, label, va="center", fontsize=10.5)
    header_y = 8.6
    for key in sizes:
        ax.text(x0 + (starts[key] + sizes[key] / 2) * unit, header_y, key, ha="center", va="center",
                fontsize=11, color=colors[key], weight="bold")
    ax.text(x0 + 16 * unit + 0.2, header_y, "per rank", ha="left", va="center", fontsize=10.5, weight="bold")

    for index, (title, sharded, formula) in enumerate(stages):
        panel_top = header_y - 0.3 - index * panel_h
        per_rank = sum(b / ranks if k in sharded else b for k, b in sizes.items())
        ax.text(0.2, panel_top, title, fontsize=11.5, weight="bold", va="center")
        ax.text(9.85, panel_top, f"{formula} = {per_rank:g} B/param", fontsize=11, ha="right", va="center")
        for rank in range(ranks):
            y = panel_top - 0.42 - rank * (row_h + row_gap)
            ax.text(x0 - 0.12, y + row_h / 2, f"GPU {rank}", ha="right", va="center", fontsize=10)
            for key, nbytes in sizes.items():
                left = x0 + starts[key] * unit
                if key not in sharded:
                    label = {"P": "P", "G": "G", "OS": "OS (full copy)"}[key]
                    _rect(ax, left, y, nbytes * unit, row_h, colors[key], label, size=9.5, color="white",
                          weight="bold")
                    continue
                share = nbytes / ranks * unit
                for part in range(ranks):
                    mine = part == rank
                    label = f"OS shard {part}" if (key == "OS" and mine) else None
                    _rect(ax, left + part * share, y, share, row_h, colors[key] if mine else "white",
                          label, size=9, edge=EDGE if mine else "#c0c0c0", style="-" if mine else ":",
                          color="white", weight="bold")
            ax.text(x0 + 16 * unit + 0.2, y + row_h / 2, f"{per_rank:g} B", ha="left", va="center",
                    fontsize=11, weight="bold")

    foot = ("Solid: the shard this rank stores;  dotted white: held by another rank.  Rajbhandari et al. (2020): "
            "ZeRO-1/2 communicate as much\nas DDP, ZeRO-3 about 1.5×.  The paper's example, Ψ = 7.5B on "
            "$N_d$ = 64 GPUs: 120 → 31.4 → 16.6 → 1.9 GB per GPU.")
    ax.text(0.2, 0.4, foot, fontsize=9.5, va="center", color="#444444", linespacing=1.4)
    return fig


def dpo_figure() -> Figure:
    """DPO's data flow (two models, one loss) above RLHF's reward model + PPO loop (four models)."""
    fig, ax = _canvas(10, 7.6)

    # (a) DPO
    ax.text(0.2, 7.3, "(a) DPO: a classification loss on preference pairs", fontsize=14, weight="bold",
            va="center")
    ax.text(0.2, 6.92, "2 models: trainable policy + frozen reference (with LoRA: one base, adapter on / off)",
            fontsize=10.5, color="#444444", va="center")
    top_y, bottom_y = 5.75, 3.95
    _box(ax, 0.95, 4.85, 1.5, 2.3, "preference\npair\n\nprompt  $x$\n\nchosen  $y_w$\n\nrejected  $y_l$",
         INPUT, size=11)
    _box(ax, 2.95, top_y, 1.6, 0.95, "policy  $\\pi_\\theta$\ntrainable", TRAINABLE, size=11.5)
    _box(ax, 2.95, bottom_y, 1.6, 0.95, "reference  $\\pi_{ref}$\nfrozen", FROZEN, size=11.5)
    _arrow(ax, (1.72, 5.4), (2.13, top_y))
    _arrow(ax, (1.72, 4.3), (2.13, bottom_y))
    ratio_x, ratio_w = 5.35, 2.3
    for cy, label, y in ((top_y, "chosen", "y_w"), (bottom_y, "rejected", "y_l")):
        _box(ax, ratio_x, cy, ratio_w, 1.15, "", "#fff4e8")
        ax.text(ratio_x, cy + 0.36, f"{label}: implicit reward", ha="center", va="center", fontsize=10.5)
        ax.text(ratio_x, cy - 0.12, f"$\\hat r_{y[-1]} = \\beta\\,\\log\\dfrac{{\\pi_\\theta({y}|x)}}{{\\pi_{{ref}}({y}|x)}}$",
                ha="center", va="center", fontsize=12)
    left_edge = ratio_x - ratio_w / 2 - 0.04
    _arrow(ax, (3.77, top_y), (left_edge, top_y))
    _arrow(ax, (3.77, bottom_y), (left_edge, bottom_y))
    _arrow(ax, (3.77, top_y - 0.25), (left_edge, bottom_y + 0.3), color="#777777")
    _arrow(ax, (3.77, bottom_y + 0.25), (left_edge, top_y - 0.3), color="#777777")
    ax.text(ratio_x, 3.12, "log π(y|x): sum of the response tokens' log-probs", ha="center", va="center",
            fontsize=9.5, color="#444444")
    _box(ax, 7.55, 4.85, 1.25, 1.0, "margin\n$\\hat r_w - \\hat r_l$", "#fff4e8", size=11.5)
    _arrow(ax, (ratio_x + ratio_w / 2 + 0.04, top_y - 0.1), (6.9, 5.15))
    _arrow(ax, (ratio_x + ratio_w / 2 + 0.04, bottom_y + 0.1), (6.9, 4.55))
    _box(ax, 9.2, 4.85, 1.2, 1.0, "loss\n$-\\log\\sigma(\\cdot)$", LOSS, size=11.5)
    _arrow(ax, (8.21, 4.85), (8.57, 4.85))
    ax.text(9.2, 3.95, "log 2 ≈ 0.693\nat step 0", ha="center", va="top", fontsize=9.5, color="#444444")
    _polyline_arrow(ax, [(9.2, 5.37), (9.2, 6.5), (2.95, 6.5), (2.95, 6.25)], color="#c0392b", style="--")
    ax.text(6.1, 6.62, "gradient flows into $\\pi_\\theta$ only", ha="center", va="center", fontsize=10,
            color="#c0392b")
    ax.plot([0.15, 9.85], [2.78, 2.78], color="#bbbbbb", linewidth=0.8)

    # (b) RLHF for contrast
    ax.text(0.2, 2.5, "(b) RLHF, for contrast: reward model + PPO loop", fontsize=14, weight="bold",
            va="center")
    ax.text(0.2, 1.3, "4 models in memory:\npolicy, reference,\nreward, value\n\nsamples every step",
            fontsize=10.5, va="center", color="#444444", linespacing=1.35)
    row_top, row_bottom = 1.75, 0.55
    _box(ax, 3.2, row_top, 1.55, 0.72, "policy  $\\pi_\\theta$", TRAINABLE, size=11)
    _box(ax, 5.55, row_top, 2.0, 0.72, "sample\n$y \\sim \\pi_\\theta(\\cdot|x)$", "#fff4e8", size=10.5)
    _box(ax, 5.55, row_bottom, 2.45, 0.72, "score  $r_\\phi(x,y) - \\beta\\,\\mathrm{KL}$\n(KL to frozen $\\pi_{ref}$)",
         "#fff4e8", size=10.5)
    _box(ax, 3.2, row_bottom, 1.55, 0.72, "PPO update\n(value model)", LOSS, size=10.5)
    _box(ax, 8.75, row_top, 1.8, 0.72, "preference pairs", INPUT, size=10.5)
    _box(ax, 8.75, row_bottom, 1.8, 0.72, "reward model $r_\\phi$\n(trained first)", FROZEN, size=10.5)
    _arrow(ax, (3.99, row_top), (4.53, row_top))
    _arrow(ax, (5.55, row_top - 0.38), (5.55, row_bottom + 0.38))
    _arrow(ax, (4.31, row_bottom), (3.99, row_bottom))
    _arrow(ax, (3.2, row_bottom + 0.38), (3.2, row_top - 0.38))
    _arrow(ax, (8.75, row_top - 0.38), (8.75, row_bottom + 0.38))
    _arrow(ax, (7.83, row_bottom), (6.8, row_bottom))
    return fig


def paged_kv_figure() -> Figure:
    """PagedAttention: two sequences' logical KV blocks mapped by block tables into one physical pool."""
    block = 4
    sequences = {
        "A": ("Four score and seven years ago our fathers brought forth".split(), [7, 1, 3], SEQ_A),
        "B": ("It was the best of times".split(), [5, 2], SEQ_B),
    }
    pool = 8
    fig, ax = _canvas(10, 6.5)
    cell_w, cell_h = 0.56, 0.34
    ax.text(0.2, 6.25, "PagedAttention: block tables map logical KV blocks to a shared physical pool",
            fontsize=13.5, weight="bold", va="center")
    ax.text(0.2, 5.88, f"block size = {block} tokens here (vLLM's default is 16); block table row i: logical block i → "
            "physical block", fontsize=10, color="#444444", va="center")
    pool_x = 5.35
    ax.text(pool_x + block * cell_w / 2 + 0.1, 5.42, "physical KV block pool (GPU memory)", ha="center",
            fontsize=11, weight="bold")

    pool_top, pool_step = 4.85, 0.52
    owner: dict[int, tuple[list[str], str]] = {}
    logical_y = {"A": 4.85, "B": 2.5}
    for name, (tokens, table, color) in sequences.items():
        y_first = logical_y[name]
        ax.text(0.3, y_first + cell_h + 0.12, f"sequence {name} ({len(tokens)} tokens)",
                fontsize=10.5, weight="bold", va="bottom")
        ax.text(3.4, y_first + cell_h + 0.12, "block table", fontsize=10.5, weight="bold", va="bottom",
                ha="center")
        for i, physical in enumerate(table):
            chunk = tokens[i * block:(i + 1) * block]
            y = y_first - i * pool_step
            for j in range(block):
                word = chunk[j] if j < len(chunk) else None
                _rect(ax, 0.3 + j * cell_w, y, cell_w, cell_h, color if word else "white", word, size=9,
                      edge=EDGE if word else "#aaaaaa", style="-" if word else ":")
            ax.text(0.18, y + cell_h / 2, str(i), ha="right", va="center", fontsize=10)
            _rect(ax, 3.0, y, 0.4, cell_h, "white", str(i), size=10)
            _rect(ax, 3.4, y, 0.4, cell_h, color, str(physical), size=10, weight="bold")
            owner[physical] = (chunk, color)
            target_y = pool_top - physical * pool_step + cell_h / 2
            _arrow(ax, (3.85, y + cell_h / 2), (pool_x - 0.45, target_y), color="#555555", width=1.1)
    for physical in range(pool):
        y = pool_top - physical * pool_step
        chunk, color = owner.get(physical, ([], "white"))
        ax.text(pool_x - 0.12, y + cell_h / 2, f"#{physical}", ha="right", va="center", fontsize=10)
        for j in range(block):
            word = chunk[j] if j < len(chunk) else None
            _rect(ax, pool_x + j * cell_w, y, cell_w, cell_h, color if word else "white", word, size=9,
                  edge=EDGE if word else "#aaaaaa", style="-" if word else ":")
        if not chunk:
            ax.text(pool_x + block * cell_w + 0.12, y + cell_h / 2, "free", va="center", fontsize=10,
                    color="#777777")
        elif len(chunk) < block:
            ax.text(pool_x + block * cell_w + 0.12, y + cell_h / 2, f"last block: {len(chunk)}/{block} filled",
                    va="center", fontsize=10, color="#777777")
    note = ("Waste is only the unfilled slots of each sequence's last block (< 1 block per sequence), not a "
            "max-length reservation;\nsequences that share a prefix can point to the same physical block "
            "(copy-on-write).")
    ax.text(0.2, 0.72, note, fontsize=10, va="center", linespacing=1.4)
    ax.text(0.2, 0.25, "After Kwon et al. (2023), Efficient Memory Management for Large Language Model Serving "
            "with PagedAttention.", fontsize=9, color="#555555", va="center")
    return fig


FIGURES_BY_NAME: dict[str, Callable[[], Figure]] = {
    "lora.svg": lora_figure,
    "zero_stages.svg": zero_figure,
    "dpo_flow.svg": dpo_figure,
    "paged_kv.svg": paged_kv_figure,
}


# ----------------------------------------------------------------------------------------------- writing
def write_all(out_dir: Path, preview_dir: Path | None = None) -> list[Path]:
    """Write every figure as SVG into out_dir (and PNG copies into preview_dir); return the SVG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(STYLE):
        for name, draw in FIGURES_BY_NAME.items():
            fig = draw()
            path = out_dir / name
            fig.savefig(path, format="svg", metadata={"Date": None})
            if preview_dir is not None:
                preview_dir.mkdir(parents=True, exist_ok=True)
                fig.savefig(preview_dir / name.replace(".svg", ".png"), format="png", dpi=PREVIEW_DPI,
                            facecolor="white")
            written.append(path)
    return written


def svg_labels(path: Path) -> list[str]:
    """Every line of text drawn in the SVG (matplotlib writes each as a comment beside its glyph paths)

    Raises xml.etree.ElementTree.ParseError when the file is not XML, ValueError when it is not an SVG.
    """
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.parse(path, parser=parser).getroot()
    if root.tag != "{http://www.w3.org/2000/svg}svg":
        raise ValueError(f"{path} is XML but not an SVG (root element {root.tag})")
    return [html.unescape(el.text.strip()) for el in root.iter()
            if el.tag is ET.Comment and el.text and el.text.strip()]


def _creator(path: Path) -> str | None:
    match = re.search(r"Matplotlib v([\w.+-]+)", path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def check(committed_dir: Path = FIGURES, fresh_dir: Path | None = None) -> list[str]:
    """Problems with the committed figures, compared with a fresh drawing (empty list: up to date).

    Text labels must match exactly; bytes must match too when the committed file was written by this
    same matplotlib version (other versions lay out paths differently, which is not a content change).
    `fresh_dir` holds an already made drawing (write_all's output); by default one is made in a temp dir.
    """
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_paths = [fresh_dir / name for name in FIGURES_BY_NAME] if fresh_dir else write_all(Path(tmp))
        for fresh in fresh_paths:
            committed = committed_dir / fresh.name
            if not committed.is_file():
                problems.append(f"{committed}: missing")
                continue
            try:
                labels = svg_labels(committed)
            except (ET.ParseError, ValueError) as error:
                problems.append(f"{committed}: not a valid SVG ({error})")
                continue
            if labels != svg_labels(fresh):
                problems.append(f"{committed}: its text differs from what the script draws now")
            elif _creator(committed) == matplotlib.__version__ and committed.read_bytes() != fresh.read_bytes():
                problems.append(f"{committed}: drawn differently by this matplotlib ({matplotlib.__version__})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the SVGs (default docs/figures)")
    parser.add_argument("--preview", type=Path, help="also write 800 px PNG copies here")
    parser.add_argument("--check", action="store_true", help="compare the committed SVGs with a fresh drawing")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem)
        if problems:
            print("Run `python scripts/make_figures.py` and commit docs/figures/.")
            return 1
        print(f"{len(FIGURES_BY_NAME)} figures up to date in {args.out}")
        return 0
    for path in write_all(args.out, args.preview):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
