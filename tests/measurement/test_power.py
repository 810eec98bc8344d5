"""Power and sample size against textbook closed forms and a simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from crmseg.errors import CrmsegError
from crmseg.measurement.lift import two_proportion_p
from crmseg.measurement.power import (
    mde_mean,
    mde_proportion,
    power_report,
    size_for_mean,
    size_for_proportion,
)


def test_size_matches_fleiss_without_continuity_correction() -> None:
    # Fleiss, Levin & Paik: p0 = 0.10, p1 = 0.15, alpha 0.05, power 0.80 -> 686 per group.
    assert size_for_proportion(0.10, 0.05, holdout_share=0.5) == 2 * 686


def test_size_matches_closed_form_for_equal_arms() -> None:
    p0, p1 = 0.05, 0.07
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.9)
    pbar = (p0 + p1) / 2
    per_group = (
        za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    ) ** 2 / (p1 - p0) ** 2
    assert size_for_proportion(p0, 0.02, 0.5, power=0.9) == pytest.approx(2 * per_group, abs=2)


def test_mde_and_size_are_inverse() -> None:
    for size, base, h in ((5000, 0.03, 0.1), (40_000, 0.2, 0.2), (800, 0.5, 0.5)):
        mde = mde_proportion(size, base, h)
        assert size_for_proportion(base, mde, h) == pytest.approx(size, rel=0.002)


def test_mde_gives_the_promised_power_in_simulation() -> None:
    size, base, h = 6000, 0.04, 0.2
    mde = mde_proportion(size, base, h)
    rng = np.random.default_rng(11)
    n_t, n_h = int(size * (1 - h)), int(size * h)
    reps = 20_000
    x_t, x_h = rng.binomial(n_t, base + mde, reps), rng.binomial(n_h, base, reps)
    power = float(np.mean(two_proportion_p(x_t, n_t, x_h, n_h) < 0.05))
    assert power == pytest.approx(0.8, abs=0.02)


def test_mean_formulas() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert mde_mean(1000, 50.0, 0.2) == pytest.approx(z * 50 * math.sqrt(1 / 800 + 1 / 200))
    assert size_for_mean(1.0, 0.5, 0.5) == 2 * 63  # 2 (2.8016 / 0.5)^2 = 62.8 per group


def test_small_segments_are_flagged() -> None:
    small = power_report(300, 0.05, 0.1)
    assert small.too_small and small.relative_mde > 0.5
    big = power_report(500_000, 0.05, 0.1, effect=0.005)
    assert not big.too_small and big.size_needed is not None
    assert mde_proportion(1, 0.1, 0.1) == pytest.approx(0.9)  # nothing is detectable


def test_bad_inputs_are_errors() -> None:
    with pytest.raises(CrmsegError, match="baseline"):
        power_report(100, 1.5)
    with pytest.raises(CrmsegError, match="holdout"):
        power_report(100, 0.1, holdout_share=0)
    with pytest.raises(CrmsegError, match="effect"):
        size_for_proportion(0.9, 0.2, 0.1)
