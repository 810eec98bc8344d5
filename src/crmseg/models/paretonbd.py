"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987): Poisson purchases while alive, an
exponential lifetime, gamma heterogeneity in both the purchase and the dropout rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import expit, gammaln, psi

from crmseg.models._base import Floats, Ints, Model, as_floats, check_frt, codes
from crmseg.models._hyp import log_h1_grad


@dataclass(frozen=True)
class _Rows:
    x: Floats
    ux: Floats  # distinct frequencies, and each row's index into them
    at_x: Ints
    ut: Floats  # distinct T values, and each row's index into them
    at_big_t: Ints
    px: Floats  # distinct (frequency, time) pairs the tail integral is needed at
    pt: Floats
    at_tx: Ints  # row -> pair index at recency
    at_t: Ints  # row -> pair index at T


def _pairs(x: Floats, tx: Floats, t: Floats) -> _Rows:
    # Every term depends on a row only through x, T or the pairs (x, t_x) and (x, T); there
    # are far fewer of those than rows, so each is evaluated once and gathered.
    n = len(x)
    cx, ux = codes(np.concatenate([x, x]))
    ct, ut = codes(np.concatenate([tx, t]))
    size = max(len(ut), 1)
    key, uk = codes((cx * size + ct).astype(np.float64))
    uk_i = uk.astype(np.int64)
    at_big_t, big_ut = codes(t)
    return _Rows(
        x=x,
        ux=ux,
        at_x=cx[:n],
        ut=big_ut,
        at_big_t=at_big_t,
        px=ux[uk_i // size],
        pt=ut[uk_i % size],
        at_tx=key[:n],
        at_t=key[n:],
    )


def _log_tail(theta: Floats, x: Floats, t: Floats) -> tuple[Floats, Floats]:
    """log of int_t^inf (alpha+u)^-(r+x) (beta+u)^-(s+1) du, and its gradient in theta."""
    r, alpha, s, beta = theta
    m = r + s + x
    la, lb = np.log(alpha + t), np.log(beta + t)
    g = np.empty((len(x), 4))
    if alpha >= beta:
        z, omz = (alpha - beta) / (alpha + t), (beta + t) / (alpha + t)
        h, hb, hc, hz = log_h1_grad(r + x, m + 1, z, omz)
        out: Floats = -(r + x) * la - s * lb - np.log(m) + h
        g[:, 0] = -la - 1 / m + hb + hc
        g[:, 1] = -(r + x) / (alpha + t) + hz * (beta + t) / (alpha + t) ** 2
        g[:, 2] = -lb - 1 / m + hc
        g[:, 3] = -s / (beta + t) - hz / (alpha + t)
    else:
        z, omz = (beta - alpha) / (beta + t), (alpha + t) / (beta + t)
        h, hb, hc, hz = log_h1_grad(s + 1 + 0 * x, m + 1, z, omz)
        out = -(s + 1) * lb - (r + x - 1) * la - np.log(m) + h
        g[:, 0] = -la - 1 / m + hc
        g[:, 1] = -(r + x - 1) / (alpha + t) - hz / (beta + t)
        g[:, 2] = -lb - 1 / m + hb + hc
        g[:, 3] = -(s + 1) / (beta + t) + hz * (alpha + t) / (beta + t) ** 2
    return out, g


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
        span = max(float(np.sum(w * rows[:, 2])) / float(w.sum()), 1e-6)
        rate = float(np.sum(w * rows[:, 0])) / max(float(np.sum(w * rows[:, 2])), 1e-9)
        return np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, span])

    @staticmethod
    def _log_gone(theta: Floats, d: _Rows) -> tuple[Floats, Floats]:
        """log of s * int_{t_x}^T (...) du, the likelihood of having left in (t_x, T], and its
        gradient."""
        tail, dtail = _log_tail(theta, d.px, d.pt)
        one, two = tail[d.at_tx], tail[d.at_t]
        val: Floats = np.log(theta[2]) + _log_diff(one, two)
        ratio = np.exp(np.minimum(two - one, 0.0))  # J(T) / J(t_x), in [0, 1]
        some = ratio < 1
        scale = np.where(some, 1 / np.where(some, 1 - ratio, 1.0), 0.0)
        grad = (dtail[d.at_tx] - ratio[:, None] * dtail[d.at_t]) * scale[:, None]
        grad[:, 2] += 1 / theta[2]
        return val, grad

    def _loglik(self, theta: Floats, data: _Rows) -> Floats:
        return self._loglik_grad(theta, data)[0]

    def _loglik_grad(self, theta: Floats, data: _Rows) -> tuple[Floats, Floats]:
        r, alpha, s, beta = theta
        ux, ut = data.ux, data.ut
        ix, it = data.at_x, data.at_big_t
        x = data.x
        lat, lbt = np.log(alpha + ut), np.log(beta + ut)
        alive = -(r + x) * lat[it] - s * lbt[it]
        head = (gammaln(r + ux) - gammaln(r))[ix] + r * np.log(alpha) + s * np.log(beta)
        gone, dgone = self._log_gone(theta, data)
        lse = np.logaddexp(alive, gone)
        wa, wg = np.exp(alive - lse), np.exp(gone - lse)
        g = wg[:, None] * np.where(wg[:, None] > 0, dgone, 0.0)
        g[:, 0] += (psi(r + ux) - psi(r))[ix] + np.log(alpha) - wa * lat[it]
        g[:, 1] += r / alpha - wa * (r + x) / (alpha + ut)[it]
        g[:, 2] += np.log(beta) - wa * lbt[it]
        g[:, 3] += s / beta - wa * s / (beta + ut)[it]
        return head + lse, g

    def p_alive(self, frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike) -> Floats:
        """Probability each customer is still active at T."""
        theta = self._theta()
        r, alpha, s, beta = theta
        x, tx, t = check_frt(frequency, recency, T)
        shape = x.shape
        x, tx, t = x.ravel(), tx.ravel(), t.ravel()
        gone, _ = self._log_gone(theta, _pairs(x, tx, t))
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
