"""The paper-shaped sections of a report, each chosen by the axes of an experiment's finished runs.

* per-layer curves in the payload (``reconstruct``, ``compare``): reconstruction curves per model (and per
  deepened variant), with a band of ±1 std over seeds;
* ``task`` and ``layer``/``layers`` axes: a layer x task heatmap;
* ``dims`` axis (``all``, ``first:K``, ``random:K``): score vs k dimensions, the random choice as the control;
* ``token`` axis: token-choice tables; ``freeze`` axis: frozen vs fine-tuned tables;
* the ``cross`` command (or source/target task axes): cross-fine-tuning matrices;
* a ``model`` axis (e.g. originals and deepened variants made by a pre-step): original vs deepened GLUE tables;
* always: a summary table of the main metric per condition and a CSV with every metric aggregated.

Every number is ``mean ± std (n=runs)`` over the replicate axes (:mod:`.stats`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import statistics
from collections.abc import Sequence
from typing import Any

from bertscope.configs import ReportConfig
from bertscope.errors import BertscopeError
from bertscope.options import parse_dims
from bertscope.report.document import Section
from bertscope.report.plots import Plots, figure, grouped_bars, heatmap
from bertscope.report.stats import (
    REPLICATE_AXIS,
    aggregate,
    axis_values,
    condition_axes,
    describe,
    format_cell,
    metric_stats,
    split_by,
)
from bertscope.sweep.plugins import commands
from bertscope.sweep.store import STATUSES, ResultStore, RunRecord

__all__ = ["aggregate_rows", "experiment_sections", "is_study", "layer_curves", "overview_section",
           "summary_metrics", "summary_section"]

LAYER_AXES = ("layer", "layers")
TASK_AXES = ("task",)
SOURCE_AXES = ("source", "source_task", "first", "first_task", "from_task", "task_a", "intermediate",
               "intermediate_task")
TARGET_AXES = ("target", "target_task", "second", "second_task", "to_task", "task_b", "task")


def is_study(command: str) -> bool:
    """A command whose one run holds many fine-tuning runs (its registry entry declares ``study_points``); a plugin
    command this process has not loaded is no study."""
    info = commands().get(command)
    return info is not None and info.is_study


def experiment_sections(store: ResultStore, rows: list[RunRecord], plots: Plots, name: str, metric: str,
                        preferred: str | None, products: dict[str, RunRecord]) -> list[Section]:
    """The paper-shaped sections that apply to one experiment's finished runs (see the module docstring)."""
    rows = _with_source_task(rows, products)
    candidates = [
        _curves_section(store, rows, plots, name, preferred),
        _layer_task_section(rows, plots, name, metric),
        _dims_section(rows, plots, name, metric),
        _axis_table_section(rows, "token", "token choice", name, metric,
                            "Which token vector the head reads (e.g. `cls`, `mean`, `max-norm`).", plots),
        _axis_table_section(rows, "freeze", "frozen vs fine-tuned", name, metric,
                            "`none` fine-tunes the whole encoder; other values freeze the named parts and train "
                            "only the head (and what is left).", plots),
        _cross_section(rows, plots, name, metric),
        _deepened_section(rows, plots, name, metric, products),
    ]
    return [section for section in candidates if section is not None]


# -- tables ---------------------------------------------------------------------------------------------------------


def _pivot(section: Section, rows: Sequence[RunRecord], row_axis: str, col_axis: str, metric: str,
           *, row_title: str | None = None, caption: str = "") -> None:
    """Tables of ``metric`` with ``row_axis`` down and ``col_axis`` across, one per value of the other axes."""
    others = [a for a in condition_axes(rows) if a not in (row_axis, col_axis)]
    for fixed, group in split_by(rows, others):
        row_values = axis_values(group, row_axis)
        col_values = axis_values(group, col_axis)
        table_rows = []
        for rv in row_values:
            cells = [str(rv)]
            for cv in col_values:
                members = [r for r in group if (r.axes or {}).get(row_axis) == rv
                           and (r.axes or {}).get(col_axis) == cv]
                cells.append(format_cell(metric_stats(members, metric)))
            table_rows.append(cells)
        suffix = f" ({describe(fixed)})" if fixed else ""
        section.table([row_title or row_axis, *map(str, col_values)], table_rows,
                      caption=f"{caption}{suffix}; `{metric}`, mean ± std over seeds (n = runs)")


