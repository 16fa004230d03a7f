"""The paper-shaped sections of a report, each chosen by the axes of an experiment's finished runs.

* per-layer curves in the payload (``reconstruct``, ``compare``): reconstruction curves per model (and per
  deepened variant), with a band of ±1 std over seeds;
* the sections the commands declare (``CommandInfo.report``, a :class:`~bertscope.core.registry.ReportSection`:
  its axis, kind, heading), one for each declared axis the experiment varies, whichever command declared it: the
  ``layers`` study's ``layer`` (a line, or a layer x task heatmap), ``dims``'s (score vs k dimensions, the random
  choice as the control), ``tokens``'s ``token`` and finetune's ``freeze`` (bars and tables), ``cross``'s
  ``source`` x ``target`` (cross-fine-tuning matrices), and a plugin's own; plus the report's own matrix for
  cross-fine-tuning built from a sweep's finetune pre-steps (``source_task`` x ``task``);
* a ``model`` axis (e.g. originals and deepened variants made by a pre-step): original vs deepened GLUE tables;
* always: a summary table of the main metric per condition and a CSV with every metric aggregated.

Every number is ``mean ± std [95% interval] (n=runs)`` over the replicate axes (:mod:`.stats`). Every section starts with the
experiment's task(s), model(s) and base options (:mod:`.context`); metrics and axes are shown by their human names
(:mod:`bertscope.data.labels`, the key itself beside it once); a GLUE classification score gets its majority-class (or
chance) reference line, row or column; every caption says what its error bars are; each table is also written as
CSV and LaTeX (:mod:`.render`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import statistics
from collections.abc import Sequence
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.figures import (
    BASELINE_STYLE,
    REFERENCE_STYLE,
    draw_baseline,
    readable_log_axis,
    spread_words,
    style_words,
)
from bertscope.core.options import parse_dims
from bertscope.core.registry import SECTION_KINDS, ReportSection
from bertscope.data.labels import axis_name, model_name, task_name
from bertscope.finetune.learning import REMEDY
from bertscope.lens.metrics import LENS_METRICS
from bertscope.report.aggregate import (
    REPLICATE_AXIS,
    aggregate,
    axis_values,
    condition_axes,
    describe,
    format_cell,
    metric_stats,
    split_by,
)
from bertscope.report.config import ReportConfig
from bertscope.report.context import Context, row_tasks, task_key
from bertscope.report.document import Section
from bertscope.report.plots import Plots, figure, grouped_bars, heatmap
from bertscope.runs.store import STATUSES, ResultStore, RunRecord
from bertscope.sweep.plugins import commands

__all__ = ["PRE_STEP_CROSS", "aggregate_rows", "declared_sections", "experiment_sections", "is_study",
           "layer_curves", "overview_section", "summary_metrics", "summary_section"]

TASK_AXES = ("task",)
#: the style of the "random" control line in the dims plot
CONTROL_STYLE = "--"
#: The report's own section: cross-fine-tuning as a sweep, its models made by finetune pre-steps (the report adds
#: their task as ``source_task``, :func:`_with_source_task`).
PRE_STEP_CROSS = ReportSection("source_task", "matrix", "cross-fine-tuning matrix", noun="cross-fine-tuning",
                               across="task", stem="cross")


def declared_sections() -> list[ReportSection]:
    """The sections the commands of this process declare (studies first, then the others, each in registry order;
    one per axis), then the report's own, ordered by kind (:data:`~bertscope.core.registry.SECTION_KINDS`)."""
    infos = sorted(commands().values(), key=lambda info: not info.is_study)
    found: dict[tuple[str, ...], ReportSection] = {}
    for section in [*(info.report for info in infos if info.report is not None), PRE_STEP_CROSS]:
        found.setdefault(section.axes, section)
    return sorted(found.values(), key=lambda section: SECTION_KINDS.index(section.kind))


