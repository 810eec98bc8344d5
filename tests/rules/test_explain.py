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