def _single_axis_table(section: Section, rows: Sequence[RunRecord], axis: str, metric: str, caption: str) -> None:
    others = [a for a in condition_axes(rows) if a != axis]
    for fixed, group in split_by(rows, others):
        table_rows = [[str(v), format_cell(metric_stats([r for r in group if (r.axes or {}).get(axis) == v],
                                                        metric))] for v in axis_values(group, axis)]
        suffix = f" ({describe(fixed)})" if fixed else ""
        section.table([axis, metric], table_rows, caption=f"{caption}{suffix}")


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


def _curves_section(store: ResultStore, rows: Sequence[RunRecord], plots: Plots, title: str,
                    preferred: str | None) -> Section | None:
    curves_by_run = {r.id: layer_curves(store.payload(r.id)) for r in rows}
    if not any(curves_by_run.values()):
        return None
    all_curves = {f"{rid}:{name}": c for rid, cs in curves_by_run.items() for name, c in cs.items()}
    metric = _curve_metric(all_curves, preferred)
    if metric is None:
        return None
    kind = "reconstruction curves" if {r.command for r in rows} & {"reconstruct", "compare"} else "curves"
    section = Section(f"{title}: {kind} per layer", level=3)
    conditions = condition_axes(rows)
    names: list[str] = []
    for cs in curves_by_run.values():
        names.extend(n for n in cs if n not in names)
    fig, ax = figure()
    table_layers: list[int] = []
    series: list[tuple[str, dict[int, tuple[float, float | None, int]]]] = []
    for fixed, group in split_by(rows, conditions):
        for name in names:
            per_layer: dict[int, list[float]] = {}
            for row in group:
                for rec in curves_by_run[row.id].get(name, []):
                    if metric in rec:
                        per_layer.setdefault(int(rec["layer"]), []).append(rec[metric])
            if not per_layer:
                continue
            label = describe(fixed) or (group[0].config.get("model") or "default model")
            if len(names) > 1:
                label = f"{label} [{name}]"
            stats = {layer: aggregate(values) for layer, values in sorted(per_layer.items())}
            series.append((label, stats))
            xs = list(stats)
            means = [stats[x][0] for x in xs]
            stds = [stats[x][1] or 0.0 for x in xs]
            ax.plot(xs, means, marker="o", markersize=3, label=str(label))
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            alpha=0.2)
            table_layers.extend(x for x in xs if x not in table_layers)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: {metric} per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    section.image(plots.save(fig, f"{title}-curves"),
                  f"{metric} of the MLM head applied to each layer; band = ±1 std over seeds")
    table_layers.sort()
    section.table(["variant", *map(str, table_layers)],
                  [[label, *(format_cell(stats[x]) if x in stats else "–" for x in table_layers)]
                   for label, stats in series],
                  caption=f"`{metric}` by layer, mean ± std over seeds (n = runs)")
    return section


# -- GLUE-shaped sections -------------------------------------------------------------------------------------------


def _layer_task_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str) -> Section | None:
    conditions = condition_axes(rows)
    layer_axis = next((a for a in LAYER_AXES if a in conditions), None)
    if layer_axis is None:
        return None
    section = Section(f"{title}: score by layer", level=3)
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in (layer_axis, task_axis)]
    for fixed, group in split_by(rows, others):
        layers = axis_values(group, layer_axis)
        tasks = axis_values(group, task_axis) if task_axis else [None]
        matrix = [[metric_stats([r for r in group if (r.axes or {}).get(layer_axis) == lv
                                 and (task_axis is None or (r.axes or {}).get(task_axis) == t)], metric)[0]
                   for t in tasks] for lv in layers]
        suffix = f" ({describe(fixed)})" if fixed else ""
        if task_axis:
            path = heatmap(plots, matrix, [str(v) for v in layers], [str(t) for t in tasks],
                           f"{metric}: layer x task{suffix}", "task", layer_axis, f"{title}-layer-task{suffix}")
            section.image(path, f"layer x task heatmap of `{metric}` (mean over seeds){suffix}")
        else:
            fig, ax = figure()
            stats = [metric_stats([r for r in group if (r.axes or {}).get(layer_axis) == lv], metric)
                     for lv in layers]
            ax.errorbar(range(len(layers)), [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats],
                        marker="o", capsize=3)
            ax.set_xticks(range(len(layers)), labels=[str(v) for v in layers])
            ax.set_xlabel(layer_axis)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            section.image(plots.save(fig, f"{title}-layers{suffix}"), f"`{metric}` by {layer_axis}{suffix}")
    if task_axis:
        _pivot(section, rows, layer_axis, task_axis, metric, caption="Score by layer and task")
    else:
        _single_axis_table(section, rows, layer_axis, metric, f"Score by {layer_axis}")
    return section


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


