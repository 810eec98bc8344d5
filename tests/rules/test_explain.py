from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ibis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg.rules import Definition, build_plan
from crmseg.traits import library
from tests.rules.conftest import AS_OF, schema


def test_explain_lists_sub_conditions_with_values(
    duck: tuple[Any, Mapping[str, ibis.Table]],
) -> None:
    rule = "orders_count >= 3 and (ltv >= 500 or country = 'DE')"
    plan = build_plan([Definition("s", "segment", text=rule)], schema(), builtins=library())
    e = plan.explain("s", duck[1], AS_OF, "c1")
    assert e.verdict is True and e.exists
    steps = {s.text: s.value for s in e.steps}
    assert steps["orders_count >= 3"] is True
    assert steps["orders_count"] == 3
    assert steps["ltv >= 500"] is False
    assert steps["ltv"] == 170.0
    assert steps["country = 'DE'"] is True
    assert steps["country"] == "DE"
    assert steps[rule] is True
    assert "customers with at least 3 orders" in e.lines()[0]


def test_explain_shows_unknown_for_nulls_and_missing_customers(
    duck: tuple[Any, Mapping[str, ibis.Table]],
) -> None:
    defs = [Definition("s", "segment", text="avg(orders.amount) > 50")]
    plan = build_plan(defs, schema(), builtins=library())
    e = plan.explain("s", duck[1], AS_OF, "c6")
    assert e.verdict is False
    assert [s.value for s in e.steps] == [None, None]  # unknown, not false
    gone = plan.explain("s", duck[1], AS_OF, "c3")  # signs up after as_of
    assert not gone.exists and gone.verdict is False
    assert any("no such customer" in line for line in gone.lines())


_atoms = st.sampled_from(
    [
        "country = 'DE'",
        "plan != 'pro'",
        "avg(orders.amount) > 40",
        "company_size >= 10",
        "last(orders.category) = 'hair'",
        "city like 'B%'",
        "consent.email",
        "days_since(signup_at) > 100",
        "sum(orders.amount) between 0 and 100",
        "country in ('AT', null)",
    ]
)
_rules = st.recursive(
    _atoms,
    lambda r: st.one_of(
        st.tuples(r, r).map(lambda t: f"({t[0]}) and ({t[1]})"),
        st.tuples(r, r).map(lambda t: f"({t[0]}) or ({t[1]})"),
        r.map(lambda x: f"not ({x})"),
    ),
    max_leaves=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_rules)
def test_rule_and_its_negation_are_never_both_true(
    duck: tuple[Any, Mapping[str, ibis.Table]], rule: str
) -> None:
    defs = [Definition("r", "segment", text=rule), Definition("n", "segment", text=f"not ({rule})")]
    rows = build_plan(defs, schema()).wide(duck[1], AS_OF).to_pyarrow()
    for r in rows.to_pylist():
        assert not (r["r"] and r["n"]), (rule, r)


def test_explain_shows_what_built_in_traits_are_made_of(
    duck: tuple[Any, Mapping[str, ibis.Table]],
) -> None:
    defs = [
        Definition("stage", "segment", text="lifecycle.stage = 'churned'"),
        Definition("rfm", "segment", text="rfm.segment = 'Champions'"),
        Definition("check", "segment", text="days_since(last_order_at) > 0 and orders_count > 0"),
    ]
    plan = build_plan(defs, schema(), builtins=library())
    e = plan.explain("stage", duck[1], AS_OF, "c1")
    shown = {s.text: (s.value, s.depth) for s in e.steps}
    # the stage, then the facts its definition reads, once each, one level deeper
    for fact in ("orders_count", "days_since(last_order_at)", "lifecycle.churned_days",
                 "lifecycle.at_risk_days", "lifecycle.new_days"):  # fmt: skip
        assert shown[fact][1] == shown["lifecycle.stage"][1] + 1, fact
    assert shown["lifecycle.cycle_days"][1] == shown["lifecycle.stage"][1] + 2
    assert [s.text for s in e.steps].count("lifecycle.cycle_days") == 1
    # the values are the ones the same expressions have in a rule of their own
    own = {s.text: s.value for s in plan.explain("check", duck[1], AS_OF, "c1").steps}
    assert shown["days_since(last_order_at)"][0] == own["days_since(last_order_at)"]
    assert shown["orders_count"][0] == own["orders_count"]
    rfm = [s.text for s in plan.explain("rfm", duck[1], AS_OF, "c1").steps]
    assert rfm[:2] == ["rfm.segment = 'Champions'", "rfm.segment"]
    for score in ("rfm.recency_score", "rfm.fm_score", "rfm.frequency_score",
                  "rfm.monetary_score"):  # fmt: skip
        assert score in rfm
