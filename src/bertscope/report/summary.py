"""The sections every report has: the overview of the store (runs by status, sweeps, provenance, failed runs,
pre-steps), each experiment's summary table of its main metrics, and the rows of the aggregated CSV.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from typing import Any

from bertscope.report.aggregate import condition_axes, describe, format_cell, metric_stats, split_by
from bertscope.report.captions import describe_shown, new_section
from bertscope.report.config import ReportConfig
from bertscope.report.context import Context
from bertscope.report.document import Section
from bertscope.runs.store import STATUSES, ResultStore, RunRecord

__all__ = ["aggregate_rows", "overview_section", "summary_metrics", "summary_section"]


def summary_section(rows: Sequence[RunRecord], title: str, metrics: list[str], ctx: Context) -> Section:
    section = new_section(f"{title}: summary", ctx)
    conditions = condition_axes(rows)
    table_rows = []
    for fixed, group in split_by(rows, conditions):
        table_rows.append([describe_shown(fixed) or "(all runs)",
                           *(format_cell(metric_stats(group, m), metric=m) for m in metrics)])
    keys = ", ".join(f"`{m}`" for m in metrics)
    section.table(["condition", *(ctx.metric(m) for m in metrics)], table_rows,
                  caption=f"Mean ± std over seeds (n = runs); the columns' metric keys: {keys}")
    return section


def summary_metrics(rows: Sequence[RunRecord], main: str | None, limit: int = 6) -> list[str]:
    """The main metric plus a few summary keys (keys naming no single layer)."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.metrics if k not in keys)
    per_layer = re.compile(r"(^|[._])(layer)?[._]?\d+($|[._])")
    timing = re.compile(r"seconds|per_second|throughput")
    chosen = [main] if main else []

    def column(key: str) -> list[Any]:
        return [row.metrics.get(key) for row in rows]

    for key in keys:
        if key in chosen or per_layer.search(key) or timing.search(key):
            continue
        if any(column(key) == column(c) for c in chosen):  # the same numbers under another name
            continue
        chosen.append(key)
    return chosen[:limit]


def aggregate_rows(rows: Sequence[RunRecord], experiment: str) -> list[dict[str, Any]]:
    conditions = condition_axes(rows)
    out = []
    for fixed, group in split_by(rows, conditions):
        keys: list[str] = []
        for row in group:
            keys.extend(k for k in row.metrics if k not in keys)
        for key in keys:
            mean, std, n = metric_stats(group, key)
            out.append({"experiment": experiment, **{a: fixed.get(a) for a in conditions}, "metric": key,
                        "mean": mean, "std": std, "n": n, "runs": ",".join(r.id for r in group)})
    return out


def overview_section(store: ResultStore, records: Sequence[RunRecord], counts: dict[str, int],
                     config: ReportConfig) -> Section:
    section = Section("Overview")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    section.text(f"Store `{config.store}`, generated {now}. Every table shows mean ± std over seeds (sample std, "
                 "ddof=1), the 95% Student-t interval of the mean [low, high] and the number of runs n; with n=1 "
                 "only the value is shown. GLUE scores are measured on each "
                 "task's dev split(s); a classification score has a reference line (row, column): the majority "
                 "class of the dev labels the runs were scored on when they read a local GLUE copy, else uniform "
                 "chance (each caption says which). Figures are in `plots/` as PNG (300 dpi), SVG and PDF; every "
                 "table is also in `tables/` as CSV and LaTeX (booktabs).")
    section.table(list(STATUSES), [[str(counts[s]) for s in STATUSES]], caption="Runs by status")
    sweeps = [s for s in store.sweeps() if config.sweep in (None, s["name"])]
    if sweeps:
        section.table(["sweep", "spec"], [[s["name"], s["spec_path"] or ""] for s in sweeps], caption="Sweeps")
    commits = sorted({r.git_commit or "unknown" for r in records if r.status == "done"})
    versions: dict[str, set[str]] = {}
    for r in records:
        for name, version in ((r.environment or {}).get("versions") or {}).items():
            if version:
                versions.setdefault(name, set()).add(version)
    if commits or versions:
        section.text("Provenance of finished runs: bertscope git "
                     + ", ".join(f"`{c[:10]}`" for c in commits) + "; "
                     + "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(versions.items())))
    unique = list({r.id: r for r in records}.values())
    failed = [r for r in unique if r.status == "failed"]
    if failed:
        section.table(["run id", "axes", "error"],
                      [[r.id, describe(r.axes or {}) or "(pre-step)", r.error or ""] for r in failed[:50]],
                      caption=f"Failed runs ({len(failed)}; `bertscope sweep SPEC --retry-failed` runs them again)")
    pre = [r for r in unique if r.status == "done" and r.axes is None and r.sweep is not None]
    if pre:
        section.table(["pre-step", "command", "label", "metrics"],
                      [[r.id, r.command, r.label or "", ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()
                                                                if v is not None)] for r in pre],
                      caption="Pre-steps (e.g. deepened checkpoints) the runs below depend on")
    return section
