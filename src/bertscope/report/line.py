"""The ``line`` section kind: a score per numbered position (e.g. the hidden layer read), a line with error bars,
or with several tasks a position x task heatmap; plus its table.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertscope.core.figures import BASELINE_STYLE, draw_baseline, spread_words
from bertscope.core.registry import ReportSection
from bertscope.data.labels import axis_name
from bertscope.report.aggregate import axis_values, condition_axes, metric_stats, split_by
from bertscope.report.captions import (
    baseline_of,
    describe_shown,
    metric_words,
    n_words,
    new_section,
    reference_words,
    sentence,
    shown,
    single_task,
    titled,
)
from bertscope.report.context import Context
from bertscope.report.declared import TASK_AXES
from bertscope.report.document import Section
from bertscope.report.plots import Plots, figure, heatmap
from bertscope.report.tables import pivot, single_axis_table
from bertscope.runs.store import RunRecord

__all__ = ["line_section"]


def line_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                 ctx: Context) -> Section | None:
    """A score per numbered position (e.g. the hidden layer read): a line, or with several tasks a heatmap."""
    conditions = condition_axes(rows)
    layer_axis, noun = declared.axis, declared.noun or declared.axis
    if layer_axis not in conditions:
        return None
    section = new_section(f"{title}: {declared.heading}", ctx)
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in (layer_axis, task_axis)]
    human = ctx.metric(metric)
    for fixed, group in split_by(rows, others):
        layers = axis_values(group, layer_axis)
        tasks = axis_values(group, task_axis) if task_axis else [None]
        cells = [[metric_stats([r for r in group if (r.axes or {}).get(layer_axis) == lv
                                and (task_axis is None or (r.axes or {}).get(task_axis) == t)], metric)
                  for t in tasks] for lv in layers]
        counts = [c[2] for row in cells for c in row]
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        if task_axis:
            references = {t: b for t in tasks if (b := baseline_of(ctx, t, metric)) is not None}
            columns = [shown(task_axis, t) + (f"\n{references[t][1]} {references[t][0]:.3f}" if t in references
                                              else "") for t in tasks]
            path = heatmap(plots, [[c[0] for c in row] for row in cells], [str(v) for v in layers], columns,
                           titled(f"{human} by {noun} and task{suffix}", ctx), axis_name("task"),
                           axis_name(layer_axis), f"{title}-{layer_axis}-task{suffix}", value_label=human)
            under = (" Under each task name: its baseline. " + ctx.baseline_notes(metric, tasks)
                     if references else "")
            section.image(path, f"{sentence(noun)} x task heatmap of {metric_words(metric, ctx)}{suffix}: each "
                                f"cell is the mean over {n_words(counts)} (no error bars; the table below gives "
                                f"± std).{under}")
        else:
            fig, ax = figure()
            numeric = all(str(v).strip().lstrip("-").isdigit() for v in layers)  # one layer each: true positions
            xs = [int(str(v)) for v in layers] if numeric else list(range(len(layers)))
            ax.errorbar(xs, [c[0][0] for c in cells], yerr=[c[0][1] or 0.0 for c in cells],
                        marker="o", capsize=3, label="mean ± std")
            task = single_task(group, ctx)
            reference = baseline_of(ctx, task, metric) if task else None
            if reference is not None:
                draw_baseline(ax, reference[0], reference[1])
            ax.set_xticks(xs, labels=[str(v) for v in layers])
            ax.set_xlabel(axis_name(layer_axis))
            ax.set_ylabel(human)
            ax.set_title(titled(f"{human} by {noun}{suffix}", ctx), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            note = (f" {reference_words([reference], BASELINE_STYLE)} {ctx.baseline_notes(metric, [task])}"
                    if reference is not None and task else "")
            section.image(plots.save(fig, f"{title}-{declared.stem or layer_axis}{suffix}"),
                          f"{sentence(metric_words(metric, ctx))} by {axis_name(layer_axis)}{suffix}; point = "
                          f"mean, {spread_words(counts)}.{note}")
    if task_axis:
        pivot(section, rows, layer_axis, task_axis, metric, ctx, caption=f"Score by {noun} and task")
    else:
        single_axis_table(section, rows, layer_axis, metric, f"Score by {axis_name(layer_axis)}", ctx)
    return section
