"""Chance and majority-class reference values of a GLUE classification task, for the line a score plot draws.

A dev score means little without the score of a classifier that learned nothing. Two such references:

* **majority class**: always predict the most frequent label of the dev examples that were scored. Its official
  metrics (accuracy, F1, Matthews correlation and their mean, the GLUE score) are computed by
  :func:`bertscope.data.glue.compute_metrics` on the dev labels themselves, so this is exact; it needs the labels, read
  from a local GLUE copy (the same seeded subset as the runs when they used ``--max-eval``).
* **uniform chance**: a guess uniform over the labels, in expectation: accuracy 1/num_labels, Matthews
  correlation 0. It needs no data, but F1 (MRPC, QQP) then has no value, and neither does the GLUE score of a task
  that is scored by F1.

Regression (STS-B) has neither: :func:`task_baseline` returns None.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.data.labels import canonical_metric, task_name

__all__ = ["Baseline", "chance_baseline", "describe", "dev_provenances", "majority_baseline", "task_baseline"]


@dataclass(frozen=True)
class Baseline:
    """The reference scores of one task: per dev split, canonical metric name -> value (see the module)."""

    task: str
    kind: str  # "majority" | "chance"
    splits: dict[str, dict[str, float]]
    majority_label: str | None = None
    examples: tuple[int, ...] = field(default=())  # dev examples scored (one per subset)
    sources: tuple[str, ...] = field(default=())  # the dev files the labels were read from
    subsets: int = 1  # seeded dev subsets averaged (runs with --max-eval and several seeds)
    note: str = ""  # why uniform chance: which labels could not be read

    @property
    def label(self) -> str:
        """The legend entry of the line."""
        return "majority class" if self.kind == "majority" else "chance"

    def value(self, metric_key: str) -> float | None:
        """The reference value of ``metric_key`` (``final.score``, ``final.validation.accuracy``, ``score``,
        ``matthews_correlation``...; any spelling :func:`~bertscope.data.labels.canonical_metric` knows); a key that
        names a split uses that split, any other the mean over the dev splits (as the GLUE score does for MNLI).
        None when the metric has no reference (a loss, F1 under uniform chance, ...)."""
        parts = str(metric_key).split(".")
        metric = canonical_metric(parts[-1])
        named = [p for p in parts[:-1] if p in self.splits]
        splits = [self.splits[named[-1]]] if named else list(self.splits.values())
        values = [s[metric] for s in splits if metric in s]
        if not values or len(values) != len(splits):
            return None
        return statistics.fmean(values)

    def detail(self) -> str:
        """Where a majority baseline's labels came from: "`entailment`, 277 dev examples of .../RTE/dev.tsv"."""
        if self.kind != "majority":
            return self.note or "no dev labels were read"
        sizes = "/".join(str(n) for n in sorted(set(self.examples)))
        subsets = f", mean over {self.subsets} seeded dev subsets" if self.subsets > 1 else ""
        return f"`{self.majority_label}`, {sizes} dev examples of {', '.join(self.sources)}{subsets}"


def _canonical(values: Mapping[str, float]) -> dict[str, float]:
    return {canonical_metric(k): float(v) for k, v in values.items()}


def chance_baseline(task: str | glue.GlueTask) -> Baseline | None:
    """Uniform chance over the task's labels (expected values); None for regression."""
    info = glue.get_task(task)
    if info.is_regression:
        return None
    values = {"accuracy": 1.0 / info.num_labels, "matthews_correlation": 0.0}
    official = [canonical_metric(m) for m in info.metrics]
    if all(m in values for m in official):
        values[glue.COMBINED] = statistics.fmean(values[m] for m in official)
    return Baseline(task=info.name, kind="chance", splits={s: dict(values) for s in info.eval_splits},
                    note="no dev labels were read")


def majority_baseline(task: str | glue.GlueTask, labels_by_split: Mapping[str, Sequence[Any]],
                      sources: Sequence[str] = ()) -> Baseline | None:
    """Always predicting the most frequent label of each split's ``labels`` (ties: the lower label id); None for
    regression. ``sources`` name the files the labels came from, for the caption."""
    info = glue.get_task(task)
    if info.is_regression or not labels_by_split:
        return None
    splits: dict[str, dict[str, float]] = {}
    majority: list[int] = []
    for split, labels in labels_by_split.items():
        ids = [int(label) for label in labels]
        if not ids:
            raise BertscopeError(f"GLUE {info.name} {split}: no labels to find the majority class of")
        top = max(sorted(set(ids)), key=ids.count)
        majority.append(top)
        splits[split] = _canonical(glue.compute_metrics(info, [top] * len(ids), ids))
    names = sorted({info.label_names[m] for m in majority})
    return Baseline(task=info.name, kind="majority", splits=splits, majority_label="/".join(names),
                    examples=tuple(len(v) for v in labels_by_split.values()), sources=tuple(sources))


def _average(task: str, baselines: Sequence[Baseline]) -> Baseline:
    """One baseline from several (the seeded dev subsets of several runs): the mean of each value."""
    if len(baselines) == 1:
        return baselines[0]
    splits = {s: {m: statistics.fmean(b.splits[s][m] for b in baselines)
                  for m in baselines[0].splits[s] if all(m in b.splits.get(s, {}) for b in baselines)}
              for s in baselines[0].splits if all(s in b.splits for b in baselines)}
    labels = sorted({b.majority_label or "" for b in baselines} - {""})
    return Baseline(task=task, kind="majority", splits=splits, majority_label="/".join(labels),
                    examples=tuple(sorted({n for b in baselines for n in b.examples})),
                    sources=tuple(dict.fromkeys(p for b in baselines for p in b.sources)), subsets=len(baselines))


