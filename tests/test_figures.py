"""Figures for papers: three formats at 300 dpi written atomically, line styles named as matplotlib names them,
log axes with several labelled ticks, error-bar words."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.lines
import matplotlib.pyplot as plt
import pytest
from PIL import Image

from bertscope.core.figures import (
    BASELINE_STYLE,
    REFERENCE_STYLE,
    figure_paths,
    log_ticks,
    readable_log_axis,
    save_figure,
    spread_words,
    style_words,
)


def test_save_figure_writes_png_at_300_dpi_svg_and_pdf(tmp_path):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    written = save_figure(fig, tmp_path / "sub" / "plot.png")
    plt.close(fig)
    assert written == {fmt: str(p) for fmt, p in figure_paths(tmp_path / "sub" / "plot.png").items()}
    png = Image.open(written["png"])
    assert png.size == (1200, 900)  # 4 x 3 inches at 300 dpi
    assert round(png.info["dpi"][0]) == 300
    assert Path(written["pdf"]).read_bytes()[:5] == b"%PDF-"
    svg = Path(written["svg"]).read_text(encoding="utf-8")
    assert "<svg" in svg and "<dc:date>" not in svg  # no creation date: same figure, same file
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["plot.pdf", "plot.png", "plot.svg"]  # no temps


def test_style_words_agree_with_matplotlib_names():
    # matplotlib's own table: '-' -> '_draw_solid', '--' -> '_draw_dashed', ':' -> '_draw_dotted', ...
    for style, drawer in matplotlib.lines.lineStyles.items():
        if drawer == "_draw_nothing":
            continue
        expected = drawer.removeprefix("_draw_").replace("dash_dot", "dash-dotted")
        assert style_words(style) == expected
    assert style_words(REFERENCE_STYLE) == "dotted" and style_words(BASELINE_STYLE) == "dash-dotted"


@pytest.mark.parametrize("low, high", [(2004.4, 4520.4), (20, 90), (1.2, 1.9), (1.0, 1e6), (0.5, 5e4),
                                       (3.0, 3.0), (1.001, 1.004), (7.5, 9.9)])
def test_log_ticks_label_several_values_near_the_data(low, high):
    ticks = log_ticks(low, high)
    assert 3 <= len(ticks) <= 9 and ticks == sorted(set(ticks))
    margin = 2.0 if high / low < 10 else 1.0 + 1e-9
    assert all(low / margin <= t <= high * margin for t in ticks)


def test_log_ticks_reject_non_positive_ranges():
    with pytest.raises(ValueError):
        log_ticks(0.0, 10.0)
    with pytest.raises(ValueError):
        log_ticks(1.0, math.inf)


def test_readable_log_axis_shows_several_tick_labels_over_a_narrow_range():
    values = [2004.4, 2400.0, 3100.0, 4520.4]  # the mean-rank panel of a real reconstruct run
    fig, ax = plt.subplots()
    ax.plot(range(4), values)
    readable_log_axis(ax, values)
    fig.canvas.draw()
    low, high = ax.get_ylim()
    labels = [t.get_text() for t, v in zip(ax.yaxis.get_majorticklabels(), ax.yaxis.get_majorticklocs())
              if t.get_text() and low <= v <= high]
    plt.close(fig)
    assert ax.get_yscale() == "log" and len(labels) >= 3
    assert all("10^" not in label and "$" not in label for label in labels)  # plain numbers, not powers


def test_readable_log_axis_leaves_an_axis_without_positive_values_linear():
    fig, ax = plt.subplots()
    readable_log_axis(ax, [0.0, -1.0, float("nan")])
    assert ax.get_yscale() == "linear"
    plt.close(fig)


def test_spread_words_say_what_the_error_bars_are():
    assert spread_words([3, 3, 3]) == "error bars: ±1 sample standard deviation over n = 3 seeds"
    assert "n = 2–3 seeds" in spread_words([2, 3])
    assert spread_words([1, 1], what="band") == "one run per point, so no band"
