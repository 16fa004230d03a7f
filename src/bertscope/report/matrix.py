"""The ``matrix`` section kind: source x target heatmaps and tables for cross-fine-tuning (first fine-tune on one
task, then on another).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertscope.core.registry import ReportSection
from bertscope.data.labels import axis_name
from bertscope.report.aggregate import condition_axes, format_cell, metric_stats, split_by
from bertscope.report.captions import (
    baseline_of,
    describe_shown,
    metric_words,
    n_words,
    new_section,
    sentence,
    shown,
    titled,
)
from bertscope.report.context import Context
from bertscope.report.document import Section
from bertscope.report.plots import Plots, heatmap
from bertscope.runs.store import RunRecord
from bertscope.sweep.plugins import commands

__all__ = ["matrix_section"]


def matrix_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                   ctx: Context) -> Section | None:
    """Source x target matrices for cross-fine-tuning (first fine-tune on one task, then on another). Runs of the
    command that declares the section get it also when its two axes are options of theirs rather than axes."""
    conditions = condition_axes(rows)
    source, target = declared.axes
    if source not in conditions or target not in conditions:
        registry = commands()
        declaring = any((info := registry.get(r.command)) is not None and info.report == declared for r in rows)
        if not declaring or source not in rows[0].config or target not in rows[0].config:
            return None
    noun = declared.noun or declared.heading
    section = new_section(f"{title}: {declared.heading}", ctx)
    section.text(f"Rows: the task fine-tuned first (`{source}`); columns: the task fine-tuned and evaluated "
                 f"after it (`{target}`).")

    def value_of(row: RunRecord, axis: str) -> Any:
        return (row.axes or {}).get(axis, row.config.get(axis))

    derived = ("model",) if source == "source_task" else ()  # the source model *is* the source task
    others = [a for a in conditions if a not in (source, target, *derived)]
    human = ctx.metric(metric)
    for fixed, group in split_by(rows, others):
        sources = []
        targets = []
        for r in group:
            if value_of(r, source) not in sources:
                sources.append(value_of(r, source))
            if value_of(r, target) not in targets:
                targets.append(value_of(r, target))
        stats = [[metric_stats([r for r in group if value_of(r, source) == s and value_of(r, target) == t], metric)
                  for t in targets] for s in sources]
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        references = {t: b for t in targets if (b := baseline_of(ctx, t, metric)) is not None}
        columns = [shown(target, t) + (f"\n{references[t][1]} {references[t][0]:.3f}" if t in references else "")
                   for t in targets]
        path = heatmap(plots, [[c[0] for c in row] for row in stats], [shown(source, s) for s in sources],
                       columns, titled(f"{human}: {noun}{suffix}", ctx), axis_name(target),
                       axis_name(source), f"{title}-{declared.stem or source}{suffix}", cmap="magma",
                       value_label=human)
        counts = [c[2] for row in stats for c in row]
        note = f" {ctx.baseline_notes(metric, targets)}" if references else ""
        under = " Under each task name: its baseline." if references else ""
        section.image(path, f"{sentence(declared.heading)} of {metric_words(metric, ctx)}{suffix}: each cell is the "
                            f"mean over {n_words(counts)} (no error bars; the table below gives ± std).{under}{note}")
        table_rows = [[shown(source, s), *(format_cell(c) for c in row)] for s, row in zip(sources, stats)]
        if references:
            label = " / ".join(sorted({b[1] for b in references.values()})) + " (baseline)"
            table_rows.append([label, *(f"{references[t][0]:.3f}" if t in references else "–" for t in targets)])
        section.table([f"{axis_name(source)} \\ {axis_name(target)}", *(shown(target, t) for t in targets)],
                      table_rows, caption=f"{sentence(noun)}{suffix}; {metric_words(metric, ctx)}, mean ± std over "
                                          f"seeds (n = runs).{note}")
    return section
