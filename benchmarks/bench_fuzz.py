"""The rule fuzzer at full size: 10,000 generated rules on a demo project, every one either
rejected with file:line:column or computed without an internal error.

    .venv/bin/python benchmarks/bench_fuzz.py [--rules 10000]

Not a timing benchmark: it runs ``tests/rules/test_fuzz.py`` with ``CRMSEG_FUZZ_RULES`` set and
prints its counts (rejected, computed, refused by the engine) and the wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=10_000)
    args = ap.parse_args()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/rules/test_fuzz.py"],
        cwd=ROOT,
        env={**os.environ, "CRMSEG_FUZZ_RULES": str(args.rules)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if "generated rules" in x or "refused" in x]
    print("\n".join(lines) or proc.stdout[-3000:])
    print(f"exit {proc.returncode} after {time.perf_counter() - start:.0f} s")
    if proc.returncode:
        print(proc.stdout[-3000:])
        raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
