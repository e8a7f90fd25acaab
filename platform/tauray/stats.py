"""Seed-noise statistics of a sweep's confirmed configurations: means, t-intervals, Welch's test.

A configuration trained under several seeds gives a sample of its objective; this module says
what that sample supports: its mean with a 95% confidence interval from Student's t-distribution
(the sample is small: two to five runs), and whether one configuration beats another beyond
seed noise by Welch's unequal-variances t-test (Welch, Biometrika 1947), which does not assume
the two configurations vary equally with the seed. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The significance level below which a difference counts as beyond seed noise.
ALPHA = 0.05
#: The confidence level of :attr:`SampleSummary.ci95_low` / :attr:`SampleSummary.ci95_high`.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SampleSummary:
    """The mean, spread and 95% t-interval of one configuration's runs.

    Attributes:
        n: number of runs.
        mean: their mean (NaN for none).
        sd: sample standard deviation (``ddof=1``; NaN below two runs).
        ci95_low, ci95_high: ``mean -/+ t(0.975, n-1) * sd / sqrt(n)`` (NaN below two runs).
    """

    n: int
    mean: float
    sd: float
    ci95_low: float
    ci95_high: float


def summarize(values: Sequence[float]) -> SampleSummary:
    """Mean, sample SD and the 95% confidence interval of the mean from the t-distribution.

    Args:
        values: finite objective values, one per run.

    Raises:
        ValueError: a value is not finite (a failed run must be left out, not averaged).
    """
    from scipy import stats

    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise ValueError(f"values must be finite numbers, got {bad[0]!r}")
    n = len(values)
    if n == 0:
        nan = math.nan
        return SampleSummary(0, nan, nan, nan, nan)
    mean = math.fsum(values) / n
    if n < 2:
        return SampleSummary(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return SampleSummary(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of a champion against the runner-up.

    Attributes:
        p_value: two-sided p-value (NaN when the test is undefined: fewer than two runs on a
            side, or no spread at all).
        beats: the champion is better by more than seed noise explains (``p < ALPHA``).
    """

    p_value: float
    beats: bool


def welch_test(champion: Sequence[float], runner_up: Sequence[float]) -> Comparison:
    """Welch's two-sided t-test of ``champion`` against ``runner_up`` (``scipy.stats.ttest_ind``
    with ``equal_var=False``).

    The champion beats the runner-up when ``p < ALPHA``; the caller passes the champion as the
    configuration with the better mean, so a significant difference is in its favour.
    """
    from scipy import stats

    if len(champion) < 2 or len(runner_up) < 2:
        return Comparison(math.nan, False)
    result = stats.ttest_ind(champion, runner_up, equal_var=False)
    p_value = float(result.pvalue)
    return Comparison(p_value, math.isfinite(p_value) and p_value < ALPHA)


def verdict_text(
    champion: str,
    runner_up: str | None,
    comparison: Comparison | None,
) -> str:
    """One sentence saying whether the champion beats the runner-up beyond seed noise.

    Args:
        champion, runner_up: how to name the two configurations (``trial 3``); ``runner_up``
            None when only one configuration was confirmed.
        comparison: :func:`welch_test` of the two (None with no runner-up).
    """
    if runner_up is None or comparison is None:
        return f"The champion ({champion}) is the only configuration confirmed: nothing to compare."
    if not math.isfinite(comparison.p_value):
        return (
            f"The champion ({champion}) and the runner-up ({runner_up}) cannot be compared: "
            "Welch's t-test needs at least two runs of each with some spread."
        )
    if comparison.beats:
        return (
            f"The champion ({champion}) beats the runner-up ({runner_up}) beyond seed noise "
            f"(Welch's t-test, p = {comparison.p_value:.3g})."
        )
    return (
        f"The champion ({champion}) and the runner-up ({runner_up}) are indistinguishable on "
        f"this evidence (Welch's t-test, p = {comparison.p_value:.3g} >= {ALPHA:g})."
    )
