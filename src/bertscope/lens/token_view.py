"""The lens per token: for a few sentences, a grid of layers x tokens of what each layer decodes.

Each cell holds the head's top-1 decoded token at that layer and position, coloured by the probability the head gives
the *input* token there (0 = white, 1 = dark green), so one can read where a token becomes recoverable and what a layer
says instead. The data (:class:`TokenView`) comes from the lens (:func:`bertscope.lens.metrics.decode_tokens`, called by
``reconstruct``); this module only turns it into a figure (PNG/SVG/PDF through :func:`bertscope.core.figures.save_figure`)
and a plain HTML table (every token escaped). Special tokens ([CLS], [SEP]) are shown in grey column headers: they
are not counted in the metrics unless ``--include-special``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.figures import save_figure
from bertscope.core.results import write_text_atomic

__all__ = ["MAX_TOKENS", "TokenView", "probability_colour", "token_view_figure", "token_view_html",
           "write_token_views"]

#: positions shown per sentence (a grid wider than this is unreadable); the rest are cut and the view says so
MAX_TOKENS = 40


@dataclass(frozen=True)
class TokenView:
    """One sentence decoded at every layer: ``top1[i][j]`` / ``prob[i][j]`` belong to ``layers[i]`` and token j."""

    text: str
    tokens: tuple[str, ...]          # the input tokens (what the head should reconstruct)
    fed: tuple[str, ...]             # what the model was given (differs from ``tokens`` where --mask-prob masked)
    counted: tuple[bool, ...]        # position enters the metrics
    layers: tuple[int, ...]          # hidden-state indices, 0 = embedding output
    top1: tuple[tuple[str, ...], ...]
    prob: tuple[tuple[float, ...], ...]
    index: int | None = None         # the sentence's index among the measured ones; None for given sentences
    cut: int = 0                     # positions left out beyond MAX_TOKENS
    lens: str = "logit"              # which lens decoded it: the head as it is, or after the tuned-lens translators

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not (len(self.fed) == len(self.counted) == n and len(self.top1) == len(self.prob) == len(self.layers)
                and all(len(row) == n for row in (*self.top1, *self.prob))):
            raise ValueError("a token view needs one top-1 token and one probability per layer and token")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "tokens": list(self.tokens), "fed": list(self.fed),
                "counted": list(self.counted), "layers": list(self.layers),
                "top1": {str(layer): list(row) for layer, row in zip(self.layers, self.top1)},
                "input_prob": {str(layer): [round(p, 6) for p in row] for layer, row in zip(self.layers, self.prob)},
                "positions_cut": self.cut, "lens": self.lens}

    @property
    def where(self) -> str:
        """How a panel names its sentence and lens: "sentence 3, tuned lens"."""
        where = f"sentence {self.index}" if self.index is not None else "given sentence"
        return where if self.lens == "logit" else f"{where}, {self.lens} lens"


def probability_colour(p: float) -> str:
    """``#rrggbb`` from white (p = 0) to dark green (p = 1); the HTML and the figure use the same scale."""
    p = min(1.0, max(0.0, p)) if p == p else 0.0
    low, high = (255, 255, 255), (0, 109, 44)
    return "#" + "".join(f"{round(a + (b - a) * p):02x}" for a, b in zip(low, high))


def _text_colour(p: float) -> str:
    return "white" if p == p and p > 0.55 else "black"


def _column_label(view: TokenView, j: int) -> str:
    token, fed = view.tokens[j], view.fed[j]
    return token if token == fed else f"{token}\n(fed {fed})"


def token_view_figure(views: Sequence[TokenView], title: str) -> Any:
    """One panel per sentence: rows = layers (0 at the top), columns = tokens, cell text = top-1 decoded token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("input_prob", [probability_colour(0.0), probability_colour(1.0)])
    widest = max(len(v.tokens) for v in views)
    heights = [len(v.layers) + 2.2 for v in views]
    fig, axes = plt.subplots(len(views), 1, figsize=(max(6.0, 0.62 * widest + 1.8), 0.34 * sum(heights) + 1.0),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, constrained_layout=True)
    image = None
    for ax, view in zip(axes[:, 0], views):
        image = ax.imshow(view.prob, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for i, row in enumerate(view.top1):
            for j, token in enumerate(row):
                ax.text(j, i, token, ha="center", va="center", fontsize=6, color=_text_colour(view.prob[i][j]))
        ax.set_xticks(range(len(view.tokens)))
        ax.set_xticklabels([_column_label(view, j) for j in range(len(view.tokens))], rotation=60, ha="right",
                           fontsize=6)
        for label, counted in zip(ax.get_xticklabels(), view.counted):
            if not counted:
                label.set_color("gray")
        ax.set_yticks(range(len(view.layers)))
        ax.set_yticklabels([str(layer) for layer in view.layers], fontsize=7)
        ax.set_ylabel("hidden state", fontsize=7)
        where = view.where
        cut = f" (first {len(view.tokens)} positions; {view.cut} more cut)" if view.cut else ""
        ax.set_title(f"{where}: {_shorten(view.text, 110)}{cut}", fontsize=7, loc="left")
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.025, pad=0.01)
        bar.set_label("probability of the input token", fontsize=7)
    fig.suptitle(title, fontsize=8)
    return fig


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def token_view_html(views: Sequence[TokenView], title: str, notes: Sequence[str] = ()) -> str:
    """A standalone HTML page: one table per sentence (rows = layers, columns = tokens), every text escaped."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin:0 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:2px 5px;text-align:center;white-space:nowrap}"
             "th.special{color:#888}th.layer{text-align:right}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts += [f"<p>{e(note)}</p>" for note in notes]
    for view in views:
        where = view.where
        parts.append(f"<h2>{e(where[:1].upper() + where[1:])}: {e(view.text)}</h2>")
        if view.cut:
            parts.append(f"<p>First {len(view.tokens)} positions shown; {view.cut} more cut.</p>")
        header = "".join(
            f'<th{"" if counted else " class=special"}>{e(tok)}'
            + (f"<br><small>(fed {e(fed)})</small>" if fed != tok else "") + "</th>"
            for tok, fed, counted in zip(view.tokens, view.fed, view.counted))
        parts.append(f'<table><tr><th class="layer">hidden state</th>{header}</tr>')
        for layer, tops, probs in zip(view.layers, view.top1, view.prob):
            cells = "".join(
                f'<td style="background:{probability_colour(p)};color:{_text_colour(p)}" '
                f'title="p(input) = {p:.4f}">{e(tok)}</td>' for tok, p in zip(tops, probs))
            parts.append(f'<tr><th class="layer">{layer}</th>{cells}</tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_token_views(views: Sequence[TokenView], folder: Path, title: str,
                      notes: Sequence[str] = ()) -> dict[str, str]:
    """Write ``token_view.png/.svg/.pdf`` and ``token_view.html`` into ``folder``; returns the files by kind."""
    if not views:
        return {}
    written = save_figure(token_view_figure(views, title), folder / "token_view.png", close=True)
    files = {f"token_view_{fmt}": path for fmt, path in written.items()}
    files["token_view_html"] = str(write_text_atomic(folder / "token_view.html", token_view_html(views, title, notes)))
    return files
