"""Seeds in the studies: each point runs once per ``--seeds`` seed, and every point and comparison gets its interval.

A study with ``--seeds 1,2,3`` is the union of the same study run with ``--seed 1``, ``--seed 2`` and ``--seed 3``
(:func:`seed_config`): the seed drives everything it drives in one run (data subsets, random dimension subsets,
initialisation, batch order), so the runs of a seed are exactly the runs of the single-seed study and its finished
run records (in ``OUT/runs.db``, under the run's id, which covers the seed) are shared by both. A study without
``--seeds`` runs its one ``--seed`` as before (same runs, same ids).

Every reported point carries mean, sample std, n (seeds) and a 95% interval (:func:`bertscope.core.stats.summarize`);
every comparison a claim rests on is a paired difference over seeds (:func:`comparison`) with a verdict
(:func:`bertscope.core.stats.verdict`). With one seed, the difference gets a bootstrap over the dev examples when both
sides' run records keep their dev predictions (records written since this module existed do, under ``dev``);
otherwise it has no interval and its verdict is ``inconclusive``. The rule: docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bertscope.core import stats
from bertscope.core.options import parse_seed_list
from bertscope.data import glue
from bertscope.finetune.result import FinetuneResult
from bertscope.finetune.tracking import default_run_name, parse_report_to

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "by_seed",
    "comparison",
    "comparison_columns",
    "dev_record",
    "error_bars",
    "interval_columns",
    "metric_means",
    "point",
    "run_seeds",
    "score_columns",
    "seed_config",
    "seed_note",
    "seeded_score",
]

#: resamples of the dev examples for a single seed's bootstrap (``stats.bootstrap_difference``)
BOOTSTRAP_SAMPLES = 1000


def run_seeds(config: Any) -> tuple[int, ...]:
    """The seeds a study runs: ``--seeds``, or its one ``--seed``."""
    seeds = config.seeds
    return parse_seed_list(seeds, option="--seeds") if seeds is not None else (int(config.encoder.seed),)


def seed_config(config: Any, seed: int) -> Any:
    """The study's options as a single-seed study with ``--seed seed`` (trackers: one run name per seed)."""
    if config.seeds is None:
        return config
    changes: dict[str, Any] = {"seed": seed, "seeds": None}
    if parse_report_to(config.tracking.report_to):
        changes["run_name"] = f"{config.tracking.run_name or default_run_name(config)}/seed-{seed}"
    return config.replace(**changes)


def seed_note(config: Any, what: str = "point") -> str:
    """A plot title's note on its error bars: over seeds, or one seed (no bars)."""
    seeds = run_seeds(config)
    if len(seeds) > 1:
        return f"mean ± 95% interval over {len(seeds)} seeds ({','.join(map(str, seeds))})"
    return f"one run per {what} (seed {seeds[0]}), no error bars"


def dev_record(result: FinetuneResult, labels: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """What a run record keeps of its final dev predictions, compactly: per dev split the gold labels and the
    predictions (class ids, or STS-B scores to 5 decimals), for the single-seed bootstrap."""
    regression = glue.get_task(result.task).is_regression
    cast = (lambda v: round(float(v), 5)) if regression else (lambda v: int(v))
    out: dict[str, Any] = {"labels": {}, "predictions": {}}
    for split, predictions in result.predictions.items():
        if split in labels and len(labels[split]) == len(predictions):
            out["labels"][split] = [cast(v) for v in labels[split]]
            out["predictions"][split] = [cast(v) for v in predictions]
    return out


def seeded_score(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The value of a point for one seed: the mean score of its runs (several for a ``dims`` K with ``--samples``)."""
    scores = [float(r["score"]) for r in records if r.get("score") is not None]
    return sum(scores) / len(scores) if scores else None


def interval_columns(interval: stats.Interval, prefix: str = "") -> dict[str, Any]:
    """Table columns of an interval: ``<prefix>mean, std, n, low, high`` (std/low/high None when unknown)."""
    return {f"{prefix}mean": interval.mean, f"{prefix}std": interval.std, f"{prefix}n": interval.n,
            f"{prefix}low": interval.low, f"{prefix}high": interval.high}


def _stack(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(splits, labels [N, 2] = (split id, label), predictions [N, runs]) of runs scored on the same dev examples."""
    devs: list[Mapping[str, Any]] = [r.get("dev") or {} for r in records]
    if not devs or any(not d.get("labels") for d in devs):
        return None
    first = devs[0]
    splits = sorted(first["labels"])
    if any(sorted(d["labels"]) != splits or any(d["labels"][s] != first["labels"][s] for s in splits)
           for d in devs):
        return None  # not the same dev examples: no paired bootstrap
    labels = np.asarray([(i, v) for i, s in enumerate(splits) for v in first["labels"][s]], dtype=float)
    predictions = np.asarray([[v for s in splits for v in d["predictions"][s]] for d in devs], dtype=float).T
    return splits, labels, predictions


def _task_score(task: str, n_splits: int) -> Any:
    """metric(labels [N, 2], predictions [N, runs]): the task's GLUE score, averaged over dev splits and runs."""
    info = glue.get_task(task)

    def metric(labels: np.ndarray, predictions: np.ndarray) -> float:
        total = 0.0
        for split in range(n_splits):
            rows = labels[:, 0] == split
            if not rows.any():
                return math.nan
            y = labels[rows, 1] if info.is_regression else labels[rows, 1].astype(int)
            for column in predictions[rows].T:
                p = column if info.is_regression else column.astype(int)
                total += glue.compute_metrics(info, p.tolist(), y.tolist())[glue.COMBINED]
        return total / (n_splits * predictions.shape[1])

    return metric


def _bootstrap(task: str, claimed: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]],
               seed: int) -> stats.Interval | None:
    a, b = _stack(claimed), _stack(reference)
    if a is None or b is None or a[0] != b[0] or not np.array_equal(a[1], b[1]):
        return None
    return stats.bootstrap_difference(_task_score(task, len(a[0])), a[1], a[2], b[2], samples=BOOTSTRAP_SAMPLES,
                                      seed=seed)


