"""The adaptive-seeds verdict: its looks, its spending, and by simulation that optional stopping keeps the rate of
wrong decisions at or below alpha (while the unadjusted design, read the same way, exceeds it)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bertscope.core.sequential import LookPlan, sequential_verdict
from bertscope.core.stats import summarize, verdict


def test_rounds_grow_to_the_maximum() -> None:
    plan = LookPlan.rounds(3, 20)
    assert plan.looks[0] == 3 and plan.looks[-1] == 20
    assert all(b > a for a, b in zip(plan.looks, plan.looks[1:]))
    assert LookPlan.rounds(4, 4).looks == (4,)


def test_alpha_is_spent_exactly_once_over_the_looks() -> None:
    for rho in (0.5, 1.0, 3.0):
        plan = LookPlan((3, 5, 8, 12), alpha=0.05, rho=rho)
        spent = [plan.spent(i) for i in range(4)]
        assert all(s > 0 for s in spent)
        assert sum(spent) == pytest.approx(0.05)
    linear = LookPlan((5, 10), alpha=0.05)
    assert linear.spent(0) == pytest.approx(0.025) and linear.level(1) == pytest.approx(0.975)


def test_bad_plans_are_refused() -> None:
    for looks in ((), (1, 3), (3, 3), (5, 4)):
        with pytest.raises(ValueError):
            LookPlan(looks)
    with pytest.raises(ValueError):
        LookPlan((3,), alpha=0.0)


def test_one_look_is_the_plain_verdict_at_its_level() -> None:
    diffs = [0.008, 0.003, 0.009, 0.007]
    result = sequential_verdict(diffs, LookPlan((4,)), "as_good", 0.02)
    plain = summarize(diffs, level=0.95)
    assert result.verdict == verdict(plain, "as_good", 0.02) == "supported"
    assert result.interval is not None and result.interval.low == pytest.approx(plain.low)
    # independent recomputation: scipy's t interval
    low, high = scipy_stats.t.interval(0.95, len(diffs) - 1, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
    assert (result.interval.low, result.interval.high) == pytest.approx((low, high))


def test_a_clear_effect_stops_early_and_an_open_one_asks_for_the_next_look() -> None:
    plan = LookPlan((3, 6, 12))
    clear = sequential_verdict([0.50, 0.52, 0.51, 0.9, -3.0], plan, "better")
    assert clear.decided and clear.verdict == "supported" and clear.seeds_used == 3 and clear.look == 0
    noisy = [0.1, -0.1, 0.05, 0.0]
    pending = sequential_verdict(noisy, plan, "better")
    assert not pending.final and pending.needs_seeds == 6 and pending.seeds_used == 3
    nothing = sequential_verdict([0.1], plan, "better")
    assert nothing.needs_seeds == 3 and nothing.seeds_used == 0 and nothing.interval is None
    done = sequential_verdict([0.1, -0.1, 0.05, 0.0, 0.02, -0.03] * 2, plan, "better")
    assert done.final and not done.decided and done.verdict == "inconclusive" and done.seeds_used == 12


def test_futility_stops_a_claim_on_its_boundary_and_keeps_one_that_can_still_be_decided() -> None:
    plan = LookPlan((3, 6), futility=True)
    # a mean on the tolerance's edge: no affordable look decides it, so it stops at the first, undecided
    edge = sequential_verdict([-0.014, -0.022, -0.017, -0.02, -0.018, -0.019], plan, "as_good", 0.02)
    assert edge.futile and edge.verdict == "inconclusive" and edge.seeds_used == 3 and edge.needs_seeds == 0
    # bimodal pairs, as wide as the tolerance many times over
    wide = sequential_verdict([0.007, -0.233, -0.014], plan, "as_good", 0.02)
    assert wide.futile and wide.needs_seeds == 0
    # near zero with a small spread: the last look may decide it, so it asks for it
    hopeful = sequential_verdict([0.001, 0.021, 0.013], plan, "as_good", 0.02)
    assert not hopeful.futile and hopeful.needs_seeds == 6
    assert not sequential_verdict([0.03, 0.05, 0.01], plan, "better").futile  # worth 6 seeds
    assert sequential_verdict([0.03, 0.05, 0.01], plan, "better").needs_seeds == 6
    assert sequential_verdict([0.02, 0.05, -0.01], plan, "better").futile  # half-width over the mean at 6 too
    off = sequential_verdict([-0.014, -0.022, -0.017], LookPlan((3, 6)), "as_good", 0.02)
    assert not off.futile and off.needs_seeds == 6
    # a head doing better than the reference by about the tolerance: on the edge of "equivalent", far from the
    # one bound of "no worse", so only the equivalence reading gives up on it
    better = [0.010, 0.024, 0.038]
    assert sequential_verdict(better, plan, "as_good", 0.02).futile
    above = sequential_verdict(better, plan, "no_worse", 0.02)
    assert not above.futile and above.needs_seeds == 6
    assert sequential_verdict([-0.014, -0.022, -0.017], plan, "no_worse", 0.02).futile  # on its one bound
    # the last look never stops "for futility": it is the end either way
    assert not sequential_verdict([0.007, -0.233, -0.014], LookPlan((3,), futility=True), "as_good", 0.02).futile


def _wrong(decision: str, truth_holds: bool) -> bool:
    return (decision == "supported" and not truth_holds) or (decision == "not supported" and truth_holds)


def _error_rate(plan: LookPlan, kind: str, mean: float, tolerance: float, truth_holds: bool, *,
                repetitions: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    draws = rng.normal(mean, 1.0, size=(repetitions, plan.max_seeds))
    wrong = sum(_wrong(sequential_verdict(row, plan, kind, tolerance).verdict, truth_holds) for row in draws)
    return wrong / repetitions


# The truths nearest the decision boundaries, where wrong decisions are likeliest (sigma = 1):
# - better, mean 0: the claim is false, so "supported" is wrong;
# - worse, mean 0: likewise for "supported";
# - as_good, mean just inside the tolerance: true, so "not supported" is wrong;
# - as_good, mean just outside: false, so "supported" is wrong;
# - no_worse, mean on its bound (-tolerance): true, so "not supported" is wrong; just below it: "supported" is.
TRUTHS = [("better", 0.0, 0.0, False), ("worse", 0.0, 0.0, False), ("as_good", 0.5, 0.5, True),
          ("as_good", 0.52, 0.5, False), ("no_worse", -0.5, 0.5, True), ("no_worse", -0.52, 0.5, False)]


@pytest.mark.parametrize("futility", [True, False])
@pytest.mark.parametrize(("kind", "mean", "tolerance", "truth_holds"), TRUTHS)
def test_optional_stopping_keeps_wrong_decisions_at_or_below_alpha(kind, mean, tolerance, truth_holds,
                                                                   futility) -> None:
    plan = LookPlan((2, 3, 4, 6, 9, 13, 20), futility=futility)
    repetitions = 3000
    rate = _error_rate(plan, kind, mean, tolerance, truth_holds, repetitions=repetitions, seed=7)
    # at or below the nominal 5%, allowing Monte Carlo error of three standard errors at 5%
    assert rate <= 0.05 + 3 * (0.05 * 0.95 / repetitions) ** 0.5, rate
    if futility:  # stopping for futility only ends claims undecided: never more wrong decisions than without
        assert rate <= _error_rate(replace(plan, futility=False), kind, mean, tolerance, truth_holds,
                                   repetitions=repetitions, seed=7)


def test_the_simulation_detects_the_inflation_of_unadjusted_looks() -> None:
    """The same reading with a plain 95% interval at every look (what looking after each round without a
    correction does) is wrong far more than 5% of the time: the simulation above can fail."""
    looks = tuple(range(2, 25))

    class Unadjusted(LookPlan):
        def level(self, index: int) -> float:
            return 0.95

    rate = _error_rate(Unadjusted(looks), "better", 0.0, 0.0, False, repetitions=1500, seed=11)
    assert rate > 0.08, rate
    adjusted = _error_rate(LookPlan(looks), "better", 0.0, 0.0, False, repetitions=1500, seed=11)
    assert adjusted <= 0.05, adjusted
