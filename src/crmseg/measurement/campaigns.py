"""Campaign incrementality from activation's send log: treatment vs holdout.

Every send-log row is one unit (customer, send): it converted when the customer ordered in
(sent_at, sent_at + window], and its revenue is what they spent there (zero otherwise). A
campaign's sends are pooled. The window is cut at the data's end; a campaign whose last window
is not over yet is marked incomplete.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from crmseg.measurement.data import Facts
from crmseg.measurement.lift import Lift, conversion_lift, mean_lift
from crmseg.measurement.store import LIFT_COLUMNS, read_rows, replace_rows

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

_SQL = """
SELECT s.campaign, s.arm, s.sent_at,
       count(o.customer_id) > 0 AS converted,
       coalesce(sum(o.amount), 0.0) AS revenue
FROM __m_sends s
LEFT JOIN __m_orders o ON o.customer_id = s.customer_key
    AND o.ordered_at > s.sent_at AND o.ordered_at <= least(s.sent_at + $w * INTERVAL 1 DAY, $end)
WHERE s.arm IN ('treatment', 'holdout')
GROUP BY s.campaign, s.arm, s.sent_at, s.customer_key, s.rowid_
"""


def measure_campaigns(
    state: StateStore,
    facts: Facts,
    send_log: pa.Table,
    window_days: int = 14,
    campaigns: Sequence[str] | None = None,
    computed_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Conversion and revenue-per-member lift of every campaign with a holdout."""
    log = send_log.append_column("rowid_", pa.array(np.arange(send_log.num_rows)))
    with state.registered(__m_sends=log, __m_orders=facts.orders):
        units = state.arrow(_SQL, {"w": window_days, "end": facts.end}).to_pandas()
    now = computed_at or datetime.now()
    rows: list[dict[str, Any]] = []
    for name, g in units.groupby("campaign", sort=True):
        if campaigns is not None and name not in campaigns:
            continue
        t, h = g[g.arm == "treatment"], g[g.arm == "holdout"]
        if len(t) == 0 or len(h) == 0:
            continue
        first, last = g.sent_at.min().to_pydatetime(), g.sent_at.max().to_pydatetime()
        base = {
            "campaign": name,
            "window_days": window_days,
            "sends": int(g.sent_at.nunique()),
            "first_sent": first,
            "last_sent": last,
            "complete": last + timedelta(days=window_days) <= facts.end,
            "computed_at": now,
        }
        lifts: list[Lift] = [
            conversion_lift(int(t.converted.sum()), len(t), int(h.converted.sum()), len(h)),
            mean_lift("revenue_per_member", t.revenue.to_numpy(), h.revenue.to_numpy()),
        ]
        rows.extend({**base, **lift.as_dict()} for lift in lifts)
    replace_rows(state, "measure_lift", LIFT_COLUMNS, ("campaign", "window_days", "metric"), rows)
    return rows


def stored_lift(state: StateStore) -> list[dict[str, Any]]:
    return read_rows(state, "measure_lift", LIFT_COLUMNS)
