"""The ``bars`` section kind: a score per named choice (e.g. ``tokens``'s ``token``, finetune's ``freeze``) as grouped
bars with tasks as groups and each task's baseline across its group, plus its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertscope.core.figures import BASELINE_STYLE, spread_words
from bertscope.core.registry import ReportSection
from bertscope.data.labels import axis_name
from bertscope.report.aggregate import axis_values, condition_axes, split_by
from bertscope.report.captions import (
    baseline_of,
    describe_shown,
    metric_words,
    new_section,
    reference_words,
    sentence,
    shown,
    single_task,
    titled,
)
from bertscope.report.context import Context, task_key
from bertscope.report.declared import TASK_AXES
from bertscope.report.document import Section
from bertscope.report.plots import Plots, grouped_bars
from bertscope.report.tables import pivot, single_axis_table
from bertscope.runs.store import RunRecord

__all__ = ["bars_section", "draw_bars"]


def bars_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                 ctx: Context) -> Section | None:
    """A score per named choice: grouped bars (tasks as groups) and a table."""
    conditions = condition_axes(rows)
    axis, heading = declared.axis, declared.heading
    if axis not in conditions:
        return None
    section = new_section(f"{title}: {heading}", ctx)
    if declared.text:
        section.text(declared.text)
    task_axis = next((a for a in TASK_AXES if a in conditions and a != axis), None)
    if plots is not None:
        others = [a for a in conditions if a not in (axis, task_axis)]
        for fixed, group in split_by(rows, others):
            suffix = f" ({describe_shown(fixed)})" if fixed else ""
            path, counts, note = draw_bars(plots, group, task_axis, axis, metric, f"{heading}{suffix}",
                                           f"{title}-{declared.stem or axis}{suffix}", ctx)
            section.image(path, f"{sentence(metric_words(metric, ctx))} by {axis_name(axis)}{suffix}; bar = "
                                f"mean, {spread_words(counts)}.{note}")
    if task_axis:
        pivot(section, rows, axis, task_axis, metric, ctx, caption=heading.capitalize())
    else:
        single_axis_table(section, rows, axis, metric, heading.capitalize(), ctx)
    return section


def draw_bars(plots: Plots, rows: Sequence[RunRecord], task_axis: str | None, bar_axis: str, metric: str, what: str,
              stem: str, ctx: Context) -> tuple[Any, list[int], str]:
    """Grouped bars with each task's baseline across its group; returns (PNG, runs per bar, caption note)."""
    references: dict[Any, tuple[float, str]] = {}
    if task_axis:
        references = {t: b for t in axis_values(rows, task_axis) if (b := baseline_of(ctx, t, metric))}
    elif (task := single_task(rows, ctx)) and (b := baseline_of(ctx, task, metric)):
        references = {None: b}
    human = ctx.metric(metric)
    path, counts = grouped_bars(plots, rows, task_axis, bar_axis, metric, titled(what, ctx), stem, ylabel=human,
                                legend_title=axis_name(bar_axis), shown=shown, baselines=references)
    tasks = [task_key(t) for t in references] if task_axis else ([single_task(rows, ctx) or ""])
    note = (f" {reference_words(list(references.values()), BASELINE_STYLE)} "
            f"{ctx.baseline_notes(metric, tasks)}" if references else "")
    return path, counts, note
