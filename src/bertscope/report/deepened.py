"""The section of a ``model`` axis (e.g. originals and deepened variants a pre-step made): bars and GLUE tables by
model, and the macro average over tasks per seed.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from bertscope.core.figures import spread_words
from bertscope.data.labels import model_name
from bertscope.report.aggregate import (
    REPLICATE_AXIS,
    aggregate,
    axis_values,
    condition_axes,
    format_cell,
    split_by,
)
from bertscope.report.bars import draw_bars
from bertscope.report.captions import describe_shown, metric_words, new_section, sentence
from bertscope.report.context import Context
from bertscope.report.declared import TASK_AXES, is_study, model_ref
from bertscope.report.document import Section
from bertscope.report.plots import Plots
from bertscope.report.tables import pivot, single_axis_table
from bertscope.runs.store import RunRecord

__all__ = ["deepened_section"]


def _model_label(row: RunRecord) -> str:
    value = (row.axes or {}).get("model")
    if value is None:
        return model_name(row.config.get("model"))
    return str(value)


def deepened_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                     products: dict[str, RunRecord], ctx: Context) -> Section | None:
    conditions = condition_axes(rows)
    if "model" not in conditions:
        return None
    derived = {_model_label(r) for r in rows if isinstance(r.identity.get("model"), dict)}
    makers = {products[ref].command for r in rows if (ref := model_ref(r)) and ref in products}
    heading = "original vs deepened" if derived and makers <= {"deepen"} else "by model"
    section = new_section(f"{title}: {heading}", ctx)
    if derived:
        section.text("Models produced by a pre-step of the sweep (e.g. `deepen`): " + ", ".join(sorted(derived))
                     + ". Each pre-step ran once and every run below used its output folder.")
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in ("model", task_axis, "source_task")]
    for fixed, group in split_by(rows, others):
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        path, counts, note = draw_bars(plots, group, task_axis, "model", metric, f"{heading}{suffix}",
                                       f"{title}-models{suffix}", ctx)
        section.image(path, f"{sentence(metric_words(metric, ctx))} by model{suffix}; bar = mean, "
                            f"{spread_words(counts)}.{note}")
    glue = "GLUE " if any(r.command == "finetune" or is_study(r.command) for r in rows) else ""
    if task_axis:
        pivot(section, [_without(r, "source_task") for r in rows], task_axis, "model", metric, ctx,
              caption=sentence(f"{glue}{heading}"))
        averages = []
        for label in axis_values(rows, "model"):
            members = [r for r in rows if (r.axes or {}).get("model") == label]
            per_seed: dict[Any, list[float]] = {}
            for r in members:
                value = r.metrics.get(metric)
                if value is not None:
                    per_seed.setdefault((r.axes or {}).get(REPLICATE_AXIS), []).append(value)
            tasks = len(axis_values(rows, task_axis))
            complete = [statistics.fmean(v) for v in per_seed.values() if len(v) == tasks]
            averages.append([str(label), format_cell(aggregate(complete))])
        section.table(["model", f"average over tasks ({ctx.metric(metric)})"], averages,
                      caption=f"Macro average of {metric_words(metric, ctx)} over tasks per seed (seeds with "
                              "every task done), then mean ± std over seeds (n = seeds)")
    else:
        single_axis_table(section, rows, "model", metric, sentence(f"{glue}{heading}"), ctx)
    return section


def _without(row: RunRecord, axis: str) -> RunRecord:
    return dataclasses.replace(row, axes={k: v for k, v in (row.axes or {}).items() if k != axis})
