"""Model traits on the demo shop: CLV equals the models' own predictions, churn beats chance,
clusters recover planted groups, and nothing is fitted unless a rule needs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmseg.models import BetaGeo, GammaGamma, rfm_summary
from crmseg.models.clusters import describe, fit_clusters
from crmseg.workspace import Workspace

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    from crmseg.demo.scaffold import DEMO_AS_OF, init_project

    root: Path = tmp_path_factory.mktemp("shop")
    init_project(root, demo=True, customers=2500, seed=7)
    ws = Workspace.open(root)
    ws.run(as_of=DEMO_AS_OF, select=["lifecycle.lead"])  # loads the data; fits nothing
    assert ws._fitter.records == []
    yield ws
    ws.close()


def test_clv_traits_equal_the_model_predictions(shop: Workspace) -> None:
    from crmseg.demo.scaffold import DEMO_AS_OF

    tables = shop._loaded_tables()
    frame = shop._fitter.frame("clv", tables, DEMO_AS_OF)
    orders = shop.backend.execute(tables["orders"]).to_pandas()
    orders = orders[orders.customer_id.notna()]
    # the demo has a few dirty negative amounts: the CLV traits count them as 0
    amount = orders.amount.fillna(0).clip(lower=0)
    s = rfm_summary(orders.customer_id, orders.ordered_at, amount, DEMO_AS_OF)
    bg = BetaGeo().fit(s.frequency, s.recency, s["T"])
    repeat = s[(s.frequency > 0) & (s.monetary_value > 0)]
    gg = GammaGamma().fit(repeat.frequency, repeat.monetary_value)
    some = repeat.index[:5]
    f, r, t, m = (repeat.loc[some, c].to_numpy() for c in ("frequency", "recency", "T",
                                                           "monetary_value"))  # fmt: skip
    got = frame.loc[some]
    np.testing.assert_allclose(got["clv.p_alive"], bg.p_alive(f, r, t), rtol=1e-6)
    np.testing.assert_allclose(
        got["clv.expected_purchases_90d"], bg.expected_purchases(90, f, r, t), rtol=1e-6
    )
    np.testing.assert_allclose(got["clv.expected_spend"], gg.expected_average_spend(f, m), 1e-6)
    np.testing.assert_allclose(got["clv.value_12m"], gg.clv(bg, f, r, t, m), rtol=1e-6)
    # the inputs the scores came from are traits too: the paper's RFM summary
    for trait, col in (("clv.repeat_days", "frequency"), ("clv.recency_days", "recency"),
                       ("clv.age_days", "T"), ("clv.repeat_spend", "monetary_value")):  # fmt: skip
        np.testing.assert_allclose(got[trait], repeat.loc[some, col], rtol=1e-9)
    # the same numbers reach rules, and the fit was recorded
    wide = shop._plan(tables).wide(tables, DEMO_AS_OF, select=["value.clv_tier"])
    assert shop.backend.execute(wide.filter(wide["value.clv_tier"] != "rest")).num_rows > 0
    records = shop.model_records(DEMO_AS_OF)
    assert {r["model"] for r in records} >= {"BG/NBD", "Gamma-Gamma"}


def test_churn_beats_chance_point_in_time(shop: Workspace) -> None:
    from crmseg.demo.scaffold import DEMO_AS_OF

    tables = shop._loaded_tables()
    frame = shop._fitter.frame("churn", tables, DEMO_AS_OF)
    auc = shop._fitter.auc
    assert auc is not None and auc > 0.6, auc
    assert frame["churn.risk"].between(0, 1).all()
    assert frame["churn.top_features"].str.contains("days_since_last_order").mean() > 0.5
    explanation = shop.explain("risk.churn_high_value", str(frame.index[0]), DEMO_AS_OF)
    assert any("churn.risk drivers" in n for n in explanation.notes)


def test_clusters_recover_planted_groups() -> None:
    from datetime import datetime

    rng = np.random.default_rng(0)
    n = 600
    # two planted groups: frequent discount hunters with small baskets vs rare big spenders
    hunters = pd.DataFrame(
        {
            "orders_count": rng.poisson(12, n) + 5,
            "aov": rng.normal(25, 3, n),
            "discount_share": rng.uniform(0.7, 1.0, n),
            "days_since_last_order": rng.integers(1, 20, n),
        }
    )
    spenders = pd.DataFrame(
        {
            "orders_count": rng.poisson(1, n) + 1,
            "aov": rng.normal(300, 30, n),
            "discount_share": rng.uniform(0.0, 0.1, n),
            "days_since_last_order": rng.integers(100, 300, n),
        }
    )
    frame = pd.concat([hunters, spenders], ignore_index=True)
    frame.index = pd.Index([f"c{i:04d}" for i in range(2 * n)], name="customer_id")
    result = fit_clusters(frame, datetime(2024, 1, 1), (2, 5), seed=1)
    ids = result.labels["cluster.id"].to_numpy()
    assert result.record.metrics["k"] == 2
    assert len(set(ids[:n])) == 1 and len(set(ids[n:])) == 1 and ids[0] != ids[n]
    hunter_label = result.descriptions[int(ids[0])]
    assert "frequent" in hunter_label and "discount-driven" in hunter_label
    assert "big basket" in result.descriptions[int(ids[n])]


def test_describe_reads_the_centroid() -> None:
    cols = ["orders_count", "aov", "discount_share"]
    assert describe(np.array([1.2, -0.9, 0.6]), cols) == "frequent, low basket, discount-driven"
    assert describe(np.array([0.1, 0.0, -0.2]), cols) == "average"


def test_sql_scoring_equals_the_fitted_models(shop: Workspace) -> None:
    """churn.risk, churn.top_features and cluster.* reach rules as SQL over the plan's trait
    columns; they equal the fitted models' own numpy scoring."""
    from crmseg.demo.scaffold import DEMO_AS_OF

    tables = shop._loaded_tables()
    fitter = shop._fitter
    names = ["churn.risk", "churn.top_features", "cluster.id", "cluster.label"]
    outputs = shop._plan(tables).wide(tables, DEMO_AS_OF, select=["orders_count"], extra={
        n: _model_ref(n) for n in names
    })  # fmt: skip
    sql = shop.backend.execute(outputs).to_pandas().set_index("customer_id")
    buyers = sql[sql.orders_count > 0]
    assert sql.loc[sql.orders_count == 0, names].isna().all().all()  # buyers only
    # the same fits scored in Python on the same features
    want = fitter.frame("churn", tables, DEMO_AS_OF).loc[buyers.index]
    np.testing.assert_allclose(buyers["churn.risk"], want["churn.risk"], rtol=1e-9)
    same = (buyers["churn.top_features"] == want["churn.top_features"]).mean()
    assert same > 0.999, same  # a last-digit tie may order two equal terms differently
    got = fitter.frame("cluster", tables, DEMO_AS_OF).loc[buyers.index]
    assert (buyers["cluster.id"].astype(int) == got["cluster.id"]).all()
    assert (buyers["cluster.label"] == got["cluster.label"]).all()


