"""The report's figures: under ``<out>/plots``, each as PNG (300 dpi), SVG and PDF (:func:`bertscope.core.figures.save_figure`).

Each helper draws one kind of figure from aggregated runs and returns the PNG's path for a section to show (the
Markdown embeds the PNG and links the SVG and PDF beside it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bertscope.core.figures import BASELINE_COLOR, BASELINE_STYLE, save_figure
from bertscope.report.aggregate import axis_values, metric_stats
from bertscope.runs.store import RunRecord

__all__ = ["Plots", "figure", "grouped_bars", "heatmap"]


class Plots:
    """Writes figures under ``out/plots`` with unique, readable names; ``figures`` lists their PNGs, ``files``
    every file written (PNG, SVG, PDF)."""

    def __init__(self, out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        self.folder = out / "plots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()
        self.figures: list[Path] = []
        self.files: list[Path] = []

    def path(self, stem: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-")[:80] or "plot"
        candidate, i = name, 2
        while candidate in self.used:
            candidate, i = f"{name}-{i}", i + 1
        self.used.add(candidate)
        return self.folder / f"{candidate}.png"

    def save(self, fig: Any, stem: str) -> Path:

        target = self.path(stem)
        fig.tight_layout()
        written = save_figure(fig, target, close=True)
        self.figures.append(target)
        self.files.extend(Path(p) for p in written.values())
        return target


def figure(width: float = 6.4, height: float = 4.0) -> tuple[Any, Any]:
    """A new (figure, axes) pair of the given size in inches."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def heatmap(plots: Plots, matrix: list[list[float]], rows: list[str], cols: list[str], title: str,
            xlabel: str, ylabel: str, stem: str, cmap: str = "viridis", value_label: str = "") -> Path:
    """A rows x columns matrix of mean values, each cell annotated (NaN cells left blank); ``value_label`` names
    the colour bar."""
    import numpy as np

    data = np.array(matrix, dtype=float)
    fig, ax = figure(max(4.5, 1.2 * len(cols) + 2.5), max(3.2, 0.5 * len(rows) + 2.0))
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto")
    longest = max((len(line) for c in cols for line in c.split("\n")), default=0)  # labels may have 2 lines
    ax.set_xticks(range(len(cols)), labels=cols, rotation=0 if longest < 16 else 30,
                  ha="center" if longest < 16 else "right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < middle else "black")
    bar = fig.colorbar(image, ax=ax)
    if value_label:
        bar.set_label(value_label)
    return plots.save(fig, stem)


def grouped_bars(plots: Plots, rows: Sequence[RunRecord], group_axis: str | None, bar_axis: str, metric: str,
                 title: str, stem: str, *, ylabel: str, legend_title: str, shown: Callable[[str | None, Any], str],
                 baselines: Mapping[Any, tuple[float, str]] | None = None) -> tuple[Path, list[int]]:
    """Bars of ``metric`` (mean, ±1 std whiskers) per ``bar_axis`` value, grouped by ``group_axis`` (e.g. task);
    ``baselines`` maps a group value to (reference value, legend label), drawn as a short line across that group.
    Returns the PNG and how many runs each bar averages."""
    import numpy as np

    groups = axis_values(rows, group_axis) if group_axis else [None]
    bars = axis_values(rows, bar_axis)
    width = 0.8 / max(len(bars), 1)
    fig, ax = figure(max(5.5, 1.2 * len(groups) * max(1, len(bars)) / 2 + 2.5), 4.2)
    counts: list[int] = []
    for i, bar in enumerate(bars):
        stats = [metric_stats([r for r in rows if (r.axes or {}).get(bar_axis) == bar
                               and (group_axis is None or (r.axes or {}).get(group_axis) == g)], metric)
                 for g in groups]
        counts.extend(st[2] for st in stats)
        xs = np.arange(len(groups)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(xs, [st[0] for st in stats], width, yerr=[st[1] or 0.0 for st in stats], capsize=3,
               label=shown(bar_axis, bar))
    labelled: set[str] = set()
    for j, group in enumerate(groups):
        if baselines and group in baselines:
            value, label = baselines[group]
            ax.plot([j - 0.45, j + 0.45], [value, value], color=BASELINE_COLOR, linestyle=BASELINE_STYLE,
                    linewidth=1.4, label=None if label in labelled else label, zorder=3)
            labelled.add(label)
    ax.set_xticks(range(len(groups)), labels=[shown(group_axis, g) if g is not None else ylabel for g in groups])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, title=legend_title, title_fontsize=7)
    return plots.save(fig, stem), counts