def _task_valued() -> set[str]:
    """Axes whose values are GLUE task names (shown as "RTE", "SST-2"...): ``task`` and the matrices' axes."""
    return {*TASK_AXES, *(a for s in declared_sections() if s.kind == "matrix" for a in s.axes)}


def is_study(command: str) -> bool:
    """A command whose one run holds many fine-tuning runs (its registry entry declares ``study_points``); a plugin
    command this process has not loaded is no study."""
    info = commands().get(command)
    return info is not None and info.is_study


def experiment_sections(store: ResultStore, rows: list[RunRecord], plots: Plots, name: str, metric: str,
                        preferred: str | None, products: dict[str, RunRecord], ctx: Context) -> list[Section]:
    """The paper-shaped sections that apply to one experiment's finished runs (see the module docstring)."""
    rows = _with_source_task(rows, products)
    draw = {"line": _line_section, "subsets": _subsets_section, "bars": _bars_section, "matrix": _matrix_section}
    candidates = [
        _curves_section(store, rows, plots, name, preferred, ctx),
        *(draw[declared.kind](declared, rows, plots, name, metric, ctx) for declared in declared_sections()),
        _deepened_section(rows, plots, name, metric, products, ctx),
        _not_learned_section(rows, ctx),
    ]
    return [section for section in candidates if section is not None]


def _not_learned_section(rows: Sequence[RunRecord], ctx: Context) -> Section | None:
    """A marker on the runs whose head did not learn (``learned`` 0, or a study with ``runs_not_learned``): their
    scores are the constant predictor's, not a property of the features (:mod:`bertscope.finetune.learning`)."""
    flagged = [(r, r.metrics.get("runs_not_learned")) for r in rows
               if r.metrics.get("learned") == 0 or (r.metrics.get("runs_not_learned") or 0) > 0]
    if not flagged:
        return None
    section = _new_section(_title("runs that did not learn", ctx), ctx)
    section.text(f"**Warning:** {len(flagged)} run(s) did not learn: the final training loss sits at the constant "
                 f"predictor's or every dev prediction is one class, so their scores say nothing about the "
                 f"features. Likely remedy: {REMEDY}.")
    section.table(["run", "command", "what"],
                  [[f"`{r.id}`", r.command, "did not learn" if count is None else f"{int(count)} run(s) did not learn"]
                   for r, count in flagged])
    return section


# -- names, reference values, captions ------------------------------------------------------------------------------


def shown(axis: str | None, value: Any) -> str:
    """A grid value as a reader sees it: task names as papers write them ("RTE", "after SST-2"), others as is."""
    if axis in _task_valued() and value is not None:
        text = str(value)
        if text.startswith("after "):
            return f"after {task_name(text.removeprefix('after '))}"
        return task_name(text)
    return str(value)


def describe_shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={shown(k, v)}" for k, v in values.items())


def _new_section(title: str, ctx: Context) -> Section:
    section = Section(title, level=3)
    section.text(ctx.line(compact=True))
    return section


def _metric_words(metric: str, ctx: Context) -> str:
    """"dev GLUE score (`final.score`)": the human name with the key once beside it."""
    name = ctx.metric(metric)
    return f"`{metric}`" if name == metric else f"{name} (`{metric}`)"


def _title(what: str, ctx: Context) -> str:
    what = _sentence(what) if ctx.builtin else what  # a plugin's metric key stays as it is spelled
    context = ctx.short()
    return f"{what}\n{context}" if context else what


def _baseline_of(ctx: Context, task: Any, metric: str) -> tuple[float, str] | None:
    """(value, label) of the reference line of ``task`` for ``metric``, if there is one."""
    baseline = ctx.baseline(task_key(task))
    value = None if baseline is None else baseline.value(metric)
    return None if baseline is None or value is None else (value, baseline.label)


def _single_task(rows: Sequence[RunRecord], ctx: Context) -> str | None:
    """The one task all of ``rows`` are about (None when they span several, or none)."""
    tasks = {t for r in rows for t in row_tasks(r)}
    if len(tasks) == 1:
        return next(iter(tasks))
    return ctx.tasks[0] if len(ctx.tasks) == 1 and not tasks else None


