"""The per-token view: its data checks, the colour scale, the escaped HTML table and the figure files."""

from __future__ import annotations

import re

import pytest

from bertscope.lens.token_view import (
    TokenView,
    probability_colour,
    token_view_html,
    write_token_views,
)


def _view(**changes) -> TokenView:
    values = dict(text="a <b> & c", tokens=("[CLS]", "a", "<b>", "[SEP]"), fed=("[CLS]", "a", "[MASK]", "[SEP]"),
                  counted=(False, True, True, False), layers=(0, 2),
                  top1=(("x", "a", "&amp;", "y"), ("[CLS]", "a", "<i>", "[SEP]")),
                  prob=((0.0, 1.0, 0.25, 0.5), (0.9, 0.1, 0.0, 1.0)), index=3)
    values.update(changes)
    return TokenView(**values)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError):
        _view(prob=((0.0, 1.0, 0.25), (0.9, 0.1, 0.0, 1.0)))
    with pytest.raises(ValueError):
        _view(layers=(0,))
    with pytest.raises(ValueError):
        _view(fed=("a",))


def test_colour_scale_runs_white_to_dark_green_and_is_monotone() -> None:
    assert probability_colour(0.0) == "#ffffff" and probability_colour(1.0) == "#006d2c"
    assert probability_colour(-1) == "#ffffff" and probability_colour(2) == "#006d2c"
    assert probability_colour(float("nan")) == "#ffffff"
    reds = [int(probability_colour(p / 10)[1:3], 16) for p in range(11)]
    assert reds == sorted(reds, reverse=True) and len(set(reds)) == 11


def test_html_is_one_escaped_table_per_sentence() -> None:
    page = token_view_html([_view(), _view(index=None, text="other")], "title <x>", notes=["note & more"])
    assert page.count("<table>") == 2 and "title &lt;x&gt;" in page and "note &amp; more" in page
    assert "<b>" not in page and "<i>" not in page  # tokens are text, never markup
    assert "&lt;b&gt;" in page and "&amp;amp;" in page and "&lt;i&gt;" in page
    assert "(fed [MASK])" in page and "Given sentence: other" in page and "Sentence 3:" in page
    rows = re.findall(r'<tr><th class="layer">(\d+)</th>(.*?)</tr>', page)
    assert [layer for layer, _ in rows] == ["0", "2", "0", "2"]
    cells = re.findall(r'background:(#[0-9a-f]{6});color:\w+" title="p\(input\) = ([0-9.]+)">', rows[0][1])
    assert [float(p) for _, p in cells] == [0.0, 1.0, 0.25, 0.5]
    assert [c for c, _ in cells] == [probability_colour(p) for p in (0.0, 1.0, 0.25, 0.5)]
    assert page.count("<th class=special>") == 4  # [CLS] and [SEP] of both sentences


def test_files_are_written(tmp_path) -> None:
    files = write_token_views([_view(), _view(cut=5)], tmp_path, "t")
    assert set(files) == {"token_view_png", "token_view_svg", "token_view_pdf", "token_view_html"}
    assert (tmp_path / "token_view.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "token_view.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert write_token_views([], tmp_path / "none", "t") == {}
    assert _view().to_dict()["top1"] == {"0": ["x", "a", "&amp;", "y"], "2": ["[CLS]", "a", "<i>", "[SEP]"]}
