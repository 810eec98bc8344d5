"""``sql:`` sources: a canonical table as a query over raw inputs (amounts from payments,
categories from items -> products -> a translation table)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from crmseg.errors import ConfigError, SourceError
from crmseg.workspace import Workspace

from ..conftest import MakeProject

CONFIG = """\
name: market
timezone: UTC
inputs:
  raw_orders: {path: data/raw_orders.csv}
  payments: {path: data/payments.csv}
  items: {path: data/items.csv}
  products: {path: data/products.csv}
  names: {path: data/names.csv}
sources:
  customers: {derive: orders}
  orders:
    sql: >-
      select o.order_id, o.buyer as customer_id, o.created, sum(p.value) as amount
      from raw_orders o join payments p using (order_id)
      group by all
    columns: {ordered_at: created}
  order_items:
    sql: >-
      select i.order_id, i.product_id as product, n.english as category
      from items i join products p using (product_id)
      left join names n on n.portuguese = p.category_name
"""

FILES = {
    "data__raw_orders_csv": (
        "order_id,buyer,created\n1,a,2024-05-01\n2,a,2024-06-01\n3,b,2024-05-03\n"
    ),
    # order 1 was paid in two instalments
    "data__payments_csv": "order_id,value\n1,10.5\n1,4.5\n2,20\n3,7\n",
    "data__items_csv": "order_id,product_id\n1,p1\n2,p2\n3,p1\n",
    "data__products_csv": "product_id,category_name\np1,beleza_saude\np2,cama_mesa_banho\n",
    "data__names_csv": "portuguese,english\nbeleza_saude,health_beauty\ncama_mesa_banho,bed_bath\n",
}

SEGMENTS = """\
segments:
  - name: value.spenders
    description: Paid 20 or more.
    owner: crm
    rule: sum(orders.amount) >= 20
  - name: preference.beauty
    description: Bought health and beauty.
    owner: crm
    rule: count(order_items where category = 'health_beauty') >= 1
"""


def _root(make_project: MakeProject, name: str = "shop", config: str = CONFIG) -> Path:
    return make_project(
        name, crmseg_yml=config, data__customers_csv=None, segments__core_yml=SEGMENTS, **FILES
    )


def test_tables_built_by_queries_over_inputs(make_project: MakeProject) -> None:
    root = _root(make_project)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
        orders = ws.backend.execute(ws.backend.canonical("orders").order_by("order_id"))
        assert [(r["order_id"], r["customer_id"], r["amount"]) for r in orders.to_pylist()] == [
            ("1", "a", 15.0),
            ("2", "a", 20.0),
            ("3", "b", 7.0),
        ]
        items = ws.backend.execute(ws.backend.canonical("order_items").order_by("order_id"))
        assert [r["category"] for r in items.to_pylist()] == [
            "health_beauty",
            "bed_bath",
            "health_beauty",
        ]
        assert ws.members("value.spenders") == ["a"]
        assert ws.members("preference.beauty") == ["a", "b"]
        again = ws.run(as_of=datetime(2024, 7, 2))
        assert set(again.details["sources"].values()) == {"unchanged"}
    # a new payment is a new amount: orders reload, and so do the customers derived from them
    # and the items that take their customer and time from them
    payments = root / "data" / "payments.csv"
    payments.write_text(payments.read_text() + "3,14\n")
    with Workspace.open(root) as ws:
        run = ws.run(as_of=datetime(2024, 7, 3))
        assert run.details["sources"] == {
            "customers": "loaded",
            "orders": "loaded",
            "order_items": "loaded",
        }
        assert ws.members("value.spenders") == ["a", "b"]


def test_bad_queries_are_located_and_change_nothing(make_project: MakeProject) -> None:
    root = _root(make_project)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
    good = (root / "crmseg.yml").read_text()
    cases = {
        "join payments p": (
            "join paymentz p",
            r"^sources.orders.sql \(set at crmseg.yml:12\): invalid SQL: .*paymentz",
        ),
        "select o.order_id": (
            "selec o.order_id",
            r"^sources.orders.sql \(set at crmseg.yml:12\): the query does not parse at line 1",
        ),
        "data/payments.csv": (
            "data/pay.csv",
            r"^input payments: data/pay.csv: file not found \(set at crmseg.yml:5\)",
        ),
    }
    for before, (after, message) in cases.items():
        (root / "crmseg.yml").write_text(good.replace(before, after))
        with Workspace.open(root) as ws:
            with pytest.raises(SourceError, match=message):
                ws.run(as_of=datetime(2024, 7, 2))
            assert ws.members("value.spenders") == ["a"]  # the last good run still answers
            assert len(ws.runs()) == 1
    clash = CONFIG.replace("  names: {path", "  orders: {path")
    with pytest.raises(ConfigError, match=r"\[inputs\]: input 'orders' has a canonical table's"):
        Workspace.open(_root(make_project, "clash", clash))
    both = CONFIG.replace("    columns: {ordered_at: created}", "    path: data/x.csv")
    with pytest.raises(ConfigError, match=r"give exactly one of 'path' .*'sql'"):
        Workspace.open(_root(make_project, "both", both))
