"""Built-in traits on hand-checked fixtures: lifecycle stages, RFM ties, tiers, functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import ibis
import pytest

from crmseg.config import LifecycleConfig, RfmConfig
from crmseg.errors import RuleErrors
from crmseg.rules import Definition, Schema, build_plan
from crmseg.sources.loader import schema_from
from crmseg.traits import library
from crmseg.traits.builtin import builtin_traits

AS_OF = datetime(2024, 6, 1)


def _ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


# customer -> order ages in days (hand-picked so each lifecycle stage appears once)
ORDERS = {
    "lead": [],
    "new": [5],
    "active": [15],
    "repeat": [30, 12],
    "loyal": [40, 30, 20, 10],
    "at_risk": [25],
    "churned": [50],
    "reactivated": [100, 5],
}


def _tables() -> dict[str, ibis.Table]:
    con = ibis.duckdb.connect()
    customers = ibis.memtable(
        {"customer_id": list(ORDERS), "x": [3.0, 1.0, 1.0, 2.0, 5.0, 1.0, None, 4.0]}
    )
    rows = [
        (f"o{c}{i}", c, _ago(d), 10.0 * (i + 1), "hair" if i % 2 else "skincare")
        for c, ages in ORDERS.items()
        for i, d in enumerate(ages)
    ]
    orders = ibis.memtable(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "ordered_at": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "returned_amount": [0.0 for _ in rows],
            "category": [r[4] for r in rows],
        }
    )
    return {
        "customers": con.create_table("customers", customers),
        "orders": con.create_table("orders", orders),
    }


@pytest.fixture(scope="module")
def tables() -> dict[str, ibis.Table]:
    return _tables()


def _wide(
    tables: Mapping[str, ibis.Table],
    names: list[str],
    defs: list[Definition] | None = None,
    **config: Any,
) -> dict[str, dict[str, Any]]:
    traits = builtin_traits(
        LifecycleConfig(**config.get("lifecycle", {})), RfmConfig(**config.get("rfm", {}))
    )
    builtins = replace(library(), traits=tuple(traits))
    plan = build_plan(defs or [], Schema(schema_from(dict(tables))), builtins=builtins)
    rows = plan.wide(tables, AS_OF, select=names).to_pyarrow().to_pylist()
    return {r["customer_id"]: r for r in rows}


def test_lifecycle_stages_with_fixed_cycle(tables: dict[str, ibis.Table]) -> None:
    got = _wide(tables, ["lifecycle.stage"], lifecycle={"cycle_days": 10})
    assert {c: r["lifecycle.stage"] for c, r in got.items()} == {c: c for c in ORDERS}


def test_cycle_is_derived_from_the_median_gap(tables: dict[str, ibis.Table]) -> None:
    names = [
        "lifecycle.cycle_days",
        "lifecycle.new_days",
        "lifecycle.at_risk_days",
        "lifecycle.churned_days",
    ]
    got = _wide(tables, names)
    # median gaps of the repeat buyers: repeat 18, loyal 10, reactivated 95 -> 18
    assert {n: got["lead"][n] for n in names} == {
        "lifecycle.cycle_days": 18.0,
        "lifecycle.new_days": 18.0,
        "lifecycle.at_risk_days": 36.0,
        "lifecycle.churned_days": 72.0,
    }
    fixed = _wide(tables, names, lifecycle={"cycle_days": 10, "churned_days": 55})
    assert fixed["new"]["lifecycle.churned_days"] == 55
    assert fixed["new"]["lifecycle.at_risk_days"] == 20


def test_ntile_ties_share_the_lower_tile(tables: dict[str, ibis.Table]) -> None:
    defs = [
        Definition("q", "trait", text="ntile(x, 5)"),
        Definition("p", "trait", text="percent_rank(x)"),
        Definition("m", "trait", text="median_all(x)"),
    ]
    got = _wide(tables, ["q", "p", "m"], defs)
    # x: 1, 1, 1, 2, 3, 4, 5 and one null; r = customers with a smaller x, c = 7
    assert {c: r["q"] for c, r in got.items()} == {
        "new": 1, "active": 1, "at_risk": 1,  # r = 0
        "repeat": 3,  # 1 + floor(5 * 3 / 7)
        "lead": 3,  # r = 4: 1 + floor(20 / 7)
        "reactivated": 4,  # r = 5
        "loyal": 5,  # r = 6: 1 + floor(30 / 7)
        "churned": None,
    }  # fmt: skip
    assert got["loyal"]["p"] == pytest.approx(6 / 7)
    assert got["new"]["p"] == 0.0 and got["churned"]["p"] is None
    assert all(r["m"] == 2.0 for r in got.values())


def test_rfm_scores_and_segments(tables: dict[str, ibis.Table]) -> None:
    names = ["rfm.recency_score", "rfm.frequency_score", "rfm.fm_score", "rfm.segment"]
    got = _wide(tables, names)
    # last orders (days ago): churned 50, at_risk 25, active 15, repeat 12, loyal 10,
    # new and reactivated 5 (a tie)
    assert {c: r["rfm.recency_score"] for c, r in got.items()} == {
        "lead": None, "churned": 1, "at_risk": 1, "active": 2, "repeat": 3, "loyal": 3,
        "new": 4, "reactivated": 4,
    }  # fmt: skip
    assert got["lead"]["rfm.segment"] is None
    assert got["loyal"]["rfm.frequency_score"] == 5  # the only one with 4 orders
    # the same answer twice: nothing depends on row order
    assert got == _wide(tables, names)
    grid = RfmConfig().grid
    names_ok = {g.name for g in grid}
    assert {r["rfm.segment"] for c, r in got.items() if c != "lead"} <= names_ok
    custom = _wide(
        tables,
        ["rfm.segment"],
        rfm={"grid": [{"name": "Anyone", "recency": [1, 5], "frequency_monetary": [1, 5]}]},
    )
    assert {r["rfm.segment"] for c, r in custom.items() if c != "lead"} == {"Anyone"}


def test_standard_grid_names_every_cell() -> None:
    grid = RfmConfig().grid
    for r in range(1, 6):
        for fm in range(1, 6):
            assert any(
                g.recency[0] <= r <= g.recency[1]
                and g.frequency_monetary[0] <= fm <= g.frequency_monetary[1]
                for g in grid
            )
    assert len({g.name for g in grid}) == 11


def test_tiers_and_functions(tables: dict[str, ibis.Table]) -> None:
    defs = [
        Definition("skin_at", "trait", text="last_order_at_in('skincare')"),
        Definition("skin_share", "trait", text="category_share('skincare')"),
        Definition("skin_days", "trait", text="days_since_last_order_in('skincare')"),
    ]
    names = ["value.ltv_tier", "top_category", "median_order_gap_days", *(d.name for d in defs)]
    got = _wide(tables, names, defs)
    assert got["loyal"]["value.ltv_tier"] == "top 20%"  # 100 of ltv; r = 7 of 8 customers
    assert got["lead"]["value.ltv_tier"] == "rest"
    # loyal: skincare 10 + 30, hair 20 + 40 (orders alternate)
    assert got["loyal"]["skin_share"] == pytest.approx(40 / 100)
    assert got["loyal"]["skin_at"] == _ago(20)
    assert got["loyal"]["skin_days"] == 20
    assert got["loyal"]["top_category"] == "hair"  # 2 vs 2: ties go to the smallest
    assert got["loyal"]["median_order_gap_days"] == pytest.approx(10.0)


def test_function_errors_point_at_the_call(tables: dict[str, ibis.Table]) -> None:
    schema = Schema(schema_from(dict(tables)))
    with pytest.raises(RuleErrors, match="takes category"):
        build_plan(
            [Definition("s", "segment", text="category_share(1, 2) > 0")],
            schema,
            builtins=library(),
        )
    with pytest.raises(RuleErrors, match="cannot contain another"):
        build_plan(
            [Definition("s", "trait", text="ntile(ntile(x, 5), 5)")], schema, builtins=library()
        )


def test_plan_without_models_does_not_ask_for_them(tables: dict[str, ibis.Table]) -> None:
    calls: list[Any] = []
    plan = build_plan(
        [Definition("s", "segment", text="lifecycle.stage = 'loyal'")],
        Schema(schema_from(dict(tables))),
        builtins=library(),
        model_provider=lambda *a: calls.append(a) or {},
    )
    plan.wide(tables, AS_OF).to_pyarrow()
    assert calls == []


@pytest.mark.spark
def test_builtins_equal_on_spark(
    duck: tuple[Any, Mapping[str, ibis.Table]], spark: tuple[Any, Mapping[str, ibis.Table]]
) -> None:
    from tests.rules.conftest import AS_OF as RULES_AS_OF
    from tests.rules.conftest import schema

    plan = build_plan([], schema(), builtins=library())
    layers = ("lifecycle.", "rfm.", "value.ltv", "value.margin")
    extra = ("median_order_gap_days", "last_order_gap_days", "top_category")
    names = [n for n in plan.traits if n.startswith(layers) or n in extra]

    def rows(t: Mapping[str, ibis.Table]) -> list[dict[str, Any]]:
        w = plan.wide(t, RULES_AS_OF, select=names)
        return sorted(w.to_pyarrow().to_pylist(), key=lambda r: r["customer_id"])

    assert rows(spark[1]) == rows(duck[1])
