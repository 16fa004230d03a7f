"""The options of ``report``."""

from __future__ import annotations

from dataclasses import dataclass

from bertscope.core.config import Config, opt

__all__ = ['ReportConfig']


@dataclass(frozen=True)
class ReportConfig(Config):
    """Build a Markdown and a self-contained HTML report (figures as PNG, SVG and PDF; tables as CSV and LaTeX) from a
    result store."""

    command = "report"

    store: str = opt("results.db", "SQLite result store written by `bertscope sweep`, or a study's OUT/runs.db",
                     metavar="DB")
    out: str = opt("report", "output folder: report.md, report.html, plots/ (PNG, SVG, PDF) and tables/ (CSV, LaTeX)", metavar="DIR")
    sweep: str | None = opt(None, "only this sweep (its spec's name); default: every sweep in the store")
    title: str | None = opt(None, "report title (default: the store's file name)")
    metric: str | None = opt(None, "metric key for the GLUE-score sections (default: each task's official "
                                   "main metric when present, else the first metric)")
