"""Shared fitting machinery: input checks, compression, log-space optimisation, standard errors."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize

from crmseg.errors import ModelError
from crmseg.models.summary import compress

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


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

        Plain sums, not `@`: a BLAS call wakes OpenBLAS' thread pool, whose spinning slows
        scipy's own small BLAS calls inside L-BFGS-B on busy machines."""
        ll, g = self._loglik_grad(theta, data)
        return float(np.sum(w * ll)), np.sum(w[:, None] * g, axis=0)

    def _start(self, rows: Floats, w: Floats) -> Floats:
        return np.ones(len(self.names))

    def _theta(self) -> Floats:
        if self.params_ is None:
            raise ModelError(f"{type(self).__name__} is not fitted yet: call fit() first")
        return np.array([self.params_[n] for n in self.names])

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
        data = self._prepare(rows)
        total = float(w.sum())

        def objective(phi: Floats) -> tuple[float, Floats]:
            theta = np.exp(phi)
            ll, g = self._total(theta, data, w)
            if not np.isfinite(ll) or not np.all(np.isfinite(g)):
                return 1e300, np.zeros_like(phi)
            # mean per customer, so tolerances do not depend on the number of customers
            return -ll / total, -g * theta / total

        phi0 = np.log(self._start(rows, w))
        bounds = [(-18.0, 18.0)] * len(phi0)  # keeps exp() finite while the optimiser explores
        opts = {"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9}
        res = minimize(objective, phi0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        theta = np.exp(res.x)
        ll = self._total(theta, data, w)[0]
        if not np.isfinite(ll):
            raise ModelError(f"{type(self).__name__}.fit did not reach a finite log-likelihood")
        self.params_ = {n: float(v) for n, v in zip(self.names, theta, strict=True)}
        self.log_likelihood_ = ll
        self.converged_ = bool(res.success)
        self.n_rows_ = len(rows)
        self.n_customers_ = total
        hess = self._hessian(res.x, objective) * total
        self.standard_errors_ = self._standard_errors(res.x, hess)
        self.fit_seconds_ = time.perf_counter() - started

    @staticmethod
    def _hessian(phi: Floats, objective: Any) -> Floats:
        """Central differences of the analytic gradient (mean NLL, log space): 2k calls."""
        k, h = len(phi), 1e-4
        step = np.eye(k) * h
        cols = [
            (objective(phi + step[i])[1] - objective(phi - step[i])[1]) / (2 * h) for i in range(k)
        ]
        hess = np.array(cols)
        return np.asarray((hess + hess.T) / 2, dtype=np.float64)

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
