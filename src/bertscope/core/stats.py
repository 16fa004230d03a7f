"""Seed statistics and verdicts: mean, standard deviation and 95% interval of a point; paired differences; a
bootstrap over dev examples for single runs; the verdict rule every claim uses.

Pure functions on plain numbers (and one on per-example arrays). The rule a verdict follows is written once here
and in ``docs/statistics.md``:

- ``better`` claims ("deepened beats the original"): ``supported`` when the whole interval of the difference lies
  above 0; ``not supported`` when the whole interval lies at or below 0; otherwise
  ``inconclusive``.
- ``no_worse`` claims ("k dimensions suffice", "a token is as good as [CLS]", "forgets little"): non-inferiority.
  ``supported`` when the whole interval lies at or above ``-tolerance`` (A loses at most ``tolerance`` against B;
  A doing better supports it too); ``not supported`` when the whole interval lies below ``-tolerance``; otherwise
  ``inconclusive``. Every "as good as" of the two papers reads this way: a token that beats [CLS], or a layer
  that beats the last, does not contradict "as good as".
- ``as_good`` claims ("A is equivalent to B"): two-sided equivalence. ``supported`` when the interval lies inside
  ``[-tolerance, +tolerance]``; ``not supported`` when it lies wholly outside it (entirely below ``-tolerance`` or
  entirely above ``+tolerance``); otherwise ``inconclusive``. For a claim of equality, not of "at least as good".
- ``worse`` claims ("freezing hurts", "lower layers are weaker"): the mirror of ``better``.

An interval needs n >= 2 seeds (Student t) or a bootstrap; with n = 1 and no bootstrap the verdict is
``inconclusive`` (one number cannot tell a difference from seed noise).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["CLAIM_KINDS", "TOLERANCE_KINDS", "VERDICTS", "Interval", "bootstrap_difference", "boundaries", "margin",
           "paired_difference", "summarize", "t_interval", "tolerance_label", "verdict"]

ClaimKind = Literal["better", "no_worse", "as_good", "worse"]
CLAIM_KINDS: tuple[str, ...] = ("better", "no_worse", "as_good", "worse")
#: the claim kinds bounded by a tolerance (the others compare with 0)
TOLERANCE_KINDS: tuple[str, ...] = ("no_worse", "as_good")
VERDICTS: tuple[str, ...] = ("supported", "not supported", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """A point over replicates: mean, sample std (None for n < 2), n, and a 95% interval (None when unknown).

    ``method`` says where the interval comes from: ``t`` (Student t over seeds), ``bootstrap`` (resampled dev
    examples of one run) or ``none``.
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    method: str = "t"
    level: float = 0.95
    #: the finite values summarised, in the order given (seed order for paired differences): what a sequential
    #: verdict reads look by look. Not part of ``to_dict`` (claims write them beside the interval).
    values: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("values")
        return out

    def format(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "–"
        text = f"{self.mean:.{digits}f}"
        if self.std is not None:
            text += f" ± {self.std:.{digits}f}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text + f" (n={self.n})"


@functools.lru_cache(maxsize=4096)
def _t_quantile(level: float, dof: int) -> float:
    """Cached: simulations and sequential looks ask for the same few quantiles many times."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(0.5 + level / 2, dof))


def t_interval(mean: float, std: float | None, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """The Student-t ``level`` interval of a mean from its sample std and n (None for n < 2 or no std): what
    :func:`summarize` computes, for callers that kept only (mean, std, n)."""
    if std is None or n < 2 or not (math.isfinite(mean) and math.isfinite(std)):
        return None
    half = _t_quantile(level, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def summarize(values: Sequence[float | None], level: float = 0.95) -> Interval:
    """Mean, sample std, n and the Student-t ``level`` interval of the finite ``values``."""
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(clean)
    if n == 0:
        return Interval(math.nan, None, 0, None, None, "none", level)
    mean = statistics.fmean(clean)
    if n < 2:
        return Interval(mean, None, 1, None, None, "none", level, tuple(clean))
    std = statistics.stdev(clean)
    low, high = t_interval(mean, std, n, level) or (math.nan, math.nan)
    return Interval(mean, std, n, low, high, "t", level, tuple(clean))


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], level: float = 0.95) -> Interval:
    """``a - b`` paired by position (the same seed in both lists); pairs with a missing side are dropped."""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length ({len(a)} vs {len(b)})")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    return summarize(diffs, level)


def bootstrap_difference(metric: Callable[[np.ndarray, np.ndarray], float], labels: Sequence[float] | np.ndarray,
                         predictions_a: Sequence[float] | np.ndarray, predictions_b: Sequence[float] | np.ndarray, *,
                         samples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """metric(a) - metric(b) on the same dev examples, with a percentile interval from resampling the examples.

    For single runs: it measures how much the difference depends on which dev examples were drawn (not seed
    noise, which only more seeds measure). ``metric(labels, predictions)`` is e.g. accuracy or Matthews corr.
    Row i of each array is dev example i; 2-D arrays are resampled by rows (e.g. labels with a split column, or
    one prediction column per run of a side that averages several runs), and ``metric`` gets the resampled rows.
    """
    y = np.asarray(labels, dtype=float)
    pa, pb = np.asarray(predictions_a, dtype=float), np.asarray(predictions_b, dtype=float)
    if not (len(y) == len(pa) == len(pb)) or len(y) == 0:
        raise ValueError("bootstrap needs labels and two prediction lists of one non-zero length")
    point = metric(y, pa) - metric(y, pb)
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    for i in range(samples):
        index = rng.integers(0, len(y), len(y))
        draws[i] = metric(y[index], pa[index]) - metric(y[index], pb[index])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return Interval(point, None, 1, None, None, "bootstrap", level)
    low, high = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(point), float(np.std(draws, ddof=1)) if len(draws) > 1 else None, 1, float(low),
                    float(high), "bootstrap", level)


def verdict(difference: Interval, kind: ClaimKind | str, tolerance: float = 0.0) -> str:
    """``supported`` / ``not supported`` / ``inconclusive`` for a claim about ``difference`` (see module doc).

    ``difference`` is claimed-side minus reference-side (e.g. deepened - original, k dims - all dims).
    """
    if kind not in CLAIM_KINDS:
        raise ValueError(f"unknown claim kind {kind!r} (one of {', '.join(CLAIM_KINDS)})")
    low, high = difference.low, difference.high
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if kind == "better":
        return "supported" if low > 0 else "not supported" if high <= 0 else "inconclusive"
    if kind == "worse":
        return "supported" if high < 0 else "not supported" if low >= 0 else "inconclusive"
    if kind == "no_worse":
        return "supported" if low >= -tolerance else "not supported" if high < -tolerance else "inconclusive"
    if -tolerance <= low and high <= tolerance:
        return "supported"
    if high < -tolerance or low > tolerance:
        return "not supported"
    return "inconclusive"


def tolerance_label(kind: str, tolerance: float | None) -> str:
    """How a table shows a claim's tolerance: ``>= -0.02`` (no_worse: the one bound), ``±0.02`` (as_good), or
    empty (no tolerance)."""
    if tolerance is None:
        return ""
    return f">= -{tolerance:g}" if kind == "no_worse" else f"±{tolerance:g}"


def boundaries(kind: str, tolerance: float | None) -> tuple[float, ...]:
    """The values a difference's interval must clear for ``kind``'s rule to decide: 0 (better, worse), ``-t``
    (no_worse), ``-t`` and ``+t`` (as_good)."""
    tol = abs(tolerance or 0.0)
    return {"no_worse": (-tol,), "as_good": (-tol, tol)}.get(str(kind), (0.0,))


def margin(mean: float, kind: str, tolerance: float | None) -> float:
    """How far ``mean`` sits from the nearest of :func:`boundaries` (0: on one): an interval centred on it decides
    the claim exactly when its half-width is below this."""
    return min(abs(mean - edge) for edge in boundaries(kind, tolerance))
