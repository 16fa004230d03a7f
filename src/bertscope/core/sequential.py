"""Adaptive seeds without inflated error: a verdict that may look at the data after every round of seeds.

Running seeds in rounds and stopping a claim as soon as its interval decides it spends compute where the effect is
small, but looking after every round and stopping at the first decisive look makes a plain 95% interval wrong more
than 5% of the time (each look is another chance to cross a boundary by noise). This module keeps the rate of wrong
decisions at or below ``alpha`` under that optional stopping, with a group-sequential design:

* The looks are fixed before any run: cumulative seed counts ``n_1 < n_2 < ... < n_K`` (:class:`LookPlan`).
* ``alpha`` is spent over the looks by the power-family spending function of Kim and DeMets (1987),
  ``alpha(t) = alpha * t**rho`` at information fraction ``t = n_k / n_K``: look k gets
  ``alpha_k = alpha(t_k) - alpha(t_{k-1})`` (``rho = 1`` spends in proportion to the seeds added; a larger ``rho``
  keeps more for the last looks).
* At look k the paired differences of the first ``n_k`` seeds get a Student-t interval at level ``1 - alpha_k`` and
  :func:`bertscope.core.stats.verdict` (the one verdict rule) reads it; the first decisive look stops the claim.

* **Futility** (non-binding): after an undecisive look that is not the last, a claim stops asking for seeds when
  even the last look could not decide it at the current mean and an optimistic spread: the 95% lower confidence
  bound of the standard deviation (chi-square), i.e. when the last look's half-width at that spread would still
  leave the mean on a boundary (:func:`futile`). A true difference sitting on a tolerance (or a bimodal one, wide as
  its tolerance) is never decided by an affordable number of seeds; its seeds go to claims that can be.

Why it is valid: every wrong verdict of :func:`~bertscope.core.stats.verdict` (``supported`` for a false claim,
``not supported`` for a true one) needs an interval that misses the true mean difference, so the probability of any
wrong decision over all looks is at most the probability that some look's interval misses it, which is at most
``sum(alpha_k) = alpha`` (Bonferroni's union bound; exact t intervals for normal differences). The bound ignores the
correlation between looks, so the design is conservative: tests/test_sequential.py measures both this rate and the
inflation of the unadjusted design by simulation. Stopping for futility only ever ends a claim *without* a
decision, so it cannot add a wrong one (it is non-binding: the alpha of the looks it skips is simply not used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bertscope.core.stats import ClaimKind, Interval, margin, summarize, t_interval, verdict

__all__ = ["FUTILITY_LEVEL", "METHOD", "LookPlan", "SequentialVerdict", "futile", "sequential_verdict"]

#: the confidence of the optimistic standard deviation a futility check assumes (its lower bound at this level)
FUTILITY_LEVEL = 0.95

#: How results name this design (claims.json, docs/statistics.md).
METHOD = "group-sequential t intervals, power-family alpha spending (Kim-DeMets), Bonferroni over looks"


@dataclass(frozen=True)
class LookPlan:
    """When the data are looked at (cumulative seed counts) and how ``alpha`` is spent over those looks."""

    looks: tuple[int, ...]
    alpha: float = 0.05
    rho: float = 1.0
    #: stop a claim early, undecided, when even the last look could not decide it (:func:`futile`); off by default:
    #: with an early look at few seeds it costs power (docs/statistics.md measures how much)
    futility: bool = False

    def __post_init__(self) -> None:
        if not self.looks or self.looks[0] < 2 or any(b <= a for a, b in zip(self.looks, self.looks[1:])):
            raise ValueError(f"looks must be increasing seed counts from at least 2, got {self.looks}")
        if not 0.0 < self.alpha < 1.0 or not self.rho > 0.0:
            raise ValueError(f"alpha must be in (0, 1) and rho positive, got {self.alpha}, {self.rho}")

    @classmethod
    def rounds(cls, first: int, max_seeds: int, *, growth: float = 1.5, alpha: float = 0.05,
               rho: float = 1.0, futility: bool = False) -> LookPlan:
        """Looks at ``first`` seeds, then each about ``growth`` times the last, ending at ``max_seeds``."""
        if first < 2 or max_seeds < first:
            raise ValueError(f"need 2 <= first <= max_seeds, got {first}, {max_seeds}")
        looks = [first]
        while looks[-1] < max_seeds:
            looks.append(min(max_seeds, max(looks[-1] + 1, math.ceil(looks[-1] * growth))))
        return cls(tuple(looks), alpha, rho, futility)

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def spent(self, index: int) -> float:
        """``alpha_k`` of look ``index`` (0-based): what the spending function adds at that look."""
        total = self.looks[-1]

        def cumulative(k: int) -> float:
            return 0.0 if k < 0 else self.alpha * (self.looks[k] / total) ** self.rho

        return cumulative(index) - cumulative(index - 1)

    def level(self, index: int) -> float:
        """The interval level used at look ``index``: ``1 - alpha_k``."""
        return 1.0 - self.spent(index)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "looks": list(self.looks), "method": METHOD,
                "levels": [round(self.level(i), 6) for i in range(len(self.looks))]}


@dataclass(frozen=True)
class SequentialVerdict:
    """Where a claim stands after the seeds finished so far.

    ``verdict`` is final when ``decided`` (a decisive look) or when the plan's last look was reached; otherwise it
    is ``inconclusive`` for now and ``needs_seeds`` says how many seeds the next look wants (0 when none are left).
    ``interval`` is the adjusted interval of the look that was read last (its ``level`` is that look's).
    ``futile``: it stopped before the last look because even that look could not decide it (:func:`futile`).
    """

    verdict: str
    decided: bool
    look: int | None
    seeds_used: int
    interval: Interval | None
    needs_seeds: int
    futile: bool = False

    @property
    def final(self) -> bool:
        return self.decided or self.needs_seeds == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = self.interval.to_dict() if self.interval is not None else None
        return out


def futile(interval: Interval, plan: LookPlan, kind: ClaimKind | str, tolerance: float = 0.0) -> bool:
    """Whether the plan's last look could not decide a claim whose differences so far gave ``interval``, even if
    the mean stayed where it is and the standard deviation were at its optimistic end (the lower bound of its
    :data:`FUTILITY_LEVEL` chi-square interval): the last look's half-width at that spread still leaves the mean
    within that half-width of a boundary of ``kind``'s rule (:func:`bertscope.core.stats.margin`). Needs at least 2
    differences (else False: nothing to judge by)."""
    if interval.std is None or interval.n < 2 or not math.isfinite(interval.mean):
        return False
    from scipy import stats as scipy_stats

    df = interval.n - 1
    optimistic = interval.std * math.sqrt(df / float(scipy_stats.chi2.ppf(FUTILITY_LEVEL, df)))
    bounds = t_interval(0.0, optimistic, plan.max_seeds, plan.level(len(plan.looks) - 1))
    if bounds is None:
        return False
    return not margin(interval.mean, str(kind), tolerance) > bounds[1]


def sequential_verdict(differences: Sequence[float], plan: LookPlan, kind: ClaimKind | str,
                       tolerance: float = 0.0) -> SequentialVerdict:
    """Read the looks of ``plan`` that ``differences`` (paired, in seed order) reach, in order, and stop at the
    first decisive one. Differences past the last look reached are not used: the stopping rule decides how many
    seeds count, never the values."""
    values = [float(d) for d in differences if d is not None and math.isfinite(float(d))]
    last: Interval | None = None
    for index, n in enumerate(plan.looks):
        if len(values) < n:
            return SequentialVerdict("inconclusive", False, index - 1 if index else None,
                                     plan.looks[index - 1] if index else 0, last, n)
        last = summarize(values[:n], level=plan.level(index))
        decision = verdict(last, kind, tolerance)
        if decision != "inconclusive":
            return SequentialVerdict(decision, True, index, n, last, 0)
        if plan.futility and index < len(plan.looks) - 1 and futile(summarize(values[:n]), plan, kind, tolerance):
            return SequentialVerdict("inconclusive", False, index, n, last, 0, futile=True)
    return SequentialVerdict("inconclusive", False, len(plan.looks) - 1, plan.looks[-1], last, 0)
