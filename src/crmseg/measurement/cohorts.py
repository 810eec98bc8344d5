"""Acquisition cohorts: customers by the month of their first order, the share of each cohort
that orders again in each later month (the retention matrix, month 0 = 100%), and revenue per
cohort member by month since acquisition (cumulative, so the curves compare cohorts' value)."""

from __future__ import annotations

from typing import Any

from crmseg.backends.state import DuckDBState
from crmseg.measurement.data import Facts

_SQL = """
WITH o AS (
    SELECT customer_id, date_trunc('month', ordered_at) AS month, amount FROM __m_orders
),
first AS (SELECT customer_id, min(month) AS cohort FROM o GROUP BY customer_id),
act AS (
    SELECT f.cohort, datediff('month', f.cohort, o.month) AS age, o.customer_id, o.amount
    FROM o JOIN first f USING (customer_id)
)
SELECT cohort, age, count(DISTINCT customer_id) AS active, sum(amount) AS revenue
FROM act GROUP BY cohort, age ORDER BY cohort, age
"""


def cohorts(facts: Facts, months: int = 12) -> dict[str, Any]:
    """The last ``months`` acquisition cohorts up to the data's end."""
    scratch = DuckDBState()  # an in-memory database of its own: nothing is stored
    try:
        with scratch.registered(__m_orders=facts.orders):
            rows = scratch.rows(_SQL)
    finally:
        scratch.close()
    by: dict[Any, dict[int, tuple[int, float]]] = {}
    for cohort, age, active, revenue in rows:
        by.setdefault(cohort, {})[int(age)] = (int(active), float(revenue or 0.0))
    chosen = sorted(by)[-months:]
    labels = [c.strftime("%Y-%m") for c in chosen]
    span = max((max(by[c]) for c in chosen), default=-1) + 1
    size = [by[c][0][0] for c in chosen]
    retention: list[list[float | None]] = []
    cumulative: list[list[float | None]] = []
    for c, n in zip(chosen, size, strict=True):
        # Months not reached yet by the data are None, not 0.
        reached = (facts.end.year - c.year) * 12 + facts.end.month - c.month
        ret, rev, total = [], [], 0.0
        for age in range(span):
            active, money = by[c].get(age, (0, 0.0))
            total += money
            ret.append(active / n if age <= reached else None)
            rev.append(total / n if age <= reached else None)
        retention.append(ret)
        cumulative.append(rev)
    return {
        "cohorts": labels,
        "size": size,
        "ages": list(range(span)),
        "retention": retention,
        "cumulative_revenue_per_customer": cumulative,
        "revenue": [sum(m for _, m in by[c].values()) for c in chosen],
    }
