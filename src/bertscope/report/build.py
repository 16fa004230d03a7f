"""``bertscope report``: the entry point that reads a result store and writes the report's files.

The report reads only the store (metrics, configurations, grid axes and each run's full result payload), so it can
be rebuilt at any time, also while a sweep is still running (it shows what is done). Runs are grouped by their
spec block ("experiment"); a study run (a command whose :class:`~bertscope.core.registry.CommandInfo` declares
``study_points``) is first turned into one point per fine-tuning run it holds. Then :mod:`.sections` builds the
sections the experiment's axes call for (each naming the experiment's tasks, models and base options, read by
:mod:`.context`), and :mod:`.render` writes report.md, from that same Markdown report.html, and every table as
CSV and LaTeX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core import publish
from bertscope.core.errors import BertscopeError
from bertscope.core.registry import CommandInfo
from bertscope.core.results import write_csv_atomic, write_json_atomic, write_text_atomic
from bertscope.data.labels import axis_name
from bertscope.report.aggregate import REPLICATE_AXIS, axis_values, condition_axes, main_metric
from bertscope.report.config import ReportConfig
from bertscope.report.context import experiment_context
from bertscope.report.declared import is_study
from bertscope.report.document import Block, Section
from bertscope.report.plots import Plots
from bertscope.report.render import to_html, to_markdown, write_tables
from bertscope.report.sections import experiment_sections
from bertscope.report.summary import aggregate_rows, overview_section, summary_metrics, summary_section
from bertscope.runs.store import STATUSES, ResultStore, RunRecord
from bertscope.sweep.plugins import commands

__all__ = ["COMMAND", "ReportResult", "build_report"]


@dataclass(frozen=True)
class ReportResult:
    """The files a report wrote and what it covered."""

    config: ReportConfig
    out: str
    files: tuple[str, ...]
    experiments: tuple[str, ...]
    counts: dict[str, int]
    plots: int
    damaged: str | None = None  # the line naming damaged records that were skipped

    def to_dict(self) -> dict[str, Any]:
        from bertscope.core.results import environment_info

        return {"command": "report", "config": self.config.to_dict(), "environment": environment_info(),
                "out": self.out, "files": list(self.files), "experiments": list(self.experiments),
                "counts": self.counts, "plots": self.plots, "damaged": self.damaged}

    def metrics(self) -> dict[str, float]:
        return {"experiments": float(len(self.experiments)), "plots": float(self.plots),
                **{f"runs.{k}": float(v) for k, v in self.counts.items()}}

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"report -> {self.out}")
        table.add_column("file")
        tables = 0
        for name in self.files:
            if name.startswith("tables/") and name.endswith(".tex"):
                tables += 1
            elif not name.startswith(("plots/", "tables/")) or name == "tables/aggregated.csv":
                table.add_row(name)
        table.add_row(f"{self.plots} figure(s) under plots/ (PNG 300 dpi, SVG, PDF)")
        table.add_row(f"{tables} table(s) under tables/ (CSV, LaTeX booktabs)")
        if self.damaged:
            table.add_row(self.damaged)
        return table


def _explode_studies(store: ResultStore, rows: list[RunRecord]) -> list[RunRecord]:
    """A study run (``layers``, ``tokens``, ``dims``, ``cross``) becomes one point per fine-tuning run it holds,
    with the study's own axis (layer, token, dims + sample, source/target) added to the sweep's grid values, so
    the same sections (layer x task heatmap, token tables, score vs k, cross matrix) apply over seeds and tasks.
    The study's own ``study_points`` reads its payload; a command the registry does not know is no study."""
    registry = commands()
    out: list[RunRecord] = []
    for row in rows:
        info = registry.get(row.command)
        points = []
        if info is not None and info.study_points is not None:
            points = info.study_points(store.payload(row.id) or {})
        if not points:
            out.append(row)
            continue
        for i, (axes, score) in enumerate(points):
            out.append(dataclasses.replace(row, id=f"{row.id}#{i}", axes={**(row.axes or {}), **axes},
                                           metrics={"score": score}))
    return out


