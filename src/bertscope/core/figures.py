"""How bertscope draws a figure for a paper: three file formats, readable log axes, lines described in words.

Every plot (``reconstruct``, ``compare``, ``layer-scan``, the studies, the report) is written by
:func:`save_figure`: a PNG at 300 dpi (for Markdown, HTML and slides) and an SVG and a PDF (vector, for a paper),
each atomically, without creation dates so that the same numbers give the same files. A caption that names a line
by its style reads the words from the style the line was drawn with (:func:`style_words`), and error-bar captions
come from :func:`spread_words`, so text and figure cannot disagree. A log axis gets several labelled ticks
(:func:`log_ticks`), also when its data span less than a decade (matplotlib's default then labels one tick or none).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bertscope.core.results import save_figure_atomic

__all__ = [
    "BASELINE_COLOR",
    "BASELINE_STYLE",
    "FORMATS",
    "PNG_DPI",
    "REFERENCE_STYLE",
    "draw_baseline",
    "figure_paths",
    "log_ticks",
    "readable_log_axis",
    "save_figure",
    "spread_words",
    "style_words",
]

#: every figure is written in these formats, side by side (same stem)
FORMATS = ("png", "svg", "pdf")
PNG_DPI = 300
#: the chance / majority-class line of a classification score plot
BASELINE_STYLE = "-."
BASELINE_COLOR = "dimgray"
#: a reference result drawn across a plot (e.g. the head that sees all dimensions)
REFERENCE_STYLE = ":"

_STYLE_WORDS = {"-": "solid", "solid": "solid", "--": "dashed", "dashed": "dashed", ":": "dotted",
                "dotted": "dotted", "-.": "dash-dotted", "dashdot": "dash-dotted"}
#: no dates in the vector files: the same figure gives the same bytes
_METADATA = {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def figure_paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The files :func:`save_figure` writes for ``path`` (any suffix): ``{"png": stem.png, "svg": ..., "pdf": ...}``."""
    target = Path(path)
    return {fmt: target.with_suffix(f".{fmt}") for fmt in FORMATS}


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = PNG_DPI, close: bool = False,
                **savefig_options: Any) -> dict[str, str]:
    """Write ``fig`` as PNG (``dpi``), SVG and PDF beside each other (each atomically); ``close`` closes the figure
    afterwards, also when a write fails (pyplot keeps every open figure alive).

    Returns ``{"png": ..., "svg": ..., "pdf": ...}`` (paths as strings, for a result's ``files``)."""
    written: dict[str, str] = {}
    try:
        for fmt, target in figure_paths(path).items():
            save_figure_atomic(fig, target, dpi=dpi, metadata=_METADATA[fmt], **savefig_options)
            written[fmt] = str(target)
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return written


def style_words(linestyle: str) -> str:
    """How a caption names a matplotlib line style: ``"--"`` -> "dashed", ``":"`` -> "dotted"."""
    return _STYLE_WORDS.get(linestyle, str(linestyle))


def spread_words(counts: Iterable[int], replicate: str = "seeds", what: str = "error bars") -> str:
    """What the error bars (or band) of a plot are: "error bars: ±1 sample standard deviation over n = 3 seeds"
    (``counts``: how many values each point averages); with one value per point, that there are none."""
    ns = sorted({int(n) for n in counts if n})
    if not ns or ns[-1] <= 1:
        return f"one run per point, so no {what}"
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
    return f"{what}: ±1 sample standard deviation over {n_text} {replicate}"


def _rounded(value: float, digits: int = 2) -> float:
    return float(f"{value:.{digits}g}")


def log_ticks(low: float, high: float, min_count: int = 3, max_count: int = 9) -> list[float]:
    """Tick values for a log axis over ``[low, high]`` (both > 0): decades if at least ``min_count`` of them fall
    inside, else 1-2-5 steps, else finer steps, else ``min_count`` geometrically spaced values rounded to two
    significant digits. At most ``max_count`` ticks (every other one dropped while there are more)."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"log ticks need a positive, finite range; got [{low}, {high}]")
    low, high = min(low, high), max(low, high)
    first, last = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
                                                                         8.0, 9.0)):
        ticks = sorted({_rounded(m * 10.0 ** e, 3) for e in range(first, last + 1) for m in mantissas})
        ticks = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
        if len(ticks) >= min_count:
            while len(ticks) > max_count:
                ticks = ticks[::2]
            return ticks
    if high / low < 1.0 + 1e-9:
        return [_rounded(low / 2), _rounded(low), _rounded(low * 2)]
    ratio = (high / low) ** (1.0 / max(min_count - 1, 1))
    ticks = sorted({_rounded(low * ratio ** i) for i in range(min_count)})
    digits = 3
    while len(ticks) < min_count and digits < 8:  # a very narrow range: more digits
        ticks = sorted({_rounded(low * ratio ** i, digits) for i in range(min_count)})
        digits += 1
    return ticks


def readable_log_axis(ax: Any, values: Iterable[float], which: str = "y") -> None:
    """Put ``ax``'s ``which`` axis on a log scale with several labelled ticks over the data ``values`` (plain
    numbers, not powers); an axis with no positive value stays linear."""
    import matplotlib.ticker

    positive = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if not positive:
        return
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(matplotlib.ticker.FixedLocator(log_ticks(min(positive), max(positive))))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def draw_baseline(ax: Any, value: float, label: str) -> Any:
    """The chance / majority-class line across a score plot (:data:`BASELINE_STYLE`)."""
    return ax.axhline(value, color=BASELINE_COLOR, linestyle=BASELINE_STYLE, linewidth=1.2, label=label, zorder=1)
