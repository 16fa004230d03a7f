"""The tables of the GLUE-shaped sections: a metric with one axis down and another across (a baseline row or
column when one of them is the evaluated task), or by one axis alone; one table per value of the other axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertscope.data.labels import axis_name
from bertscope.report.aggregate import axis_values, condition_axes, format_cell, metric_stats, split_by
from bertscope.report.captions import baseline_of, describe_shown, metric_words, shown, single_task
from bertscope.report.context import Context, task_key
from bertscope.report.declared import TASK_AXES
from bertscope.report.document import Section
from bertscope.runs.store import RunRecord

__all__ = ["pivot", "single_axis_table"]


def _baseline_row_label(ctx: Context, tasks: Sequence[Any], metric: str) -> str | None:
    labels = sorted({b[1] for t in tasks if (b := baseline_of(ctx, t, metric)) is not None})
    if not labels:
        return None
    return " / ".join(labels) + " (baseline)"


def pivot(section: Section, rows: Sequence[RunRecord], row_axis: str, col_axis: str, metric: str, ctx: Context,
          *, row_title: str | None = None, caption: str = "") -> None:
    """Tables of ``metric`` with ``row_axis`` down and ``col_axis`` across, one per value of the other axes; when
    one of them is the evaluated task, a baseline row (or column) holds each task's reference value."""
    others = [a for a in condition_axes(rows) if a not in (row_axis, col_axis)]
    for fixed, group in split_by(rows, others):
        row_values = axis_values(group, row_axis)
        col_values = axis_values(group, col_axis)
        table_rows = []
        for rv in row_values:
            cells = [shown(row_axis, rv)]
            for cv in col_values:
                members = [r for r in group if (r.axes or {}).get(row_axis) == rv
                           and (r.axes or {}).get(col_axis) == cv]
                cells.append(format_cell(metric_stats(members, metric), metric=metric))
            table_rows.append(cells)
        headers = [row_title or axis_name(row_axis), *(shown(col_axis, c) for c in col_values)]
        note = ""
        if col_axis in TASK_AXES and (label := _baseline_row_label(ctx, col_values, metric)):
            table_rows.append([label, *(f"{b[0]:.3f}" if (b := baseline_of(ctx, c, metric)) else "–"
                                        for c in col_values)])
            note = " " + ctx.baseline_notes(metric, [task_key(c) for c in col_values])
        elif row_axis in TASK_AXES and (label := _baseline_row_label(ctx, row_values, metric)):
            headers.append(label)
            for cells, rv in zip(table_rows, row_values):
                cells.append(f"{b[0]:.3f}" if (b := baseline_of(ctx, rv, metric)) else "–")
            note = " " + ctx.baseline_notes(metric, [task_key(r) for r in row_values])
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        section.table(headers, table_rows, caption=f"{caption}{suffix}; {metric_words(metric, ctx)}, mean ± std "
                                                   f"over seeds (n = runs).{note}")


def single_axis_table(section: Section, rows: Sequence[RunRecord], axis: str, metric: str, caption: str,
                      ctx: Context) -> None:
    others = [a for a in condition_axes(rows) if a != axis]
    for fixed, group in split_by(rows, others):
        table_rows = [[shown(axis, v), format_cell(metric_stats([r for r in group if (r.axes or {}).get(axis) == v],
                                                                metric), metric=metric)]
                      for v in axis_values(group, axis)]
        note = ""
        task = single_task(group, ctx)
        if task is not None and (reference := baseline_of(ctx, task, metric)):
            table_rows.append([f"{reference[1]} (baseline)", f"{reference[0]:.3f}"])
            note = " " + ctx.baseline_notes(metric, [task])
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        section.table([axis_name(axis), ctx.metric(metric)], table_rows,
                      caption=f"{caption}{suffix}; {metric_words(metric, ctx)}, mean ± std over seeds "
                              f"(n = runs).{note}")