def _reference_words(entries: Sequence[tuple[float, str]], style: str = "") -> str:
    labels = sorted({label for _, label in entries})
    if not labels:
        return ""
    kind = " / ".join(labels)
    return (f"The {style_words(style)} grey line is the {kind.replace('majority class', 'majority-class')} baseline."
            if style else f"Reference: {kind}.")


def _baseline_row_label(ctx: Context, tasks: Sequence[Any], metric: str) -> str | None:
    labels = sorted({b[1] for t in tasks if (b := _baseline_of(ctx, t, metric)) is not None})
    if not labels:
        return None
    return " / ".join(labels) + " (baseline)"


# -- tables ---------------------------------------------------------------------------------------------------------


def _pivot(section: Section, rows: Sequence[RunRecord], row_axis: str, col_axis: str, metric: str, ctx: Context,
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
            table_rows.append([label, *(f"{b[0]:.3f}" if (b := _baseline_of(ctx, c, metric)) else "–"
                                        for c in col_values)])
            note = " " + ctx.baseline_notes(metric, [task_key(c) for c in col_values])
        elif row_axis in TASK_AXES and (label := _baseline_row_label(ctx, row_values, metric)):
            headers.append(label)
            for cells, rv in zip(table_rows, row_values):
                cells.append(f"{b[0]:.3f}" if (b := _baseline_of(ctx, rv, metric)) else "–")
            note = " " + ctx.baseline_notes(metric, [task_key(r) for r in row_values])
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        section.table(headers, table_rows, caption=f"{caption}{suffix}; {_metric_words(metric, ctx)}, mean ± std "
                                                   f"over seeds (n = runs).{note}")


def _single_axis_table(section: Section, rows: Sequence[RunRecord], axis: str, metric: str, caption: str,
                       ctx: Context) -> None:
    others = [a for a in condition_axes(rows) if a != axis]
    for fixed, group in split_by(rows, others):
        table_rows = [[shown(axis, v), format_cell(metric_stats([r for r in group if (r.axes or {}).get(axis) == v],
                                                                metric), metric=metric)]
                      for v in axis_values(group, axis)]
        note = ""
        task = _single_task(group, ctx)
        if task is not None and (reference := _baseline_of(ctx, task, metric)):
            table_rows.append([f"{reference[1]} (baseline)", f"{reference[0]:.3f}"])
            note = " " + ctx.baseline_notes(metric, [task])
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        section.table([axis_name(axis), ctx.metric(metric)], table_rows,
                      caption=f"{caption}{suffix}; {_metric_words(metric, ctx)}, mean ± std over seeds "
                              f"(n = runs).{note}")


# -- per-layer curves -----------------------------------------------------------------------------------------------


def layer_curves(payload: Any) -> dict[str, list[dict[str, float]]]:
    """Every list of per-layer records (dicts with an integer ``layer``) in a result payload, by where it was."""
    found: dict[str, list[dict[str, float]]] = {}

    def visit(value: Any, path: str, depth: int) -> None:
        if depth > 4:
            return
        if isinstance(value, list) and value and all(isinstance(v, dict) and isinstance(v.get("layer"), int)
                                                      and not isinstance(v.get("layer"), bool) for v in value):
            groups: dict[str, list[dict[str, float]]] = {}
            for v in value:  # records split by a string "group" (e.g. masked/unmasked) are separate curves
                group = v.get("group") if isinstance(v.get("group"), str) else "all"
                groups.setdefault(group, []).append(
                    {k: float(x) for k, x in v.items() if isinstance(x, (int, float)) and not isinstance(x, bool)})
            for group, rows in groups.items():
                if any(len(r) > 1 for r in rows):
                    name = path or "records"
                    found[name if group == "all" else f"{name}[{group}]"] = rows
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in ("config", "environment"):
                    continue
                visit(inner, f"{path}.{key}" if path else str(key), depth + 1)

    visit(payload, "", 0)
    return found


def _curve_metric(curves: dict[str, list[dict[str, float]]], preferred: str | None) -> str | None:
    keys: list[str] = []
    for rows in curves.values():
        for row in rows:
            keys.extend(k for k in row if k not in keys and k != "layer")
    if preferred and preferred in keys:
        return preferred
    for name in ("top1", "accuracy", "top1_agreement", "score"):
        if name in keys:
            return name
    return keys[0] if keys else None


#: curve metrics whose values span decades (drawn on a log axis): the lens declares which of its metrics do
_LOG_CURVES = frozenset(m.name for m in LENS_METRICS if m.scale == "log")


def _curves_section(store: ResultStore, rows: Sequence[RunRecord], plots: Plots, title: str,
                    preferred: str | None, ctx: Context) -> Section | None:
    curves_by_run = {r.id: layer_curves(store.payload(r.id)) for r in rows}
    if not any(curves_by_run.values()):
        return None
    all_curves = {f"{rid}:{name}": c for rid, cs in curves_by_run.items() for name, c in cs.items()}
    metric = _curve_metric(all_curves, preferred)
    if metric is None:
        return None
    lens = bool({r.command for r in rows} & {"reconstruct", "compare"})
    kind = "reconstruction curves" if lens else "curves"
    section = _new_section(f"{title}: {kind} per layer", ctx)
    conditions = condition_axes(rows)
    names: list[str] = []
    for cs in curves_by_run.values():
        names.extend(n for n in cs if n not in names)
    fig, ax = figure()
    table_layers: list[int] = []
    series: list[tuple[str, dict[int, tuple[float, float | None, int]]]] = []
    plotted: list[float] = []
    for fixed, group in split_by(rows, conditions):
        for name in names:
            per_layer: dict[int, list[float]] = {}
            for row in group:
                for rec in curves_by_run[row.id].get(name, []):
                    if metric in rec:
                        per_layer.setdefault(int(rec["layer"]), []).append(rec[metric])
            if not per_layer:
                continue
            label = describe_shown(fixed) or model_name(group[0].config.get("model"))
            legend = ", ".join(shown(k, v) for k, v in fixed.items()) or label
            if len(names) > 1:
                label, legend = f"{label} [{name}]", f"{legend} [{name}]"
            stats = {layer: aggregate(values) for layer, values in sorted(per_layer.items())}
            series.append((label, stats))
            xs = list(stats)
            means = [stats[x][0] for x in xs]
            stds = [stats[x][1] or 0.0 for x in xs]
            ax.plot(xs, means, marker="o", markersize=3, label=legend)
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            alpha=0.2)
            plotted.extend([*means, *(m + s for m, s in zip(means, stds))])
            table_layers.extend(x for x in xs if x not in table_layers)
    from matplotlib.ticker import MaxNLocator

    human = ctx.metric(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # hidden states are whole numbers
    ax.set_xlabel("hidden state (0 = embeddings, l = output of layer l)")
    ax.set_ylabel(human)
    if metric in _LOG_CURVES:
        readable_log_axis(ax, plotted)
    ax.set_title(_title(f"{human} per layer", ctx), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title=", ".join(axis_name(a) for a in conditions) or None, title_fontsize=7)
    counts = [s[2] for _, stats in series for s in stats.values()]
    words = _metric_words(metric, ctx)
    what = f"{words} of the MLM head applied to each hidden state" if lens else f"{words} per hidden state"
    context = f" {ctx.short()}." if ctx.short() else ""
    section.image(plots.save(fig, f"{title}-curves"),
                  f"{_sentence(what)}; line = mean, {spread_words(counts, what='band')}.{context}")
    table_layers.sort()
    section.table(["variant", *map(str, table_layers)],
                  [[label, *(format_cell(stats[x]) if x in stats else "–" for x in table_layers)]
                   for label, stats in series],
                  caption=f"{_sentence(words)} by hidden state (columns), mean ± std over seeds (n = runs)")
    return section


# -- GLUE-shaped sections -------------------------------------------------------------------------------------------


def _line_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                  ctx: Context) -> Section | None:
    """A score per numbered position (e.g. the hidden layer read): a line, or with several tasks a heatmap."""
    conditions = condition_axes(rows)
    layer_axis, noun = declared.axis, declared.noun or declared.axis
    if layer_axis not in conditions:
        return None
    section = _new_section(f"{title}: {declared.heading}", ctx)
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
            references = {t: b for t in tasks if (b := _baseline_of(ctx, t, metric)) is not None}
            columns = [shown(task_axis, t) + (f"\n{references[t][1]} {references[t][0]:.3f}" if t in references
                                              else "") for t in tasks]
            path = heatmap(plots, [[c[0] for c in row] for row in cells], [str(v) for v in layers], columns,
                           _title(f"{human} by {noun} and task{suffix}", ctx), axis_name("task"),
                           axis_name(layer_axis), f"{title}-{layer_axis}-task{suffix}", value_label=human)
            under = (" Under each task name: its baseline. " + ctx.baseline_notes(metric, tasks)
                     if references else "")
            section.image(path, f"{_sentence(noun)} x task heatmap of {_metric_words(metric, ctx)}{suffix}: each "
                                f"cell is the mean over {_n_words(counts)} (no error bars; the table below gives "
                                f"± std).{under}")
        else:
            fig, ax = figure()
            numeric = all(str(v).strip().lstrip("-").isdigit() for v in layers)  # one layer each: true positions
            xs = [int(str(v)) for v in layers] if numeric else list(range(len(layers)))
            ax.errorbar(xs, [c[0][0] for c in cells], yerr=[c[0][1] or 0.0 for c in cells],
                        marker="o", capsize=3, label="mean ± std")
            task = _single_task(group, ctx)
            reference = _baseline_of(ctx, task, metric) if task else None
            if reference is not None:
                draw_baseline(ax, reference[0], reference[1])
            ax.set_xticks(xs, labels=[str(v) for v in layers])
            ax.set_xlabel(axis_name(layer_axis))
            ax.set_ylabel(human)
            ax.set_title(_title(f"{human} by {noun}{suffix}", ctx), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            note = (f" {_reference_words([reference], BASELINE_STYLE)} {ctx.baseline_notes(metric, [task])}"
                    if reference is not None and task else "")
            section.image(plots.save(fig, f"{title}-{declared.stem or layer_axis}{suffix}"),
                          f"{_sentence(_metric_words(metric, ctx))} by {axis_name(layer_axis)}{suffix}; point = "
                          f"mean, {spread_words(counts)}.{note}")
    if task_axis:
        _pivot(section, rows, layer_axis, task_axis, metric, ctx, caption=f"Score by {noun} and task")
    else:
        _single_axis_table(section, rows, layer_axis, metric, f"Score by {axis_name(layer_axis)}", ctx)
    return section


def _n_words(counts: Sequence[int]) -> str:
    ns = sorted({n for n in counts if n})
    if not ns:
        return "no runs"
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"n = {n} seed{'' if ns[-1] == 1 else 's'}"


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


def _subsets_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                     ctx: Context) -> Section | None:
    """Score vs subset size k for each way of choosing (``strategy:k`` values), ``random`` as the control and
    ``all`` as the reference line."""
    conditions = condition_axes(rows)
    axis, noun = declared.axis, declared.noun or declared.axis
    if axis not in conditions:
        return None
    section = _new_section(f"{title}: {declared.heading}", ctx)
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
        task = _single_task(group, ctx)
        reference = _baseline_of(ctx, task, metric) if task else None
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
        ax.set_title(_title(f"{human} vs k{suffix}", ctx), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        note = (f" {_reference_words([reference], BASELINE_STYLE)} {ctx.baseline_notes(metric, [task])}"
                if reference is not None and task else "")
        section.image(plots.save(fig, f"{title}-{declared.stem or axis}{suffix}"),
                      f"{_sentence(_metric_words(metric, ctx))} vs k dimensions{suffix}; point = mean, "
                      f"{spread_words(counts, replicate='runs (seeds and random samples)')}.{note}")
    row_axis = "task" if "task" in conditions else None
    if row_axis:
        _pivot(section, rows, axis, row_axis, metric, ctx, caption=f"Score by {noun} and task")
    else:
        _single_axis_table(section, rows, axis, metric, f"Score by {noun}", ctx)
    return section


def _bars_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                 ctx: Context) -> Section | None:
    """A score per named choice: grouped bars (tasks as groups) and a table."""
    conditions = condition_axes(rows)
    axis, heading = declared.axis, declared.heading
    if axis not in conditions:
        return None
    section = _new_section(f"{title}: {heading}", ctx)
    if declared.text:
        section.text(declared.text)
    task_axis = next((a for a in TASK_AXES if a in conditions and a != axis), None)
    if plots is not None:
        others = [a for a in conditions if a not in (axis, task_axis)]
        for fixed, group in split_by(rows, others):
            suffix = f" ({describe_shown(fixed)})" if fixed else ""
            path, counts, note = _bars(plots, group, task_axis, axis, metric, f"{heading}{suffix}",
                                       f"{title}-{declared.stem or axis}{suffix}", ctx)
            section.image(path, f"{_sentence(_metric_words(metric, ctx))} by {axis_name(axis)}{suffix}; bar = "
                                f"mean, {spread_words(counts)}.{note}")
    if task_axis:
        _pivot(section, rows, axis, task_axis, metric, ctx, caption=heading.capitalize())
    else:
        _single_axis_table(section, rows, axis, metric, heading.capitalize(), ctx)
    return section


