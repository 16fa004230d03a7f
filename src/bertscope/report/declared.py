"""Which sections a report can draw: the ones the commands declare (``CommandInfo.report``, a
:class:`~bertscope.core.registry.ReportSection`), plus the report's own cross-fine-tuning matrix built from a sweep's
finetune pre-steps (runs whose model a pre-step made get that pre-step's task as a ``source_task`` axis).
"""

from __future__ import annotations

import dataclasses

from bertscope.core.registry import SECTION_KINDS, ReportSection
from bertscope.runs.store import RunRecord
from bertscope.sweep.plugins import commands

__all__ = ["PRE_STEP_CROSS", "TASK_AXES", "declared_sections", "is_study", "model_ref", "task_valued",
           "with_source_task"]


TASK_AXES = ("task",)


#: The report's own section: cross-fine-tuning as a sweep, its models made by finetune pre-steps (the report adds
#: their task as ``source_task``, :func:`with_source_task`).
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


def task_valued() -> set[str]:
    """Axes whose values are GLUE task names (shown as "RTE", "SST-2"...): ``task`` and the matrices' axes."""
    return {*TASK_AXES, *(a for s in declared_sections() if s.kind == "matrix" for a in s.axes)}


def is_study(command: str) -> bool:
    """A command whose one run holds many fine-tuning runs (its registry entry declares ``study_points``); a plugin
    command this process has not loaded is no study."""
    info = commands().get(command)
    return info is not None and info.is_study


def model_ref(row: RunRecord) -> str | None:
    """The id of the pre-step run that produced this run's model, if any."""
    value = row.identity.get("model")
    return value.get("@run") if isinstance(value, dict) else None


def with_source_task(rows: list[RunRecord], products: dict[str, RunRecord]) -> list[RunRecord]:
    """Cross-fine-tuning as a sweep: runs whose model is a ``finetune`` pre-step get a ``source_task`` axis (the
    pre-step's task; ``none`` for runs on an original model), so the cross matrix can be drawn."""
    sources = {r.id: products[ref].config.get("task") for r in rows
               if (ref := model_ref(r)) and ref in products and products[ref].command == "finetune"}
    if not sources:
        return rows
    return [dataclasses.replace(r, axes={"source_task": sources.get(r.id, "none"), **(r.axes or {})})
            for r in rows]
