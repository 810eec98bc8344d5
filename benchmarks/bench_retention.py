"""Benchmark: what retention windows cost a daily `crmseg run` on the 500k-customer demo shop.

    .venv/bin/python benchmarks/bench_retention.py [--customers 500000] [--workdir DIR]

The shop is generated and run once (``crmseg init --demo``, ``crmseg run``) and kept as a
pristine copy (the same one ``bench_forget.py`` makes, when given the same ``--workdir``).
Each timing below is ``crmseg run`` as its own process on a fresh copy, the next day:

* without retention (the reference: unchanged sources, carried scans);
* with ``privacy.retention: {events: 2y, messages: 1y}`` for the first time, which is what the
  first run of every day costs a project with windows: the cut-off moved, so events and
  messages load again without their expired rows, and every scan over them is recomputed;
* the same, run again later that day: nothing reloads.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _harness import CRMSEG, demo_shop, report, timed

AS_OF = "2026-11-01"
WINDOWS = "privacy:\n  retention: {events: 2y, messages: 1y}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_retention_"))
    shop = work / f"shop{args.customers}"
    pristine = work / f"pristine{args.customers}"
    if not (pristine / "crmseg.yml").exists():
        shutil.rmtree(shop, ignore_errors=True)
        demo_shop(shop, args.customers, AS_OF)
        shutil.copytree(shop, pristine)

    def restore(windows: bool) -> None:
        shutil.rmtree(shop, ignore_errors=True)
        shutil.copytree(pristine, shop)
        if windows:
            config = shop / "crmseg.yml"
            config.write_text(config.read_text() + WINDOWS)

    restore(False)
    daily = timed("crmseg run, no windows (next day)", CRMSEG, "run", "-p", str(shop),
                  "--as-of", "2026-11-02")  # fmt: skip
    restore(True)
    purge = timed("crmseg run, windows' first run of the day (purges)", CRMSEG, "run", "-p",
                  str(shop), "--as-of", "2026-11-02")  # fmt: skip
    again = timed("crmseg run, windows, again the same day", CRMSEG, "run", "-p", str(shop),
                  "--as-of", "2026-11-03")  # fmt: skip
    report(f"retention at {args.customers:,} customers (ratio to the run without windows)", [
        (daily, None), (purge, daily), (again, daily)])  # fmt: skip
    said = [line for line in purge.stdout.splitlines() if "purged past retention" in line]
    print(said[0].strip() if said else "nothing purged")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
