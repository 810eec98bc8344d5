"""BG/NBD (Fader, Hardie & Lee 2005): Poisson purchases while alive, a beta-geometric
chance of dropping out after each purchase, gamma heterogeneity in the purchase rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, expit, gammaln, hyp2f1, log_expit, psi

from crmseg.errors import ModelError
from crmseg.models._base import Floats, Ints, Model, as_floats, check_frt, codes


@dataclass(frozen=True)
class _Rows:
    x: Floats
    ux: Floats  # distinct frequencies, and each row's index into them
    at_x: Ints
    ut: Floats  # distinct times (T and recency), and each row's indices into them
    at_t: Ints
    at_tx: Ints


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
        rate = float(np.sum(w * rows[:, 0])) / max(float(np.sum(w * rows[:, 2])), 1e-9)
        return np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, 1.0])

    def _prepare(self, rows: Floats) -> _Rows:
        # Special functions depend on x only and logs on the time only: evaluate them on the
        # few distinct values and gather, instead of once per row.
        x, tx, t = rows[:, 0], rows[:, 1], rows[:, 2]
        at_x, ux = codes(x)
        at_time, ut = codes(np.concatenate([t, tx]))
        return _Rows(x, ux, at_x, ut, at_time[: len(x)], at_time[len(x) :])

    def _loglik(self, theta: Floats, data: _Rows) -> Floats:
        return self._loglik_grad(theta, data)[0]

    def _loglik_grad(self, theta: Floats, data: _Rows) -> tuple[Floats, Floats]:
        r, alpha, a, b = theta
        ux, ix, x = data.ux, data.at_x, data.x
        rep = ux > 0
        bx1 = np.where(rep, b + ux - 1, b)  # only used where x > 0; keeps betaln finite
        head = gammaln(r + ux) - gammaln(r) - betaln(a, b)
        stay = betaln(a, b + ux)
        left = np.where(rep, betaln(a + 1, bx1), -np.inf)
        la = np.log(alpha + data.ut)
        la_t, la_tx = la[data.at_t], la[data.at_tx]
        alive = stay[ix] - (r + x) * la_t
        gone = left[ix] - (r + x) * la_tx
        lse = np.logaddexp(alive, gone)
        wg = np.exp(gone - lse)
        wa = 1 - wg
        inv = 1 / (alpha + data.ut)
        d_ab = psi(a + b + ux)
        g = np.empty((len(x), 4))
        g[:, 0] = (psi(r + ux) - psi(r))[ix] + np.log(alpha) - wa * la_t - wg * la_tx
        g[:, 1] = r / alpha - (r + x) * (wa * inv[data.at_t] + wg * inv[data.at_tx])
        g[:, 2] = psi(a + b) - psi(a) + (psi(a) - d_ab)[ix] + wg * (psi(a + 1) - psi(a))
        g[:, 3] = (
            (psi(a + b) - psi(b)) + (psi(b + ux) - d_ab)[ix] + wg * (psi(bx1) - psi(b + ux))[ix]
        )
        return head[ix] + r * np.log(alpha) + lse, g

    def _total(self, theta: Floats, data: _Rows, w: Floats) -> tuple[float, Floats]:
        # Same sums as the per-row version, but x-only terms are summed per distinct x
        # (weights pooled by bincount), so each row costs a few gathers and one softplus.
        r, alpha, a, b = theta
        ux, ix, x = data.ux, data.at_x, data.x
        pooled = np.bincount(ix, weights=w, minlength=len(ux))
        n = float(pooled.sum())
        rep = ux > 0
        bx1 = np.where(rep, b + ux - 1, b)
        stay = betaln(a, b + ux)
        shift = np.where(rep, betaln(a + 1, bx1), -np.inf) - stay  # gone - alive, x part
        la, inv = np.log(alpha + data.ut), 1 / (alpha + data.ut)
        la_t, la_tx = la[data.at_t], la[data.at_tx]
        rx = r + x
        d = shift[ix] - rx * (la_tx - la_t)
        soft = np.logaddexp(0.0, d)
        wg = w * np.exp(d - soft)  # weight times P(the "left after last purchase" branch)
        d_ab = psi(a + b + ux)
        per_x = gammaln(r + ux) - gammaln(r) - betaln(a, b) + stay
        ll = (
            float(np.sum(pooled * per_x))
            + n * r * np.log(alpha)
            - float(np.sum(w * rx * la_t))
            + float(np.sum(w * soft))
        )
        inv_t = inv[data.at_t]
        g = np.array(
            [
                float(np.sum(pooled * (psi(r + ux) - psi(r))))
                + n * np.log(alpha)
                - float(np.sum(w * la_t))
                - float(np.sum(wg * (la_tx - la_t))),
                n * r / alpha
                - float(np.sum(w * rx * inv_t))
                - float(np.sum(wg * rx * (inv[data.at_tx] - inv_t))),
                n * (psi(a + b) - psi(a))
                + float(np.sum(pooled * (psi(a) - d_ab)))
                + float(np.sum(wg)) * (psi(a + 1) - psi(a)),
                n * (psi(a + b) - psi(b))
                + float(np.sum(pooled * (psi(b + ux) - d_ab)))
                + float(
                    np.sum(
                        np.bincount(ix, weights=wg, minlength=len(ux)) * (psi(bx1) - psi(b + ux))
                    )
                ),
            ]
        )
        return ll, g

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
        x, tx, big_t = check_frt(frequency, recency, T)
        out: Floats = self.purchase_factor(t, x, big_t) * self.p_alive(x, tx, big_t)
        return _finite(out, "expected_purchases")

    def purchase_factor(
        self, t: npt.ArrayLike, frequency: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats:
        """Expected purchases in the next ``t`` periods of a customer known to be alive: it
        depends on frequency and T only (times p_alive it is ``expected_purchases``), so it
        can be worked out once per distinct (frequency, T)."""
        theta = self._theta()
        r, alpha, a, b = _off_one(theta)
        x, big_t, h = np.broadcast_arrays(
            as_floats("frequency", frequency), as_floats("T", T), as_floats("t", t)
        )
        z = h / (alpha + big_t + h)
        with np.errstate(all="ignore"):  # overflow is caught below, not printed
            # Euler's transformation folds ((alpha+T)/(alpha+T+t))^(r+x) into the 2F1, so
            # the series stays small even for large frequency.
            tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
            out: Floats = np.array((a + b + x - 1) / (a - 1) * (1 - tail), dtype=np.float64)
        # The 2F1 overflows when a and b are large (a sharply known dropout chance, as small
        # data sets fit); it is also wrong wherever it leaves [0, E[rate] * t].
        cap = (r + x) * h / (alpha + big_t)
        bad = ~np.isfinite(out) | (out < 0) | (out > cap * (1 + 1e-9))
        if np.any(bad):
            out[bad] = _beta_mean(theta, x[bad], big_t[bad], h[bad])
        return out

    def expected_purchases_new(self, t: npt.ArrayLike) -> Floats:
        """Expected purchases in ``t`` periods by a customer who has just arrived."""
        h = as_floats("t", t)
        zero = np.zeros_like(h)
        return _finite(self.purchase_factor(h, zero, zero), "expected_purchases_new")


_STEP = 0.25  # trapezoid step in standard deviations of logit(p)
_TAIL = 45.0  # log-density drop at which the tails are cut (e^-45 of the peak)
_CELLS = 1 << 21  # rows x nodes evaluated at once


def _beta_mean(theta: Floats, x: Floats, big_t: Floats, h: Floats) -> Floats:
    """``purchase_factor`` as the mean over the dropout chance p ~ Beta(a, b + x) of an alive
    customer of (1 - (1 + p t / (alpha + T))^-(r + x)) / p, which is bounded by (r + x) t /
    (alpha + T). The integral runs over logit(p), where the density is smooth and decays at
    least exponentially, so the trapezoid rule converges geometrically for any a, b > 0."""
    r, alpha, a, b = (float(v) for v in theta)
    bx, k, c = b + x, r + x, h / (alpha + big_t)
    s = np.sqrt(1 / a + 1 / bx)  # about the standard deviation of logit(p)
    lo = 10 + _TAIL / (a * s)  # far tails decay like p^a and (1-p)^(b+x)
    hi = 10 + _TAIL / (bx * s)
    n = int(np.ceil(float(np.max(lo + hi)) / _STEP)) + 1
    out = np.empty(len(x))
    chunk = max(1, _CELLS // n)
    steps = _STEP * np.arange(n)
    with np.errstate(all="ignore"):
        for i in range(0, len(x), chunk):
            j = slice(i, i + chunk)
            u = np.log(a / bx[j])[:, None] + s[j, None] * (steps[None, :] - lo[j, None])
            log_w = a * log_expit(u) + bx[j, None] * log_expit(-u)
            w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
            p = expit(u)
            kc = (k[j] * c[j])[:, None]
            f = np.where(p > 0, -np.expm1(-k[j, None] * np.log1p(p * c[j, None])) / p, kc)
            out[j] = (w * f).sum(axis=1) / w.sum(axis=1)
    return out


def _off_one(theta: Floats) -> Floats:
    # The expectations divide by a - 1 (0/0 at a = 1, where the limit is finite); moving a
    # by 1e-7 changes them by a relative ~1e-7.
    r, alpha, a, b = theta
    return np.array([r, alpha, a if abs(a - 1) > 1e-7 else 1 + 1e-7, b])


def _finite(values: Floats, what: str) -> Floats:
    if not np.all(np.isfinite(values)):
        raise ModelError(f"{what}: the prediction is not finite for some inputs")
    return values
