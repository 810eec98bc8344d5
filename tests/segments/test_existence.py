"""When a customer exists: from ``signup_at``, or without one from their first activity."""

from __future__ import annotations

from datetime import datetime

import pytest

from crmseg.config import Every
from crmseg.workspace import Workspace

from ..conftest import MakeProject

CONFIG = """\
name: t
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv}
  events: {path: data/events.csv}
"""

ORDERS = """\
order_id,customer_id,ordered_at,amount
o1,1,2024-05-01 12:00:00,10
o2,2,2024-05-15 12:00:00,20
o3,3,2024-08-01 12:00:00,30
"""

EVENTS = "customer_id,name,occurred_at\n3,page_view,2024-06-10 09:00:00\n"

SEGMENTS = """\
segments:
  - name: everyone
    description: Every customer that exists.
    owner: crm
    rule: count(orders) >= 0
  - name: fewest.orders
    description: The half with the fewest orders.
    owner: crm
    rule: percent_rank(count(orders)) < 0.5
"""


def _project(make_project: MakeProject, customers: str) -> Workspace:
    root = make_project(
        crmseg_yml=CONFIG,
        data__customers_csv=customers,
        data__orders_csv=ORDERS,
        data__events_csv=EVENTS,
        segments__core_yml=SEGMENTS,
    )
    return Workspace.open(root)


@pytest.mark.parametrize(
    "customers",
    [
        # 1 signed up; 2 and 3 have no signup date; 5 has none and no activity at all
        "customer_id,signup_at\n1,2024-01-01\n2,\n3,\n5,\n",
        "customer_id,country\n1,DE\n2,DE\n3,FR\n5,FR\n",  # no signup_at column at all
    ],
    ids=["blank_dates", "no_column"],
)
def test_undated_customers_exist_from_their_first_activity(
    make_project: MakeProject, customers: str
) -> None:
    has_dates = "signup_at" in customers
    with _project(make_project, customers) as ws:
        runs = ws.backfill(datetime(2024, 4, 1), datetime(2024, 8, 1), Every(1, "mo"))
        sizes = [r.sizes["everyone"] for r in runs]
        # 04-01: 1 (signed up) and 5 (nothing dates them); 05-01 12:00 is after 05-01 00:00
        first = ["1", "5"] if has_dates else ["5"]
        assert ws.members("everyone", datetime(2024, 4, 1)) == first
        assert ws.members("everyone", datetime(2024, 6, 1)) == ["1", "2", "5"]
        assert ws.members("everyone", datetime(2024, 7, 1)) == ["1", "2", "3", "5"]  # an event
        assert sizes == ([2, 2, 3, 4, 4] if has_dates else [1, 1, 3, 4, 4])
        # population functions rank only who exists: at 06-01 1 and 2 have 1 of 3 below them;
        # counting 3 (no activity yet) would make it 2 of 4, and the half {3, 5}
        assert ws.members("fewest.orders", datetime(2024, 6, 1)) == ["1", "2", "5"]
        # the step report names the scans that date customers
        assert "orders.first" in runs[-1].details["steps"]


def test_dated_customers_need_no_activity_scan(make_project: MakeProject) -> None:
    with _project(make_project, "customer_id,signup_at\n1,2024-01-01\n2,2024-06-01\n") as ws:
        run = ws.run(as_of=datetime(2024, 5, 1))
        assert ws.members("everyone") == ["1"]  # 2 signs up later: the orders do not count
        assert not any(name.endswith(".first") for name in run.details["steps"])


def test_blanked_dates_are_seen_by_the_next_run_in_the_same_process(
    make_project: MakeProject,
) -> None:
    with _project(make_project, "customer_id,signup_at\n1,2024-01-01\n2,2024-01-01\n") as ws:
        ws.run(as_of=datetime(2024, 4, 1))
        assert ws.members("everyone") == ["1", "2"]
        (ws.root / "data" / "customers.csv").write_text("customer_id,signup_at\n1,2024-01-01\n2,\n")
        run = ws.run(as_of=datetime(2024, 4, 2))  # 2 has no date now, no activity before 05-15
        assert ws.members("everyone") == ["1"]
        assert run.details["steps"]["orders.first"]["how"] == "computed"
        # the next run over the same data keeps the dating scans
        again = ws.run(as_of=datetime(2024, 4, 3))
        assert again.details["steps"]["orders.first"]["how"] == "updated"
        assert again.details["steps"]["orders.first"]["touched"] == 0
