"""A report table as a LaTeX ``table`` with booktabs rules, ready to ``\\input`` into a paper.

Cells and captions are the report's Markdown text: `code` spans become ``\\texttt{...}``, everything else is
escaped (``_ % & # $ { } ~ ^ \\``), and the few symbols the report prints are written as LaTeX (± as ``$\\pm$``,
the en dash of an empty cell as ``--``), so the file compiles with ``\\usepackage{booktabs}`` alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["latex_escape", "markdown_to_latex", "to_latex"]

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_SYMBOLS = {"±": r"$\pm$", "–": "--", "—": "---", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
            "·": r"$\cdot$", "→": r"$\rightarrow$", "\n": " "}
_CODE = re.compile(r"`([^`]*)`")


def latex_escape(text: str) -> str:
    """``text`` with every character LaTeX treats specially escaped, and the report's symbols as LaTeX."""
    return "".join(_SPECIAL.get(ch) or _SYMBOLS.get(ch) or ch for ch in str(text))


def markdown_to_latex(text: str) -> str:
    """A report cell or caption (Markdown with `code` spans) as LaTeX: code spans in ``\\texttt``, the rest
    escaped."""
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(str(text)):
        out.append(latex_escape(text[last:match.start()]))
        out.append(r"\texttt{" + latex_escape(match.group(1)) + "}")
        last = match.end()
    out.append(latex_escape(str(text)[last:]))
    return "".join(out)


def _label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9:._-]+", "-", label).strip("-") or "table"


def to_latex(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", label: str = "") -> str:
    """A booktabs table: ``\\toprule`` / header / ``\\midrule`` / rows / ``\\bottomrule``; the first column left-
    aligned, the others right-aligned; short rows padded with empty cells. ``caption`` (Markdown) and ``label``
    (made safe for ``\\label``) are optional."""
    width = max([len(headers), *(len(r) for r in rows)], default=1) or 1

    def line(cells: Sequence[str]) -> str:
        padded = [markdown_to_latex(c) for c in cells] + [""] * (width - len(cells))
        return " & ".join(padded) + r" \\"

    lines = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + markdown_to_latex(caption) + "}")
    if label:
        lines.append(r"\label{" + _label(label) + "}")
    lines += [r"\begin{tabular}{" + "l" + "r" * (width - 1) + "}", r"\toprule", line(headers), r"\midrule"]
    lines += [line(row) for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
