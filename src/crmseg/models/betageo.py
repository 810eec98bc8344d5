"""BG/NBD (Fader, Hardie & Lee 2005): Poisson purchases while alive, a beta-geometric
chance of dropping out after each purchase, gamma heterogeneity in the purchase rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, expit, gammaln, hyp2f1, psi

from crmseg.errors import ModelError
from crmseg.models._base import Floats, Model, as_floats, check_frt


class BetaGeo(Model):
    """BG/NBD customer-base model; ``params_`` has r, alpha, a, b."""

    names = ("r", "alpha", "a", "b")

    def fit(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> BetaGeo:
        x, tx, t = check_frt(frequency, recency, T)
        self._fit_rows([x.ravel(), tx.ravel(), t.ravel()], weights)
        return self

    def _start(self, rows: Floats, w: Floats) -> Floats:
        rate = float(w @ rows[:, 0]) / max(float(w @ rows[:, 2]), 1e-9)
        return np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, 1.0])

    def _parts(self, theta: Floats, rows: Floats) -> tuple[Floats, Floats, Floats, Floats]:
        r, alpha, a, b = theta
        x, tx, t = rows[:, 0], rows[:, 1], rows[:, 2]
        rep = x > 0
        bx1 = np.where(rep, b + x - 1, b)  # only used where x > 0; keeps betaln finite
        base = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
        alive = betaln(a, b + x) - (r + x) * np.log(alpha + t)
        gone = np.where(rep, betaln(a + 1, bx1) - (r + x) * np.log(alpha + tx), -np.inf)
        return base, alive, gone, bx1

    def _loglik(self, theta: Floats, data: Any) -> Floats:
        base, alive, gone, _ = self._parts(theta, data)
        out: Floats = base + np.logaddexp(alive, gone)
        return out

    def _loglik_grad(self, theta: Floats, data: Any) -> tuple[Floats, Floats]:
        r, alpha, a, b = theta
        x, tx, t = data[:, 0], data[:, 1], data[:, 2]
        base, alive, gone, bx1 = self._parts(theta, data)
        lse = np.logaddexp(alive, gone)
        wa, wg = np.exp(alive - lse), np.exp(gone - lse)
        dab = psi(a + b + x)
        g = np.empty((len(x), 4))
        g[:, 0] = (
            psi(r + x) - psi(r) + np.log(alpha) - wa * np.log(alpha + t) - wg * np.log(alpha + tx)
        )
        g[:, 1] = r / alpha - (r + x) * (wa / (alpha + t) + wg / (alpha + tx))
        g[:, 2] = -(psi(a) - psi(a + b)) + wa * (psi(a) - dab) + wg * (psi(a + 1) - dab)
        g[:, 3] = -(psi(b) - psi(a + b)) + wa * (psi(b + x) - dab) + wg * (psi(bx1) - dab)
        return base + lse, g

    def p_alive(self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """Probability each customer is still active at T."""
        r, alpha, a, b = self._theta()
        x, tx, t = check_frt(frequency, recency, T)
        rep = x > 0
        odds = (
            np.log(a)
            - np.log(np.where(rep, b + x - 1, 1.0))
            + (r + x) * (np.log(alpha + t) - np.log(alpha + tx))
        )
        out: Floats = np.where(rep, expit(-odds), 1.0)
        return out

    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> Floats:
        """Expected purchases in the next ``t`` periods given each customer's history."""
        r, alpha, a, b = self._theta()
        x, tx, big_t = check_frt(frequency, recency, T)
        h = as_floats("t", t)
        z = h / (alpha + big_t + h)
        # Euler's transformation folds ((alpha+T)/(alpha+T+t))^(r+x) into the 2F1, so the
        # series stays small even for large frequency.
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        num = (a + b + x - 1) / (a - 1) * (1 - tail)
        out: Floats = num * self.p_alive(x, tx, big_t)
        return _finite(out, "expected_purchases")

    def expected_purchases_new(self, t: npt.ArrayLike) -> Floats:
        """Expected purchases in ``t`` periods by a customer who has just arrived."""
        r, alpha, a, b = self._theta()
        h = as_floats("t", t)
        z = h / (alpha + h)
        tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
        out: Floats = (a + b - 1) / (a - 1) * (1 - tail)
        return _finite(out, "expected_purchases_new")


def _finite(values: Floats, what: str) -> Floats:
    if not np.all(np.isfinite(values)):
        raise ModelError(f"{what}: the prediction is not finite for some inputs")
    return values
