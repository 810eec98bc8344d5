"""CLV traits: a BG/NBD (or Pareto/NBD) purchase model and Gamma-Gamma spend on daily RFM
summaries of the orders visible at as_of."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from crmseg.errors import ModelError
from crmseg.models.betageo import BetaGeo
from crmseg.models.gammagamma import GammaGamma
from crmseg.models.paretonbd import ParetoNBD
from crmseg.models.summary import rfm_summary


@dataclass
class ModelRecord:
    """What one fit did: parameters, fit time, data window and quality numbers."""

    model: str
    as_of: datetime
    params: dict[str, float]
    fit_seconds: float
    customers: int
    window_start: datetime | None
    window_end: datetime
    metrics: dict[str, Any] = field(default_factory=dict)


def fit_clv(
    customer_ids: Any,
    ordered_at: Any,
    amounts: Any,
    as_of: datetime,
    model: str = "bgnbd",
    months: int = 12,
    discount_rate_monthly: float = 0.01,
) -> tuple[pd.DataFrame, list[ModelRecord]]:
    """Per-customer ``clv.*`` columns (index: customer id) and the fits' records.

    Periods are days; ``clv.value_12m`` is the discounted expected spend of the next
    ``months`` months of 30 days."""
    ids = np.asarray(customer_ids).astype(str)
    stamps = pd.to_datetime(np.asarray(ordered_at))
    amt = np.nan_to_num(np.asarray(amounts, dtype=np.float64), nan=0.0).clip(min=0.0)
    if len(ids) == 0:
        raise ModelError("clv: no orders before as_of to fit on")
    s = rfm_summary(ids, stamps, amt, as_of, freq="D")
    f, r, t = (s[c].to_numpy() for c in ("frequency", "recency", "T"))
    m = s["monetary_value"].to_numpy()
    clock = time.perf_counter()
    purchases: BetaGeo | ParetoNBD = BetaGeo() if model == "bgnbd" else ParetoNBD()
    purchases.fit(f, r, t)
    purchase_seconds = time.perf_counter() - clock
    spenders = (f > 0) & (m > 0)
    clock = time.perf_counter()
    spend = GammaGamma()
    spend.fit(f[spenders], m[spenders])
    spend_seconds = time.perf_counter() - clock
    mv = np.where(spenders, m, 0.0)
    fv = np.where(spenders, f, 0.0)  # a repeat buyer with only free orders: population spend
    out = pd.DataFrame(
        {
            "clv.expected_purchases_90d": purchases.expected_purchases(90.0, f, r, t),
            "clv.p_alive": purchases.p_alive(f, r, t),
            "clv.expected_spend": spend.expected_average_spend(fv, mv),
            "clv.value_12m": _clv(purchases, spend, fv, f, r, t, mv, months, discount_rate_monthly),
        },
        index=s.index,
    )
    start = stamps.min().to_pydatetime() if len(stamps) else None
    records = [
        ModelRecord(
            "BG/NBD" if model == "bgnbd" else "Pareto/NBD",
            as_of,
            dict(purchases.params_ or {}),
            purchase_seconds,
            len(s),
            start,
            as_of,
            {"log_likelihood": float(purchases.log_likelihood_), "converged": purchases.converged_},
        ),
        ModelRecord(
            "Gamma-Gamma",
            as_of,
            dict(spend.params_ or {}),
            spend_seconds,
            int(spenders.sum()),
            start,
            as_of,
            {"log_likelihood": float(spend.log_likelihood_), "converged": spend.converged_},
        ),
    ]
    return out, records


def _clv(
    purchases: BetaGeo | ParetoNBD,
    spend: GammaGamma,
    fv: np.ndarray,
    f: np.ndarray,
    r: np.ndarray,
    t: np.ndarray,
    mv: np.ndarray,
    months: int,
    rate: float,
) -> np.ndarray:
    """``GammaGamma.clv``, except that repeat buyers whose orders were all free get the
    population mean spend (Gamma-Gamma needs a positive spend)."""
    per_order = spend.expected_average_spend(fv, mv)
    total = np.zeros(len(f))
    before = np.zeros(len(f))
    for month in range(1, months + 1):
        now = purchases.expected_purchases(month * 30.0, f, r, t)
        total += (now - before) * per_order / (1 + rate) ** month
        before = now
    return total
