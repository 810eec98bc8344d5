"""Benchmark: the demo catalog (26 segments with lifecycle, RFM, value tiers and model traits)
on a generated demo shop, as a user runs it.

    .venv/bin/python benchmarks/bench_catalog.py [--customers 500000] [--rounds 1]
        [--workdir DIR]

Each step is its own ``crmseg`` process on the project's files, timed wall-clock with its peak
RSS (wait4):

* the first run on a fresh state (loads every source, checks quality, resolves identity,
  fits the models; targets: <= 60 s, <= 2 GB);
* three second runs on the following days with unchanged sources and definitions (loading,
  identity, quality and fits are skipped; the wide table is recomputed); their median against
  the first run (target <= 0.3x). With ``--rounds N`` each round starts again from a fresh
  state and the ratio reported is the median of the rounds' ratios: on a shared machine one
  slow or fast first run moves a single round's ratio by 10%;
* ``crmseg preview`` of a segment after the runs, as a cold process (target <= 1.5 s).

Then, in this process, ``Workspace.preview`` through an open workspace (the Python API's
case; target <= 50 ms): this one times an in-process call on purpose, it is what that user
runs. The shop is generated once into ``--workdir`` (default: a temporary folder) with
``crmseg init --demo``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from _harness import CRMSEG, Timed, report, timed

DEMO_AS_OF = datetime(2026, 11, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=1, help="first + second runs, each round afresh")
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_catalog_"))
    shop = work / f"shop{args.customers}"
    if not (shop / "crmseg.yml").exists():
        timed("generate", CRMSEG, "init", str(shop), "--demo", "--customers", str(args.customers))
    print(f"demo shop: {args.customers:,} customers in {shop}", flush=True)

    def run(at: datetime, label: str) -> Timed:
        return timed(
            f"crmseg run {label} as of {at:%Y-%m-%d}",
            CRMSEG, "run", "-p", str(shop), "--as-of", f"{at:%Y-%m-%d}",
        )  # fmt: skip

    rows: list[tuple[Timed, Timed | None]] = []
    ratios, firsts = [], []
    for _ in range(args.rounds):
        shutil.rmtree(shop / ".crmseg", ignore_errors=True)
        first = run(DEMO_AS_OF, "(first: load, quality, identity, fits)")
        seconds = [run(DEMO_AS_OF + timedelta(days=d), "(second, unchanged)") for d in (1, 2, 3)]
        rows += [(first, None), *((s, first) for s in seconds)]
        ratios.append(statistics.median(s.seconds for s in seconds) / first.seconds)
        firsts.append(first)
    previews = [
        timed(
            "crmseg preview value.vip (cold process)",
            CRMSEG,
            "preview",
            "value.vip",
            "-p",
            str(shop),
        )
        for _ in range(3)
    ]
    rows += [(p, None) for p in previews]
    report(f"demo catalog at {args.customers:,} customers (ratio to the first run)", rows)
    each = ", ".join(f"{r:.2f}x" for r in ratios)
    print(
        f"second run (median of 3) to the first: {statistics.median(ratios):.2f}x, median of "
        f"{len(ratios)} round(s): {each} (target <= 0.3x)"
    )
    first_s = statistics.median(f.seconds for f in firsts)
    print(f"first run: median {first_s:.2f} s (target <= 60 s)")
    print(f"cold preview, median of 3: {statistics.median(p.seconds for p in previews):.2f} s")
    print(f"peak RSS of a first run: {max(f.peak_mib for f in firsts):,.0f} MiB")

    from crmseg.workspace import Workspace

    with Workspace.open(shop) as ws:
        ws.preview("value.vip")  # opens the state once
        names = [s.name for s in ws.segments]
        times = []
        for name in names * 2:
            start = time.perf_counter()
            ws.preview(name)
            times.append(time.perf_counter() - start)
    print(
        f"Workspace.preview through an open workspace (in-process, {len(times)} calls): "
        f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
