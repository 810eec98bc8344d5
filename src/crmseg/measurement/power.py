"""Power of a holdout test: the minimum detectable effect (MDE) of an audience and the audience
needed for a target effect.

Two-sided test at level ``alpha`` with power ``power`` (normal approximation, the textbook
formula without continuity correction, e.g. Fleiss, Levin & Paik 2003, eq. 4.14):

    |p1 - p0| = z_{1-alpha/2} sqrt(pbar (1 - pbar) (1/n_t + 1/n_h))
              + z_{power}      sqrt(p1 (1 - p1) / n_t + p0 (1 - p0) / n_h)

with ``n_t = (1 - h) n`` treated and ``n_h = h n`` held out. The MDE solves this for p1 > p0;
the required size solves it for n. For revenue per member (a mean) the same with standard
deviation ``sd`` in both arms: ``MDE = (z_a + z_b) sd sqrt(1/n_t + 1/n_h)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import optimize, stats

from crmseg.errors import CrmsegError

# An audience is "too small to measure" when it could only detect a relative lift this large.
MAX_RELATIVE_MDE = 0.5


def _check(baseline: float, holdout_share: float, alpha: float, power: float) -> None:
    if not 0 < baseline < 1:
        raise CrmsegError(f"baseline rate must be between 0 and 1 (exclusive), got {baseline}")
    if not 0 < holdout_share < 1:
        raise CrmsegError(f"holdout share must be between 0 and 1 (exclusive), got {holdout_share}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise CrmsegError("alpha and power must be between 0 and 1")


def _gap(p0: float, p1: float, n: float, h: float, alpha: float, power: float) -> float:
    """Detectable difference minus achieved one: zero at the MDE / required size."""
    nt, nh = (1 - h) * n, h * n
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    pbar = (nt * p1 + nh * p0) / n
    need = za * math.sqrt(pbar * (1 - pbar) * (1 / nt + 1 / nh)) + zb * math.sqrt(
        p1 * (1 - p1) / nt + p0 * (1 - p0) / nh
    )
    return float(abs(p1 - p0) - need)


def mde_proportion(
    size: int, baseline: float, holdout_share: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute rise of a rate (e.g. conversion) that the test detects; 1 - baseline
    (never detectable) when even that is too small."""
    _check(baseline, holdout_share, alpha, power)
    top = 1 - 1e-9
    if size < 2 or _gap(baseline, top, size, holdout_share, alpha, power) < 0:
        return 1 - baseline
    p1 = optimize.brentq(
        lambda p: _gap(baseline, p, size, holdout_share, alpha, power), baseline + 1e-12, top
    )
    return float(p1 - baseline)


def size_for_proportion(
    baseline: float, effect: float, holdout_share: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Audience size (treatment + holdout) needed to detect an absolute rise ``effect``."""
    _check(baseline, holdout_share, alpha, power)
    if not 0 < effect < 1 - baseline:
        raise CrmsegError(f"effect must be between 0 and {1 - baseline:.4g}, got {effect}")
    p1 = baseline + effect
    hi = 4.0
    while _gap(baseline, p1, hi, holdout_share, alpha, power) < 0:
        hi *= 2
    n = float(
        optimize.brentq(lambda m: _gap(baseline, p1, m, holdout_share, alpha, power), 2.0, hi)
    )
    return math.ceil(n)


def mde_mean(
    size: int, sd: float, holdout_share: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute rise of a per-member mean (revenue per member) that is detectable."""
    _check(0.5, holdout_share, alpha, power)
    nt, nh = (1 - holdout_share) * size, holdout_share * size
    if nt <= 0 or nh <= 0:
        return math.inf
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return float(z * sd * math.sqrt(1 / nt + 1 / nh))


def size_for_mean(
    sd: float, effect: float, holdout_share: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    _check(0.5, holdout_share, alpha, power)
    if effect <= 0:
        raise CrmsegError(f"effect must be positive, got {effect}")
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    h = holdout_share
    return math.ceil((z * sd / effect) ** 2 * (1 / (1 - h) + 1 / h))


@dataclass(frozen=True)
class PowerResult:
    size: int
    baseline: float
    holdout_share: float
    alpha: float
    power: float
    mde: float  # absolute, in rate points (0.02 = 2 points)
    relative_mde: float
    too_small: bool
    effect: float | None = None  # the target effect asked about
    size_needed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def power_report(
    size: int,
    baseline: float,
    holdout_share: float = 0.1,
    alpha: float = 0.05,
    power: float = 0.8,
    effect: float | None = None,
    max_relative_mde: float = MAX_RELATIVE_MDE,
) -> PowerResult:
    mde = mde_proportion(size, baseline, holdout_share, alpha, power)
    needed = (
        size_for_proportion(baseline, effect, holdout_share, alpha, power)
        if effect is not None
        else None
    )
    return PowerResult(
        size,
        baseline,
        holdout_share,
        alpha,
        power,
        mde,
        mde / baseline,
        mde / baseline > max_relative_mde,
        effect,
        needed,
    )
