"""What a report section is about: its task(s), model(s), texts, base options and reference (chance) lines.

A reader who copies one section into a paper must still know what was run. Everything here is read from the
store's runs: the tasks and models from their grid values and options (a model built by a pre-step by the
pre-step's label), the **base options** as the options every run of the experiment shares and that differ from
the command's defaults (what the spec's ``base`` set, whatever block it was inherited from; result-neutral options
such as ``out`` or ``device`` left out), and for GLUE classification tasks the majority-class baseline of the dev
labels the runs were scored on (:mod:`bertscope.data.baselines`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertscope.core.config import config_options
from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.data.baselines import Baseline, describe, dev_provenances, task_baseline
from bertscope.data.labels import model_name, task_name
from bertscope.lens.metrics import metric_label
from bertscope.models.options import ModelOptions
from bertscope.runs.store import ResultStore, RunRecord
from bertscope.sweep.commands import ANALYSES
from bertscope.sweep.plugins import commands

__all__ = ["Context", "experiment_context", "row_tasks", "task_key"]

#: commands whose numbers are GLUE classification scores (the studies are added from the registry)
_GLUE_COMMANDS = frozenset({"finetune"})
#: commands that read sentences rather than train on a task (their ``task`` names the texts)
_TEXT_COMMANDS = frozenset({"reconstruct", "compare", "layer-scan"})
#: runs whose payloads are read for the dev data of each task (a report of thousands of runs stays quick)
_PAYLOADS_PER_TASK = 8


@dataclass(frozen=True)
class Context:
    """The tasks, models and base options of one experiment, and each task's reference line."""

    commands: tuple[str, ...]
    tasks: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    base: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Baseline] = field(default_factory=dict)
    glue: bool = False  # the numbers are GLUE scores (``finetune``, a study): ``score`` is "GLUE score"
    builtin: bool = True  # bertscope's own commands (a plugin's metric keys mean what the plugin says)

    def metric(self, key: str) -> str:
        """The human name of a metric key of these runs; a plugin command's keys are shown as they are. A study's
        points carry a bare ``score``: their dev GLUE score."""
        if not self.builtin:
            return key
        registry = commands()
        if key == "score" and any(c in registry and registry[c].is_study for c in self.commands):
            return metric_label("final.score")
        return metric_label(key, glue=self.glue)

    def line(self, *, compact: bool = False) -> str:
        """The sentence an experiment starts with; ``compact``: the one-line reminder each of its sections
        starts with."""
        base = ", ".join(f"`{k}={_show(v)}`" for k, v in sorted(self.base.items())) or "none"
        models = ", ".join(self.models) or ("none named" if not self.builtin else model_name(None))
        if compact:
            what = [", ".join(task_name(t) for t in self.tasks)] if self.tasks else []
            what += ["; ".join(self.texts)] if self.texts else []
            return "*" + " · ".join([*what, models, f"base options: {base}"]) + "*"
        parts = []
        if self.tasks:
            parts.append(("Task" if len(self.tasks) == 1 else "Tasks") + ": " + "; ".join(
                _task_words(t) for t in self.tasks))
        if self.texts:
            parts.append("Texts: " + "; ".join(self.texts))
        parts.append(("Model" if len(self.models) <= 1 else "Models") + ": " + models)
        parts.append("Base options (shared by every run, other than the defaults): " + base)
        return ". ".join(parts) + "."

    def short(self, limit: int = 3) -> str:
        """Task(s) and model(s) for a figure title: "RTE, MRPC · all-MiniLM-L6-v2 (embedded default)"."""
        tasks = [task_name(t) for t in self.tasks]
        task_text = ", ".join(tasks) if len(tasks) <= limit else f"{len(tasks)} GLUE tasks"
        models = list(self.models) or ([model_name(None)] if self.builtin else [])
        model_text = ", ".join(models) if len(models) <= limit else f"{len(models)} models"
        return " · ".join(p for p in (task_text if not self.texts else "; ".join(self.texts), model_text) if p)

    def baseline(self, task: Any) -> Baseline | None:
        return self.baselines.get(task_key(task))

    def baseline_notes(self, metric: str, tasks: Sequence[Any] | None = None) -> str:
        """Caption sentences naming each reference line of ``tasks`` (default: all) and how it was obtained ("" when
        there is none)."""
        chosen = self.tasks if tasks is None else [task_key(t) for t in tasks]
        return describe([b for t in dict.fromkeys(chosen) if (b := self.baselines.get(t)) is not None], metric)


def task_key(task: Any) -> str:
    """The GLUE name of a task value (``RTE``, ``rte`` -> ``rte``); anything else as ``str``."""
    try:
        return glue.get_task(str(task)).name
    except BertscopeError:
        return str(task)