def _model_ref(name: str) -> object:
    from crmseg.rules import ast as A

    return A.ModelRef(name)


def test_fits_follow_their_schedule(tmp_path: Path) -> None:
    """A second run within models.refit scores with the recorded fit; a later one refits;
    an earlier instant (a backfill) never uses a fit of later data."""
    from datetime import timedelta

    from crmseg.demo.scaffold import DEMO_AS_OF, init_project

    root = tmp_path / "shop"
    init_project(root, demo=True, customers=1500, seed=3)
    chosen = ["risk.churn_high_value", "value.clv_top_20pct"]

    def models(at: object) -> dict[str, dict[str, object]]:
        with Workspace.open(root) as ws:
            result = ws.run(as_of=at, select=chosen)
        return result.details["models"]

    first = models(DEMO_AS_OF)
    assert first["churn"]["fitted"] and first["clv"]["fitted"]
    again = models(DEMO_AS_OF + timedelta(days=3))
    assert not again["churn"]["fitted"] and not again["clv"]["fitted"]
    assert again["churn"]["fit"] == first["churn"]["fit"]
    later = models(DEMO_AS_OF + timedelta(days=8))  # models.refit defaults to 7d
    assert later["churn"]["fitted"] and later["churn"]["fit"] != first["churn"]["fit"]
    earlier = models(DEMO_AS_OF - timedelta(days=30))
    assert earlier["clv"]["fitted"] and earlier["clv"]["fitted_as_of"] < DEMO_AS_OF
    with Workspace.open(root) as ws:
        fits = ws._fitter.store.fits()
    assert len([f for f in fits if f["model"] == "churn"]) == 3


def test_explain_shows_the_clv_inputs(shop: Workspace) -> None:
    from crmseg.demo.scaffold import DEMO_AS_OF

    tables = shop._loaded_tables()
    frame = shop._fitter.frame("clv", tables, DEMO_AS_OF)
    buyer = str(frame.index[frame["clv.repeat_days"] > 0][0])
    e = shop.explain("value.clv_top_20pct", buyer, as_of=DEMO_AS_OF)
    shown = {s.text: s.value for s in e.steps}
    assert shown["clv.value_12m"] == pytest.approx(frame.loc[buyer, "clv.value_12m"])
    assert shown["clv.repeat_days"] == frame.loc[buyer, "clv.repeat_days"]
    assert shown["clv.age_days"] == frame.loc[buyer, "clv.age_days"]
