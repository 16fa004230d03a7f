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

Every number is ``mean ± std [95% interval] (n=runs)`` over the replicate axes (:mod:`.aggregate`). Every section starts with the
experiment's task(s), model(s) and base options (:mod:`.context`); metrics and axes are shown by their human names
(:mod:`bertscope.data.labels`, the key itself beside it once); a GLUE classification score gets its majority-class (or
chance) reference line, row or column; every caption says what its error bars are; each table is also written as
CSV and LaTeX (:mod:`.render`).

This module only dispatches: :mod:`.declared` reads which sections exist, one module draws each kind
(:mod:`.curves`, :mod:`.line`, :mod:`.subsets`, :mod:`.bars`, :mod:`.matrix`, :mod:`.deepened`), sharing
:mod:`.captions` (names, titles, reference values) and :mod:`.tables`; :mod:`.summary` holds the sections every
report has.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertscope.finetune.learning import REMEDY
from bertscope.report.bars import bars_section
from bertscope.report.captions import new_section, titled
from bertscope.report.context import Context
from bertscope.report.curves import curves_section
from bertscope.report.declared import declared_sections, with_source_task
from bertscope.report.deepened import deepened_section
from bertscope.report.document import Section
from bertscope.report.line import line_section
from bertscope.report.matrix import matrix_section
from bertscope.report.plots import Plots
from bertscope.report.subsets import subsets_section
from bertscope.runs.store import ResultStore, RunRecord

__all__ = ["experiment_sections"]


def experiment_sections(store: ResultStore, rows: list[RunRecord], plots: Plots, name: str, metric: str,
                        preferred: str | None, products: dict[str, RunRecord], ctx: Context) -> list[Section]:
    """The paper-shaped sections that apply to one experiment's finished runs (see the module docstring)."""
    rows = with_source_task(rows, products)
    draw = {"line": line_section, "subsets": subsets_section, "bars": bars_section, "matrix": matrix_section}
    candidates = [
        curves_section(store, rows, plots, name, preferred, ctx),
        *(draw[declared.kind](declared, rows, plots, name, metric, ctx) for declared in declared_sections()),
        deepened_section(rows, plots, name, metric, products, ctx),
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
    section = new_section(titled("runs that did not learn", ctx), ctx)
    section.text(f"**Warning:** {len(flagged)} run(s) did not learn: the final training loss sits at the constant "
                 f"predictor's or every dev prediction is one class, so their scores say nothing about the "
                 f"features. Likely remedy: {REMEDY}.")
    section.table(["run", "command", "what"],
                  [[f"`{r.id}`", r.command, "did not learn" if count is None else f"{int(count)} run(s) did not learn"]
                   for r, count in flagged])
    return section
