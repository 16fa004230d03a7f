"""bertscope.core.stats against scipy's own intervals and a hand-made bootstrap check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bertscope.core import stats


def test_summarize_matches_scipy_t_interval():
    values = [0.71, 0.69, 0.74, 0.70, 0.72]
    got = stats.summarize(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert got.n == 5 and got.method == "t"
    assert got.mean == pytest.approx(np.mean(values))
    assert got.std == pytest.approx(np.std(values, ddof=1))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))


def test_summarize_drops_missing_and_has_no_interval_for_one_value():
    got = stats.summarize([0.5, None, math.nan])
    assert got.n == 1 and got.low is None and got.std is None
    assert stats.summarize([]).n == 0


def test_paired_difference_is_the_interval_of_the_differences():
    a, b = [0.8, 0.7, 0.75], [0.6, 0.65, 0.62]
    got = stats.paired_difference(a, b)
    ref = stats.summarize([x - y for x, y in zip(a, b, strict=True)])
    assert got == ref
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])


@pytest.mark.parametrize(("low", "high", "kind", "tol", "expected"), [
    (0.01, 0.05, "better", 0.0, "supported"),
    (-0.05, -0.01, "better", 0.0, "not supported"),
    (-0.01, 0.05, "better", 0.0, "inconclusive"),
    (-0.05, -0.01, "worse", 0.0, "supported"),
    (-0.01, 0.01, "as_good", 0.02, "supported"),
    (-0.05, -0.03, "as_good", 0.02, "not supported"),
    (-0.03, 0.01, "as_good", 0.02, "inconclusive"),
    (0.03, 0.05, "as_good", 0.02, "not supported"),  # equivalence: clearly better is not "equal"
    (-0.01, 0.01, "no_worse", 0.02, "supported"),
    (0.03, 0.05, "no_worse", 0.02, "supported"),  # non-inferiority: doing better supports "as good as"
    (-0.02, 0.05, "no_worse", 0.02, "supported"),  # the bound itself is inside
    (-0.05, -0.03, "no_worse", 0.02, "not supported"),
    (-0.03, 0.01, "no_worse", 0.02, "inconclusive"),
    (-0.03, -0.01, "no_worse", 0.02, "inconclusive"),
])
def test_verdict_rule(low, high, kind, tol, expected):
    interval = stats.Interval((low + high) / 2, 0.01, 3, low, high)
    assert stats.verdict(interval, kind, tol) == expected


@pytest.mark.parametrize(("kind", "tol", "expected"), [("no_worse", 0.02, ">= -0.02"), ("as_good", 0.05, "±0.05"),
                                                       ("better", None, "")])
def test_tolerance_label_names_the_bound_the_rule_reads(kind, tol, expected):
    assert stats.tolerance_label(kind, tol) == expected


@pytest.mark.parametrize(("mean", "kind", "tol", "edges", "expected"), [
    (0.007, "as_good", 0.02, (-0.02, 0.02), 0.013), (-0.04, "as_good", 0.02, (-0.02, 0.02), 0.02),
    (0.03, "no_worse", 0.02, (-0.02,), 0.05), (-0.011, "no_worse", 0.02, (-0.02,), 0.009),
    (-0.3, "worse", None, (0.0,), 0.3)])
def test_margin_is_the_distance_to_the_nearest_boundary_of_the_rule(mean, kind, tol, edges, expected):
    assert stats.boundaries(kind, tol) == edges
    assert stats.margin(mean, kind, tol) == pytest.approx(expected)
    # an interval centred on the mean decides exactly when its half-width is below the margin
    for half, decides in ((expected * 0.9, True), (expected * 1.1, False)):
        interval = stats.Interval(mean, 0.01, 3, mean - half, mean + half)
        assert (stats.verdict(interval, kind, tol or 0.0) != "inconclusive") == decides


def test_no_interval_is_inconclusive():
    assert stats.verdict(stats.summarize([0.9]), "better") == "inconclusive"
    with pytest.raises(ValueError):
        stats.verdict(stats.summarize([0.9, 0.8]), "bigger")


def test_bootstrap_difference_covers_the_point_and_shrinks_with_more_examples():
    rng = np.random.default_rng(0)

    def accuracy(y, p):
        return float(np.mean(y == p))

    def interval(n):
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < 0.8, y, 1 - y)  # about 80% right
        b = np.where(rng.random(n) < 0.7, y, 1 - y)  # about 70% right
        return stats.bootstrap_difference(accuracy, y, a, b, samples=400, seed=1), accuracy(y, a) - accuracy(y, b)

    small, point_small = interval(100)
    large, point_large = interval(4000)
    assert small.mean == pytest.approx(point_small) and small.low <= point_small <= small.high
    assert large.low <= point_large <= large.high
    assert (large.high - large.low) < (small.high - small.low)
    assert large.low > 0  # 10 points apart on 4,000 examples: the interval excludes 0


def test_t_interval_matches_scipy_and_summarize():
    from scipy import stats as scipy_stats

    values = np.array([0.61, 0.64, 0.58, 0.66])
    low, high = stats.t_interval(values.mean(), values.std(ddof=1), len(values))
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    summary = stats.summarize(values.tolist())
    assert (summary.low, summary.high) == pytest.approx(expected)
    assert stats.t_interval(0.5, None, 1) is None and stats.t_interval(0.5, 0.1, 1) is None


def test_bootstrap_difference_resamples_rows_of_two_dimensional_arrays():
    # labels with a group column, predictions with one column per run: the metric sees whole rows
    y = np.array([[0, 1], [0, 0], [1, 1], [1, 0]] * 10, dtype=float)
    a = np.repeat(y[:, 1:2], 2, axis=1)  # both runs always right
    b = np.zeros((len(y), 1))

    def accuracy(labels, predictions):
        return float(np.mean(predictions == labels[:, 1:2]))

    result = stats.bootstrap_difference(accuracy, y, a, b, samples=200, seed=0)
    assert result.mean == pytest.approx(0.5) and result.method == "bootstrap"
    assert result.low <= 0.5 <= result.high
