"""Time the demo shop generator: ``python benchmarks/bench_demo.py [n_customers]``.

Generates and writes the demo data (default 1,000,000 customers, about 10M orders) into a
temporary folder and prints the wall time, rows per table and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from crmseg.demo.generator import write_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("customers", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", action="store_true", help="print the time of every step")
    args = parser.parse_args(argv)

    last = time.perf_counter()

    def progress(step: str, fraction: float) -> None:
        nonlocal last
        now = time.perf_counter()
        if args.steps:
            print(f"  {step:<22} {fraction:6.1%} {now - last:6.2f}s")
        last = now

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts = write_data(Path(tmp), args.customers, seed=args.seed, progress=progress)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"customers: {args.customers:,}  seed: {args.seed}")
    print(f"time:      {seconds:.1f} s")
    print(f"peak RSS:  {peak_mb:,.0f} MiB")
    print(f"parquet:   {size / 2**20:,.0f} MiB")
    for name, rows in counts.items():
        print(f"  {name:<14} {rows:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
