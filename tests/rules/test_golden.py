"""Golden SQL: rule text -> the SQL each dialect gets.

Regenerate after an intended change with:
    CRMSEG_UPDATE_GOLDEN=1 .venv/bin/pytest tests/rules/test_golden.py
and review the diff of tests/fixtures/rules/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crmseg.rules import Definition, build_plan
from crmseg.traits import library
from tests.rules.conftest import AS_OF, schema, unbound_tables

FIXTURES = Path(__file__).parents[1] / "fixtures" / "rules"
CASES = {
    "attributes": "country in ('DE', 'AT') and plan = 'pro'",
    "traits": "orders_count >= 3 and ltv >= 500",
    "where_within": "count(orders where category = 'skincare' within 60d) >= 1",
    "days_since_last": "days_since(last(orders.ordered_at where category = 'skincare')) "
    "between 45 and 60",
    "did": "did('project_created') and not did('teammate_invited')",
    "ratio": "count(events where name = 'login' within 30d) "
    "< count(events where name = 'login' within 60d) / 4",
    "sequence": "did('added_to_cart') then not did('order_completed') within 1h",
    "consent_segment": "consent.email and not in_segment('attributes')",
    "first_value": "first(orders.category) = 'skincare' and count_distinct(orders.category) >= 2",
}


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "pyspark"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_sql(case: str, dialect: str) -> None:
    if dialect == "pyspark":
        pytest.importorskip("pyspark")
    defs = [Definition(n, "segment", text=t) for n, t in CASES.items()]
    plan = build_plan(defs, schema(), builtins=library())
    sql = plan.sql(case, unbound_tables(), AS_OF, dialect).strip() + "\n"
    path = FIXTURES / f"{case}.{dialect}.sql"
    if os.environ.get("CRMSEG_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    assert path.exists(), f"missing {path}; run with CRMSEG_UPDATE_GOLDEN=1"
    assert sql == path.read_text()
