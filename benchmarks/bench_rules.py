"""Benchmark: one plan of 50 segments + traits vs one hand-written DuckDB query.

    .venv/bin/python benchmarks/bench_rules.py [--customers 500000] [--orders 10000000]

Prints the compile time for 50 rules, the plan's run time, the hand-written SQL's run time
and their ratio (the plan should be close to 1x: one scan of orders, not fifty).
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import datetime

import duckdb
import ibis
import numpy as np
import pyarrow as pa

from crmseg.rules import Definition, Schema, build_plan
from crmseg.traits import library

AS_OF = datetime(2024, 6, 1)
CATS = ["skincare", "hair", "makeup", "body", "fragrance"]


def data(n_cust: int, n_orders: int, seed: int = 7) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    ids = np.char.add("c", np.arange(n_cust).astype(str))
    start = np.datetime64("2021-01-01T00:00:00")
    span = int((np.datetime64("2024-07-01") - start) / np.timedelta64(1, "s"))
    customers = pa.table(
        {
            "customer_id": ids,
            "country": rng.choice(["DE", "AT", "FR", "US", "GB"], n_cust),
            "plan": rng.choice(["free", "pro", "team"], n_cust),
            "signup_at": start + rng.integers(0, span, n_cust).astype("timedelta64[s]"),
        }
    )
    orders = pa.table(
        {
            "order_id": np.arange(n_orders).astype(str),
            "customer_id": ids[rng.integers(0, n_cust, n_orders)],
            "ordered_at": start + rng.integers(0, span, n_orders).astype("timedelta64[s]"),
            "amount": rng.gamma(2.0, 40.0, n_orders),
            "returned_amount": np.where(rng.random(n_orders) < 0.1, 20.0, 0.0),
            "category": rng.choice(CATS, n_orders),
        }
    )
    return {"customers": customers, "orders": orders}


def rules() -> list[str]:
    out = []
    for i, cat in enumerate(CATS):
        for days in (30, 60, 90, 180, 365):
            out.append(f"count(orders where category = '{cat}' within {days}d) >= {1 + i % 2}")
        out.append(f"sum(orders.amount where category = '{cat}') >= {100 * (i + 1)}")
        out.append(f"days_since(last(orders.ordered_at where category = '{cat}')) > 60")
        out.append(f"avg(orders.amount where category = '{cat}') > 50 and country = 'DE'")
    out += [
        "orders_count >= 3 and ltv >= 500",
        "orders_count = 0",
        "days_since(last_order_at) between 45 and 60",
        "aov > 80 and plan = 'pro'",
        "return_rate > 0.2",
        "sum(orders.amount within 365d) >= 1000",
        "country in ('DE', 'AT') and orders_365d >= 2",
        "max(orders.amount) > 300",
        "count_distinct(orders.category) >= 4",
        "first(orders.category) = 'skincare'",
    ]
    return out[:50]


HAND = """
with o as (
  select * from orders where ordered_at <= TIMESTAMP '2024-06-01 00:00:00'
), a as (
  select customer_id, {aggs}
  from o group by customer_id
)
select c.customer_id, {cols}
from customers c left join a using (customer_id)
where c.signup_at <= TIMESTAMP '2024-06-01 00:00:00'
"""


def hand_sql() -> str:
    aggs, cols = [], []
    for i, cat in enumerate(CATS):
        for days in (30, 60, 90, 180, 365):
            a = f"a_{cat}_{days}"
            aggs.append(
                f"count(*) filter (where category = '{cat}' and ordered_at >= "
                f"TIMESTAMP '2024-06-01' - INTERVAL {days} DAY) as {a}"
            )
            cols.append(f"coalesce({a}, 0) >= {1 + i % 2}")
        aggs.append(f"sum(amount) filter (where category = '{cat}') as s_{cat}")
        cols.append(f"coalesce(s_{cat}, 0) >= {100 * (i + 1)}")
        aggs.append(f"max(ordered_at) filter (where category = '{cat}') as l_{cat}")
        cols.append(f"date_diff('day', l_{cat}, TIMESTAMP '2024-06-01') > 60")
        aggs.append(f"avg(amount) filter (where category = '{cat}') as v_{cat}")
        cols.append(f"v_{cat} > 50 and country = 'DE'")
    aggs += [
        "count(*) as n", "sum(amount) as s", "sum(returned_amount) as r", "max(ordered_at) as l",
        "avg(amount) as v", "sum(amount) filter (where ordered_at >= TIMESTAMP '2023-06-02') as y",
        "count(*) filter (where ordered_at >= TIMESTAMP '2023-06-02') as ny",
        "max(amount) as mx", "count(distinct category) as nd",
        "arg_min(category, ordered_at) as fc",
    ]  # fmt: skip
    cols += [
        "coalesce(n, 0) >= 3 and coalesce(s, 0) - coalesce(r, 0) >= 500", "coalesce(n, 0) = 0",
        "date_diff('day', l, TIMESTAMP '2024-06-01') between 45 and 60",
        "v > 80 and plan = 'pro'", "r / nullif(s, 0) > 0.2", "coalesce(y, 0) >= 1000",
        "country in ('DE', 'AT') and coalesce(ny, 0) >= 2", "mx > 300", "coalesce(nd, 0) >= 4",
        "fc = 'skincare'",
    ]  # fmt: skip
    return HAND.format(
        aggs=",\n  ".join(aggs), cols=",\n  ".join(f"{c} as s{i}" for i, c in enumerate(cols))
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--orders", type=int, default=10_000_000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    raw = duckdb.connect()
    for name, tbl in data(args.customers, args.orders).items():
        raw.register(f"{name}_arrow", tbl)
        raw.execute(f"create table {name} as select * from {name}_arrow")
    print(f"data: {args.customers:,} customers, {args.orders:,} orders "
          f"({time.perf_counter() - t0:.1f}s to generate)")  # fmt: skip
    con = ibis.duckdb.from_connection(raw)
    tables = {n: con.table(n) for n in ("customers", "orders")}
    schema = Schema(
        {
            "customers": {"customer_id": "string", "country": "string", "plan": "string",
                          "signup_at": "timestamp"},
            "orders": {"order_id": "string", "customer_id": "string", "ordered_at": "timestamp",
                       "amount": "float", "returned_amount": "float", "category": "string"},
        }
    )  # fmt: skip
    defs = [Definition(f"s{i:02}", "segment", text=r) for i, r in enumerate(rules())]

    t0 = time.perf_counter()
    plan = build_plan(defs, schema, builtins=library())
    # What a run computes: the 50 segments and the traits they use (not every built-in).
    wide = plan.wide(tables, AS_OF, select=[d.name for d in defs])
    sql = ibis.to_sql(wide, dialect="duckdb")
    compile_s = time.perf_counter() - t0
    used = len(wide.columns) - 1 - len(defs)
    print(f"compile 50 rules (+{used} traits they use) to SQL: {compile_s * 1000:.0f} ms")

    def run(q: str) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            raw.execute(f"create or replace temp table _bench as {q}")
            best = min(best, time.perf_counter() - t)
        return best

    plan_s = run(str(sql))
    hand_s = run(hand_sql())
    print(f"plan (50 segments + the traits they use): {plan_s:.3f}s")
    print(f"hand-written SQL (same aggregates): {hand_s:.3f}s")
    print(f"ratio plan / hand-written: {plan_s / hand_s:.2f}x")
    # Process high-water mark (KiB on Linux): data generation, DuckDB and both queries.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