def _task_words(task: str) -> str:
    """"RTE (textual entailment; GLUE score = accuracy)"."""
    try:
        info = glue.get_task(task)
    except BertscopeError:
        return f"`{task}`"
    metrics = [metric_label(m) for m in info.metrics]
    score = metrics[0] if len(metrics) == 1 else "mean of " + " and ".join(metrics)
    return f"{info.dir_name} ({info.description.split(' (')[0]}; GLUE score = {score})"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def row_tasks(row: RunRecord) -> list[str]:
    """The GLUE task name(s) one run is about: its ``task`` axis or option, or its ``tasks`` list (``cross``)."""
    values: list[str] = []
    axes = row.axes or {}
    for key in ("task", "target", "target_task", "source", "source_task"):
        if axes.get(key) not in (None, "none"):
            values.append(str(axes[key]))
    if row.config.get("task") and "task" not in axes:
        values.append(str(row.config["task"]))
    if isinstance(row.config.get("tasks"), str):
        values.extend(t.strip() for t in row.config["tasks"].split(",") if t.strip())
    out: list[str] = []
    for value in values:
        try:
            name = glue.get_task(value).name
        except BertscopeError:
            continue
        if name not in out:
            out.append(name)
    return out


def _model_of(row: RunRecord, key: str, products: Mapping[str, RunRecord]) -> str | None:
    ref = row.identity.get(key)
    if isinstance(ref, dict) and "@run" in ref:
        made = products.get(str(ref["@run"]))
        if made is None:
            return f"output of pre-step {ref['@run']}"
        return made.label or f"{made.command} of {model_name(made.config.get('model'))}"
    value = row.config.get(key, row.identity.get(key))
    if value is None:  # the default model, for bertscope's own commands; a plugin's None means none
        info = commands().get(row.command)
        own = key == "model" and info is not None and issubclass(info.config, ModelOptions)
        return model_name(None) if own else None
    return model_name(value)


def _texts_of(row: RunRecord) -> str:
    if row.config.get("texts"):
        return f"sentences of `{row.config['texts']}`"
    if row.config.get("task"):
        split = row.config.get("split") or "validation"
        return f"{task_name(row.config['task'])} {'dev' if split == 'validation' else split} sentences"
    return "the built-in English sample sentences"


def _defaults(command: str) -> dict[str, Any]:
    info = commands().get(command)
    if info is None:
        return {}
    return {o.name: o.default for o in config_options(info.config)}


def _base_options(rows: Sequence[RunRecord]) -> dict[str, Any]:
    """Options with one value in every run, not on a grid axis, and not the command's default."""
    axes = {a for r in rows for a in (r.axes or {})}
    shown = {"task", "tasks", "model", "variant", "texts"}  # named in the context line itself
    keys = [k for k in rows[0].identity if k not in axes and k not in shown]
    base: dict[str, Any] = {}
    for key in keys:
        values = {json.dumps(r.identity.get(key, "<unset>"), sort_keys=True, default=str) for r in rows}
        if len(values) != 1:
            continue
        value = rows[0].identity[key]
        if isinstance(value, dict) and "@run" in value:
            continue
        defaults = [_defaults(r.command) for r in {r.command: r for r in rows}.values()]
        if all(key in d and json.dumps(d[key], default=str) == json.dumps(value, default=str) for d in defaults):
            continue
        base[key] = value
    return base


def _baselines(store: ResultStore, rows: Sequence[RunRecord], tasks: Sequence[str]) -> dict[str, Baseline]:
    out: dict[str, Baseline] = {}
    for task in tasks:
        members = [r for r in rows if task in row_tasks(r)]
        provenances: list[dict[str, Any]] = []
        for row in members[:_PAYLOADS_PER_TASK]:
            provenances.extend(dev_provenances(store.payload(row.id) or {}, task))
        first = members[0] if members else rows[0]
        baseline = task_baseline(task, provenances, data_dir=first.config.get("data_dir"),
                                 max_eval=first.config.get("max_eval"), seed=int(first.config.get("seed") or 0))
        if baseline is not None:
            out[task] = baseline
    return out


def experiment_context(store: ResultStore, rows: Sequence[RunRecord],
                       products: Mapping[str, RunRecord]) -> Context:
    """The context of one experiment's finished runs (``rows``: the store's records, before studies are split
    into points)."""
    if not rows:
        return Context(commands=())
    names = tuple(sorted({r.command for r in rows}))
    registry = commands()
    glue_like = any(c in _GLUE_COMMANDS or (c in registry and registry[c].is_study) for c in names)
    text_rows = [r for r in rows if r.command in _TEXT_COMMANDS]
    tasks: list[str] = []
    for row in rows:
        if row.command not in _TEXT_COMMANDS:
            tasks.extend(t for t in row_tasks(row) if t not in tasks)
    models: list[str] = []
    for row in rows:
        axis = (row.axes or {}).get("model")
        found = [str(axis)] if axis is not None else [m for k in ("model", "variant")
                                                       if (m := _model_of(row, k, products)) is not None]
        models.extend(m for m in found if m not in models)
    texts = tuple(dict.fromkeys(_texts_of(r) for r in text_rows))
    baselines = _baselines(store, rows, tasks) if glue_like and tasks else {}
    builtin = any(ANALYSES.get(c) is not None for c in names)
    return Context(commands=names, tasks=tuple(tasks), models=tuple(models), texts=texts,
                   base=_base_options(rows), baselines=baselines, glue=glue_like, builtin=builtin)
