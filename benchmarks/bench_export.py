"""Benchmark: `crmseg export` against one `crmseg members` call per segment, on a run shop.

    .venv/bin/python benchmarks/bench_export.py [--customers 500000] [--workdir DIR]

The shop is generated and run once (``crmseg init --demo``, ``crmseg run``), or reused from
``--workdir``. Then, each as its own process: ``crmseg export --out all.parquet`` (every
segment's members in one file), and the baseline a user scripts today: ``crmseg members S -f
csv`` for every segment, one after the other. Both answer from the recorded history; the
ratio is export / all members calls, and the row counts must agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _harness import CRMSEG, Timed, demo_shop, report, timed

AS_OF = "2026-11-01"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_export_"))
    shop = work / f"shop{args.customers}"
    demo_shop(shop, args.customers, AS_OF)
    out = work / "all.parquet"
    export = timed("crmseg export --out all.parquet", CRMSEG, "export", "--out", str(out),
                   "-p", str(shop))  # fmt: skip
    listed = timed("crmseg catalog -f json", CRMSEG, "catalog", "-p", str(shop), "-f", "json")
    names = [entry["name"] for entry in json.loads(listed.stdout)]
    start = time.perf_counter()
    peak, rows = 0, 0
    for name in names:
        one = timed(f"members {name}", CRMSEG, "members", name, "-f", "csv", "-p", str(shop))
        peak = max(peak, one.peak_mib)
        rows += max(len(one.stdout.strip().splitlines()) - 1, 0)
    calls = Timed(f"crmseg members x {len(names)}", time.perf_counter() - start, peak, "")
    report(f"export at {args.customers:,} customers (ratio to one members call per segment)", [
        (calls, None), (export, calls)])  # fmt: skip
    exported = pq.read_metadata(out).num_rows
    print(f"{exported:,} rows exported, {rows:,} rows from the members calls")
    assert exported == rows, "export and members disagree"
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
