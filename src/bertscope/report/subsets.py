"""The ``subsets`` section kind: score vs subset size k for each way of choosing (``strategy:k`` values, e.g. the
``dims`` study's), ``random`` drawn as the control and ``all`` as the reference line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.figures import BASELINE_STYLE, REFERENCE_STYLE, draw_baseline, spread_words, style_words
from bertscope.core.options import parse_dims
from bertscope.core.registry import ReportSection
from bertscope.data.labels import axis_name
from bertscope.report.aggregate import condition_axes, metric_stats, split_by
from bertscope.report.captions import (
    baseline_of,
    describe_shown,
    metric_words,
    new_section,
    reference_words,
    sentence,
    single_task,
    titled,
)
from bertscope.report.context import Context
from bertscope.report.document import Section
from bertscope.report.plots import Plots, figure
from bertscope.report.tables import pivot, single_axis_table
from bertscope.runs.store import RunRecord

__all__ = ["CONTROL_STYLE", "subsets_section"]


#: the style of the "random" control line in the dims plot
CONTROL_STYLE = "--"


_DIMS = re.compile(r"^\s*([a-z][a-z_-]*)\s*:\s*(.+)$", re.IGNORECASE)


def _dims_k(value: Any) -> tuple[str, int | None]:
    """(strategy, k) of a ``dims`` value: ``random:8`` -> (random, 8); ``all`` -> (all, None)."""
    text = str(value).strip()
    if text.lower() == "all":
        return ("all", None)
    match = _DIMS.match(text)
    if not match:
        return (text, None)
    kind, arg = match.group(1).lower(), match.group(2)
    if kind == "idx":  # how many indices (ranges included): the count needs no hidden size, so any large one does
        try:
            return ("idx", len(parse_dims(text, 1 << 30, option="dims")))
        except BertscopeError:
            return ("idx", None)
    try:
        return (kind, int(arg))
    except ValueError:
        return (kind, None)


def subsets_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                    ctx: Context) -> Section | None:
    """Score vs subset size k for each way of choosing (``strategy:k`` values), ``random`` as the control and
    ``all`` as the reference line."""
    conditions = condition_axes(rows)
    axis, noun = declared.axis, declared.noun or declared.axis
    if axis not in conditions:
        return None
    section = new_section(f"{title}: {declared.heading}", ctx)
    section.text(f"Each line is a way of choosing k hidden dimensions; `random:k` (the {style_words(CONTROL_STYLE)} "
                 f"line) is the control. The {style_words(REFERENCE_STYLE)} black line is the head that sees all "
                 "dimensions.")
    others = [a for a in conditions if a != axis]
    human = ctx.metric(metric)
    for fixed, group in split_by(rows, others):
        by_kind: dict[str, dict[int, list[RunRecord]]] = {}
        full: list[RunRecord] = []
        for row in group:
            kind, k = _dims_k((row.axes or {}).get(axis))
            if kind == "all":
                full.append(row)
            elif k is not None:
                by_kind.setdefault(kind, {}).setdefault(k, []).append(row)
        fig, ax = figure()
        counts: list[int] = []
        for kind, points in by_kind.items():
            ks = sorted(points)
            stats = [metric_stats(points[k], metric) for k in ks]
            counts.extend(s[2] for s in stats)
            ax.errorbar(ks, [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats], marker="o", capsize=3,
                        label=kind + (" (control)" if kind == "random" else ""),
                        linestyle=CONTROL_STYLE if kind == "random" else "-")
        if full:
            mean, _, n = metric_stats(full, metric)
            ax.axhline(mean, color="black", linestyle=REFERENCE_STYLE, label=f"all dims (n={n})")
        task = single_task(group, ctx)
        reference = baseline_of(ctx, task, metric) if task else None
        if reference is not None:
            draw_baseline(ax, reference[0], reference[1])
        all_ks = sorted({k for points in by_kind.values() for k in points})
        if len(all_ks) > 2 and all_ks[-1] / all_ks[0] > 8:
            ax.set_xscale("log", base=2)
        if all_ks:
            ax.set_xticks(all_ks, labels=[str(k) for k in all_ks])
            ax.minorticks_off()
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        ax.set_xlabel(axis_name("k"))
        ax.set_ylabel(human)
        ax.set_title(titled(f"{human} vs k{suffix}", ctx), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        note = (f" {reference_words([reference], BASELINE_STYLE)} {ctx.baseline_notes(metric, [task])}"
                if reference is not None and task else "")
        section.image(plots.save(fig, f"{title}-{declared.stem or axis}{suffix}"),
                      f"{sentence(metric_words(metric, ctx))} vs k dimensions{suffix}; point = mean, "
                      f"{spread_words(counts, replicate='runs (seeds and random samples)')}.{note}")
    row_axis = "task" if "task" in conditions else None
    if row_axis:
        pivot(section, rows, axis, row_axis, metric, ctx, caption=f"Score by {noun} and task")
    else:
        single_axis_table(section, rows, axis, metric, f"Score by {noun}", ctx)
    return section
