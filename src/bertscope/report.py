"""Paper-shaped reports from a sweep result store: Markdown, self-contained HTML, PNG plots and CSV tables.

The report reads only the store (metrics, configurations, grid axes and each run's full result payload), so it can
be rebuilt at any time, also while a sweep is still running (it shows what is done). Runs are grouped by their
spec block ("experiment"); within a block the ``seed`` axis is the replicate axis and every other grid axis is a
condition, so every number is ``mean ± std (n=runs)`` over seeds (std is the sample standard deviation, ddof=1;
with one run only the mean is shown). Which sections appear follows from the block's axes:

* per-layer curves in the payload (``reconstruct``, ``compare``): reconstruction curves per model (and per
  deepened variant), with a band of ±1 std over seeds;
* ``task`` and ``layer``/``layers`` axes: a layer x task heatmap;
* ``dims`` axis (``all``, ``first:K``, ``random:K``): score vs k dimensions, the random choice as the control;
* ``token`` axis: token-choice tables; ``freeze`` axis: frozen vs fine-tuned tables;
* the ``cross`` command (or source/target task axes): cross-fine-tuning matrices;
* a ``model`` axis (e.g. originals and deepened variants made by a pre-step): original vs deepened GLUE tables;
* always: a summary table of the main metric per condition and a CSV with every metric aggregated.

Markdown references the PNG files beside it; the HTML embeds the same PNGs as data URIs, so it is one file that
opens anywhere.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.configs import ReportConfig
from bertscope.errors import BertscopeError
from bertscope.registry import CommandInfo
from bertscope.results import save_figure_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from bertscope.sweep.store import STATUSES, ResultStore, RunRecord

__all__ = ["Block", "ReportResult", "Section", "aggregate", "build_report", "format_cell", "main_metric"]

REPLICATE_AXIS = "seed"
#: replicate axes: seeds, and the random samples a `dims` study draws per K
REPLICATE_AXES = ("seed", "sample")
#: paper-2 study commands whose one run holds many fine-tuning runs (their payload's table is exploded into points)
STUDY_COMMANDS = ("layers", "tokens", "dims", "cross")
LAYER_AXES = ("layer", "layers")
TASK_AXES = ("task",)
SOURCE_AXES = ("source", "source_task", "first", "first_task", "from_task", "task_a", "intermediate",
               "intermediate_task")
TARGET_AXES = ("target", "target_task", "second", "second_task", "to_task", "task_b", "task")


# -- aggregation ----------------------------------------------------------------------------------------------------


def aggregate(values: Iterable[float | None]) -> tuple[float, float | None, int]:
    """(mean, sample std or None when n < 2, n) of the finite values."""
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        return (math.nan, None, 0)
    std = statistics.stdev(clean) if len(clean) > 1 else None
    return (statistics.fmean(clean), std, len(clean))


def format_cell(stats: tuple[float, float | None, int], digits: int = 3) -> str:
    mean, std, n = stats
    if n == 0:
        return "–"
    if std is None:
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def main_metric(rows: Sequence[RunRecord], preferred: str | None = None) -> str | None:
    """The metric a section shows: ``--metric`` if runs have it, else score, *.score, top1, accuracy, the first."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.metrics if k not in keys)
    if not keys:
        return None
    if preferred and preferred in keys:
        return preferred
    for name in ("score", "eval.score", "final.score", "best.score", "test.score"):
        if name in keys:
            return name
    for suffix in (".score", "final.top1", "top1", "accuracy", "top1_agreement"):
        hits = sorted((k for k in keys if k.endswith(suffix)), key=len)
        if hits:
            return hits[0]
    return keys[0]


