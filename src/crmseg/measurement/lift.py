"""Treatment vs holdout: absolute and relative lift with 95% intervals and p-values.

Proportions (conversion): Wilson score intervals per arm and Newcombe's hybrid score interval
for the difference (Newcombe 1998, method 10), which keeps close to nominal coverage for the
small rates and lopsided arms of a CRM holdout where the Wald interval does not. The relative
lift uses the Katz log risk-ratio interval; the p-value is the pooled two-proportion z test.

Revenue per member: Welch's unequal-variance t interval for the difference of means (zero
revenue for non-buyers included, so the means are per member) and a delta-method interval on
the log of the ratio of means for the relative lift.

Every function takes numpy arrays as well as scalars, so simulations run vectorised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

Array = npt.NDArray[np.float64]
ArrayLike = float | int | npt.ArrayLike

_ALPHA = 0.05


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson(x: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> tuple[Array, Array]:
    """Wilson score interval for x successes out of n (n = 0 gives the whole of [0, 1])."""
    xs, ns = np.asarray(x, np.float64), np.asarray(n, np.float64)
    z = _z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(ns > 0, xs / ns, 0.0)
        denom = 1 + z * z / ns
        centre = (p + z * z / (2 * ns)) / denom
        half = z * np.sqrt(p * (1 - p) / ns + z * z / (4 * ns * ns)) / denom
    lo = np.where(ns > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    hi = np.where(ns > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lo, hi


def newcombe(
    x1: ArrayLike, n1: ArrayLike, x2: ArrayLike, n2: ArrayLike, confidence: float = 0.95
) -> tuple[Array, Array, Array]:
    """(p1 - p2, lower, upper): Newcombe's hybrid score interval for a difference."""
    a1, m1 = np.asarray(x1, np.float64), np.asarray(n1, np.float64)
    a2, m2 = np.asarray(x2, np.float64), np.asarray(n2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p1 = np.where(m1 > 0, a1 / m1, 0.0)
        p2 = np.where(m2 > 0, a2 / m2, 0.0)
    l1, u1 = wilson(a1, m1, confidence)
    l2, u2 = wilson(a2, m2, confidence)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi


def two_proportion_p(x1: ArrayLike, n1: ArrayLike, x2: ArrayLike, n2: ArrayLike) -> Array:
    """Two-sided p-value of the pooled two-proportion z test (1 when nothing can differ)."""
    a1, m1 = np.asarray(x1, np.float64), np.asarray(n1, np.float64)
    a2, m2 = np.asarray(x2, np.float64), np.asarray(n2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (a1 + a2) / (m1 + m2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / m1 + 1 / m2))
        z = (a1 / m1 - a2 / m2) / se
        p = 2 * stats.norm.sf(np.abs(z))
    out: Array = np.where(np.isfinite(p), p, 1.0)
    return out


def risk_ratio(
    x1: ArrayLike, n1: ArrayLike, x2: ArrayLike, n2: ArrayLike, confidence: float = 0.95
) -> tuple[Array, Array, Array]:
    """(p1 / p2, lower, upper) by the Katz log interval; 0.5 is added to empty cells."""
    a1, m1 = np.asarray(x1, np.float64), np.asarray(n1, np.float64)
    a2, m2 = np.asarray(x2, np.float64), np.asarray(n2, np.float64)
    fix = (a1 == 0) | (a2 == 0)
    a1, a2 = np.where(fix, a1 + 0.5, a1), np.where(fix, a2 + 0.5, a2)
    m1, m2 = np.where(fix, m1 + 0.5, m1), np.where(fix, m2 + 0.5, m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (a1 / m1) / (a2 / m2)
        se = np.sqrt(1 / a1 - 1 / m1 + 1 / a2 - 1 / m2)
        z = _z(confidence)
        return ratio, ratio * np.exp(-z * se), ratio * np.exp(z * se)


def welch(
    mean1: ArrayLike,
    var1: ArrayLike,
    n1: ArrayLike,
    mean2: ArrayLike,
    var2: ArrayLike,
    n2: ArrayLike,
    confidence: float = 0.95,
) -> tuple[Array, Array, Array, Array]:
    """(mean1 - mean2, lower, upper, two-sided p) by Welch's t with sample variances."""
    mu1, v1, k1 = (np.asarray(a, np.float64) for a in (mean1, var1, n1))
    mu2, v2, k2 = (np.asarray(a, np.float64) for a in (mean2, var2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        s1, s2 = v1 / k1, v2 / k2
        se = np.sqrt(s1 + s2)
        df = (s1 + s2) ** 2 / (s1**2 / (k1 - 1) + s2**2 / (k2 - 1))
        t = stats.t.ppf(0.5 + confidence / 2, df)
        d = mu1 - mu2
        p = 2 * stats.t.sf(np.abs(d / se), df)
    p = np.where(np.isfinite(p), p, np.where(d == 0, 1.0, 0.0))
    return d, d - t * se, d + t * se, p


def ratio_of_means(
    mean1: ArrayLike,
    var1: ArrayLike,
    n1: ArrayLike,
    mean2: ArrayLike,
    var2: ArrayLike,
    n2: ArrayLike,
    confidence: float = 0.95,
) -> tuple[Array, Array, Array]:
    """(mean1 / mean2, lower, upper): delta method on the log of the ratio."""
    mu1, v1, k1 = (np.asarray(a, np.float64) for a in (mean1, var1, n1))
    mu2, v2, k2 = (np.asarray(a, np.float64) for a in (mean2, var2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mu1 / mu2
        se = np.sqrt(v1 / (k1 * mu1**2) + v2 / (k2 * mu2**2))
        z = _z(confidence)
        return ratio, ratio * np.exp(-z * se), ratio * np.exp(z * se)


@dataclass(frozen=True)
class Lift:
    """One metric of one campaign: treatment vs holdout."""

    metric: str  # conversion | revenue_per_member
    treatment_n: int
    holdout_n: int
    treatment: float  # rate or mean per member
    holdout: float
    lift: float  # absolute: treatment - holdout
    lower: float
    upper: float
    relative: float | None  # treatment / holdout - 1
    relative_lower: float | None
    relative_upper: float | None
    p_value: float
    method: str

    @property
    def significant(self) -> bool:
        return self.p_value < _ALPHA and (self.lower > 0 or self.upper < 0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def _opt(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def conversion_lift(conv_t: int, n_t: int, conv_h: int, n_h: int, confidence: float = 0.95) -> Lift:
    d, lo, hi = newcombe(conv_t, n_t, conv_h, n_h, confidence)
    rr, rlo, rhi = risk_ratio(conv_t, n_t, conv_h, n_h, confidence)
    has_base = conv_h > 0 and n_h > 0
    return Lift(
        "conversion",
        n_t,
        n_h,
        conv_t / n_t if n_t else 0.0,
        conv_h / n_h if n_h else 0.0,
        float(d),
        float(lo),
        float(hi),
        _opt(rr - 1) if has_base else None,
        _opt(rlo - 1) if has_base else None,
        _opt(rhi - 1) if has_base else None,
        float(two_proportion_p(conv_t, n_t, conv_h, n_h)),
        "Newcombe hybrid score (difference), Katz log (ratio), pooled z test",
    )


def mean_lift(
    metric: str,
    treatment: npt.ArrayLike,
    holdout: npt.ArrayLike,
    confidence: float = 0.95,
) -> Lift:
    """Welch lift of per-member values (e.g. revenue with zeros for non-buyers)."""
    t = np.asarray(treatment, np.float64)
    h = np.asarray(holdout, np.float64)
    mt, mh = (float(a.mean()) if len(a) else 0.0 for a in (t, h))
    vt, vh = (float(a.var(ddof=1)) if len(a) > 1 else 0.0 for a in (t, h))
    d, lo, hi, p = welch(mt, vt, len(t), mh, vh, len(h), confidence)
    ok = mh > 0 and mt > 0
    r, rlo, rhi = ratio_of_means(mt, vt, len(t), mh, vh, len(h), confidence)
    return Lift(
        metric,
        len(t),
        len(h),
        mt,
        mh,
        float(d),
        _nan0(lo),
        _nan0(hi),
        _opt(r - 1) if ok else None,
        _opt(rlo - 1) if ok else None,
        _opt(rhi - 1) if ok else None,
        float(p),
        "Welch t (difference), delta method on the log ratio",
    )


def _nan0(value: Any) -> float:
    v = float(value)
    return v if np.isfinite(v) else 0.0
