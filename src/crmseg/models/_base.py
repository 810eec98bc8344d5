"""Shared fitting machinery: input checks, compression, log-space optimisation, standard errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crmseg.errors import ModelError
from crmseg.models.summary import compress

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
_WARM_ROWS = 20_000  # above this many distinct rows, start from a sample's fit


def codes(values: Floats) -> tuple[Ints, Floats]:
    """Index of each value in the distinct values, and the distinct values."""
    idx, uniq = pd.factorize(values)
    return np.asarray(idx, dtype=np.int64), np.asarray(uniq, dtype=np.float64)


def as_floats(name: str, value: npt.ArrayLike) -> Floats:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0):
        raise ModelError(f"{name} contains negative values")
    return arr


def check_frt(
    frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
) -> tuple[Floats, Floats, Floats]:
    """Validated, broadcast (frequency, recency, T) arrays."""
    x, tx, t = (
        as_floats(n, v) for n, v in (("frequency", frequency), ("recency", recency), ("T", T))
    )
    try:
        x, tx, t = np.broadcast_arrays(x, tx, t)
    except ValueError as e:
        raise ModelError("frequency, recency and T must have the same length") from e
    if np.any(tx > t):
        raise ModelError("recency is larger than T for some customers")
    if np.any((x == 0) & (tx > 0)):
        raise ModelError("recency must be 0 where frequency is 0")
    return x, tx, t


class Model:
    """Maximum-likelihood fit in log-parameter space on compressed (unique row, weight) data."""

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float = float("nan")
        self.standard_errors_: dict[str, float] = {}
        self.fit_seconds_: float = float("nan")
        self.n_rows_: int = 0  # unique (compressed) rows the fit actually evaluated
        self.n_customers_: float = 0.0  # total weight
        self.converged_: bool = False

    # Subclasses: log-likelihood per unique row and its gradient in natural parameters.
    def _prepare(self, rows: Floats) -> Any:
        return rows

    def _loglik(self, theta: Floats, data: Any) -> Floats:
        raise NotImplementedError

    def _loglik_grad(self, theta: Floats, data: Any) -> tuple[Floats, Floats]:
        raise NotImplementedError

    def _total(self, theta: Floats, data: Any, w: Floats) -> tuple[float, Floats]:
        """Weighted sums of the log-likelihood and its gradient (natural parameters).

        Plain sums, not `@`: a BLAS call wakes OpenBLAS' thread pool, whose spinning then
        slows every small BLAS call that follows on a busy machine."""
        ll, g = self._loglik_grad(theta, data)
        return float(np.sum(w * ll)), np.sum(w[:, None] * g, axis=0)

    def _start(self, rows: Floats, w: Floats) -> Floats:
        return np.ones(len(self.names))

    def _theta(self) -> Floats:
        if self.params_ is None:
            raise ModelError(f"{type(self).__name__} is not fitted yet: call fit() first")
        return np.array([self.params_[n] for n in self.names])

    def _objective(self, data: Any, w: Floats) -> Objective:
        """Mean negative log-likelihood and its gradient, over log-parameters."""
        total = float(w.sum())

        def objective(phi: Floats) -> tuple[float, Floats]:
            theta = np.exp(phi)
            ll, g = self._total(theta, data, w)
            if not np.isfinite(ll) or not np.all(np.isfinite(g)):
                return 1e300, np.zeros_like(phi)
            # a mean per customer, so tolerances do not depend on the number of customers
            return -ll / total, -g * theta / total

        return objective

    def _fit_rows(self, cols: list[Floats], weights: npt.ArrayLike | None) -> None:
        started = time.perf_counter()
        if cols[0].size == 0:
            raise ModelError(f"{type(self).__name__}.fit needs at least one customer")
        if weights is not None:
            w_in = np.asarray(weights, dtype=np.float64).ravel()
            if w_in.shape != cols[0].ravel().shape or np.any(~np.isfinite(w_in) | (w_in < 0)):
                raise ModelError("weights must be finite, non-negative, one per customer")
        extra = cols[3] if len(cols) > 3 else None
        rows, w = compress(cols[0], cols[1], cols[2], extra, weights)
        keep = w > 0
        rows, w = rows[keep], w[keep]
        total = float(w.sum())
        phi0 = np.log(self._start(rows, w))
        data = self._prepare(rows)
        objective = self._objective(data, w)
        if len(rows) > _WARM_ROWS:
            # Many distinct rows: fit a weighted sample of customers first, so Newton steps on
            # the full data finish it in a handful of evaluations instead of ~25.
            pick = np.random.default_rng(0).choice(len(w), size=_WARM_ROWS, p=w / total)
            counts = np.bincount(pick, minlength=len(w)).astype(np.float64)
            some = counts > 0
            phi0 = _search(self._objective(self._prepare(rows[some]), counts[some]), phi0)
        else:
            phi0 = _search(objective, phi0)
        phi, value, grad, ok = _newton(objective, phi0)
        if not ok:  # not locally convex yet: search on the full data, then polish again
            phi, value, grad, ok = _newton(objective, _search(objective, phi0))
        theta = np.exp(phi)
        ll = -value * total
        if not np.isfinite(ll) or value >= 1e300:
            raise ModelError(f"{type(self).__name__}.fit did not reach a finite log-likelihood")
        self.params_ = {n: float(v) for n, v in zip(self.names, theta, strict=True)}
        self.log_likelihood_ = ll
        self.converged_ = ok
        self.n_rows_ = len(rows)
        self.n_customers_ = total
        hess = _hessian(objective, phi, grad) * total
        self.standard_errors_ = self._standard_errors(phi, hess)
        self.fit_seconds_ = time.perf_counter() - started

    def _standard_errors(self, phi: Floats, hess: Floats) -> dict[str, float]:
        """Delta method: Cov(theta) = diag(theta) H^-1 diag(theta) with H in log space."""
        try:
            cov = np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            return {n: float("nan") for n in self.names}
        var = np.diag(cov) * np.exp(phi) ** 2
        return {
            n: float(np.sqrt(v)) if v > 0 else float("nan")
            for n, v in zip(self.names, var, strict=True)
        }


Objective = Callable[[Floats], tuple[float, Floats]]


def _search(objective: Objective, phi0: Floats) -> Floats:
    """Bounded truncated-Newton search. TNC rather than L-BFGS-B: it makes no BLAS calls,
    and L-BFGS-B's tiny BLAS calls slow down ~30x when OpenBLAS threads compete for
    busy cores."""
    bounds = [(-18.0, 18.0)] * len(phi0)  # keeps exp() finite while the optimiser explores
    opts = {"maxfun": 3000, "ftol": 1e-13, "xtol": 1e-10, "gtol": 1e-10}
    from scipy.optimize import minimize  # fits only: scoring runs never pay its import

    res = minimize(objective, phi0, jac=True, method="TNC", bounds=bounds, options=opts)
    return np.asarray(res.x, dtype=np.float64)


def _hessian(objective: Objective, phi: Floats, grad: Floats) -> Floats:
    """Forward differences of the analytic gradient (k evaluations), symmetrised; ``grad`` is
    the gradient at ``phi``. Their O(h) error (~1e-4 relative) is far below what standard
    errors or Newton steps need."""
    k, h = len(phi), 1e-4
    cols = [(objective(phi + np.eye(k)[i] * h)[1] - grad) / h for i in range(k)]
    hess = np.array(cols)
    return np.asarray((hess + hess.T) / 2, dtype=np.float64)


def _newton(objective: Objective, phi: Floats) -> tuple[Floats, float, Floats, bool]:
    """Chord-Newton from a nearby start: one Hessian, then one gradient per step.
    Returns the point, its objective and gradient, and whether it converged."""
    value, grad = objective(phi)
    try:
        chol = np.linalg.cholesky(_hessian(objective, phi, grad))
    except np.linalg.LinAlgError:
        return phi, value, grad, False
    for _ in range(30):
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, grad))
        new_value, new_grad = objective(phi - step)
        if not new_value <= value + 1e-12 * abs(value):
            return phi, value, grad, False
        phi, value, grad = phi - step, new_value, new_grad
        # log-parameters, so 1e-6 relative per parameter; the next step would be ~50x smaller
        if np.max(np.abs(step)) < 1e-6:
            return phi, value, grad, bool(np.max(np.abs(grad)) < 1e-6)
    return phi, value, grad, False