def comparison(task: str | None, claimed: Mapping[int, Sequence[Mapping[str, Any]]],
               reference: Mapping[int, Sequence[Mapping[str, Any]]], kind: str, tolerance: float = 0.0) -> dict[str, Any]:
    """A claim's paired difference ``claimed - reference`` (per seed: the mean score of each side's runs), its
    interval and verdict.

    Several seeds: Student t over the seeds both sides have (``stats.paired_difference``). One seed: a bootstrap over
    the dev examples when both sides kept their dev predictions on the same examples, else no interval
    (``inconclusive``). Returns ``{"kind", "tolerance", "method", "difference": Interval dict, "verdict"}``.
    """
    seeds = [s for s in claimed if s in reference]
    a = [seeded_score(claimed[s]) for s in seeds]
    b = [seeded_score(reference[s]) for s in seeds]
    difference = stats.paired_difference(a, b)
    if difference.n == 1 and len(seeds) == 1 and task:
        booted = _bootstrap(task, claimed[seeds[0]], reference[seeds[0]], seeds[0])
        difference = booted if booted is not None else difference
    return {"kind": kind, "tolerance": tolerance, "method": difference.method, "seeds": seeds,
            "difference": difference.to_dict(), "verdict": stats.verdict(difference, kind, tolerance)}


def metric_means(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``split.metric`` columns: each official dev metric's mean over ``records`` (the GLUE score is ``score``)."""
    sums: dict[str, list[float]] = {}
    for record in records:
        for split, values in (record.get("final") or {}).items():
            for name, value in values.items():
                if glue.canonical_metric_name(name) != glue.COMBINED and value is not None:
                    sums.setdefault(f"{split}.{name}", []).append(float(value))
    return {key: sum(v) / len(v) for key, v in sums.items()}


def comparison_columns(result: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """Table columns of a comparison: ``<name>`` (the mean difference), ``<name>_low``/``_high`` (its interval) and
    ``<name>_verdict``; all None for the reference point itself."""
    if result is None:
        return {name: None, f"{name}_low": None, f"{name}_high": None, f"{name}_verdict": None}
    difference = result["difference"]
    return {name: difference["mean"], f"{name}_low": difference["low"], f"{name}_high": difference["high"],
            f"{name}_verdict": result["verdict"]}


def by_seed(records: Sequence[Mapping[str, Any]], seeds: Sequence[int], **match: Any) -> dict[int, list[Mapping[str, Any]]]:
    """``records`` matching every ``key=value`` of ``match``, grouped by seed (every seed listed, maybe empty)."""
    return {s: [r for r in records if r.get("seed") == s and all(r.get(k) == v for k, v in match.items())]
            for s in seeds}


def point(records: Mapping[int, Sequence[Mapping[str, Any]]]) -> stats.Interval:
    """A point over seeds: the Student-t interval of its per-seed values (:func:`seeded_score`)."""
    return stats.summarize([seeded_score(runs) for runs in records.values()])


def error_bars(rows: Sequence[Mapping[str, Any]], mean: str = "score") -> list[list[float]] | None:
    """matplotlib ``yerr`` (below, above) of rows with a ``low``/``high`` interval, or None when none has one."""
    if not any(r.get("low") is not None for r in rows):
        return None
    return [[r[mean] - r["low"] if r.get("low") is not None else 0.0 for r in rows],
            [r["high"] - r[mean] if r.get("high") is not None else 0.0 for r in rows]]


def score_columns(interval: stats.Interval) -> dict[str, Any]:
    """A point's table columns: ``score`` (the mean over seeds), ``std``, ``n`` (seeds), ``low``, ``high``."""
    return {"score": interval.mean, "std": interval.std, "n": interval.n, "low": interval.low, "high": interval.high}