def _bars(plots: Plots, rows: Sequence[RunRecord], task_axis: str | None, bar_axis: str, metric: str, what: str,
          stem: str, ctx: Context) -> tuple[Any, list[int], str]:
    """Grouped bars with each task's baseline across its group; returns (PNG, runs per bar, caption note)."""
    references: dict[Any, tuple[float, str]] = {}
    if task_axis:
        references = {t: b for t in axis_values(rows, task_axis) if (b := _baseline_of(ctx, t, metric))}
    elif (task := _single_task(rows, ctx)) and (b := _baseline_of(ctx, task, metric)):
        references = {None: b}
    human = ctx.metric(metric)
    path, counts = grouped_bars(plots, rows, task_axis, bar_axis, metric, _title(what, ctx), stem, ylabel=human,
                                legend_title=axis_name(bar_axis), shown=shown, baselines=references)
    tasks = [task_key(t) for t in references] if task_axis else ([_single_task(rows, ctx) or ""])
    note = (f" {_reference_words(list(references.values()), BASELINE_STYLE)} "
            f"{ctx.baseline_notes(metric, tasks)}" if references else "")
    return path, counts, note


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _model_label(row: RunRecord) -> str:
    value = (row.axes or {}).get("model")
    if value is None:
        return model_name(row.config.get("model"))
    return str(value)


