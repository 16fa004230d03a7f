"""How every section writes: grid values and metrics by their human names (the key itself beside it once), titles
with the experiment's context, each task's reference value (majority class or chance) and the words of captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertscope.core.figures import style_words
from bertscope.data.labels import task_name
from bertscope.report.context import Context, row_tasks, task_key
from bertscope.report.declared import task_valued
from bertscope.report.document import Section
from bertscope.runs.store import RunRecord

__all__ = ["baseline_of", "describe_shown", "metric_words", "n_words", "new_section", "reference_words",
           "sentence", "shown", "single_task", "titled"]


def shown(axis: str | None, value: Any) -> str:
    """A grid value as a reader sees it: task names as papers write them ("RTE", "after SST-2"), others as is."""
    if axis in task_valued() and value is not None:
        text = str(value)
        if text.startswith("after "):
            return f"after {task_name(text.removeprefix('after '))}"
        return task_name(text)
    return str(value)


def describe_shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={shown(k, v)}" for k, v in values.items())


def new_section(title: str, ctx: Context) -> Section:
    section = Section(title, level=3)
    section.text(ctx.line(compact=True))
    return section


def metric_words(metric: str, ctx: Context) -> str:
    """"dev GLUE score (`final.score`)": the human name with the key once beside it."""
    name = ctx.metric(metric)
    return f"`{metric}`" if name == metric else f"{name} (`{metric}`)"


def titled(what: str, ctx: Context) -> str:
    what = sentence(what) if ctx.builtin else what  # a plugin's metric key stays as it is spelled
    context = ctx.short()
    return f"{what}\n{context}" if context else what


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def baseline_of(ctx: Context, task: Any, metric: str) -> tuple[float, str] | None:
    """(value, label) of the reference line of ``task`` for ``metric``, if there is one."""
    baseline = ctx.baseline(task_key(task))
    value = None if baseline is None else baseline.value(metric)
    return None if baseline is None or value is None else (value, baseline.label)


def single_task(rows: Sequence[RunRecord], ctx: Context) -> str | None:
    """The one task all of ``rows`` are about (None when they span several, or none)."""
    tasks = {t for r in rows for t in row_tasks(r)}
    if len(tasks) == 1:
        return next(iter(tasks))
    return ctx.tasks[0] if len(ctx.tasks) == 1 and not tasks else None


def reference_words(entries: Sequence[tuple[float, str]], style: str = "") -> str:
    labels = sorted({label for _, label in entries})
    if not labels:
        return ""
    kind = " / ".join(labels)
    return (f"The {style_words(style)} grey line is the {kind.replace('majority class', 'majority-class')} baseline."
            if style else f"Reference: {kind}.")


def n_words(counts: Sequence[int]) -> str:
    ns = sorted({n for n in counts if n})
    if not ns:
        return "no runs"
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"n = {n} seed{'' if ns[-1] == 1 else 's'}"