def dev_provenances(payload: Any, task: str, depth: int = 6) -> list[dict[str, Any]]:
    """Every dev-split data record (:meth:`bertscope.data.glue.GlueSplit.provenance`) of ``task`` in a result payload:
    ``finetune``'s ``data.eval``, each study run's, each cross stage's."""
    found: list[dict[str, Any]] = []

    def visit(value: Any, level: int) -> None:
        if level > depth:
            return
        if isinstance(value, Mapping):
            if (value.get("task") == task and str(value.get("split", "")).startswith("validation")
                    and isinstance(value.get("source"), str)):
                found.append(dict(value))
                return
            for key, inner in value.items():
                if key not in ("config", "environment", "epochs"):
                    visit(inner, level + 1)
        elif isinstance(value, list):
            for inner in value:
                visit(inner, level + 1)

    visit(payload, 0)
    return found


@functools.lru_cache(maxsize=64)
def _local_labels(task: str, split: str, folder: str, max_examples: int | None,
                  seed: int) -> tuple[tuple[Any, ...], str]:
    """(labels, file) of one local dev split, as the runs' seeded subset; cached for a report's many sections."""
    loaded = glue.load_split(task, split, data_dir=folder, max_examples=max_examples, seed=seed, bad_rows="skip")
    return tuple(loaded.labels), loaded.source


def _from_local(task: str, wanted: Iterable[tuple[str, str, int | None, int]]) -> Baseline | None:
    """The majority baseline of the local dev splits ``wanted`` names as (split, folder, max_examples, seed);
    several seeded subsets are averaged; None when none can be read."""
    groups: dict[tuple[Any, ...], dict[str, tuple[Any, ...]]] = {}
    sources: list[str] = []
    for split, folder, max_examples, seed in wanted:
        try:
            labels, source = _local_labels(task, split, folder, max_examples, seed)
        except BertscopeError:
            continue
        groups.setdefault((folder, max_examples, seed), {})[split] = labels
        if source not in sources:
            sources.append(source)
    built = [b for labels in groups.values() if (b := majority_baseline(task, labels, sources))]
    return _average(task, built) if built else None


def _wanted(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, int | None, int]]:
    """(split, folder, max_examples, seed) of each data record that names a local file (hub data is not read)."""
    out = []
    for record in records:
        source = str(record.get("source", ""))
        if source.startswith("hub:") or not Path(source).is_file():
            continue
        item = (str(record["split"]), str(Path(source).parent), record.get("max_examples"),
                int(record.get("seed") or 0))
        if item not in out:
            out.append(item)
    return out


def task_baseline(task: str, provenances: Iterable[Mapping[str, Any]] = (), *, data_dir: str | None = None,
                  max_eval: int | None = None, seed: int = 0) -> Baseline | None:
    """The reference line of ``task``: the majority class of the dev examples the runs were scored on, read from
    the local files their ``provenances`` name, else from ``data_dir`` (the dev split(s), the runs' ``max_eval``
    subset of ``seed``); uniform chance when no local dev labels can be read; None for regression or an unknown
    task."""
    try:
        info = glue.get_task(task)
    except BertscopeError:
        return None
    if info.is_regression:
        return None
    found = _from_local(info.name, _wanted(provenances))
    if found is None and data_dir:
        found = _from_local(info.name, [(split, str(data_dir), max_eval, seed) for split in info.eval_splits])
    if found is not None:
        return found
    chance = chance_baseline(info)
    if chance is not None and data_dir:
        return dataclasses.replace(chance, note=f"no {info.dir_name} dev labels could be read from {data_dir}")
    return chance


def describe(baselines: Sequence[Baseline], metric: str) -> str:
    """Caption sentences for the reference lines of ``baselines`` (one per task) drawn for ``metric``: which kind,
    how it was obtained, each task's value; and which task has none for this metric."""
    sentences = []
    majority = [b for b in baselines if b.kind == "majority" and b.value(metric) is not None]
    chance = [b for b in baselines if b.kind == "chance" and b.value(metric) is not None]
    if majority:
        sentences.append("Majority-class baseline (always predicting the most frequent label of the dev examples "
                         "the runs were scored on, scored with the official metric): "
                         + "; ".join(f"{task_name(b.task)} {b.value(metric):.3f} ({b.detail()})" for b in majority)
                         + ".")
    if chance:
        notes = sorted({b.note for b in chance if b.note})
        sentences.append("Uniform-chance baseline (" + "; ".join(notes or ["no dev labels were read"])
                         + "; expected accuracy 1/number of labels, Matthews correlation 0): "
                         + ", ".join(f"{task_name(b.task)} {b.value(metric):.3f}" for b in chance) + ".")
    missing = [task_name(b.task) for b in baselines if b.value(metric) is None]
    if missing:
        sentences.append(f"No baseline value for {', '.join(missing)}: uniform chance has no value for a score "
                         "that includes F1 (that needs the dev labels).")
    return " ".join(sentences)
