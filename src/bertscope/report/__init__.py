"""Paper-shaped reports from a sweep result store: Markdown, self-contained HTML, figures (PNG, SVG, PDF) and tables
(CSV, LaTeX).

This package only re-exports. The pieces: :mod:`.stats` (mean ± std over seeds, runs grouped by grid values),
:mod:`.document` (sections of text, tables and images), :mod:`.plots` (the PNGs), :mod:`.sections` (which
sections an experiment's axes call for), :mod:`.render` (report.md, and report.html rendered from it) and
:mod:`.build` (``bertscope report``: read the store, write the files).
"""

from __future__ import annotations

from bertscope.report.aggregate import aggregate, format_cell, main_metric
from bertscope.report.build import COMMAND, ReportResult, build_report
from bertscope.report.document import Block, Section
from bertscope.report.sections import layer_curves

__all__ = ["COMMAND", "Block", "ReportResult", "Section", "aggregate", "build_report", "format_cell",
           "layer_curves", "main_metric"]
