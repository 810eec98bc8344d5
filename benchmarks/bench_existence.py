"""Benchmark: what dating customers by their first activity costs `crmseg run` at 500k.

    .venv/bin/python benchmarks/bench_existence.py [--customers 500000] [--workdir DIR]

The demo shop is generated and run once; two copies of it then get a new customers file:

* dated: the same rows in another order (every customer keeps ``signup_at``): the file's
  content changed, so customers reload and identity resolves again, but no activity scan runs;
* undated: the same rows with ``signup_at`` blank, so every customer exists from their first
  row in orders, events, messages, consent, subscriptions, tickets or reviews: one grouped
  scan per activity table on top of the same reload.

Each timing is ``crmseg run`` as its own process, the day after the first run; then each copy
runs again the next day with no new data (carried scans; the dating scans run again, since
they read every row whatever the instant).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _harness import CRMSEG, Timed, demo_shop, python, report, timed

AS_OF = "2026-11-01"

REWRITE = """
import sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
path, blank = sys.argv[1], sys.argv[2] == "blank"
t = pq.read_table(path)
t = t.take(pc.sort_indices(t, [("customer_id", "descending")]))
if blank:
    i = t.schema.get_field_index("signup_at")
    t = t.set_column(i, "signup_at", pa.nulls(t.num_rows, t.schema.field(i).type))
pq.write_table(t, path)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_existence_"))
    pristine = work / f"existence{args.customers}"
    demo_shop(pristine, args.customers, AS_OF)
    shops = {}
    for kind in ("dated", "blank"):
        shop = work / f"{kind}{args.customers}"
        shutil.rmtree(shop, ignore_errors=True)
        shutil.copytree(pristine, shop)
        timed(f"rewrite customers ({kind})", *python(REWRITE, str(shop / "data" /
              "customers.parquet"), kind))  # fmt: skip
        shops[kind] = shop

    def run(kind: str, day: str, what: str) -> Timed:
        return timed(f"crmseg run, {what}", CRMSEG, "run", "-p", str(shops[kind]), "--as-of", day)

    dated = run("dated", "2026-11-02", "dated customers (reload)")
    blank = run("blank", "2026-11-02", "undated customers (reload + dating scans)")
    dated_again = run("dated", "2026-11-03", "dated, next day, no new data")
    blank_again = run("blank", "2026-11-03", "undated, next day, no new data")
    report(
        f"existence at {args.customers:,} customers (ratio to dated customers)",
        [(dated, None), (blank, dated), (dated_again, None), (blank_again, dated_again)],
    )
    for label, t in (("dated", dated), ("undated", blank)):
        tail = [line for line in t.stdout.splitlines() if "customers," in line]
        print(f"{label}: {tail[-1].strip() if tail else '?'}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
