"""BG/NBD, Pareto/NBD and Gamma-Gamma vs published CDNOW estimates, lifetimes, closed forms."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import gammaln, hyp2f1
from scipy.stats import beta as beta_dist

from crmseg.errors import ModelError
from crmseg.models import BetaGeo, GammaGamma, ParetoNBD, compress, rfm_summary
from crmseg.models._hyp import log_h1

# Published estimates on the 2,357-customer CDNOW sample (weeks, to 1997-09-30).
BG_PUB = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # Fader, Hardie & Lee 2005
BG_LL = -9582.4
PNBD_PUB = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}  # Fader & Hardie note
PNBD_LL = -9595.0
GG_PUB = {"p": 6.25, "q": 3.74, "v": 15.44}  # Fader, Hardie & Lee 2005, "RFM and CLV"
GG_LL = -4055.92  # Fader & Hardie 2013, "The Gamma-Gamma Model of Monetary Value"
# Standard errors CLVTools' test suite pins for its Pareto/NBD fit on the same data.
PNBD_SE = {"r": 0.0476264, "alpha": 0.8427222, "s": 0.1872594, "beta": 6.2105448}


def _close(fitted: dict[str, float], published: dict[str, float]) -> None:
    for name, want in published.items():
        got = fitted[name]
        assert abs(got - want) <= max(0.01 * abs(want), 0.005), (name, got, want)


def _frt(df: pd.DataFrame) -> tuple[Any, Any, Any]:
    return df["frequency"].to_numpy(), df["recency"].to_numpy(), df["T"].to_numpy()


@pytest.fixture(scope="module")
def bg(cdnow_summary: pd.DataFrame) -> BetaGeo:
    return BetaGeo().fit(*_frt(cdnow_summary))


@pytest.fixture(scope="module")
def pnbd(cdnow_summary: pd.DataFrame) -> ParetoNBD:
    return ParetoNBD().fit(*_frt(cdnow_summary))


@pytest.fixture(scope="module")
def gg(cdnow_spend: pd.DataFrame) -> GammaGamma:
    rep = cdnow_spend[cdnow_spend["x"] > 0]
    return GammaGamma().fit(rep["x"], rep["zbar"])


def _lifetimes() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lifetimes
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"lifetimes does not import here: {e!r}")
    return lifetimes


# --- published values -------------------------------------------------------------------


def test_betageo_matches_published_cdnow(bg: BetaGeo) -> None:
    assert bg.params_ is not None
    _close(bg.params_, BG_PUB)
    assert abs(bg.log_likelihood_ - BG_LL) < 0.5
    assert bg.fit_seconds_ > 0
    assert all(0 < v < 1 for v in bg.standard_errors_.values())


def test_paretonbd_matches_published_cdnow(pnbd: ParetoNBD) -> None:
    assert pnbd.params_ is not None
    _close(pnbd.params_, PNBD_PUB)
    assert abs(pnbd.log_likelihood_ - PNBD_LL) < 0.5
    for name, want in PNBD_SE.items():
        assert pnbd.standard_errors_[name] == pytest.approx(want, rel=0.01), name


def test_gammagamma_matches_published_cdnow(gg: GammaGamma, cdnow_spend: pd.DataFrame) -> None:
    assert gg.params_ is not None
    _close(gg.params_, GG_PUB)
    assert abs(gg.log_likelihood_ - GG_LL) < 0.5  # zbar is rounded to cents in the file
    assert gg.n_customers_ == int((cdnow_spend["x"] > 0).sum()) == 946  # repeat buyers only
    assert gg.n_rows_ < gg.n_customers_


# --- lifetimes on the same data, at the same parameters ----------------------------------


def test_betageo_predictions_match_lifetimes(bg: BetaGeo, cdnow_summary: pd.DataFrame) -> None:
    lt = _lifetimes()
    f, r, t = _frt(cdnow_summary)
    ref = lt.BetaGeoFitter().fit(f, r, t)
    ref.params_ = pd.Series(bg.params_)
    np.testing.assert_allclose(
        bg.expected_purchases(10, f, r, t),
        ref.conditional_expected_number_of_purchases_up_to_time(10, f, r, t),
        rtol=1e-8,
    )
    np.testing.assert_allclose(
        bg.p_alive(f, r, t), ref.conditional_probability_alive(f, r, t), rtol=1e-8
    )
    ts = np.array([1.0, 10.0, 52.0])
    np.testing.assert_allclose(
        bg.expected_purchases_new(ts), ref.expected_number_of_purchases_up_to_time(ts), rtol=1e-8
    )
    fitted = lt.BetaGeoFitter().fit(f, r, t)
    for name in bg.names:  # both use the inverse Hessian
        assert bg.standard_errors_[name] == pytest.approx(fitted.standard_errors_[name], rel=0.02)


def test_paretonbd_predictions_match_lifetimes(
    pnbd: ParetoNBD, cdnow_summary: pd.DataFrame
) -> None:
    lt = _lifetimes()
    f, r, t = _frt(cdnow_summary)
    ref = lt.ParetoNBDFitter()
    ref.params_ = pd.Series(pnbd.params_)
    np.testing.assert_allclose(
        pnbd.expected_purchases(10, f, r, t),
        ref.conditional_expected_number_of_purchases_up_to_time(10, f, r, t),
        rtol=1e-7,
    )
    np.testing.assert_allclose(
        pnbd.p_alive(f, r, t), ref.conditional_probability_alive(f, r, t), rtol=1e-7
    )
    ts = np.array([1.0, 10.0, 52.0])
    np.testing.assert_allclose(
        pnbd.expected_purchases_new(ts), ref.expected_number_of_purchases_up_to_time(ts), rtol=1e-8
    )


def test_gammagamma_spend_and_clv_match_lifetimes(
    gg: GammaGamma, bg: BetaGeo, cdnow_spend: pd.DataFrame
) -> None:
    lt = _lifetimes()
    x, tx, t, m = (cdnow_spend[c].to_numpy() for c in ("x", "t_x", "T", "zbar"))
    ref = lt.GammaGammaFitter()
    ref.params_ = pd.Series(gg.params_)
    np.testing.assert_allclose(
        gg.expected_average_spend(x, m), ref.conditional_expected_average_profit(x, m), rtol=1e-10
    )
    ref_bg = lt.BetaGeoFitter().fit(tx * 0 + x, tx, t)  # fit() sets up its predict()
    ref_bg.params_ = pd.Series(bg.params_)
    # lifetimes' weekly month is 4.345 weeks
    ours = gg.clv(bg, x, tx, t, m, 12, 0.01, freq_days=7, days_per_month=4.345 * 7)
    theirs = ref.customer_lifetime_value(
        ref_bg, pd.Series(x), pd.Series(tx), pd.Series(t), pd.Series(m), 12, 0.01, freq="W"
    )
    np.testing.assert_allclose(ours, theirs.to_numpy(), rtol=1e-7)


# --- closed forms that need no reference implementation -----------------------------------


@pytest.mark.parametrize("model", ["bg", "pnbd"])
def test_brand_new_customer_conditional_equals_unconditional(model: str, request: Any) -> None:
    m = request.getfixturevalue(model)
    ts = np.array([0.5, 5.0, 52.0, 500.0])
    np.testing.assert_allclose(
        m.expected_purchases(ts, 0, 0, 0), m.expected_purchases_new(ts), rtol=1e-9
    )
    assert m.p_alive(0, 0, 0) == pytest.approx(1.0)


def test_betageo_zero_repeat_customers_are_alive(bg: BetaGeo) -> None:
    assert np.all(bg.p_alive([0, 0], [0, 0], [10, 100]) == 1.0)
    assert bg.p_alive(3, 2, 30) < bg.p_alive(3, 29, 30)


def _pnbd_lik_by_quadrature(theta: dict[str, float], x: float, tx: float, t: float) -> float:
    r, a, s, b = theta["r"], theta["alpha"], theta["s"], theta["beta"]
    head = np.exp(gammaln(r + x) - gammaln(r) + r * np.log(a) + s * np.log(b))
    alive = (a + t) ** -(r + x) * (b + t) ** -s
    gone = quad(lambda u: (a + u) ** -(r + x) * (b + u) ** -(s + 1), tx, t, epsabs=0, epsrel=1e-12)[
        0
    ]
    return float(np.log(head * (alive + s * gone)))


@pytest.mark.parametrize(
    "theta",
    [
        {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7},  # alpha < beta
        {"r": 0.55, "alpha": 30.0, "s": 1.7, "beta": 2.0},  # alpha > beta
        {"r": 2.0, "alpha": 1.0, "s": 0.3, "beta": 1.0},  # equal
    ],
)
def test_paretonbd_loglik_equals_direct_integration(theta: dict[str, float]) -> None:
    rows = np.array(
        [[0, 0, 30.0], [1, 2.5, 39.0], [7, 20.0, 39.0], [3, 39.0, 39.0], [20, 5.0, 60.0]]
    )
    m = ParetoNBD()
    got = m._loglik(np.array(list(theta.values())), m._prepare(rows))
    want = [_pnbd_lik_by_quadrature(theta, *row) for row in rows]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_log_h1_matches_integral_and_scipy() -> None:
    for b, c in [(0.55, 2.15), (10.5, 12.1), (500.55, 502.15), (1.6, 502.15), (3.2, 4.5)]:
        for z in [0.05, 0.5, 0.74, 0.76, 0.95, 1 - 1e-6]:
            got = log_h1(np.array([b]), np.array([c]), np.array([z]), np.array([1 - z]))[0]
            d = c - b
            pts = [1 - 10 * (1 - z), 1 - (1 - z)] if z > 0.99 else None

            def f(u: float, b: float = b, d: float = d, z: float = z) -> float:
                return float(np.exp(beta_dist.logpdf(u, b, d)) / (1 - z * u))

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = np.log(quad(f, 0, 1, limit=500, epsrel=1e-12, points=pts)[0])
            assert got == pytest.approx(want, rel=1e-9, abs=1e-11), (b, c, z)
    # where scipy's own hyp2f1 is reliable the two agree; where it is NaN ours is finite
    for b, c, z in [(2.0, 5.0, 0.3), (3.2, 3.21, 0.05), (3.2, 3.21, 0.9)]:
        got = log_h1(np.array([b]), np.array([c]), np.array([z]))[0]
        assert got == pytest.approx(np.log(hyp2f1(1, b, c, z)), rel=1e-12)
    assert np.isfinite(log_h1(np.array([500.55]), np.array([502.15]), np.array([0.999]))).all()


# --- compression, extremes, errors ---------------------------------------------------------


def test_compress_counts_rows(cdnow_summary: pd.DataFrame) -> None:
    f, r, t = _frt(cdnow_summary)
    rows, w = compress(f, r, t)
    assert w.sum() == len(f)
    assert len(np.unique(rows, axis=0)) == len(rows) < len(f)
    counts = pd.DataFrame({"f": f, "r": r, "t": t}).value_counts()
    for row, weight in zip(rows[:50], w[:50], strict=True):
        assert counts[tuple(row)] == weight


@pytest.mark.parametrize("cls", [BetaGeo, ParetoNBD])
def test_compressed_fit_equals_full_fit(cls: Any, cdnow_summary: pd.DataFrame) -> None:
    f, r, t = _frt(cdnow_summary)
    full = cls().fit(f, r, t)
    rows, w = compress(f, r, t)
    small = cls().fit(rows[:, 0], rows[:, 1], rows[:, 2], weights=w)
    assert small.params_ == pytest.approx(full.params_, rel=1e-9)
    # the per-customer log-likelihood summed over every raw row agrees with the weighted total
    theta = np.array([full.params_[n] for n in full.names])
    raw = np.column_stack([f, r, t])
    assert full._loglik(theta, full._prepare(raw)).sum() == pytest.approx(
        full.log_likelihood_, rel=1e-12
    )
    assert small.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-12)


def test_betageo_pooled_sums_equal_per_row_sums(cdnow_summary: pd.DataFrame) -> None:
    m = BetaGeo()
    rows, w = compress(*_frt(cdnow_summary))
    data = m._prepare(rows)
    for theta in ([0.24, 4.4, 0.79, 2.4], [1.3, 0.5, 2.0, 0.6]):
        th = np.array(theta)
        ll, g = m._loglik_grad(th, data)
        total, grad = m._total(th, data, w)
        assert total == pytest.approx(float(np.sum(w * ll)), rel=1e-12)
        np.testing.assert_allclose(grad, np.sum(w[:, None] * g, axis=0), rtol=1e-9)


@pytest.mark.parametrize("cls", [BetaGeo, ParetoNBD, GammaGamma])
def test_analytic_gradient_matches_differences(cls: Any, cdnow_spend: pd.DataFrame) -> None:
    cols = ["x", "zbar", "zbar"] if cls is GammaGamma else ["x", "t_x", "T"]
    rows = cdnow_spend[cdnow_spend["x"] > 0][cols].to_numpy()[:300]
    m = cls()
    data = m._prepare(rows)
    theta = np.array([0.6, 8.0, 0.9, 3.0] if cls is not GammaGamma else [5.0, 3.0, 14.0])
    _, g = m._total(theta, data, np.ones(len(rows)))
    for i in range(len(theta)):
        e = np.zeros(len(theta))
        e[i] = 1e-6 * theta[i]
        up = m._total(theta + e, data, np.ones(len(rows)))[0]
        down = m._total(theta - e, data, np.ones(len(rows)))[0]
        assert g[i] == pytest.approx((up - down) / (2 * e[i]), rel=1e-5)


def test_weights_equal_repeated_rows(cdnow_spend: pd.DataFrame) -> None:
    rep = cdnow_spend[cdnow_spend["x"] > 0]
    twice = pd.concat([rep, rep])
    a = GammaGamma().fit(twice["x"], twice["zbar"])
    b = GammaGamma().fit(rep["x"], rep["zbar"], weights=np.full(len(rep), 2.0))
    assert a.params_ == pytest.approx(b.params_, rel=1e-9)
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, rel=1e-12)


def test_extremes_stay_finite(bg: BetaGeo, pnbd: ParetoNBD, gg: GammaGamma) -> None:
    x = np.array([500.0, 500.0, 0.0, 1.0, 500.0])
    tx = np.array([9_999.0, 10_000.0, 0.0, 0.01, 50.0])
    t = np.full(5, 10_000.0)
    for m in (bg, pnbd):
        for h in (1.0, 52.0, 10_000.0):
            assert np.isfinite(m.expected_purchases(h, x, tx, t)).all()
        alive = m.p_alive(x, tx, t)
        assert np.isfinite(alive).all() and np.all((alive >= 0) & (alive <= 1))
        assert np.isfinite(m.expected_purchases_new([1.0, 10_000.0])).all()
        theta = np.array(list(m.params_.values()))
        assert np.isfinite(m._loglik(theta, m._prepare(np.column_stack([x, tx, t])))).all()
    assert np.isfinite(gg.expected_average_spend(x, np.full(5, 30.0))).all()
    assert np.isfinite(gg.clv(pnbd, x, tx, t, np.full(5, 30.0), freq_days=7)).all()


@pytest.mark.parametrize("cls", [BetaGeo, ParetoNBD])
def test_fit_with_heavy_customers_is_finite(cls: Any, cdnow_summary: pd.DataFrame) -> None:
    f, r, t = _frt(cdnow_summary)
    f = np.r_[f, 500.0, 300.0]
    r = np.r_[r, 9_000.0, 10_000.0]
    t = np.r_[t, 10_000.0, 10_000.0]
    m = cls().fit(f, r, t)
    assert np.isfinite(list(m.params_.values())).all() and np.isfinite(m.log_likelihood_)


@pytest.mark.parametrize("cls", [BetaGeo, ParetoNBD])
def test_unfitted_and_bad_inputs_raise(cls: Any) -> None:
    with pytest.raises(ModelError, match="not fitted"):
        cls().p_alive(1, 1, 2)
    with pytest.raises(ModelError, match="recency is larger than T"):
        cls().fit([1, 2], [3, 1], [2, 5])
    with pytest.raises(ModelError, match="frequency contains negative"):
        cls().fit([-1, 2], [0, 1], [2, 5])
    with pytest.raises(ModelError, match="recency must be 0 where frequency is 0"):
        cls().fit([0, 2], [1, 1], [2, 5])
    with pytest.raises(ModelError, match="NaN"):
        cls().fit([1, 2], [np.nan, 1], [2, 5])
    with pytest.raises(ModelError, match="at least one customer"):
        cls().fit([], [], [])


def test_gammagamma_bad_inputs_raise(bg: BetaGeo) -> None:
    with pytest.raises(ModelError, match="not fitted"):
        GammaGamma().expected_average_spend([1], [10.0])
    with pytest.raises(ModelError, match="monetary must be positive"):
        GammaGamma().fit([1, 2], [0.0, 5.0])
    with pytest.raises(ModelError, match="frequency > 0"):
        GammaGamma().fit([0, 0], [0.0, 0.0])
    gg = GammaGamma().fit([1, 2, 3, 1], [10.0, 12.0, 9.0, 30.0])
    with pytest.raises(ModelError, match="horizon_months"):
        gg.clv(bg, [1], [1], [2], [10.0], horizon_months=0)


def test_betageo_expectations_continuous_at_a_equal_one() -> None:
    values = []
    for a in (1 - 1e-4, 1.0, 1 + 1e-4):
        m = BetaGeo()
        m.params_ = {"r": 0.5, "alpha": 5.0, "a": a, "b": 2.0}
        values.append(
            [float(m.expected_purchases(10, 3, 20, 30)), float(m.expected_purchases_new(10))]
        )
    np.testing.assert_allclose(values[1], values[0], rtol=1e-3)
    np.testing.assert_allclose(values[1], values[2], rtol=1e-3)
    assert np.isfinite(values).all()


def test_end_to_end_from_raw_transactions_matches_clvtools(cdnow_sample_tx: pd.DataFrame) -> None:
    # Exact weeks (days / 7) from the raw log, as CLVTools builds them; its test suite pins
    # r=0.2425945, alpha=4.4136019, a=0.7929199, b=2.4258881, LL -9582.429 for this data.
    tx = cdnow_sample_tx
    days = rfm_summary(tx["id"], tx["date"], tx["amt"], "1997-09-30")
    m = BetaGeo().fit(days["frequency"], days["recency"] / 7, days["T"] / 7)
    want = {"r": 0.2425945, "alpha": 4.4136019, "a": 0.7929199, "b": 2.4258881}
    assert m.params_ == pytest.approx(want, rel=2e-5)
    assert m.log_likelihood_ == pytest.approx(-9582.429, abs=1e-3)


@pytest.mark.parametrize(
    ("f", "t"),
    [
        ([0, 2, 2, 5, 0, 2], [30, 40, 40, 7, 30, 41]),  # whole days: one packed key
        ([0.5, 2, 2, 0.5], [30, 40, 40, 30]),  # fractions: rows compared as they are
    ],
)
def test_distinct_pairs_match_numpy_unique_rows(f: list[float], t: list[float]) -> None:
    from crmseg.models.clv import _distinct_pairs

    fa, ta = np.array(f, dtype=np.float64), np.array(t, dtype=np.float64)
    pairs, where = _distinct_pairs(fa, ta)
    expected, inverse = np.unique(np.column_stack([fa, ta]), axis=0, return_inverse=True)
    assert pairs.tolist() == expected.tolist()
    assert where.tolist() == inverse.ravel().tolist()


# A 60-customer marketplace (140 orders): BG/NBD's fit there sends a and b to ~1e5 (a dropout
# chance known almost exactly), where the 2F1 of the expectations overflows.
SMALL_F = [2, 2, 3, 3, 3, 4, 2, 2, 3, 0, 0, 1, 2, 1, 3, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0,
           0, 1, 2, 4, 3, 3, 2, 1, 0, 0, 0, 0, 0, 4, 1, 2, 0, 0, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0,
           0, 0]  # fmt: skip
SMALL_R = [99, 102, 166, 97, 156, 198, 65, 47, 86, 0, 0, 63, 146, 34, 125, 70, 0, 0, 0, 15, 0,
           0, 0, 0, 0, 52, 0, 0, 0, 0, 84, 147, 197, 206, 73, 141, 49, 0, 0, 0, 0, 0, 96, 24, 77,
           0, 0, 20, 56, 54, 76, 95, 0, 0, 0, 0, 0, 0, 0, 0]  # fmt: skip
SMALL_T = [216, 247, 299, 123, 287, 210, 123, 77, 144, 78, 251, 165, 314, 310, 192, 231, 55, 99,
           315, 238, 163, 228, 119, 183, 51, 245, 317, 177, 235, 183, 185, 227, 248, 214, 101,
           195, 87, 58, 93, 159, 315, 198, 316, 304, 319, 38, 34, 144, 268, 89, 151, 124, 155,
           106, 287, 314, 197, 178, 77, 153]  # fmt: skip


def test_betageo_with_huge_a_and_b_predicts_finite_values_like_lifetimes() -> None:
    f, r, t = (np.array(v, dtype=float) for v in (SMALL_F, SMALL_R, SMALL_T))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning may reach the user
        m = BetaGeo().fit(f, r, t)
        assert m.params_ is not None and m.params_["a"] > 1e4 and m.params_["b"] > 1e4
        got = m.expected_purchases(90, f, r, t)
        new = m.expected_purchases_new([1.0, 90.0, 10_000.0])
        factor = m.purchase_factor(90.0, f, t)
    ref = _lifetimes().BetaGeoFitter()
    ref.params_ = pd.Series(m.params_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ref.conditional_expected_number_of_purchases_up_to_time(90, f, r, t)
        want_new = ref.expected_number_of_purchases_up_to_time(np.array([1.0, 90.0, 10_000.0]))
    np.testing.assert_allclose(got, want, rtol=1e-8)
    np.testing.assert_allclose(new, want_new, rtol=1e-8)
    # alive, a customer buys at the dropout-free rate over a horizon short against 1 / p
    p = m.params_["a"] / (m.params_["a"] + m.params_["b"])
    rate = (m.params_["r"] + f) / (m.params_["alpha"] + t)
    assert np.all(factor <= rate * 90) and np.all(factor > (1 - p) * rate * 90 * 0.5)


@pytest.mark.parametrize(
    "theta",
    [
        {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},  # CDNOW
        {"r": 2.0, "alpha": 30.0, "a": 40.0, "b": 100.0},
        {"r": 0.8, "alpha": 95.0, "a": 3.0, "b": 8.0},
        {"r": 1.0, "alpha": 10.0, "a": 1000.0, "b": 50.0},
    ],
)
def test_betageo_beta_mixture_equals_the_closed_form(theta: dict[str, float]) -> None:
    """The quadrature used where the 2F1 fails agrees with it where it does not."""
    from crmseg.models.betageo import _beta_mean

    r, alpha, a, b = theta.values()
    x = np.array([0.0, 1.0, 5.0, 30.0, 0.0, 2.0])
    big_t = np.array([0.0, 10.0, 50.0, 300.0, 200.0, 5.0])
    h = np.array([1.0, 10.0, 52.0, 90.0, 365.0, 1000.0])
    z = h / (alpha + big_t + h)
    with np.errstate(all="ignore"):  # Fader, Hardie & Lee (2005), eq. 10 without P(alive)
        tail = (1 - z) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        closed = (a + b + x - 1) / (a - 1) * (1 - tail)
    ok = np.isfinite(closed)
    assert ok.sum() >= 4
    mixed = _beta_mean(np.array([r, alpha, a, b]), x, big_t, h)
    np.testing.assert_allclose(mixed[ok], closed[ok], rtol=1e-7)