# -- document model -------------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One piece of a section: text, a table, or an image."""

    kind: str  # "text" | "table" | "image"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    image: Path | None = None


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text=text))

    def table(self, headers: list[str], rows: list[list[str]], caption: str = "") -> None:
        if caption:
            self.text(caption)
        self.blocks.append(Block("table", headers=headers, rows=rows))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(Block("image", text=caption, image=path))


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, sections: list[Section], out: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            if block.kind == "text":
                lines += [block.text, ""]
            elif block.kind == "table":
                lines.append("| " + " | ".join(_md_escape(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif block.kind == "image" and block.image is not None:
                lines += [f"![{_md_escape(block.text)}]({block.image.relative_to(out).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
nav ul{columns:2}code{background:#f5f5f5;padding:0 .2em}
"""


def _to_html(title: str, sections: list[Section], out: Path) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{html.escape(title)}</title>",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", "<nav><ul>"]
    for index, section in enumerate(sections):
        if section.level == 2:
            parts.append(f"<li><a href=\"#s{index}\">{html.escape(section.title)}</a></li>")
    parts.append("</ul></nav>")
    for index, section in enumerate(sections):
        parts.append(f"<h{section.level} id=\"s{index}\">{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            if block.kind == "text":
                parts.append(f"<p>{_inline_html(block.text)}</p>")
            elif block.kind == "table":
                parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
                             + "</tr></thead><tbody>")
                for row in block.rows:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
                parts.append("</tbody></table>")
            elif block.kind == "image" and block.image is not None:
                data = base64.b64encode(block.image.read_bytes()).decode("ascii")
                link = html.escape(block.image.relative_to(out).as_posix())
                parts.append(f"<figure><img class=\"plot\" alt=\"{html.escape(block.text)}\" "
                             f"src=\"data:image/png;base64,{data}\"><figcaption>{_inline_html(block.text)} "
                             f"(<a href=\"{link}\">{link}</a>)</figcaption></figure>")
    # marks how many plots decoded, so a headless browser (and the test suite) can check the report shows them
    parts.append("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
                 "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}"
                 "document.body.setAttribute('data-plots-loaded',ok+'/'+im.length);});</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then render the Markdown bits the report itself uses: `code` and **bold**."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


# -- plots ----------------------------------------------------------------------------------------------------------


class _Plots:
    """Writes PNGs under ``out/plots`` with unique, readable names."""

    def __init__(self, out: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        self.folder = out / "plots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()
        self.files: list[Path] = []

    def path(self, stem: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-")[:80] or "plot"
        candidate, i = name, 2
        while candidate in self.used:
            candidate, i = f"{name}-{i}", i + 1
        self.used.add(candidate)
        return self.folder / f"{candidate}.png"

    def save(self, fig: Any, stem: str) -> Path:
        import matplotlib.pyplot as plt

        target = self.path(stem)
        fig.tight_layout()
        try:
            save_figure_atomic(fig, target, dpi=110)
        finally:
            plt.close(fig)
        self.files.append(target)
        return target


def _figure(width: float = 6.4, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


# -- helpers over runs ----------------------------------------------------------------------------------------------


def _axis_values(rows: Sequence[RunRecord], axis: str) -> list[Any]:
    values: list[Any] = []
    for row in rows:
        value = (row.axes or {}).get(axis)
        if value not in values:
            values.append(value)
    return values


def _conditions(rows: Sequence[RunRecord]) -> list[str]:
    """Non-replicate axes that take more than one value in ``rows``."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in (row.axes or {}) if k not in names and k not in REPLICATE_AXES)
    return [n for n in names if len(_axis_values(rows, n)) > 1]


def _split(rows: Sequence[RunRecord], axes: Sequence[str]) -> list[tuple[dict[str, Any], list[RunRecord]]]:
    """Groups of rows sharing the values of ``axes`` (in first-seen order)."""
    groups: dict[str, tuple[dict[str, Any], list[RunRecord]]] = {}
    for row in rows:
        key_values = {a: (row.axes or {}).get(a) for a in axes}
        key = repr(sorted(key_values.items(), key=lambda kv: kv[0]))
        groups.setdefault(key, (key_values, []))[1].append(row)
    return list(groups.values())


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _metric_stats(rows: Iterable[RunRecord], metric: str) -> tuple[float, float | None, int]:
    return aggregate(r.metrics.get(metric) for r in rows)


def _pivot(section: Section, rows: Sequence[RunRecord], row_axis: str, col_axis: str, metric: str,
           *, row_title: str | None = None, caption: str = "") -> None:
    """Tables of ``metric`` with ``row_axis`` down and ``col_axis`` across, one per value of the other axes."""
    others = [a for a in _conditions(rows) if a not in (row_axis, col_axis)]
    for fixed, group in _split(rows, others):
        row_values = _axis_values(group, row_axis)
        col_values = _axis_values(group, col_axis)
        table_rows = []
        for rv in row_values:
            cells = [str(rv)]
            for cv in col_values:
                members = [r for r in group if (r.axes or {}).get(row_axis) == rv
                           and (r.axes or {}).get(col_axis) == cv]
                cells.append(format_cell(_metric_stats(members, metric)))
            table_rows.append(cells)
        suffix = f" ({_describe(fixed)})" if fixed else ""
        section.table([row_title or row_axis, *map(str, col_values)], table_rows,
                      caption=f"{caption}{suffix}; `{metric}`, mean ± std over seeds (n = runs)")


def _single_axis_table(section: Section, rows: Sequence[RunRecord], axis: str, metric: str, caption: str) -> None:
    others = [a for a in _conditions(rows) if a != axis]
    for fixed, group in _split(rows, others):
        table_rows = [[str(v), format_cell(_metric_stats([r for r in group if (r.axes or {}).get(axis) == v],
                                                         metric))] for v in _axis_values(group, axis)]
        suffix = f" ({_describe(fixed)})" if fixed else ""
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


def _curves_section(store: ResultStore, rows: Sequence[RunRecord], plots: _Plots, title: str,
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
    conditions = _conditions(rows)
    names: list[str] = []
    for cs in curves_by_run.values():
        names.extend(n for n in cs if n not in names)
    fig, ax = _figure()
    table_layers: list[int] = []
    series: list[tuple[str, dict[int, tuple[float, float | None, int]]]] = []
    for fixed, group in _split(rows, conditions):
        for name in names:
            per_layer: dict[int, list[float]] = {}
            for row in group:
                for rec in curves_by_run[row.id].get(name, []):
                    if metric in rec:
                        per_layer.setdefault(int(rec["layer"]), []).append(rec[metric])
            if not per_layer:
                continue
            label = _describe(fixed) or (group[0].config.get("model") or "default model")
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


def _heatmap(plots: _Plots, matrix: list[list[float]], rows: list[str], cols: list[str], title: str,
             xlabel: str, ylabel: str, stem: str, cmap: str = "viridis") -> Path:
    import numpy as np

    data = np.array(matrix, dtype=float)
    fig, ax = _figure(max(4.0, 1.1 * len(cols) + 2), max(3.0, 0.5 * len(rows) + 1.5))
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < middle else "black")
    fig.colorbar(image, ax=ax)
    return plots.save(fig, stem)


def _grouped_bars(plots: _Plots, rows: Sequence[RunRecord], group_axis: str | None, bar_axis: str, metric: str,
                  title: str, stem: str) -> Path:
    """Bars of ``metric`` (mean, ±1 std whiskers) per ``bar_axis`` value, grouped by ``group_axis`` (e.g. task)."""
    import numpy as np

    groups = _axis_values(rows, group_axis) if group_axis else [None]
    bars = _axis_values(rows, bar_axis)
    width = 0.8 / max(len(bars), 1)
    fig, ax = _figure(max(5.0, 1.2 * len(groups) * max(1, len(bars)) / 2 + 2), 4.0)
    for i, bar in enumerate(bars):
        stats = [_metric_stats([r for r in rows if (r.axes or {}).get(bar_axis) == bar
                                and (group_axis is None or (r.axes or {}).get(group_axis) == g)], metric)
                 for g in groups]
        xs = np.arange(len(groups)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(xs, [st[0] for st in stats], width, yerr=[st[1] or 0.0 for st in stats], capsize=3, label=str(bar))
    ax.set_xticks(range(len(groups)), labels=[str(g) if g is not None else metric for g in groups])
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, title=bar_axis)
    return plots.save(fig, stem)


def _layer_task_section(rows: Sequence[RunRecord], plots: _Plots, title: str, metric: str) -> Section | None:
    conditions = _conditions(rows)
    layer_axis = next((a for a in LAYER_AXES if a in conditions), None)
    if layer_axis is None:
        return None
    section = Section(f"{title}: score by layer", level=3)
    task_axis = next((a for a in TASK_AXES if a in conditions), None)
    others = [a for a in conditions if a not in (layer_axis, task_axis)]
    for fixed, group in _split(rows, others):
        layers = _axis_values(group, layer_axis)
        tasks = _axis_values(group, task_axis) if task_axis else [None]
        matrix = [[_metric_stats([r for r in group if (r.axes or {}).get(layer_axis) == lv
                                  and (task_axis is None or (r.axes or {}).get(task_axis) == t)], metric)[0]
                   for t in tasks] for lv in layers]
        suffix = f" ({_describe(fixed)})" if fixed else ""
        if task_axis:
            path = _heatmap(plots, matrix, [str(v) for v in layers], [str(t) for t in tasks],
                            f"{metric}: layer x task{suffix}", "task", layer_axis, f"{title}-layer-task{suffix}")
            section.image(path, f"layer x task heatmap of `{metric}` (mean over seeds){suffix}")
        else:
            fig, ax = _figure()
            stats = [_metric_stats([r for r in group if (r.axes or {}).get(layer_axis) == lv], metric)
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
    if kind == "idx":
        return ("idx", len([v for v in re.split(r"[,\s]+", arg) if v]))
    try:
        return (kind, int(arg))
    except ValueError:
        return (kind, None)


def _dims_section(rows: Sequence[RunRecord], plots: _Plots, title: str, metric: str) -> Section | None:
    conditions = _conditions(rows)
    if "dims" not in conditions:
        return None
    section = Section(f"{title}: score vs number of dimensions", level=3)
    section.text("Each line is a way of choosing k hidden dimensions; `random:k` is the control. The dashed line "
                 "is the head that sees all dimensions.")
    others = [a for a in conditions if a != "dims"]
    for fixed, group in _split(rows, others):
        by_kind: dict[str, dict[int, list[RunRecord]]] = {}
        full: list[RunRecord] = []
        for row in group:
            kind, k = _dims_k((row.axes or {}).get("dims"))
            if kind == "all":
                full.append(row)
            elif k is not None:
                by_kind.setdefault(kind, {}).setdefault(k, []).append(row)
        fig, ax = _figure()
        for kind, points in by_kind.items():
            ks = sorted(points)
            stats = [_metric_stats(points[k], metric) for k in ks]
            ax.errorbar(ks, [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats], marker="o", capsize=3,
                        label=kind + (" (control)" if kind == "random" else ""),
                        linestyle="--" if kind == "random" else "-")
        if full:
            mean, _, n = _metric_stats(full, metric)
            ax.axhline(mean, color="black", linestyle=":", label=f"all dims (n={n})")
        all_ks = sorted({k for points in by_kind.values() for k in points})
        if len(all_ks) > 2 and all_ks[-1] / all_ks[0] > 8:
            ax.set_xscale("log", base=2)
        if all_ks:
            ax.set_xticks(all_ks, labels=[str(k) for k in all_ks])
            ax.minorticks_off()
        suffix = f" ({_describe(fixed)})" if fixed else ""
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
                        explanation: str, plots: _Plots | None = None) -> Section | None:
    conditions = _conditions(rows)
    if axis not in conditions:
        return None
    section = Section(f"{title}: {heading}", level=3)
    section.text(explanation)
    task_axis = next((a for a in TASK_AXES if a in conditions and a != axis), None)
    if plots is not None:
        others = [a for a in conditions if a not in (axis, task_axis)]
        for fixed, group in _split(rows, others):
            suffix = f" ({_describe(fixed)})" if fixed else ""
            section.image(_grouped_bars(plots, group, task_axis, axis, metric, f"{heading}{suffix}",
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


def _deepened_section(rows: Sequence[RunRecord], plots: _Plots, title: str, metric: str,
                      products: dict[str, RunRecord]) -> Section | None:
    conditions = _conditions(rows)
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
    for fixed, group in _split(rows, others):
        suffix = f" ({_describe(fixed)})" if fixed else ""
        section.image(_grouped_bars(plots, group, task_axis, "model", metric, f"{heading}{suffix}",
                                    f"{title}-models{suffix}"), f"`{metric}` by model{suffix}; ±1 std over seeds")
    glue = "GLUE " if any(r.command in ("finetune", *STUDY_COMMANDS) for r in rows) else ""
    if task_axis:
        _pivot(section, [_without(r, "source_task") for r in rows], task_axis, "model", metric,
               caption=_sentence(f"{glue}{heading}"))
        averages = []
        for label in _axis_values(rows, "model"):
            members = [r for r in rows if (r.axes or {}).get("model") == label]
            per_seed: dict[Any, list[float]] = {}
            for r in members:
                value = r.metrics.get(metric)
                if value is not None:
                    per_seed.setdefault((r.axes or {}).get(REPLICATE_AXIS), []).append(value)
            tasks = len(_axis_values(rows, task_axis))
            complete = [statistics.fmean(v) for v in per_seed.values() if len(v) == tasks]
            averages.append([str(label), format_cell(aggregate(complete))])
        section.table(["model", f"average over tasks ({metric})"], averages,
                      caption="Macro average over tasks per seed (seeds with every task done), then mean ± std")
    else:
        _single_axis_table(section, rows, "model", metric, _sentence(f"{glue}{heading}"))
    return section


def _without(row: RunRecord, axis: str) -> RunRecord:
    import dataclasses

    return dataclasses.replace(row, axes={k: v for k, v in (row.axes or {}).items() if k != axis})


def _model_ref(row: RunRecord) -> str | None:
    """The id of the pre-step run that produced this run's model, if any."""
    value = row.identity.get("model")
    return value.get("@run") if isinstance(value, dict) else None


def _with_source_task(rows: list[RunRecord], products: dict[str, RunRecord]) -> list[RunRecord]:
    """Cross-fine-tuning as a sweep: runs whose model is a ``finetune`` pre-step get a ``source_task`` axis (the
    pre-step's task; ``none`` for runs on an original model), so the cross matrix can be drawn."""
    import dataclasses

    sources = {r.id: products[ref].config.get("task") for r in rows
               if (ref := _model_ref(r)) and ref in products and products[ref].command == "finetune"}
    if not sources:
        return rows
    return [dataclasses.replace(r, axes={"source_task": sources.get(r.id, "none"), **(r.axes or {})})
            for r in rows]


def _cross_section(rows: Sequence[RunRecord], plots: _Plots, title: str, metric: str) -> Section | None:
    """Source x target matrices for cross-fine-tuning (first fine-tune on one task, then on another)."""
    conditions = _conditions(rows)
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
    for fixed, group in _split(rows, others):
        sources = []
        targets = []
        for r in group:
            if value_of(r, source) not in sources:
                sources.append(value_of(r, source))
            if value_of(r, target) not in targets:
                targets.append(value_of(r, target))
        stats = [[_metric_stats([r for r in group if value_of(r, source) == s and value_of(r, target) == t], metric)
                  for t in targets] for s in sources]
        suffix = f" ({_describe(fixed)})" if fixed else ""
        path = _heatmap(plots, [[c[0] for c in row] for row in stats], [str(s) for s in sources],
                        [str(t) for t in targets], f"{metric}: cross-fine-tuning{suffix}", target, source,
                        f"{title}-cross{suffix}", cmap="magma")
        section.image(path, f"cross-fine-tuning matrix of `{metric}`{suffix}")
        section.table([f"{source} \\ {target}", *map(str, targets)],
                      [[str(s), *(format_cell(c) for c in row)] for s, row in zip(sources, stats)],
                      caption=f"Cross-fine-tuning{suffix}; `{metric}`, mean ± std over seeds (n = runs)")
    return section


def _summary_section(rows: Sequence[RunRecord], title: str, metrics: list[str]) -> Section:
    section = Section(f"{title}: summary", level=3)
    conditions = _conditions(rows)
    table_rows = []
    for fixed, group in _split(rows, conditions):
        table_rows.append([_describe(fixed) or "(all runs)",
                           *(format_cell(_metric_stats(group, m)) for m in metrics)])
    section.table(["condition", *metrics], table_rows, caption="Mean ± std over seeds (n = runs)")
    return section


def _summary_metrics(rows: Sequence[RunRecord], main: str | None, limit: int = 6) -> list[str]:
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


def _aggregate_rows(rows: Sequence[RunRecord], experiment: str) -> list[dict[str, Any]]:
    conditions = _conditions(rows)
    out = []
    for fixed, group in _split(rows, conditions):
        keys: list[str] = []
        for row in group:
            keys.extend(k for k in row.metrics if k not in keys)
        for key in keys:
            mean, std, n = _metric_stats(group, key)
            out.append({"experiment": experiment, **{a: fixed.get(a) for a in conditions}, "metric": key,
                        "mean": mean, "std": std, "n": n, "runs": ",".join(r.id for r in group)})
    return out


# -- the report -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    """The files a report wrote and what it covered."""

    config: ReportConfig
    out: str
    files: tuple[str, ...]
    experiments: tuple[str, ...]
    counts: dict[str, int]
    plots: int

    def to_dict(self) -> dict[str, Any]:
        from bertscope.results import environment_info

        return {"command": "report", "config": self.config.to_dict(), "environment": environment_info(),
                "out": self.out, "files": list(self.files), "experiments": list(self.experiments),
                "counts": self.counts, "plots": self.plots}

    def metrics(self) -> dict[str, float]:
        return {"experiments": float(len(self.experiments)), "plots": float(self.plots),
                **{f"runs.{k}": float(v) for k, v in self.counts.items()}}

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"report -> {self.out}")
        table.add_column("file")
        for name in self.files:
            if not name.endswith(".png"):
                table.add_row(name)
        table.add_row(f"{self.plots} PNG plot(s) under plots/")
        return table


def _study_points(command: str, payload: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """(extra axes, score) of every fine-tuning point inside one paper-2 study run."""
    table = payload.get("table") or []
    points: list[tuple[dict[str, Any], float]] = []
    if command == "layers":
        points = [({"layer": row["layer"]}, row["score"]) for row in table if "layer" in row]
    elif command == "tokens":
        points = [({"token": row["token_strategy"]}, row["score"]) for row in table if "token_strategy" in row]
    elif command == "dims":
        for rec in payload.get("runs") or []:
            if "selection" in rec and "k" in rec and rec.get("score") is not None:
                dims = "all" if rec["selection"] == "all" else f"{rec['selection']}:{rec['k']}"
                points.append(({"dims": dims, "sample": rec.get("sample", 0)}, rec["score"]))
    elif command == "cross":
        for row in table:
            source = "single-task" if row.get("stage") == "single-task" else f"after {row.get('trained_on')}"
            for task, value in row.items():
                if task not in ("stage", "trained_on") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    points.append(({"source": source, "target": task}, value))
    return [(axes, float(score)) for axes, score in points if score is not None]


def _explode_studies(store: ResultStore, rows: list[RunRecord]) -> list[RunRecord]:
    """A study run (``layers``, ``tokens``, ``dims``, ``cross``) becomes one point per fine-tuning run it holds,
    with the study's own axis (layer, token, dims + sample, source/target) added to the sweep's grid values, so
    the same sections (layer x task heatmap, token tables, score vs k, cross matrix) apply over seeds and tasks."""
    import dataclasses

    out: list[RunRecord] = []
    for row in rows:
        points = _study_points(row.command, store.payload(row.id) or {}) if row.command in STUDY_COMMANDS else []
        if not points:
            out.append(row)
            continue
        for i, (axes, score) in enumerate(points):
            out.append(dataclasses.replace(row, id=f"{row.id}#{i}", axes={**(row.axes or {}), **axes},
                                           metrics={"score": score}))
    return out


def _experiment_sections(store: ResultStore, rows: list[RunRecord], plots: _Plots, name: str, metric: str,
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


def _experiment_order(records: Sequence[RunRecord]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in records:
        key = (r.sweep or "?", r.experiment or "?")
        if key not in seen:
            seen.append(key)
    return seen


def build_report(config: ReportConfig) -> ReportResult:
    """Write report.md, report.html, plots/*.png, tables/*.csv and report.json under ``config.out``."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BertscopeError(f"--out {out} is a file; give a folder")
    with ResultStore(config.store, create=False) as store:
        records = store.records(sweep=config.sweep, memberships=True)
        if not records:
            raise BertscopeError(f"store {config.store} holds no runs"
                                 + (f" for sweep {config.sweep!r}" if config.sweep else ""))
        counts = dict.fromkeys(STATUSES, 0)
        for r in {r.id: r for r in records}.values():  # a run serving several experiments counts once
            counts[r.status] += 1
        done = [r for r in records if r.status == "done" and r.axes is not None]  # pre-steps have no axes
        products = {r.id: r for r in store.records() if r.status == "done"}
        out.mkdir(parents=True, exist_ok=True)
        plots = _Plots(out)
        title = config.title or f"bertscope report: {Path(config.store).name}"
        sections = [_overview(store, records, counts, config)]
        csv_rows: list[dict[str, Any]] = []
        experiments = []
        for sweep_name, experiment in _experiment_order(done):
            rows = [r for r in done if (r.sweep or "?") == sweep_name and (r.experiment or "?") == experiment]
            main_rows = _explode_studies(store, rows)
            name = experiment if experiment.startswith(sweep_name) else f"{sweep_name}/{experiment}"
            experiments.append(name)
            metric = main_metric(main_rows, config.metric)
            commands = sorted({r.command for r in main_rows})
            head = Section(f"{name}", level=2)
            axes = _conditions(main_rows)
            head.text(f"Command `{', '.join(commands)}`; {len(rows)} finished run(s); conditions: "
                      + (", ".join(f"`{a}`" for a in axes) or "none")
                      + f"; replicate axis `{REPLICATE_AXIS}` ({len(_axis_values(main_rows, REPLICATE_AXIS))} "
                      f"value(s)); main metric `{metric}`."
                      + (" Study runs are shown point by point (each fine-tuning run inside them)."
                         if set(commands) & set(STUDY_COMMANDS) else ""))
            sections.append(head)
            if metric is None:
                head.text("These runs report no metrics.")
                continue
            sections.extend(_experiment_sections(store, main_rows, plots, name, metric, config.metric, products))
            sections.append(_summary_section(main_rows, name, _summary_metrics(main_rows, metric)))
            csv_rows.extend(_aggregate_rows(main_rows, name))
        if not experiments:
            sections.append(Section("No finished runs yet", blocks=[Block("text", text="Nothing to plot yet: "
                                                                          "no run of the store is done.")]))
    files: list[Path] = []
    if csv_rows:
        files.append(write_csv_atomic(out / "tables" / "aggregated.csv", csv_rows))
    files.append(write_text_atomic(out / "report.md", _to_markdown(title, sections, out)))
    files.append(write_text_atomic(out / "report.html", _to_html(title, sections, out)))
    names = (*(str(p.relative_to(out)) for p in [*files, *plots.files]), "report.json")
    result = ReportResult(config=config, out=str(out), files=names, experiments=tuple(experiments),
                          counts=counts, plots=len(plots.files))
    write_json_atomic(out / "report.json", result.to_dict())
    return result


def _overview(store: ResultStore, records: Sequence[RunRecord], counts: dict[str, int],
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
                      [[r.id, _describe(r.axes or {}) or "(pre-step)", r.error or ""] for r in failed[:50]],
                      caption=f"Failed runs ({len(failed)}; `bertscope sweep SPEC --retry-failed` runs them again)")
    pre = [r for r in unique if r.status == "done" and r.axes is None and r.sweep is not None]
    if pre:
        section.table(["pre-step", "command", "label", "metrics"],
                      [[r.id, r.command, r.label or "", ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()
                                                                if v is not None)] for r in pre],
                      caption="Pre-steps (e.g. deepened checkpoints) the runs below depend on")
    return section


COMMAND = CommandInfo("report", ReportConfig, build_report, ReportResult,
                      "Markdown + HTML report with plots and mean +/- std tables from a result store",
                      sweepable=False)
