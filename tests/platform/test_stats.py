"""The confirmation statistics against scipy: the t-interval and Welch's t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tauray.stats import ALPHA, summarize, verdict_text, welch_test


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_summary_matches_scipy_t_interval(n: int) -> None:
    values = np.random.default_rng(n).normal(0.4, 0.03, size=n)
    summary = summarize(list(values))
    low, high = scipy_stats.t.interval(
        0.95, n - 1, loc=values.mean(), scale=scipy_stats.sem(values)
    )
    assert summary.n == n
    assert summary.mean == pytest.approx(values.mean(), rel=1e-12)
    assert summary.sd == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert summary.ci95_low == pytest.approx(low, rel=1e-10)
    assert summary.ci95_high == pytest.approx(high, rel=1e-10)


def test_two_runs_use_the_wide_t_quantile_not_the_normal_one() -> None:
    summary = summarize([0.40, 0.42])
    # t(0.975, 1) = 12.706: the interval is 6.5 times wider than a normal one would be.
    assert summary.ci95_high - summary.mean == pytest.approx(12.7062047 * 0.01, rel=1e-6)


def test_one_run_has_a_mean_but_no_spread_and_none_has_nothing() -> None:
    one = summarize([0.5])
    assert (one.n, one.mean) == (1, 0.5)
    assert all(math.isnan(x) for x in (one.sd, one.ci95_low, one.ci95_high))
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_a_non_finite_value_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        summarize([0.4, float("nan")])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([0.41, 0.43, 0.42], [0.30, 0.31, 0.29]),
        ([0.41, 0.40], [0.39, 0.42, 0.38, 0.40]),
        ([0.5, 0.52, 0.49, 0.55], [0.51, 0.40]),
    ],
)
def test_welch_matches_scipy(first: list[float], second: list[float]) -> None:
    expected = scipy_stats.ttest_ind(first, second, equal_var=False).pvalue
    comparison = welch_test(first, second)
    assert comparison.p_value == pytest.approx(expected, rel=1e-12)
    assert comparison.beats == (expected < ALPHA)


def test_welch_is_not_students_test_when_variances_differ() -> None:
    first, second = [0.50, 0.51], [0.30, 0.60, 0.45, 0.35, 0.55, 0.40]
    student = scipy_stats.ttest_ind(first, second, equal_var=True).pvalue
    assert welch_test(first, second).p_value != pytest.approx(student, rel=1e-3)


def test_welch_needs_two_runs_on_each_side() -> None:
    comparison = welch_test([0.5], [0.3, 0.31])
    assert math.isnan(comparison.p_value) and not comparison.beats


def test_verdict_words() -> None:
    beats = verdict_text("trial 2", "trial 5", welch_test([0.5, 0.51, 0.5], [0.3, 0.31, 0.3]))
    assert "beats the runner-up (trial 5) beyond seed noise" in beats and "p = " in beats
    tie = verdict_text("trial 2", "trial 5", welch_test([0.5, 0.4], [0.45, 0.47]))
    assert "indistinguishable on this evidence" in tie
    assert "only configuration" in verdict_text("trial 2", None, None)
    assert "cannot be compared" in verdict_text("trial 2", "trial 5", welch_test([0.5], [0.4]))