def _deepened_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                      products: dict[str, RunRecord], ctx: Context) -> Section | None:
    conditions = condition_axes(rows)
    if "model" not in conditions:
        return None
    derived = {_model_label(r) for r in rows if isinstance(r.identity.get("model"), dict)}
    makers = {products[ref].command for r in rows if (ref := _model_ref(r)) and ref in products}
    heading = "original vs deepened" if derived and makers <= {"deepen"} else "by model"
    section = _new_section(f"{title}: {heading}", ctx)
    if derived:
        section.text("Models produced by a pre-step of the sweep (e.g. `deepen`): " + ", ".join(sorted(derived))
                     + ". Each pre-step ran once and every run below used its output folder.")
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in ("model", task_axis, "source_task")]
    for fixed, group in split_by(rows, others):
        suffix = f" ({describe_shown(fixed)})" if fixed else ""
        path, counts, note = _bars(plots, group, task_axis, "model", metric, f"{heading}{suffix}",
                                   f"{title}-models{suffix}", ctx)
        section.image(path, f"{_sentence(_metric_words(metric, ctx))} by model{suffix}; bar = mean, "
                            f"{spread_words(counts)}.{note}")
    glue = "GLUE " if any(r.command == "finetune" or is_study(r.command) for r in rows) else ""
    if task_axis:
        _pivot(section, [_without(r, "source_task") for r in rows], task_axis, "model", metric, ctx,
               caption=_sentence(f"{glue}{heading}"))
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
                      caption=f"Macro average of {_metric_words(metric, ctx)} over tasks per seed (seeds with "
                              "every task done), then mean ± std over seeds (n = seeds)")
    else:
        _single_axis_table(section, rows, "model", metric, _sentence(f"{glue}{heading}"), ctx)
    return section


