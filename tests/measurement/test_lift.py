"""Lift intervals against published values, and their coverage in simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crmseg.measurement.lift import (
    conversion_lift,
    mean_lift,
    newcombe,
    risk_ratio,
    welch,
    wilson,
)


def test_wilson_matches_newcombe_1998_example() -> None:
    # Newcombe (1998a), Stat Med 17:857: 81/263 -> 0.2553 to 0.3662.
    lo, hi = wilson(81, 263)
    assert float(lo) == pytest.approx(0.2553, abs=1e-4)
    assert float(hi) == pytest.approx(0.3662, abs=1e-4)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "lower", "upper"),
    [
        # Newcombe (1998b), Stat Med 17:873, Table II, method 10 (hybrid score).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
    ],
)
def test_newcombe_matches_published_intervals(
    x1: int, n1: int, x2: int, n2: int, lower: float, upper: float
) -> None:
    d, lo, hi = newcombe(x1, n1, x2, n2)
    assert float(d) == pytest.approx(x1 / n1 - x2 / n2)
    assert float(lo) == pytest.approx(lower, abs=1e-4)
    assert float(hi) == pytest.approx(upper, abs=1e-4)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.gamma(0.3, 40, 400), rng.gamma(0.3, 30, 90)
    d, lo, hi, p = welch(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b))
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert float(d) == pytest.approx(a.mean() - b.mean())
    assert float(p) == pytest.approx(ref.pvalue, rel=1e-9)
    assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_risk_ratio_katz() -> None:
    # 20/100 vs 10/100: RR 2, log SE sqrt(1/20 - 1/100 + 1/10 - 1/100) = 0.3633.
    rr, lo, hi = risk_ratio(20, 100, 10, 100)
    se = np.sqrt(1 / 20 - 1 / 100 + 1 / 10 - 1 / 100)
    assert float(rr) == pytest.approx(2.0)
    assert float(lo) == pytest.approx(2 * np.exp(-1.959964 * se), rel=1e-5)
    assert float(hi) == pytest.approx(2 * np.exp(1.959964 * se), rel=1e-5)


def test_conversion_lift_reports_significance() -> None:
    strong = conversion_lift(300, 2000, 20, 500)  # 15% vs 4%
    assert strong.significant and strong.lower > 0 and strong.p_value < 1e-6
    assert strong.relative == pytest.approx(0.15 / 0.04 - 1)
    null = conversion_lift(100, 2000, 25, 500)  # 5% vs 5%
    assert not null.significant and null.lower < 0 < null.upper
    assert null.p_value == pytest.approx(1.0)
    empty = conversion_lift(0, 100, 0, 10)
    assert empty.relative is None and not empty.significant


def test_mean_lift_on_revenue() -> None:
    t = np.r_[np.zeros(900), np.full(100, 50.0)]
    h = np.r_[np.zeros(480), np.full(20, 50.0)]
    lift = mean_lift("revenue_per_member", t, h)
    assert lift.lift == pytest.approx(5.0 - 2.0)
    assert lift.lower < 3.0 < lift.upper and lift.significant


REPS = 40_000
HALF_WIDTH = 0.015  # the tolerance around 95%


@pytest.mark.parametrize(
    ("p_t", "n_t", "p_h", "n_h"),
    [
        (0.09, 2700, 0.05, 300),  # a 10% holdout with a planted lift
        (0.03, 1500, 0.03, 1500),  # no effect, small rate
        (0.30, 800, 0.25, 200),
    ],
)
def test_newcombe_interval_covers_95_percent(p_t: float, n_t: int, p_h: float, n_h: int) -> None:
    rng = np.random.default_rng(2024)
    x_t, x_h = rng.binomial(n_t, p_t, REPS), rng.binomial(n_h, p_h, REPS)
    _, lo, hi = newcombe(x_t, n_t, x_h, n_h)
    truth = p_t - p_h
    coverage = float(np.mean((lo <= truth) & (truth <= hi)))
    assert abs(coverage - 0.95) <= HALF_WIDTH, coverage


def test_welch_interval_covers_95_percent_on_skewed_revenue() -> None:
    # Revenue per member: most members buy nothing, buyers spend Gamma amounts.
    rng = np.random.default_rng(7)
    reps, n_t, n_h = 4000, 1800, 600

    def draw(n: int, p: float, shape: float, scale: float) -> np.ndarray:
        buys = rng.random((reps, n)) < p
        out: np.ndarray = np.where(buys, rng.gamma(shape, scale, (reps, n)), 0.0)
        return out

    t, h = draw(n_t, 0.12, 2.0, 30.0), draw(n_h, 0.08, 2.0, 30.0)
    truth = 0.12 * 60.0 - 0.08 * 60.0
    _, lo, hi, _ = welch(t.mean(1), t.var(1, ddof=1), n_t, h.mean(1), h.var(1, ddof=1), n_h)
    coverage = float(np.mean((lo <= truth) & (truth <= hi)))
    assert abs(coverage - 0.95) <= HALF_WIDTH, coverage
