"""The course's chart style and the charts several labs share.

Labels are in English: matplotlib's default fonts have no CJK glyphs, and a chart full of empty
boxes teaches nothing. Notebook prose around the chart explains it in 繁體中文.
"""

from __future__ import annotations

from collections.abc import Sequence


def apply_course_style() -> None:
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.figsize": (7, 4), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "font.size": 11,
    })


def plot_loss_curves(histories: dict[str, Sequence[tuple[int, float]]], title: str = "Training loss"):
    """One line per run: `{"LoRA": [(step, loss), ...], ...}`. Returns the figure."""
    import matplotlib.pyplot as plt

    apply_course_style()
    fig, ax = plt.subplots()
    for label, history in histories.items():
        steps, losses = zip(*history)
        ax.plot(steps, losses, marker="o", markersize=3, label=label)
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_bars(labels: Sequence[str], values: Sequence[float], ylabel: str, title: str, fmt: str = "{:.2f}"):
    """A bar chart with each bar's value written on it. Returns the figure."""
    import matplotlib.pyplot as plt

    apply_course_style()
    fig, ax = plt.subplots()
    bars = ax.bar(labels, values, color=plt.rcParams["axes.prop_cycle"].by_key()["color"][: len(labels)])
    for bar, value in zip(bars, values):
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def plot_per_layer_distributions(series: dict[str, Sequence[Sequence[float]]], ylabel: str, title: str,
                                 reference: float | None = None):
    """Per layer, the median of each series' values with a 5-95 % band: `{"k_proj": [layer0_values, ...]}`.
    `reference` draws a dashed line (e.g. 1.0, the value an (IA)^3 scale starts from). Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    apply_course_style()
    fig, ax = plt.subplots()
    for label, layers in series.items():
        quantiles = np.array([np.quantile(np.asarray(values, dtype=float), [0.05, 0.5, 0.95]) for values in layers])
        x = np.arange(len(layers))
        ax.plot(x, quantiles[:, 1], marker="o", markersize=3, label=f"{label} (median)")
        ax.fill_between(x, quantiles[:, 0], quantiles[:, 2], alpha=0.2)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1)
    ax.set(xlabel="layer", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    return fig