def _without(row: RunRecord, axis: str) -> RunRecord:
    return dataclasses.replace(row, axes={k: v for k, v in (row.axes or {}).items() if k != axis})


def _model_ref(row: RunRecord) -> str | None:
    """The id of the pre-step run that produced this run's model, if any."""
    value = row.identity.get("model")
    return value.get("@run") if isinstance(value, dict) else None


def _with_source_task(rows: list[RunRecord], products: dict[str, RunRecord]) -> list[RunRecord]:
    """Cross-fine-tuning as a sweep: runs whose model is a ``finetune`` pre-step get a ``source_task`` axis (the
    pre-step's task; ``none`` for runs on an original model), so the cross matrix can be drawn."""
    sources = {r.id: products[ref].config.get("task") for r in rows
               if (ref := _model_ref(r)) and ref in products and products[ref].command == "finetune"}
    if not sources:
        return rows
    return [dataclasses.replace(r, axes={"source_task": sources.get(r.id, "none"), **(r.axes or {})})
            for r in rows]


def _matrix_section(declared: ReportSection, rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
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
    section = _new_section(f"{title}: {declared.heading}", ctx)
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
        references = {t: b for t in targets if (b := _baseline_of(ctx, t, metric)) is not None}
        columns = [shown(target, t) + (f"\n{references[t][1]} {references[t][0]:.3f}" if t in references else "")
                   for t in targets]
        path = heatmap(plots, [[c[0] for c in row] for row in stats], [shown(source, s) for s in sources],
                       columns, _title(f"{human}: {noun}{suffix}", ctx), axis_name(target),
                       axis_name(source), f"{title}-{declared.stem or source}{suffix}", cmap="magma",
                       value_label=human)
        counts = [c[2] for row in stats for c in row]
        note = f" {ctx.baseline_notes(metric, targets)}" if references else ""
        under = " Under each task name: its baseline." if references else ""
        section.image(path, f"{_sentence(declared.heading)} of {_metric_words(metric, ctx)}{suffix}: each cell is the "
                            f"mean over {_n_words(counts)} (no error bars; the table below gives ± std).{under}{note}")
        table_rows = [[shown(source, s), *(format_cell(c) for c in row)] for s, row in zip(sources, stats)]
        if references:
            label = " / ".join(sorted({b[1] for b in references.values()})) + " (baseline)"
            table_rows.append([label, *(f"{references[t][0]:.3f}" if t in references else "–" for t in targets)])
        section.table([f"{axis_name(source)} \\ {axis_name(target)}", *(shown(target, t) for t in targets)],
                      table_rows, caption=f"{_sentence(noun)}{suffix}; {_metric_words(metric, ctx)}, mean ± std over "
                                          f"seeds (n = runs).{note}")
    return section


# -- summary, CSV rows, overview ------------------------------------------------------------------------------------


def summary_section(rows: Sequence[RunRecord], title: str, metrics: list[str], ctx: Context) -> Section:
    section = _new_section(f"{title}: summary", ctx)
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
