"""log 2F1(1, B; C; z) for C > B > 0 and 0 <= z < 1, the only hypergeometric Pareto/NBD needs.

scipy's hyp2f1 returns NaN for parts of this range (e.g. B = 500, z = 0.999), so we sum the
series where it converges fast and integrate where it does not. The value lies in
[1, 1/(1-z)], so plain floats suffice and only the final log is taken.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

_SERIES_MAX_Z = 0.75
_TERMS = 140  # 0.75**140 < 1e-17: the series is done by then
_BUCKETS = (0.01, 0.05, 0.2, 0.45, _SERIES_MAX_Z)

# Composite Gauss-Legendre rule on [0, 1] with panels that shrink geometrically towards both
# ends: the integrand below can be steep next to 1 (large exponent, z near 1) and has a
# v**(1/m) kink at 0.
_nodes, _wts = np.polynomial.legendre.leggauss(10)
_edges = np.unique(
    np.concatenate([2.0 ** -np.arange(1, 40), 1 - 2.0 ** -np.arange(1, 55), [0.0, 0.5, 1.0]])
)
_lo, _hi = _edges[:-1], _edges[1:]
_V = ((_hi - _lo)[:, None] * (_nodes + 1) / 2 + _lo[:, None]).ravel()
_W = ((_hi - _lo)[:, None] * _wts / 2).ravel()


def log_h1(b: Floats, c: Floats, z: Floats, omz: Floats | None = None) -> Floats:
    """log 2F1(1, b; c; z), elementwise; needs c > 1. ``omz`` is 1 - z computed without
    cancellation by the caller, which matters when z is within ~1e-8 of 1."""
    b, c, z, omz = np.broadcast_arrays(
        np.asarray(b, dtype=np.float64),
        np.asarray(c, dtype=np.float64),
        np.asarray(z, dtype=np.float64),
        np.asarray(1 - np.asarray(z) if omz is None else omz, dtype=np.float64),
    )
    out = np.empty(b.shape)
    near = z > _SERIES_MAX_Z
    easy = ~near
    if np.any(easy):
        bb, cc, zz = b[easy], c[easy], z[easy]
        top = float(zz.max())
        # Terms shrink at least as fast as z**n: stop once the largest z makes them negligible.
        n = int(np.ceil(-39.2 / np.log(max(top, 1e-300)))) + 1
        k = np.arange(min(n, _TERMS) - 1, dtype=np.float64)
        # term_n = prod_{j<n} (b+j)/(c+j) * z: every ratio is in [0, z), so no overflow.
        ratios = (bb[:, None] + k) / (cc[:, None] + k) * zz[:, None]
        out[easy] = np.log1p(np.cumprod(ratios, axis=1).sum(axis=1))
    if np.any(near):
        out[near] = _log_h1_quad(b[near], c[near], z[near], omz[near])
    return out


def _log_h1_quad(b: Floats, c: Floats, z: Floats, omz: Floats) -> Floats:
    # 2F1(1,b;c;z) = (1-z)^(d-1) * int_0^1 (1 - z v^(1/m))^(-d) dv with d = c-b, m = c-1
    # (Euler's integral with u = v^(1/m), then Euler's transformation).
    d, m = c - b, c - 1
    # 1 - z*u written as (1-z) + z*(1-u) so nothing cancels when z and u are both near 1.
    omu = -np.expm1(np.log(_V)[None, :] / m[:, None])
    log_f = -d[:, None] * np.log(omz[:, None] + z[:, None] * omu) + np.log(_W)[None, :]
    top = log_f.max(axis=1)
    log_int = top + np.log(np.exp(log_f - top[:, None]).sum(axis=1))
    out: Floats = (d - 1) * np.log(omz) + log_int
    return out


def log_h1_grad(
    b: Floats, c: Floats, z: Floats, omz: Floats
) -> tuple[Floats, Floats, Floats, Floats]:
    """log 2F1(1, b; c; z) and its partial derivatives in b, c and z."""
    b, c, z, omz = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(b, c, z, omz))
    val, db, dc, dz = (np.empty(b.shape) for _ in range(4))
    near = z > _SERIES_MAX_Z
    # Bucket rows by z so that small-z rows (the usual case) sum only the terms they need.
    lower = 0.0
    for upper in _BUCKETS:
        part = ~near & (z > lower) & (z <= upper) if lower > 0 else ~near & (z <= upper)
        lower = upper
        if not np.any(part):
            continue
        bb, cc, zz = b[part], c[part], z[part]
        n = min(int(np.ceil(-39.2 / np.log(max(float(zz.max()), 1e-300)))) + 1, _TERMS)
        k = np.arange(n - 1, dtype=np.float64)
        ib, ic = 1 / (bb[:, None] + k), 1 / (cc[:, None] + k)
        terms = np.cumprod((bb[:, None] + k) * ic * zz[:, None], axis=1)  # terms 1..n-1
        h = 1 + terms.sum(axis=1)
        val[part] = np.log(h)
        # d term_j / d b = term_j * sum_{i<j} 1/(b+i); likewise for c with a minus sign
        db[part] = (terms * np.cumsum(ib, axis=1)).sum(axis=1) / h
        dc[part] = -(terms * np.cumsum(ic, axis=1)).sum(axis=1) / h
        # d/dz sum_j term_j = sum_j j term_j / z, whose z -> 0 limit is b/c
        safe = np.where(zz > 0, zz, 1.0)
        dz[part] = np.where(zz > 0, (terms * (k + 1)).sum(axis=1) / safe, bb / cc) / h
    if np.any(near):
        # Rare rows (z > 0.75): central differences on the quadrature are accurate enough.
        bb, cc, zz, oo = b[near], c[near], z[near], omz[near]
        val[near] = _log_h1_quad(bb, cc, zz, oo)
        hb, hc, hz = 1e-6 * np.maximum(bb, 1), 1e-6 * np.maximum(cc, 1), 1e-4 * oo
        db[near] = (_log_h1_quad(bb + hb, cc, zz, oo) - _log_h1_quad(bb - hb, cc, zz, oo)) / (
            2 * hb
        )
        dc[near] = (_log_h1_quad(bb, cc + hc, zz, oo) - _log_h1_quad(bb, cc - hc, zz, oo)) / (
            2 * hc
        )
        up = _log_h1_quad(bb, cc, zz + hz, oo - hz)
        dz[near] = (up - _log_h1_quad(bb, cc, zz - hz, oo + hz)) / (2 * hz)
    return val, db, dc, dz
