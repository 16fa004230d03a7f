"""Paper-shaped reports from a sweep result store: Markdown, self-contained HTML, figures (PNG, SVG, PDF) and tables
(CSV, LaTeX).

This package only re-exports. The pieces: :mod:`.aggregate` (mean ± std over seeds, runs grouped by grid values),
:mod:`.document` (sections of text, tables and images), :mod:`.plots` (the PNGs), :mod:`.sections` (which
sections an experiment's axes call for; :mod:`.declared` reads the commands' declarations, one module draws each
kind: :mod:`.curves`, :mod:`.line`, :mod:`.subsets`, :mod:`.bars`, :mod:`.matrix`, :mod:`.deepened`, with
:mod:`.captions` and :mod:`.tables` shared by them and :mod:`.summary` for the sections every report has),
:mod:`.render` (report.md, and report.html rendered from it) and :mod:`.build` (``bertscope report``: read the
store, write the files).
"""

from __future__ import annotations

from bertscope.report.aggregate import aggregate, format_cell, main_metric
from bertscope.report.build import COMMAND, ReportResult, build_report
from bertscope.report.curves import layer_curves
from bertscope.report.document import Block, Section

__all__ = ["COMMAND", "Block", "ReportResult", "Section", "aggregate", "build_report", "format_cell",
           "layer_curves", "main_metric"]
