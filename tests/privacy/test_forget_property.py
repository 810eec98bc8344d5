"""Forgetting people is the same as never having had them: on generated shops (numeric or
prefixed ids, people with two records merged by a shared email), after forgetting a random
set of customers the next run's memberships equal those of a shop loaded without those
people's records, and none of their values is left in either database."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg import Workspace
from tests.privacy.test_forget import _traces

AT = datetime(2024, 9, 1)
CONFIG = """\
name: prop
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv}
"""
SEGMENTS = """\
segments:
  - {name: demographic.dach, description: DACH., owner: t, rule: "country in ('DE', 'AT')"}
  - {name: value.buyers, description: Buyers., owner: t, rule: "count(orders) >= 1"}
  - {name: value.big, description: Big spenders., owner: t, rule: "sum(orders.amount) > 100"}
"""


@st.composite
def shops(draw: st.DrawFn) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, float]]]:
    n = draw(st.integers(3, 9))
    numeric = draw(st.booleans())
    ids = [str(i + 1) if numeric else f"C{i + 1:04d}" for i in range(n)]
    twins = draw(st.sets(st.integers(1, n - 1), max_size=2))  # record i shares i-1's email
    customers = []
    for i, cid in enumerate(ids):
        owner = i - 1 if i in twins and i - 1 not in twins else i
        country = draw(st.sampled_from(["DE", "AT", "FR"]))
        customers.append((cid, f"p{owner}@example.com", country))
    orders = []
    for k in range(draw(st.integers(0, 2 * n))):
        orders.append((str(k + 1), draw(st.sampled_from(ids)), float(draw(st.integers(1, 90)))))
    return customers, orders


def _write(
    root: Path, customers: list[tuple[str, str, str]], orders: list[tuple[str, str, float]]
) -> None:
    (root / "data").mkdir(parents=True)
    (root / "segments").mkdir()
    (root / "crmseg.yml").write_text(CONFIG)
    (root / "segments" / "core.yml").write_text(textwrap.dedent(SEGMENTS))
    (root / "data" / "customers.csv").write_text(
        "customer_id,email,country,signup_at\n"
        + "".join(f"{c},{e},{k},2024-01-01 00:00:00\n" for c, e, k in customers)
    )
    (root / "data" / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount\n"
        + "".join(f"{o},{c},2024-06-01 00:00:00,{a}\n" for o, c, a in orders)
    )


def _members(root: Path) -> dict[str, set[str]]:
    with Workspace.open(root) as ws:
        return {s.name: set(ws.members(s.name)) for s in ws.segments}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(shop=shops(), data=st.data())
def test_forget_equals_never_having_had_them(
    shop: tuple[list[tuple[str, str, str]], list[tuple[str, str, float]]],
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    customers, orders = shop
    ids = [c for c, _, _ in customers]
    asked = data.draw(st.sets(st.sampled_from(ids), min_size=1, max_size=len(ids) - 1))
    # a person is every record sharing an email; forgetting one record forgets them all
    emails = {e for c, e, _ in customers if c in asked}
    gone = {c for c, e, _ in customers if e in emails}
    base = tmp_path_factory.mktemp("prop")
    full, without = base / "full", base / "without"
    _write(full, customers, orders)
    _write(without, [c for c in customers if c[0] not in gone],
           [o for o in orders if o[1] not in gone])  # fmt: skip
    with Workspace.open(full) as ws:
        ws.run(as_of=AT)
        done = ws.forget(sorted(asked))
        ws.run(as_of=AT.replace(day=2))
    with Workspace.open(without) as ws:
        ws.run(as_of=AT.replace(day=2))
    assert done.records == len(gone)
    got, expected = _members(full), _members(without)
    # a merged person is shown under their smallest record id in both shops
    assert got == expected
    assert _traces(full, sorted(emails)) == []
    assert _id_traces(full, sorted(gone)) == []


def _id_traces(root: Path, ids: list[str]) -> list[str]:
    """Customer-id columns of both databases that still hold one of ``ids`` (short numeric
    ids cannot be looked for as text: ``1`` is in every count)."""
    import duckdb

    found = []
    for db in ("warehouse", "state"):
        with duckdb.connect(str(root / ".crmseg" / f"{db}.duckdb"), read_only=True) as con:
            for schema, table, column in con.sql(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                "WHERE column_name IN ('customer_id', 'customer_key') "
                "AND table_catalog = current_database()"
            ).fetchall():
                n = con.sql(
                    f'SELECT count(*) FROM "{schema}"."{table}" WHERE CAST("{column}" AS VARCHAR) '
                    "IN (SELECT unnest(?))",
                    params=[ids],
                ).fetchone()
                if n and n[0]:
                    found.append(f"{db}:{table}.{column} x{n[0]}")
    return found