def _dims_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str) -> Section | None:
    conditions = condition_axes(rows)
    if "dims" not in conditions:
        return None
    section = Section(f"{title}: score vs number of dimensions", level=3)
    section.text("Each line is a way of choosing k hidden dimensions; `random:k` is the control. The dashed line "
                 "is the head that sees all dimensions.")
    others = [a for a in conditions if a != "dims"]
    for fixed, group in split_by(rows, others):
        by_kind: dict[str, dict[int, list[RunRecord]]] = {}
        full: list[RunRecord] = []
        for row in group:
            kind, k = _dims_k((row.axes or {}).get("dims"))
            if kind == "all":
                full.append(row)
            elif k is not None:
                by_kind.setdefault(kind, {}).setdefault(k, []).append(row)
        fig, ax = figure()
        for kind, points in by_kind.items():
            ks = sorted(points)
            stats = [metric_stats(points[k], metric) for k in ks]
            ax.errorbar(ks, [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats], marker="o", capsize=3,
                        label=kind + (" (control)" if kind == "random" else ""),
                        linestyle="--" if kind == "random" else "-")
        if full:
            mean, _, n = metric_stats(full, metric)
            ax.axhline(mean, color="black", linestyle=":", label=f"all dims (n={n})")
        all_ks = sorted({k for points in by_kind.values() for k in points})
        if len(all_ks) > 2 and all_ks[-1] / all_ks[0] > 8:
            ax.set_xscale("log", base=2)
        if all_ks:
            ax.set_xticks(all_ks, labels=[str(k) for k in all_ks])
            ax.minorticks_off()
        suffix = f" ({describe(fixed)})" if fixed else ""
        ax.set_xlabel("k (hidden dimensions the head sees)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs k{suffix}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        section.image(plots.save(fig, f"{title}-dims{suffix}"), f"`{metric}` vs k dimensions{suffix}")
    row_axis = "task" if "task" in conditions else None
    if row_axis:
        _pivot(section, rows, "dims", row_axis, metric, caption="Score by dimension choice and task")
    else:
        _single_axis_table(section, rows, "dims", metric, "Score by dimension choice")
    return section


def _axis_table_section(rows: Sequence[RunRecord], axis: str, heading: str, title: str, metric: str,
                        explanation: str, plots: Plots | None = None) -> Section | None:
    conditions = condition_axes(rows)
    if axis not in conditions:
        return None
    section = Section(f"{title}: {heading}", level=3)
    section.text(explanation)
    task_axis = next((a for a in TASK_AXES if a in conditions and a != axis), None)
    if plots is not None:
        others = [a for a in conditions if a not in (axis, task_axis)]
        for fixed, group in split_by(rows, others):
            suffix = f" ({describe(fixed)})" if fixed else ""
            section.image(grouped_bars(plots, group, task_axis, axis, metric, f"{heading}{suffix}",
                                       f"{title}-{axis}{suffix}"), f"`{metric}` by {axis}{suffix}; ±1 std over seeds")
    if task_axis:
        _pivot(section, rows, axis, task_axis, metric, caption=heading.capitalize())
    else:
        _single_axis_table(section, rows, axis, metric, heading.capitalize())
    return section


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _model_label(row: RunRecord) -> str:
    value = (row.axes or {}).get("model")
    if value is None:
        return str(row.config.get("model") or "default model")
    return str(value)


def _deepened_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str,
                      products: dict[str, RunRecord]) -> Section | None:
    conditions = condition_axes(rows)
    if "model" not in conditions:
        return None
    derived = {_model_label(r) for r in rows if isinstance(r.identity.get("model"), dict)}
    makers = {products[ref].command for r in rows if (ref := _model_ref(r)) and ref in products}
    heading = "original vs deepened" if derived and makers <= {"deepen"} else "by model"
    section = Section(f"{title}: {heading}", level=3)
    if derived:
        section.text("Models produced by a pre-step of the sweep (e.g. `deepen`): " + ", ".join(sorted(derived))
                     + ". Each pre-step ran once and every run below used its output folder.")
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in ("model", task_axis, "source_task")]
    for fixed, group in split_by(rows, others):
        suffix = f" ({describe(fixed)})" if fixed else ""
        section.image(grouped_bars(plots, group, task_axis, "model", metric, f"{heading}{suffix}",
                                   f"{title}-models{suffix}"), f"`{metric}` by model{suffix}; ±1 std over seeds")
    glue = "GLUE " if any(r.command == "finetune" or is_study(r.command) for r in rows) else ""
    if task_axis:
        _pivot(section, [_without(r, "source_task") for r in rows], task_axis, "model", metric,
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
        section.table(["model", f"average over tasks ({metric})"], averages,
                      caption="Macro average over tasks per seed (seeds with every task done), then mean ± std")
    else:
        _single_axis_table(section, rows, "model", metric, _sentence(f"{glue}{heading}"))
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


def _cross_section(rows: Sequence[RunRecord], plots: Plots, title: str, metric: str) -> Section | None:
    """Source x target matrices for cross-fine-tuning (first fine-tune on one task, then on another)."""
    conditions = condition_axes(rows)
    is_cross = any(r.command == "cross" for r in rows)
    source = next((a for a in SOURCE_AXES if a in conditions), None)
    target = next((a for a in TARGET_AXES if a in conditions and a != source), None)
    if source is None or target is None:
        if not is_cross:
            return None
        keys = [k for k in rows[0].config if any(k == a for a in SOURCE_AXES)]
        if not keys:
            return None
        source = keys[0]
        target = next((a for a in TARGET_AXES if a in rows[0].config and a != source), None)
        if target is None:
            return None
    section = Section(f"{title}: cross-fine-tuning matrix", level=3)
    section.text(f"Rows: the task fine-tuned first (`{source}`); columns: the task fine-tuned and evaluated "
                 f"after it (`{target}`).")

    def value_of(row: RunRecord, axis: str) -> Any:
        return (row.axes or {}).get(axis, row.config.get(axis))

    derived = ("model",) if source == "source_task" else ()  # the source model *is* the source task
    others = [a for a in conditions if a not in (source, target, *derived)]
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
        suffix = f" ({describe(fixed)})" if fixed else ""
        path = heatmap(plots, [[c[0] for c in row] for row in stats], [str(s) for s in sources],
                       [str(t) for t in targets], f"{metric}: cross-fine-tuning{suffix}", target, source,
                       f"{title}-cross{suffix}", cmap="magma")
        section.image(path, f"cross-fine-tuning matrix of `{metric}`{suffix}")
        section.table([f"{source} \\ {target}", *map(str, targets)],
                      [[str(s), *(format_cell(c) for c in row)] for s, row in zip(sources, stats)],
                      caption=f"Cross-fine-tuning{suffix}; `{metric}`, mean ± std over seeds (n = runs)")
    return section


# -- summary, CSV rows, overview ------------------------------------------------------------------------------------


def summary_section(rows: Sequence[RunRecord], title: str, metrics: list[str]) -> Section:
    section = Section(f"{title}: summary", level=3)
    conditions = condition_axes(rows)
    table_rows = []
    for fixed, group in split_by(rows, conditions):
        table_rows.append([describe(fixed) or "(all runs)",
                           *(format_cell(metric_stats(group, m)) for m in metrics)])
    section.table(["condition", *metrics], table_rows, caption="Mean ± std over seeds (n = runs)")
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
                 "ddof=1) and the number of runs n; with n=1 only the value is shown.")
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
