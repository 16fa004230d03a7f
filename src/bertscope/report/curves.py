"""Per-layer curves found in result payloads (``reconstruct``, ``compare``): one line per model or variant with a
band of ±1 std over seeds, and their table by hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertscope.core.figures import readable_log_axis, spread_words
from bertscope.data.labels import axis_name, model_name
from bertscope.lens.metrics import LENS_METRICS
from bertscope.report.aggregate import aggregate, condition_axes, format_cell, split_by
from bertscope.report.captions import describe_shown, metric_words, new_section, sentence, shown, titled
from bertscope.report.context import Context
from bertscope.report.document import Section
from bertscope.report.plots import Plots, figure
from bertscope.runs.store import ResultStore, RunRecord

__all__ = ["curves_section", "layer_curves"]


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


def curves_section(store: ResultStore, rows: Sequence[RunRecord], plots: Plots, title: str,
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
    section = new_section(f"{title}: {kind} per layer", ctx)
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
    ax.set_title(titled(f"{human} per layer", ctx), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title=", ".join(axis_name(a) for a in conditions) or None, title_fontsize=7)
    counts = [s[2] for _, stats in series for s in stats.values()]
    words = metric_words(metric, ctx)
    what = f"{words} of the MLM head applied to each hidden state" if lens else f"{words} per hidden state"
    context = f" {ctx.short()}." if ctx.short() else ""
    section.image(plots.save(fig, f"{title}-curves"),
                  f"{sentence(what)}; line = mean, {spread_words(counts, what='band')}.{context}")
    table_layers.sort()
    section.table(["variant", *map(str, table_layers)],
                  [[label, *(format_cell(stats[x]) if x in stats else "–" for x in table_layers)]
                   for label, stats in series],
                  caption=f"{sentence(words)} by hidden state (columns), mean ± std over seeds (n = runs)")
    return section
