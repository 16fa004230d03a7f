"""The document model of a report: titled sections of text, tables and images, written out by :mod:`.render`.

Text and table cells are Markdown (the report uses `code`); an image is a PNG file inside the report's folder
(with its SVG and PDF beside it) and a caption; a table carries its caption, and the stem of its CSV and LaTeX
files once :func:`~bertscope.report.render.write_tables` has written them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Section"]


@dataclass
class Block:
    """One piece of a section: text, a table, or an image."""

    kind: str  # "text" | "table" | "image"
    text: str = ""  # the text itself, or a table's / an image's caption
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    image: Path | None = None
    name: str = ""  # a table's file stem under tables/ (CSV and LaTeX), once written


@dataclass
class Section:
    """A heading (``level`` 2 per experiment, 3 per section inside it) and its blocks, in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text=text))

    def table(self, headers: list[str], rows: list[list[str]], caption: str = "") -> None:
        self.blocks.append(Block("table", text=caption, headers=headers, rows=rows))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(Block("image", text=caption, image=path))
