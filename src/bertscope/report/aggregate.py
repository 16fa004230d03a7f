"""The numbers of a report: mean ± sample std [95% interval] over replicates, and runs grouped by their grid values.

Within an experiment the replicate axes (``seed``, and the random subsets ``sample`` a ``dims`` study draws per K)
are averaged over; every other grid axis that takes more than one value is a condition.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bertscope.core.stats import t_interval
from bertscope.runs.store import RunRecord

__all__ = ["FLAGS", "REPLICATE_AXES", "REPLICATE_AXIS", "aggregate", "axis_values", "condition_axes", "describe",
           "format_cell", "main_metric", "metric_bounds", "metric_stats", "split_by"]

REPLICATE_AXIS = "seed"
#: replicate axes: seeds, and the random samples a `dims` study draws per K
REPLICATE_AXES = ("seed", "sample")


def aggregate(values: Iterable[float | None]) -> tuple[float, float | None, int]:
    """(mean, sample std or None when n < 2, n) of the finite values."""
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        return (math.nan, None, 0)
    std = statistics.stdev(clean) if len(clean) > 1 else None
    return (statistics.fmean(clean), std, len(clean))


#: the last part of a metric's name -> the range its values live in (intervals are clipped to it)
_BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("accuracy", "f1", "top1", "top5", "top10", "precision", "recall", "agreement",
                     "top1_agreement", "exact_match"), (0.0, 1.0)),
    **dict.fromkeys(("matthews_correlation", "mcc", "pearson", "spearmanr", "spearman"), (-1.0, 1.0)),
}
#: yes/no flags: reported as a share ("3/4 learned"), never as a mean with an interval
FLAGS = ("learned",)


def metric_bounds(metric: str | None) -> tuple[float, float] | None:
    """The range of a bounded metric (accuracy, F1, top-k in [0, 1]; MCC, Pearson, Spearman in [-1, 1]), by the
    last part of its name (``eval.accuracy``); None for unbounded or unknown ones."""
    return None if metric is None else _BOUNDS.get(metric.rsplit(".", 1)[-1].lower())


def format_cell(stats: tuple[float, float | None, int], digits: int = 3, metric: str | None = None) -> str:
    """``mean ± std [low, high] (n=k)``: the sample std and the 95% Student-t interval of the mean
    (:func:`bertscope.core.stats.t_interval`, the rule of docs/statistics.md); one replicate shows its value only.
    For a bounded ``metric`` the interval is clipped to its range (:func:`metric_bounds`; docs/statistics.md); a
    yes/no flag (:data:`FLAGS`) is the share of runs for which it holds, ``3/4 learned``."""
    mean, std, n = stats
    if n == 0:
        return "–"
    name = None if metric is None else metric.rsplit(".", 1)[-1]
    if name in FLAGS:
        return f"{round(mean * n)}/{n} {name}"
    if std is None:
        return f"{mean:.{digits}f} (n={n})"
    interval = t_interval(mean, std, n)
    bounds = metric_bounds(metric)
    if interval is not None and bounds is not None:
        interval = (max(interval[0], bounds[0]), min(interval[1], bounds[1]))
    shown = "" if interval is None else f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{shown} (n={n})"


def main_metric(rows: Sequence[RunRecord], preferred: str | None = None) -> str | None:
    """The metric a section shows: ``--metric`` if runs have it, else the GLUE score (``score``, or
    ``combined_score`` as the ``evaluate`` library names it), *.score, top1, accuracy, the first."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row.metrics if k not in keys)
    if not keys:
        return None
    if preferred and preferred in keys:
        return preferred
    for name in ("score", "eval.score", "final.score", "best.score", "test.score"):
        for spelling in (name, name.replace("score", "combined_score")):
            if spelling in keys:
                return spelling
    for suffix in (".score", ".combined_score", "final.top1", "top1", "accuracy", "top1_agreement"):
        hits = sorted((k for k in keys if k.endswith(suffix)), key=len)
        if hits:
            return hits[0]
    return keys[0]


def axis_values(rows: Sequence[RunRecord], axis: str) -> list[Any]:
    values: list[Any] = []
    for row in rows:
        value = (row.axes or {}).get(axis)
        if value not in values:
            values.append(value)
    return values


def condition_axes(rows: Sequence[RunRecord]) -> list[str]:
    """Non-replicate axes that take more than one value in ``rows``."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in (row.axes or {}) if k not in names and k not in REPLICATE_AXES)
    return [n for n in names if len(axis_values(rows, n)) > 1]


def split_by(rows: Sequence[RunRecord], axes: Sequence[str]) -> list[tuple[dict[str, Any], list[RunRecord]]]:
    """Groups of rows sharing the values of ``axes`` (in first-seen order)."""
    groups: dict[str, tuple[dict[str, Any], list[RunRecord]]] = {}
    for row in rows:
        key_values = {a: (row.axes or {}).get(a) for a in axes}
        key = repr(sorted(key_values.items(), key=lambda kv: kv[0]))
        groups.setdefault(key, (key_values, []))[1].append(row)
    return list(groups.values())


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def metric_stats(rows: Iterable[RunRecord], metric: str) -> tuple[float, float | None, int]:
    return aggregate(r.metrics.get(metric) for r in rows)
