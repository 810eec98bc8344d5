"""Benchmark: `crmseg suggest` on the 500k-customer demo shop, the CLI as its own process.

    .venv/bin/python benchmarks/bench_suggest.py [--customers 500000] [--workdir DIR]

The shop is generated and run once at 2026-11-01 (kept with ``--workdir``). Then, each as its
own process on the files: ``crmseg suggest`` for the built-in targets purchase and churn and
for a rule target (a skincare order within 30 days), next to the baseline of one
``crmseg preview`` of a segment computed fresh at the cut-off instant (what one segment costs
on the same data). Printed: wall time, peak RSS, the ratio to the baseline, the split the
command reports (data, search), the top rule, against the target (<= 60 s each).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _harness import CRMSEG, demo_shop, report, timed

AS_OF = "2026-11-01"
TARGETS = (
    ("purchase", "purchase"),
    ("churn", "churn"),
    ("skincare within 30d", "count(orders where category = 'skincare' within 30d) >= 1"),
)
LIMIT = 60.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    args = ap.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-suggest-"))
    shop = base / f"suggest{args.customers}"
    demo_shop(shop, args.customers, AS_OF)
    p = ["-p", str(shop)]
    # the baseline: one segment computed at an instant no run recorded (no cached answer)
    baseline = timed(
        "baseline: crmseg preview value.vip (fresh instant)",
        CRMSEG, "preview", "value.vip", "--as-of", "2026-10-02", *p,
    )  # fmt: skip
    rows = [(baseline, None)]
    notes = []
    worst = 0.0
    for label, target in TARGETS:
        t = timed(f"crmseg suggest --target {label}", CRMSEG, "suggest", "--target", target,
                  "--format", "json", *p)  # fmt: skip
        data = json.loads(t.stdout)
        worst = max(worst, t.seconds)
        rows.append((t, baseline))
        top = data["suggestions"][0] if data["suggestions"] else None
        s = data["seconds"]
        notes.append(
            f"  {label}: {data['positives']:,} of {data['customers']:,} positive, "
            f"{data['candidates']} conditions; data {s['data']:.1f} s, search {s['search']:.1f}"
            f" s; top: {top['rule'] if top else '-'}"
            + (f" (held-out lift {top['holdout']['lift']:.2f})" if top else "")
        )
    report(f"crmseg suggest at {args.customers:,} customers", rows)
    print("\n".join(notes))
    verdict = "ok" if worst <= LIMIT else "MISSED"
    print(f"slowest suggest {worst:.1f} s (target <= {LIMIT:.0f} s: {verdict})")


if __name__ == "__main__":
    main()
