"""The report's plots: PNG files under ``<out>/plots`` (matplotlib, headless), one name per plot.

Each helper draws one kind of figure from aggregated runs and returns the PNG's path for a section to show.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertscope.report.stats import axis_values, metric_stats
from bertscope.results import save_figure_atomic
from bertscope.sweep.store import RunRecord

__all__ = ["Plots", "figure", "grouped_bars", "heatmap"]


class Plots:
    """Writes PNGs under ``out/plots`` with unique, readable names."""

    def __init__(self, out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        self.folder = out / "plots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()
        self.files: list[Path] = []

    def path(self, stem: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-")[:80] or "plot"
        candidate, i = name, 2
        while candidate in self.used:
            candidate, i = f"{name}-{i}", i + 1
        self.used.add(candidate)
        return self.folder / f"{candidate}.png"

    def save(self, fig: Any, stem: str) -> Path:
        import matplotlib.pyplot as plt

        target = self.path(stem)
        fig.tight_layout()
        try:
            save_figure_atomic(fig, target, dpi=110)
        finally:
            plt.close(fig)
        self.files.append(target)
        return target


def figure(width: float = 6.4, height: float = 4.0) -> tuple[Any, Any]:
    """A new (figure, axes) pair of the given size in inches."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def heatmap(plots: Plots, matrix: list[list[float]], rows: list[str], cols: list[str], title: str,
            xlabel: str, ylabel: str, stem: str, cmap: str = "viridis") -> Path:
    """A rows x columns matrix of mean values, each cell annotated (NaN cells left blank)."""
    import numpy as np

    data = np.array(matrix, dtype=float)
    fig, ax = figure(max(4.0, 1.1 * len(cols) + 2), max(3.0, 0.5 * len(rows) + 1.5))
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < middle else "black")
    fig.colorbar(image, ax=ax)
    return plots.save(fig, stem)


def grouped_bars(plots: Plots, rows: Sequence[RunRecord], group_axis: str | None, bar_axis: str, metric: str,
                 title: str, stem: str) -> Path:
    """Bars of ``metric`` (mean, ±1 std whiskers) per ``bar_axis`` value, grouped by ``group_axis`` (e.g. task)."""
    import numpy as np

    groups = axis_values(rows, group_axis) if group_axis else [None]
    bars = axis_values(rows, bar_axis)
    width = 0.8 / max(len(bars), 1)
    fig, ax = figure(max(5.0, 1.2 * len(groups) * max(1, len(bars)) / 2 + 2), 4.0)
    for i, bar in enumerate(bars):
        stats = [metric_stats([r for r in rows if (r.axes or {}).get(bar_axis) == bar
                               and (group_axis is None or (r.axes or {}).get(group_axis) == g)], metric)
                 for g in groups]
        xs = np.arange(len(groups)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(xs, [st[0] for st in stats], width, yerr=[st[1] or 0.0 for st in stats], capsize=3, label=str(bar))
    ax.set_xticks(range(len(groups)), labels=[str(g) if g is not None else metric for g in groups])
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, title=bar_axis)
    return plots.save(fig, stem)
