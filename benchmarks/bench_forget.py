"""Benchmark: `crmseg forget` of 10,000 people on the 500k-customer demo shop, as a user runs it.

    .venv/bin/python benchmarks/bench_forget.py [--customers 500000] [--ids 10000]
        [--workdir DIR]

The shop is generated once (``crmseg init --demo``), run once and activated (so people sit in
the warehouse, the history, the send log and the exports); that state is kept as a pristine
copy. The benchmark then restores the copy and times, each as its own process:

* ``crmseg run`` one day later (the reference: what a daily schedule costs on this shop);
* ``crmseg forget --file ids.txt`` of ``--ids`` customer ids drawn at random (target <= 30 s).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from _harness import CRMSEG, demo_shop, report, timed

AS_OF = "2026-11-01"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--ids", type=int, default=10_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_forget_"))
    shop = work / f"shop{args.customers}"
    pristine = work / f"pristine{args.customers}"
    if not (pristine / "crmseg.yml").exists():
        shutil.rmtree(shop, ignore_errors=True)
        campaigns = ("skincare_replenishment_email", "vip_early_access")
        demo_shop(shop, args.customers, AS_OF, then=[["activate", c] for c in campaigns])
        shutil.copytree(shop, pristine)

    def restore() -> None:
        shutil.rmtree(shop, ignore_errors=True)
        shutil.copytree(pristine, shop)

    ids = pq.read_table(pristine / "data" / "customers.parquet", columns=["customer_id"])
    chosen = random.Random(7).sample(ids.column(0).to_pylist(), args.ids)
    listing = work / "ids.txt"
    listing.write_text("\n".join(chosen) + "\n")

    restore()
    daily = timed("crmseg run (the next day, unchanged sources)", CRMSEG, "run", "-p", str(shop),
                  "--as-of", "2026-11-02")  # fmt: skip
    restore()
    forget = timed(f"crmseg forget --file ({args.ids:,} ids)", CRMSEG, "forget", "--file",
                   str(listing), "-p", str(shop))  # fmt: skip
    report(f"forget at {args.customers:,} customers (ratio to the daily run)", [
        (daily, None), (forget, daily)])  # fmt: skip
    print(forget.stdout.strip().splitlines()[0] if forget.stdout.strip() else "")
    print(f"forget of {args.ids:,} ids: {forget.seconds:.2f} s (target <= 30 s)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
