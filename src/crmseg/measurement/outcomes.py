"""Outcomes by segment over time: for every run and segment, what its members did in the
``window`` days after the run.

Conversion = share of members with an order in (as_of, as_of + window]; revenue per member,
AOV (revenue / orders); repeat rate = of members who had ordered before the run, the share who
ordered again in the window; churn = of members with an active subscription at the run, the
share whose subscription was canceled in the window; unsubscribe and complaint rates = share of
members with such a message in the window; messages per member = messages sent in the window.

A window that reaches past the data's end (the latest run) is marked incomplete: its rates are
what happened so far, not final.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from crmseg.measurement.data import Facts
from crmseg.measurement.store import OUTCOME_COLUMNS, read_rows, replace_rows
from crmseg.segments.store import History

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

_SQL = """
WITH r AS (SELECT run_id, as_of FROM runs WHERE run_id IN (SELECT run_id FROM __m_runs)),
mem AS (
    SELECT r.run_id, r.as_of, m.segment, m.customer_id,
           least(r.as_of + $w * INTERVAL 1 DAY, $end) AS until
    FROM r
    JOIN run_segments s ON s.run_id = r.run_id
    JOIN memberships m ON m.segment = s.segment AND m.entered_at <= r.as_of
        AND (m.exited_at IS NULL OR m.exited_at > r.as_of)
    WHERE s.segment IN (SELECT segment FROM __m_segments)
),
o AS (
    SELECT mem.run_id, mem.segment, mem.customer_id,
           count(o.customer_id) FILTER (WHERE o.ordered_at > mem.as_of) AS n,
           coalesce(sum(o.amount) FILTER (WHERE o.ordered_at > mem.as_of), 0) AS rev,
           count(o.customer_id) FILTER (WHERE o.ordered_at <= mem.as_of) > 0 AS prior
    FROM mem LEFT JOIN __m_orders o
        ON o.customer_id = mem.customer_id AND o.ordered_at <= mem.until
    GROUP BY ALL
),
msg AS (
    SELECT mem.run_id, mem.segment, mem.customer_id,
           count(*) FILTER (WHERE g.kind = 'sent') AS sent,
           count(*) FILTER (WHERE g.kind = 'unsubscribe') > 0 AS unsub,
           count(*) FILTER (WHERE g.kind = 'complaint') > 0 AS complaint
    FROM mem JOIN __m_messages g ON g.customer_id = mem.customer_id
        AND g.occurred_at > mem.as_of AND g.occurred_at <= mem.until
    GROUP BY ALL
),
sub AS (
    SELECT mem.run_id, mem.segment, mem.customer_id,
           bool_or(s.canceled_at > mem.as_of AND s.canceled_at <= mem.until) AS churned
    FROM mem JOIN __m_subscriptions s ON s.customer_id = mem.customer_id
        AND s.started_at <= mem.as_of AND (s.canceled_at IS NULL OR s.canceled_at > mem.as_of)
    GROUP BY ALL
)
SELECT mem.run_id, mem.segment, any_value(mem.as_of) AS as_of,
       count(*) AS members,
       count(*) FILTER (WHERE o.n > 0) AS converters,
       coalesce(sum(o.n), 0) AS orders,
       coalesce(sum(o.rev), 0) AS revenue,
       count(*) FILTER (WHERE o.prior) AS prior_buyers,
       count(*) FILTER (WHERE o.prior AND o.n > 0) AS repeaters,
       count(sub.customer_id) AS subscribers,
       count(*) FILTER (WHERE sub.churned) AS churned,
       count(*) FILTER (WHERE msg.unsub) AS unsubscribed,
       count(*) FILTER (WHERE msg.complaint) AS complained,
       coalesce(sum(msg.sent), 0) AS messages,
       any_value(mem.until) AS observed_until
FROM mem
LEFT JOIN o USING (run_id, segment, customer_id)
LEFT JOIN msg USING (run_id, segment, customer_id)
LEFT JOIN sub USING (run_id, segment, customer_id)
GROUP BY mem.run_id, mem.segment
"""


def compute_outcomes(
    state: StateStore,
    facts: Facts,
    segments: Sequence[str],
    window_days: int = 30,
    run_ids: Sequence[int] | None = None,
    computed_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Outcomes of every (run, segment); stored in ``measure_outcomes`` and returned."""
    import pyarrow as pa

    ids = list(run_ids) if run_ids is not None else [r.run_id for r in History(state).runs()]
    if not ids or not segments:
        return []
    with state.registered(
        __m_runs=pa.table({"run_id": pa.array(ids, pa.int32())}),
        __m_segments=pa.table({"segment": pa.array(list(segments), pa.string())}),
        __m_orders=facts.orders,
        __m_messages=facts.messages,
        __m_subscriptions=facts.subscriptions,
    ):
        found = state.dicts(_SQL, {"w": window_days, "end": facts.end})
    now = computed_at or datetime.now()
    rows = []
    for row in found:
        row["window_days"] = window_days
        row["complete"] = row["as_of"] + timedelta(days=window_days) <= facts.end
        row["computed_at"] = now
        for key in OUTCOME_COLUMNS:
            if key not in ("as_of", "segment", "observed_until", "computed_at", "complete"):
                row[key] = float(row[key]) if key == "revenue" else int(row[key])
        rows.append(row)
    replace_rows(
        state, "measure_outcomes", OUTCOME_COLUMNS, ("run_id", "segment", "window_days"), rows
    )
    return [with_rates(r) for r in sorted(rows, key=lambda r: (r["segment"], r["as_of"]))]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def with_rates(row: dict[str, Any]) -> dict[str, Any]:
    """A stored outcome row plus its rates (None where the denominator is zero)."""
    m = row["members"]
    return {
        **row,
        "conversion_rate": _ratio(row["converters"], m),
        "revenue_per_member": _ratio(row["revenue"], m),
        "aov": _ratio(row["revenue"], row["orders"]),
        "repeat_rate": _ratio(row["repeaters"], row["prior_buyers"]),
        "churn_rate": _ratio(row["churned"], row["subscribers"]),
        "unsubscribe_rate": _ratio(row["unsubscribed"], m),
        "complaint_rate": _ratio(row["complained"], m),
        "messages_per_member": _ratio(row["messages"], m),
    }


def stored_outcomes(state: StateStore, window_days: int | None = None) -> list[dict[str, Any]]:
    rows = read_rows(state, "measure_outcomes", OUTCOME_COLUMNS)
    return [with_rates(r) for r in rows if window_days is None or r["window_days"] == window_days]
