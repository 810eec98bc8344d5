"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987): Poisson purchases while alive, an
exponential lifetime, gamma heterogeneity in both the purchase and the dropout rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit, gammaln

from crmseg.models._base import Floats, Model, as_floats, check_frt
from crmseg.models._hyp import log_h1

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class _Rows:
    x: Floats
    t: Floats
    px: Floats  # unique (frequency, time) pairs the tail integral is needed at
    pt: Floats
    at_tx: Ints  # row -> pair index at recency
    at_t: Ints  # row -> pair index at T


def _pairs(x: Floats, tx: Floats, t: Floats) -> _Rows:
    # The costly term depends on (x, t_x) and (x, T) separately; there are far fewer distinct
    # pairs than rows, so evaluate it once per pair.
    both = np.concatenate([x, x]), np.concatenate([tx, t])
    cx, ux = pd.factorize(both[0])
    ct, ut = pd.factorize(both[1])
    key, uk = pd.factorize(cx.astype(np.int64) * max(len(ut), 1) + ct)
    uk = np.asarray(uk, dtype=np.int64)
    px = np.asarray(ux, dtype=np.float64)[uk // max(len(ut), 1)]
    pt = np.asarray(ut, dtype=np.float64)[uk % max(len(ut), 1)]
    key = np.asarray(key, dtype=np.int64)
    n = len(x)
    return _Rows(x, t, px, pt, key[:n], key[n:])


def _log_tail(theta: Floats, x: Floats, t: Floats) -> Floats:
    """log of int_t^inf (alpha+u)^-(r+x) (beta+u)^-(s+1) du."""
    r, alpha, s, beta = theta
    m = r + s + x
    la, lb = np.log(alpha + t), np.log(beta + t)
    if alpha >= beta:
        z, omz = (alpha - beta) / (alpha + t), (beta + t) / (alpha + t)
        out: Floats = -(r + x) * la - s * lb - np.log(m) + log_h1(r + x, m + 1, z, omz)
    else:
        z, omz = (beta - alpha) / (beta + t), (alpha + t) / (beta + t)
        out = -(s + 1) * lb - (r + x - 1) * la - np.log(m) + log_h1(s + 1 + 0 * x, m + 1, z, omz)
    return out


def _log_diff(a: Floats, b: Floats) -> Floats:
    """log(exp(a) - exp(b)) for a >= b; -inf where they are equal."""
    gap = np.minimum(b - a, 0.0)
    with np.errstate(divide="ignore"):
        out: Floats = np.where(gap < 0, a + np.log(-np.expm1(gap)), -np.inf)
    return out


def _rate_integral(k: float, span: Floats) -> Floats:
    """(1 - exp(-k*span)) / k, continuous at k = 0."""
    if abs(k) < 1e-10:
        return span
    out: Floats = -np.expm1(-k * span) / k
    return out


class ParetoNBD(Model):
    """Pareto/NBD customer-base model; ``params_`` has r, alpha, s, beta."""

    names = ("r", "alpha", "s", "beta")

    def fit(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> ParetoNBD:
        x, tx, t = check_frt(frequency, recency, T)
        self._fit_rows([x.ravel(), tx.ravel(), t.ravel()], weights)
        return self

    def _prepare(self, rows: Floats) -> _Rows:
        return _pairs(rows[:, 0], rows[:, 1], rows[:, 2])

    def _start(self, rows: Floats, w: Floats) -> Floats:
        span = max(float(w @ rows[:, 2]) / float(w.sum()), 1e-6)
        rate = float(w @ rows[:, 0]) / max(float(w @ rows[:, 2]), 1e-9)
        return np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, span])

    @staticmethod
    def _log_gone(theta: Floats, d: _Rows) -> Floats:
        """log of s * int_{t_x}^T (...) du: the likelihood of having dropped out in (t_x, T]."""
        tail = _log_tail(theta, d.px, d.pt)
        out: Floats = np.log(theta[2]) + _log_diff(tail[d.at_tx], tail[d.at_t])
        return out

    def _loglik(self, theta: Floats, data: _Rows) -> Floats:
        r, alpha, s, beta = theta
        x, t = data.x, data.t
        alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
        head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        out: Floats = head + np.logaddexp(alive, self._log_gone(theta, data))
        return out

    def p_alive(self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """Probability each customer is still active at T."""
        theta = self._theta()
        r, alpha, s, beta = theta
        x, tx, t = check_frt(frequency, recency, T)
        shape = x.shape
        x, tx, t = x.ravel(), tx.ravel(), t.ravel()
        gone = self._log_gone(theta, _pairs(x, tx, t))
        odds = gone + (r + x) * np.log(alpha + t) + s * np.log(beta + t)
        out: Floats = expit(-odds).reshape(shape)
        return out

    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> Floats:
        """Expected purchases in the next ``t`` periods given each customer's history."""
        r, alpha, s, beta = self._theta()
        h = as_floats("t", t)
        x, _, big_t = check_frt(frequency, recency, T)
        alive = self.p_alive(frequency, recency, T)
        span = np.log1p(h / (beta + big_t))
        out: Floats = (r + x) / (alpha + big_t) * (beta + big_t) * _rate_integral(s - 1, span)
        return out * alive

    def expected_purchases_new(self, t: npt.ArrayLike) -> Floats:
        """Expected purchases in ``t`` periods by a customer who has just arrived."""
        r, alpha, s, beta = self._theta()
        h = as_floats("t", t)
        out: Floats = r / alpha * beta * _rate_integral(s - 1, np.log1p(h / beta))
        return out
