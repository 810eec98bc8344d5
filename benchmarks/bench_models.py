"""crmseg.models vs lifetimes 0.11.3 on simulated data, in one run.

    .venv/bin/python benchmarks/bench_models.py            # full sizes (several minutes)
    .venv/bin/python benchmarks/bench_models.py --scale 0.1

(a) rfm_summary vs summary_data_from_transaction_data on 5M transactions (target >= 5x)
(b) BetaGeo.fit vs BetaGeoFitter.fit on 1M customers (target >= 20x)
(c) ParetoNBD.fit vs ParetoNBDFitter.fit on 100k customers (target >= 20x, params within 1%)

Customers are simulated from each model's own generative story in days, then rounded to whole
days as a daily rfm_summary would report them. lifetimes gets the raw per-customer rows (its
default use); ``--with-weights`` also times it on rows compressed with its ``weights``
argument (Nelder-Mead there took from 8 s to over 5 minutes for Pareto/NBD on 100k).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from crmseg.models import BetaGeo, ParetoNBD, compress, rfm_summary


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def report(label: str, ours: float, theirs: float | None, target: float, why: str = "") -> None:
    if theirs is None:
        print(f"{label}: crmseg {ours:.2f}s; lifetimes could not run: {why}")
        return
    ratio = theirs / ours
    verdict = "meets" if ratio >= target else "MISSES"
    print(
        f"{label}: crmseg {ours:.2f}s, lifetimes {theirs:.2f}s, ratio {ratio:.1f}x "
        f"({verdict} the {target:.0f}x target)"
    )


def simulate_transactions(n_tx: int, rng: np.random.Generator) -> pd.DataFrame:
    n_cust = n_tx // 25
    ids = rng.integers(0, n_cust, n_tx)
    start = np.datetime64("2023-01-01T00:00:00")
    # each customer gets an own start; purchases spread over the next two years
    offset = rng.integers(0, 365 * 86400, n_cust)[ids] + rng.integers(0, 365 * 86400, n_tx)
    return pd.DataFrame(
        {
            "id": ids,
            "date": start + offset.astype("timedelta64[s]"),
            "amount": np.round(rng.gamma(2.0, 20.0, n_tx), 2),
        }
    )


def simulate_bgnbd(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    r, alpha, a, b = 0.25, 30.0, 0.8, 2.5  # CDNOW-like, rate per day
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    big_t = rng.integers(30, 731, n).astype(float)
    arrivals = rng.poisson(lam * big_t)
    deaths = rng.geometric(p)  # the repeat purchase after which the customer leaves
    x = np.minimum(arrivals, deaths)
    # the x-th of `arrivals` uniform arrival times in (0, T)
    tx = np.where(x > 0, big_t * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    return x.astype(float), np.floor(tx), big_t


def simulate_pareto(n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    r, alpha, s, beta = 0.55, 75.0, 0.6, 80.0  # CDNOW-like, rate per day
    lam = rng.gamma(r, 1 / alpha, n)
    mu = rng.gamma(s, 1 / beta, n)
    big_t = rng.integers(30, 731, n).astype(float)
    alive_for = np.minimum(rng.exponential(1 / mu), big_t)
    x = rng.poisson(lam * alive_for)
    tx = np.where(x > 0, alive_for * rng.random(n) ** (1 / np.maximum(x, 1)), 0.0)
    return x.astype(float), np.floor(tx), big_t


def bench_summary(n_tx: int, rng: np.random.Generator, lt: Any) -> None:
    tx = simulate_transactions(n_tx, rng)
    as_of = "2024-12-31"
    ours, t_ours = timed(lambda: rfm_summary(tx["id"], tx["date"], tx["amount"], as_of))
    if lt is None:
        report(f"(a) rfm_summary, {n_tx:,} transactions", t_ours, None, 5, LIFETIMES_WHY)
        return
    theirs, t_theirs = timed(
        lambda: lt.utils.summary_data_from_transaction_data(
            tx, "id", "date", "amount", observation_period_end=as_of, freq="D"
        )
    )
    diff = np.abs(ours.to_numpy() - theirs.loc[ours.index].to_numpy()).max()
    report(f"(a) rfm_summary, {n_tx:,} transactions", t_ours, t_theirs, 5)
    print(f"    {len(ours):,} customers, max |difference| vs lifetimes {diff:.2e}")


def params_gap(ours: dict[str, float], theirs: pd.Series) -> float:
    return max(abs(ours[k] - float(theirs[k])) / abs(float(theirs[k])) for k in ours)


def bench_fit(
    label: str,
    model: Any,
    fitter: str,
    data: tuple[np.ndarray, ...],
    lt: Any,
    target: float,
) -> None:
    x, tx, big_t = data
    ours, t_ours = timed(lambda: model.fit(x, tx, big_t))
    print(f"    crmseg params {fmt(ours.params_)}; {ours.n_rows_:,} unique rows")
    if lt is None:
        report(label, t_ours, None, target, LIFETIMES_WHY)
        return
    theirs, t_theirs = timed(lambda: getattr(lt, fitter)().fit(x, tx, big_t))
    report(label, t_ours, t_theirs, target)
    print(f"    lifetimes params {fmt(theirs.params_.to_dict())}")
    gap = params_gap(ours.params_, theirs.params_)
    verdict = "yes" if gap <= 0.01 else "NO"
    print(f"    largest relative parameter gap {gap:.2e} (within 1%: {verdict})")
    rows, w = compress(x, tx, big_t)
    # both parameter sets scored by the same (our) likelihood: who sits higher?
    at_theirs = np.array([float(theirs.params_[k]) for k in model.names])
    ll_theirs = model._total(at_theirs, model._prepare(rows), w)[0]
    print(
        f"    log-likelihood at crmseg's params {ours.log_likelihood_:.3f}, "
        f"at lifetimes' params {ll_theirs:.3f}"
    )
    if not WITH_WEIGHTS:
        return
    packed, t_packed = timed(
        lambda: getattr(lt, fitter)().fit(rows[:, 0], rows[:, 1], rows[:, 2], weights=w)
    )
    print(
        f"    lifetimes on the same compressed rows (weights=): {t_packed:.2f}s, "
        f"ratio {t_packed / t_ours:.1f}x, gap {params_gap(ours.params_, packed.params_):.2e}"
    )


def fmt(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


LIFETIMES_WHY = ""
WITH_WEIGHTS = False


def load_lifetimes() -> Any:
    global LIFETIMES_WHY
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lifetimes
            import lifetimes.utils
    except Exception as e:
        LIFETIMES_WHY = f"import failed: {e!r}"
        return None
    return lifetimes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--with-weights",
        action="store_true",
        help="also time lifetimes on compressed rows (its Pareto/NBD can take minutes)",
    )
    args = ap.parse_args()
    global WITH_WEIGHTS
    WITH_WEIGHTS = args.with_weights
    warnings.simplefilter("ignore")  # lifetimes' pandas deprecation chatter
    rng = np.random.default_rng(args.seed)
    lt = load_lifetimes()
    print(f"numpy {np.__version__}, pandas {pd.__version__}, lifetimes {lt and lt.__version__}")
    bench_summary(int(5_000_000 * args.scale), rng, lt)
    n_bg, n_pn = int(1_000_000 * args.scale), int(100_000 * args.scale)
    print(f"(b) BetaGeo.fit, {n_bg:,} customers")
    bench_fit("(b) BetaGeo.fit", BetaGeo(), "BetaGeoFitter", simulate_bgnbd(n_bg, rng), lt, 20)
    print(f"(c) ParetoNBD.fit, {n_pn:,} customers")
    data = simulate_pareto(n_pn, rng)
    bench_fit("(c) ParetoNBD.fit", ParetoNBD(), "ParetoNBDFitter", data, lt, 20)


if __name__ == "__main__":
    main()
