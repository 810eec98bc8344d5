from __future__ import annotations

import pytest

from crmseg.rules import Definition, build_plan
from crmseg.traits import library
from tests.rules.conftest import schema
from tests.rules.test_compile import RULES


@pytest.mark.parametrize(
    ("rule", "english"),
    [
        (
            "orders_count >= 3 and ltv >= 500",
            "customers with at least 3 orders and with a lifetime value of at least 500",
        ),
        ("country in ('DE', 'AT') and plan = 'pro'", "customers in DE or AT on the pro plan"),
        (
            "count(orders where category = 'skincare' within 60d) >= 1",
            "customers who bought skincare at least once in the last 60 days",
        ),
        (
            "did('added_to_cart') then not did('order_completed') within 1h",
            "customers who did 'added_to_cart' and then did not do 'order_completed' within 1 hour",
        ),
        (
            "days_since(last(orders.ordered_at where category = 'skincare')) between 45 and 60",
            "customers whose latest skincare order was between 45 and 60 days ago",
        ),
        (
            "did('project_created' within 8w) and not did('teammate_invited')",
            "customers who did 'project_created' in the last 8 weeks and who did not do "
            "'teammate_invited'",
        ),
        ("orders_count = 0", "customers with no orders"),
        ("not consent.email", "customers without email consent"),
        (
            "days_since(last_order_at) > 30",
            "customers whose latest order was more than 30 days ago",
        ),
        ("avg(orders.amount) > 50", "customers whose average order amount is more than 50"),
        ("city is null or country = 'DE'", "customers whose city is missing or in DE"),
        (
            "(country = 'DE' or country = 'AT') and in_segment('vip')",
            "customers (in DE or in AT) and who are in segment 'vip'",
        ),
        ("signup_at >= date('2024-01-01')", "customers whose signup was on or after 2024-01-01"),
        (
            "count(events where name = 'login' within 30d) < 2",
            "customers with fewer than 2 events where name is 'login' in the last 30 days",
        ),
    ],
)
def test_sentences(rule: str, english: str) -> None:
    defs = [Definition("s", "segment", text=rule), Definition("vip", "segment", text="true")]
    assert build_plan(defs, schema(), builtins=library()).english("s") == english


def test_every_rule_renders() -> None:
    defs = [Definition(n, "segment", text=r) for n, r, _ in RULES]
    defs += [Definition("big_spender", "trait", text="ltv >= 100"),
             Definition("double_ltv", "trait", text="ltv * 2"),
             Definition("wien", "segment", sql="select 1")]  # fmt: skip
    plan = build_plan(defs, schema(), builtins=library())
    for name in plan.segments:
        text = plan.english(name)
        assert text.startswith("customers ") and len(text) > 12
        assert "__" not in text and "Agg(" not in text


def test_trait_english() -> None:
    plan = build_plan([], schema(), builtins=library())
    assert plan.english("ltv") == "the total order amount minus the total order returned amount"
    assert plan.english("orders_count") == "the number of orders"
