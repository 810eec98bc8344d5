"""Benchmark: every built-in trait (aggregates, gaps, top category, engagement, support,
subscriptions, lifecycle, RFM, value tiers) for 500k customers in one plan, against a
hand-written DuckDB query of the core order aggregates.

    .venv/bin/python benchmarks/bench_traits.py [--customers 500000] [--orders 5000000]

Prints the plan's run time, the baseline's, their ratio and the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from bench_rules import AS_OF, data

from crmseg.rules import Schema, build_plan
from crmseg.sources.loader import schema_from
from crmseg.traits import library

BASELINE = """
select c.customer_id, o.n, o.s - o.r as ltv, o.v, o.l, o.f
from customers c left join (
  select customer_id, count(*) n, sum(amount) s, sum(returned_amount) r, avg(amount) v,
         max(ordered_at) l, min(ordered_at) f
  from orders where ordered_at <= TIMESTAMP '2024-06-01 00:00:00' group by customer_id
) o using (customer_id)
where c.signup_at <= TIMESTAMP '2024-06-01 00:00:00'
"""


def extra(n_cust: int, n_msgs: int, seed: int = 11) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    ids = np.char.add("c", np.arange(n_cust).astype(str))
    start = np.datetime64("2023-01-01T00:00:00")
    span = int((np.datetime64("2024-06-01") - start) / np.timedelta64(1, "s"))

    def when(n: int) -> np.ndarray:
        return start + rng.integers(0, span, n).astype("timedelta64[s]")

    n_t, n_s = n_cust // 5, n_cust // 10
    return {
        "messages": pa.table(
            {
                "customer_id": ids[rng.integers(0, n_cust, n_msgs)],
                "channel": rng.choice(["email", "sms", "push"], n_msgs, p=[0.7, 0.15, 0.15]),
                "kind": rng.choice(
                    ["sent", "open", "click", "unsubscribe", "complaint"],
                    n_msgs,
                    p=[0.6, 0.25, 0.13, 0.015, 0.005],
                ),
                "occurred_at": when(n_msgs),
            }
        ),
        "tickets": pa.table(
            {
                "customer_id": ids[rng.integers(0, n_cust, n_t)],
                "opened_at": when(n_t),
                "csat": rng.integers(1, 6, n_t).astype(float),
                "refund_amount": np.where(rng.random(n_t) < 0.2, 15.0, 0.0),
            }
        ),
        "subscriptions": pa.table(
            {
                "customer_id": ids[rng.integers(0, n_cust, n_s)],
                "status": rng.choice(["active", "canceled", "past_due"], n_s),
                "mrr": rng.choice([9.0, 29.0, 99.0], n_s),
                "started_at": when(n_s),
                "failed_payments": rng.integers(0, 3, n_s),
            }
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--orders", type=int, default=5_000_000)
    ap.add_argument("--messages", type=int, default=5_000_000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    raw = duckdb.connect()
    generated = {**data(args.customers, args.orders), **extra(args.customers, args.messages)}
    for name, tbl in generated.items():
        raw.register(f"{name}_arrow", tbl)
        raw.execute(f"create table {name} as select * from {name}_arrow")
        raw.unregister(f"{name}_arrow")
    print(f"data: {args.customers:,} customers, {args.orders:,} orders, "
          f"{args.messages:,} messages ({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    con = ibis.duckdb.from_connection(raw)
    tables = {n: con.table(n) for n in ("customers", "orders", "messages", "tickets",
                                        "subscriptions")}  # fmt: skip
    t0 = time.perf_counter()
    plan = build_plan([], Schema(schema_from(tables)), builtins=library())
    wide = plan.wide(tables, AS_OF)  # every built-in that needs no fitted model
    print(f"plan: {len(plan.traits)} built-in traits, {len(wide.columns) - 1} computed "
          f"({time.perf_counter() - t0:.2f}s to build)")  # fmt: skip

    def timed(what: str, run: object) -> float:
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            run()  # type: ignore[operator]
            best = min(best, time.perf_counter() - t)
        print(f"{what}: {best:.2f}s")
        return best

    sql = str(ibis.to_sql(wide, dialect="duckdb"))
    ours = timed("all built-ins", lambda: raw.execute(f"create or replace temp table w as {sql}"))
    core = [n for n in wide.columns if not n.startswith(("lifecycle.", "rfm.", "value."))]
    sql_core = str(ibis.to_sql(wide.select(*core), dialect="duckdb"))
    per = timed(
        "per-customer built-ins only (no population layers)",
        lambda: raw.execute(f"create or replace temp table w2 as {sql_core}"),
    )
    base = timed(
        "hand-written core order aggregates",
        lambda: raw.execute(f"create or replace temp table b as {BASELINE}"),
    )
    rows = raw.execute("select count(*) from w").fetchone()
    print(f"rows: {rows[0] if rows else 0:,}")
    print(f"ratio all built-ins / hand-written core: {ours / base:.1f}x")
    print(f"ratio population layers overhead: {ours / per:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (process RSS): {peak:,.0f} MB")


if __name__ == "__main__":
    main()
