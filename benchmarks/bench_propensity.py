"""Benchmark: what fitting propensity to buy (overall + per category) and the next best action
costs a user at 500k customers, timed as the CLI a user runs.

    .venv/bin/python benchmarks/bench_propensity.py [--customers 500000] [--workdir DIR]

The demo shop is generated and run once (its segments fit CLV, churn and clusters, not
propensity). Two copies then get a segment ``propensity.skincare > 0.3``; one keeps the demo's
six categories, the other lists only the first three. In each copy, as its own process:

1. ``crmseg preview`` on the fresh state: the propensity group is fitted (two training
   instants, 1 + k models with their time-based holdouts) and everyone is scored;
2. ``crmseg preview`` again at the next day: the recorded fit is reused (scoring only).

The six-category copy then runs the segment (``crmseg run --select``) on the two following
days: a daily run scores with the recorded fit, and the second carries the first one's
grouped scans (only customers with rows that crossed a bound are recomputed).

It prints the wall times, the fit seconds from the model records (per model: holdout and
final fits), each model's holdout AUC and ECE, and a projection for 8 categories: the six
categories' fit cost plus two more at the measured cost of a category (the difference between
the six- and three-category fits, per category). Target: <= 60 s for 8 categories at 500k.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from _harness import CRMSEG, Timed, demo_shop, python, report, timed

AS_OF = "2026-11-01"
NEXT = "2026-11-02"
DAYS = ("2026-11-03", "2026-11-04")
SEGMENT = """segments:
  - name: bench.skincare_likely
    description: Likely to buy skincare within 30 days.
    owner: bench
    purpose: benchmark
    refresh: daily
    rule: propensity.skincare > 0.3
"""
RECORDS = """
import json, sys
from crmseg.workspace import Workspace
with Workspace.open(sys.argv[1]) as ws:
    rows = [r for r in ws.model_records() if r["model"].startswith("propensity.")]
print(json.dumps([{"model": r["model"].split(" ")[0], "seconds": r["fit_seconds"],
                   "customers": r["customers"], **r["metrics"]} for r in rows]))
"""
CATEGORIES = ["skincare", "makeup", "haircare", "fragrance", "body", "accessories"]


def prepared(pristine: Path, shop: Path, categories: list[str]) -> None:
    """A copy of the run shop with the benchmark segment and ``categories``."""
    shutil.rmtree(shop, ignore_errors=True)
    shutil.copytree(pristine, shop)
    (shop / "segments" / "bench.yml").write_text(SEGMENT)
    config = shop / "crmseg.yml"
    text = config.read_text()
    listed = f"propensity_categories: [{', '.join(CATEGORIES)}]"
    assert listed in text, "the demo's crmseg.yml lists its six categories"
    config.write_text(text.replace(listed, f"propensity_categories: [{', '.join(categories)}]"))


def measure(shop: Path, label: str) -> tuple[Timed, Timed, list[dict[str, Any]]]:
    cmd = [CRMSEG, "preview", "bench.skincare_likely", "-p", str(shop)]
    fit = timed(f"preview, fresh state: fit + score ({label})", *cmd, "--as-of", AS_OF)
    again = timed(f"preview, next day: recorded fit ({label})", *cmd, "--as-of", NEXT)
    records = json.loads(timed("records", *python(RECORDS, str(shop))).stdout)
    return fit, again, records


def daily(shop: Path) -> list[Timed]:
    cmd = [CRMSEG, "run", "-p", str(shop), "--select", "bench.skincare_likely"]
    first = timed(f"run {DAYS[0]}: recorded fit, scans computed", *cmd, "--as-of", DAYS[0])
    second = timed(f"run {DAYS[1]}: recorded fit, scans carried", *cmd, "--as-of", DAYS[1])
    return [first, second]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_propensity_"))
    pristine = work / f"propensity{args.customers}"
    demo_shop(pristine, args.customers, AS_OF)

    results = {}
    runs: list[Timed] = []
    for k in (6, 3):
        shop = work / f"propensity{args.customers}_{k}"
        prepared(pristine, shop, CATEGORIES[:k])
        results[k] = measure(shop, f"{k} categories")
        if k == 6:
            runs = daily(shop)
        shutil.rmtree(shop, ignore_errors=True)

    rows: list[tuple[Timed, Timed | None]] = []
    for fit, again, _ in results.values():
        rows += [(fit, None), (again, fit)]
    rows += [(t, results[6][0]) for t in runs]
    report(f"propensity at {args.customers:,} customers (ratio to the fitting preview)", rows)
    for t in runs:
        print(f"{t.label}: {t.stdout.strip().splitlines()[-1]}")
    for k, (fit, again, records) in results.items():
        total = sum(r["seconds"] for r in records)
        print(f"\n{k} categories + any: fit seconds in the model records {total:.2f} s; "
              f"fitting preview - scoring preview {fit.seconds - again.seconds:.2f} s")  # fmt: skip
        for r in records:
            print(f"  {r['model']:<24} {r['seconds']:6.2f} s  {r['customers']:>7,} trained  "
                  f"holdout AUC {r['holdout_auc']:.3f}  ECE {r['holdout_ece']:.4f}  "
                  f"positives {r['positives']:>6,}  base rate {r['base_rate']:.3f}")  # fmt: skip
    six, three = results[6][0].seconds, results[3][0].seconds
    per = (six - three) / 3
    projected = six + 2 * per
    print(
        f"\nper extra category: {per:.2f} s (6 vs 3 categories); projected fitting preview "
        f"for 8 categories: {projected:.1f} s (target <= 60 s: "
        f"{'meets' if projected <= 60 else 'MISSES'})"
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