def _experiment_order(records: Sequence[RunRecord]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in records:
        key = (r.sweep or "?", r.experiment or "?")
        if key not in seen:
            seen.append(key)
    return seen


def build_report(config: ReportConfig) -> ReportResult:
    """Write report.md, report.html, plots/*.{png,svg,pdf}, tables/*.{csv,tex} and report.json under
    ``config.out``."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BertscopeError(f"--out {out} is a file; give a folder")
    publish.check_writable(out)  # before the store is read and the plots drawn
    with ResultStore(config.store, create=False) as store:
        records = store.records(sweep=config.sweep, memberships=True)
        if not records:
            raise BertscopeError(store.damaged_line() or f"store {config.store} holds no runs"
                                 + (f" for sweep {config.sweep!r}" if config.sweep else ""))
        counts = dict.fromkeys(STATUSES, 0)
        for r in {r.id: r for r in records}.values():  # a run serving several experiments counts once
            counts[r.status] += 1
        done = [r for r in records if r.status == "done" and r.axes is not None]  # pre-steps have no axes
        products = {r.id: r for r in store.records() if r.status == "done"}
        out.mkdir(parents=True, exist_ok=True)
        plots = Plots(out)
        title = config.title or f"bertscope report: {Path(config.store).name}"
        sections = [overview_section(store, records, counts, config)]
        csv_rows: list[dict[str, Any]] = []
        experiments = []
        for sweep_name, experiment in _experiment_order(done):
            rows = [r for r in done if (r.sweep or "?") == sweep_name and (r.experiment or "?") == experiment]
            main_rows = _explode_studies(store, rows)
            name = experiment if experiment.startswith(sweep_name) else f"{sweep_name}/{experiment}"
            experiments.append(name)
            metric = main_metric(main_rows, config.metric)
            run_commands = sorted({r.command for r in main_rows})
            ctx = experiment_context(store, rows, products)
            head = Section(f"{name}", level=2)
            axes = condition_axes(main_rows)
            metric_words = "none" if metric is None else (
                f"{ctx.metric(metric)} (`{metric}`)" if ctx.metric(metric) != metric else f"`{metric}`")
            head.text(ctx.line())
            head.text(f"Command `{', '.join(run_commands)}`; {len(rows)} finished run(s); conditions: "
                      + (", ".join(f"`{a}` ({axis_name(a)})" if axis_name(a) != a else f"`{a}`" for a in axes)
                         or "none")
                      + f"; replicate axis `{REPLICATE_AXIS}` ({len(axis_values(main_rows, REPLICATE_AXIS))} "
                      f"value(s)); main metric: {metric_words}."
                      + (" Study runs are shown point by point (each fine-tuning run inside them)."
                         if any(is_study(c) for c in run_commands) else ""))
            sections.append(head)
            if metric is None:
                head.text("These runs report no metrics.")
                continue
            sections.extend(experiment_sections(store, main_rows, plots, name, metric, config.metric, products,
                                                ctx))
            sections.append(summary_section(main_rows, name, summary_metrics(main_rows, metric), ctx))
            csv_rows.extend(aggregate_rows(main_rows, name))
        if not experiments:
            sections.append(Section("No finished runs yet", blocks=[Block("text", text="Nothing to plot yet: "
                                                                          "no run of the store is done.")]))
        damaged = store.damaged_line()
        if damaged:
            sections.insert(1, Section("Damaged records", blocks=[Block("text", text=damaged[:1].upper() + damaged[1:] + ".")]))
    files: list[Path] = []
    if csv_rows:
        files.append(write_csv_atomic(out / "tables" / "aggregated.csv", csv_rows))
    files.extend(write_tables(sections, out))
    markdown = to_markdown(title, sections, out)
    files.append(write_text_atomic(out / "report.md", markdown))
    files.append(write_text_atomic(out / "report.html", to_html(title, markdown, out)))
    names = (*(str(p.relative_to(out)) for p in [*files, *plots.files]), "report.json")
    result = ReportResult(config=config, out=str(out), files=names, experiments=tuple(experiments),
                          counts=counts, plots=len(plots.figures), damaged=damaged)
    write_json_atomic(out / "report.json", result.to_dict())
    return result


COMMAND = CommandInfo("report", ReportConfig, build_report, ReportResult,
                      "Markdown + HTML report with figures (PNG, SVG, PDF) and mean +/- std tables (CSV, LaTeX) "
                      "from a result store",
                      sweepable=False)
