"""Retention windows on a small real project: rows past their window are invisible to runs,
previews and quality, purged from the warehouse and its snapshots, and purged again once a
day as the window moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crmseg.errors import ConfigError
from crmseg.sources import retention
from crmseg.workspace import Workspace
from tests.conftest import CUSTOMERS_CSV, MakeProject, run_cli

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
BERLIN = "Europe/Berlin"

CONFIG = """\
name: retained-shop
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.parquet}
  events: {path: data/events.csv}
privacy:
  retention: {orders: 1y, events: 90d}
"""

SEGMENTS = """\
segments:
  - name: value.buyers
    description: Customers with at least one order.
    owner: crm-team
    rule: count(orders) >= 1
  - name: engagement.visitors
    description: Customers with any event.
    owner: crm-team
    rule: count(events) >= 1
"""

# Cut-offs at NOW: orders 2025-12-03 00:00, events 2026-09-04 00:00 (midnight, UTC).
EVENTS = """\
customer_id,name,occurred_at
1,page_view,2026-09-03 23:59:59
2,page_view,2026-09-04 00:00:00
3,page_view,2026-11-30 10:00:00
"""


def _orders(root: Path) -> None:
    (root / "data").mkdir(exist_ok=True)
    table = pa.table(
        {
            "order_id": ["o-old", "o-edge", "o-june", "o-nov"],
            "customer_id": ["2", "1", "3", "4"],
            "ordered_at": pa.array(
                [
                    datetime(2025, 12, 2, 23, 0),
                    datetime(2025, 12, 3, 0, 0),
                    datetime(2026, 6, 1, 12, 0),
                    datetime(2026, 11, 1, 12, 0),
                ],
                pa.timestamp("us"),
            ),
            "amount": [10.0, 20.0, 30.0, 40.0],
        }
    )
    pq.write_table(table, root / "data" / "orders.parquet")


@pytest.fixture
def shop(make_project: MakeProject, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(retention, "clock", lambda: NOW)
    root = make_project(
        "retained",
        **{
            "crmseg.yml": CONFIG,
            "data/customers.csv": CUSTOMERS_CSV,
            "data/orders.csv": None,
            "data/events.csv": EVENTS,
            "segments/core.yml": SEGMENTS,
        },
    )
    _orders(root)
    return root


def _traces(root: Path, value: str) -> list[str]:
    """Where ``value`` is still held: any column of any table or view of the warehouse (as
    text), and the bytes of every other file under .crmseg (snapshots, step files, state's
    files). DuckDB files compress their strings, so they are read through SQL."""
    hits = []
    con = duckdb.connect(str(root / ".crmseg" / "warehouse.duckdb"), read_only=True)
    try:
        for schema, table, column in con.sql(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database()"
        ).fetchall():
            n = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" '
                f'WHERE contains(CAST("{column}" AS VARCHAR), ?)',
                [value],
            ).fetchone()
            if n and n[0]:
                hits.append(f"{schema}.{table}.{column}")
    finally:
        con.close()
    for path in (root / ".crmseg").rglob("*"):
        if path.suffix in (".duckdb", ".wal") or not path.is_file():
            continue
        if value.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_rows_past_the_window_are_invisible_and_purged(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        result = ws.run(as_of=NOW.replace(tzinfo=None))
        assert result.sources["orders"] == 3 and result.sources["events"] == 2
        orders = ws.backend.execute(ws.backend.canonical("orders")).to_pylist()
        assert sorted(r["order_id"] for r in orders) == ["o-edge", "o-june", "o-nov"]
        assert set(ws.members("value.buyers")) == {"1", "3", "4"}
        assert set(ws.members("engagement.visitors")) == {"2", "3"}
        findings = {(f.check, f.table, f.column): f for f in ws.quality(NOW).findings}
        assert findings[("missing_values", "orders", "order_id")].total == 3
    # the Parquet source is copied in without the row; no snapshot keeps it
    assert _traces(shop, "o-old") == []


def test_a_new_day_purges_again_and_the_same_day_reloads_nothing(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Workspace.open(shop) as ws:
        ws.run(as_of=NOW.replace(tzinfo=None))
    later = NOW + timedelta(hours=5)  # 20:00, the same day
    monkeypatch.setattr(retention, "clock", lambda: later)
    with Workspace.open(shop) as ws:
        again = ws.run(as_of=later.replace(tzinfo=None))
        assert again.details["sources"]["orders"] == "unchanged"
        assert again.details["sources"]["events"] == "unchanged"
    # 200 days on: o-edge (2025-12-03) and o-june (2026-06-01) are past a year
    moved = NOW + timedelta(days=200)
    monkeypatch.setattr(retention, "clock", lambda: moved)
    with Workspace.open(shop) as ws:
        # before any run of the new day, previews already leave them out
        assert ws.preview("value.buyers", as_of=moved.replace(tzinfo=None)).size == 1
        run = ws.run(as_of=moved.replace(tzinfo=None))
        assert run.details["sources"]["orders"] == "loaded"
        assert run.sources["orders"] == 1 and run.sources["events"] == 0
        assert set(ws.members("value.buyers")) == {"4"}
    assert _traces(shop, "o-june") == []


def test_a_window_that_is_not_a_duration_is_a_located_error(make_project: MakeProject) -> None:
    bad = CONFIG.replace("{orders: 1y, events: 90d}", "{orders: two years}")
    root = make_project("bad", **{"crmseg.yml": bad})
    with pytest.raises(ConfigError) as err:
        Workspace.open(root)
    text = str(err.value)
    assert "crmseg.yml:8:23 [privacy.retention.orders]" in text
    assert "expected a duration like 90d, 12w, 18mo or 2y, got 'two years'" in text


def test_customers_have_no_window(make_project: MakeProject) -> None:
    bad = CONFIG.replace("{orders: 1y, events: 90d}", "{customers: 1y}")
    where = r"crmseg.yml:8:15 \[privacy.retention.customers\]: retention applies to orders"
    with pytest.raises(ConfigError, match=where):
        Workspace.open(make_project("bad", **{"crmseg.yml": bad}))


@pytest.mark.parametrize(
    ("window", "timezone", "now", "expected"),
    [
        ("1mo", "UTC", datetime(2024, 3, 31, 12, tzinfo=UTC), datetime(2024, 2, 29)),
        ("1y", "UTC", datetime(2025, 2, 28, 9, tzinfo=UTC), datetime(2024, 2, 28)),
        ("2y", "UTC", datetime(2026, 2, 28, 9, tzinfo=UTC), datetime(2024, 2, 28)),
        ("18mo", "UTC", datetime(2026, 12, 3, tzinfo=UTC), datetime(2025, 6, 3)),
        ("2w", "UTC", datetime(2026, 12, 3, 23, 59, tzinfo=UTC), datetime(2026, 11, 19)),
        # midnight in Berlin (winter, UTC+1) is 23:00 UTC the day before
        ("90d", BERLIN, datetime(2026, 12, 3, 15, tzinfo=UTC), datetime(2026, 9, 3, 22)),
        # 23:30 UTC on 12-03 is already 12-04 in Berlin
        ("1d", BERLIN, datetime(2026, 12, 3, 23, 30, tzinfo=UTC), datetime(2026, 12, 2, 23)),
    ],
)
def test_cutoff_is_local_midnight_minus_calendar_window(
    window: str, timezone: str, now: datetime, expected: datetime
) -> None:
    assert retention.cutoff(window, timezone, now) == expected


@pytest.mark.parametrize("text", ["", "2", "y", "0d", "1.5y", "2 years", "-1d", "3h"])
def test_parse_window_refuses_what_is_not_a_window(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        retention.parse_window(text)


def test_the_cli_run_says_what_it_purged(make_project: MakeProject) -> None:
    # the real clock: one order far past the window, one well inside it
    today = datetime.now(UTC).replace(tzinfo=None)
    orders = "order_id,customer_id,ordered_at,amount\n"
    orders += f"o1,1,{today - timedelta(days=800):%Y-%m-%d %H:%M:%S},10\n"
    orders += f"o2,2,{today - timedelta(days=30):%Y-%m-%d %H:%M:%S},20\n"
    config = CONFIG.replace("orders.parquet", "orders.csv").replace(", events: 90d", "")
    config = config.replace("  events: {path: data/events.csv}\n", "")
    root = make_project(
        "cli",
        **{
            "crmseg.yml": config,
            "data/customers.csv": CUSTOMERS_CSV,
            "data/orders.csv": orders,
            "segments/core.yml": SEGMENTS.split("  - name: engagement")[0],
        },
    )
    out = run_cli("run", "--project", str(root))
    assert out.returncode == 0, out.stderr
    assert "purged past retention: orders 1" in out.stdout
    members = run_cli("members", "value.buyers", "--project", str(root), "-f", "csv")
    assert members.stdout.split() == ["customer_id", "2"]
