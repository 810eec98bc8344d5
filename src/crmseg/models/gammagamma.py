"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"): each customer's
transaction values are gamma with a customer-specific scale, itself gamma across customers.
It assumes spend is independent of purchase frequency, so it pairs with BG/NBD or Pareto/NBD
for customer lifetime value."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln, psi

from crmseg.errors import ModelError
from crmseg.models._base import Floats, Model, as_floats, check_frt


class TransactionModel(Protocol):
    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> Floats: ...


def _check_spend(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> tuple[Floats, Floats]:
    x, mv = as_floats("frequency", frequency), as_floats("monetary", monetary)
    try:
        x, mv = np.broadcast_arrays(x, mv)
    except ValueError as e:
        raise ModelError("frequency and monetary must have the same length") from e
    if np.any((x > 0) & (mv <= 0)):
        raise ModelError("monetary must be positive where frequency is positive")
    return x, mv


class GammaGamma(Model):
    """Gamma-Gamma spend model; ``params_`` has p, q, v."""

    names = ("p", "q", "v")

    def fit(
        self,
        frequency: npt.ArrayLike,
        monetary: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> GammaGamma:
        """Fit on repeat customers; rows with frequency 0 carry no spend data and are skipped."""
        x, mv = _check_spend(frequency, monetary)
        x, mv = x.ravel(), mv.ravel()
        rep = x > 0
        if not np.any(rep):
            raise ModelError("GammaGamma.fit needs customers with frequency > 0")
        w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if w is not None and w.shape != x.shape:
            raise ModelError("weights must be finite, non-negative, one per customer")
        # The compressor wants three columns; the third is a constant placeholder.
        self._fit_rows([x[rep], mv[rep], np.zeros(int(rep.sum()))], None if w is None else w[rep])
        return self

    def _start(self, rows: Floats, w: Floats) -> Floats:
        mean = float(np.sum(w * rows[:, 1])) / float(w.sum())
        return np.array([1.0, 2.0, max(mean, 1e-6)])

    def _loglik(self, theta: Floats, data: Any) -> Floats:
        return self._loglik_grad(theta, data)[0]

    def _loglik_grad(self, theta: Floats, data: Any) -> tuple[Floats, Floats]:
        p, q, v = theta
        x, mv = data[:, 0], data[:, 1]
        px = p * x
        lv = np.log(v + x * mv)
        ll = (
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * np.log(v)
            + (px - 1) * np.log(mv)
            + px * np.log(x)
            - (px + q) * lv
        )
        g = np.empty((len(x), 3))
        both = psi(px + q)
        g[:, 0] = x * (both - psi(px) + np.log(mv) + np.log(x) - lv)
        g[:, 1] = both - psi(q) + np.log(v) - lv
        g[:, 2] = q / v - (px + q) / (v + x * mv)
        return ll, g

    def expected_average_spend(self, frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> Floats:
        """Posterior mean spend per transaction; the population mean where frequency is 0."""
        p, q, v = self._theta()
        if q <= 1:
            raise ModelError(f"GammaGamma: q = {q:.4g} <= 1, so the mean spend is infinite")
        x, mv = _check_spend(frequency, monetary)
        mv = np.where(x > 0, mv, 0.0)
        out: Floats = p * (v + x * mv) / (p * x + q - 1)
        return out

    def clv(
        self,
        transaction_model: TransactionModel,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
        monetary: npt.ArrayLike,
        horizon_months: int = 12,
        discount_rate_monthly: float = 0.01,
        freq_days: float = 1.0,
        days_per_month: float = 30.0,
    ) -> Floats:
        """Discounted value of each customer's next ``horizon_months`` months.

        Each month's expected purchases (from ``transaction_model``, whose periods are
        ``freq_days`` days long) times expected spend, discounted by
        ``(1 + discount_rate_monthly) ** month``.
        """
        if horizon_months < 1 or freq_days <= 0 or days_per_month <= 0:
            raise ModelError("clv: horizon_months, freq_days and days_per_month must be positive")
        if discount_rate_monthly <= -1:
            raise ModelError("clv: discount_rate_monthly must be greater than -1")
        x, tx, t = check_frt(frequency, recency, T)
        spend = self.expected_average_spend(x, monetary)
        step = days_per_month / freq_days
        total = np.zeros(np.broadcast(x, spend).shape)
        before: Floats | float = 0.0
        for month in range(1, horizon_months + 1):
            now = transaction_model.expected_purchases(month * step, x, tx, t)
            total = total + (now - before) * spend / (1 + discount_rate_monthly) ** month
            before = now
        return total
