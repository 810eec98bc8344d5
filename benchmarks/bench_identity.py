"""Benchmark: identity resolution of the demo shop's customers in a real ``crmseg run``.

    .venv/bin/python benchmarks/bench_identity.py [--customers 1000000] [--splink]

Writes the demo generator's customers and identifiers (with its planted duplicates: email
variants, phones in other formats, shared device ids) as Parquet, and a project that reads
only those with identity on and quality off. Then times, each as its own process:

* ``crmseg run`` (loads both sources and resolves identity; target at 1M: the identity step
  <= 15 s, read from the run's record);
* the same run with identity off, the baseline that separates identity from loading and
  computing the one segment.

Prints both, the identity step's seconds and the precision and recall of the merged pairs
against the generator's truth (``truth/people.parquet``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from _harness import CRMSEG, Timed, python, report, timed

AS_OF = datetime(2026, 11, 1)
SEGMENT = """\
segments:
  - name: demographic.with_country
    description: Customers with a known country.
    owner: bench
    rule: country is not null
"""


def write(work: Path, n: int) -> None:
    from crmseg.demo.generator import generate

    data = generate(n, 42, AS_OF)
    (work / "data").mkdir(parents=True, exist_ok=True)
    for name in ("customers", "identifiers", "truth_people"):
        pq.write_table(data[name], work / "data" / f"{name}.parquet")


def project(root: Path, data: Path, *, identity: bool, splink: bool) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "segments").mkdir(parents=True)
    on = "true" if identity else "false"
    (root / "crmseg.yml").write_text(
        "name: bench-identity\nsources:\n"
        f"  customers: {{path: {data / 'customers.parquet'}}}\n"
        f"  identifiers: {{path: {data / 'identifiers.parquet'}}}\n"
        f"identity: {{enabled: {on}, splink: {{enabled: {'true' if splink else 'false'}}}}}\n"
        "quality: {enabled: false}\n"
    )
    (root / "segments" / "s.yml").write_text(SEGMENT)
    return root


SCORES = """
import json, sys
import pyarrow.parquet as pq
from crmseg.identity.report import pairwise_scores
from crmseg.workspace import Workspace
with Workspace.open(sys.argv[1]) as ws:
    run = ws.runs()[-1]
    idmap = ws.backend.execute(ws.backend.canonical("identity_map"))
scores = pairwise_scores(idmap, pq.read_table(sys.argv[2]))
print(json.dumps({"seconds": run.details["seconds"], **scores}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--splink", action="store_true", help="add Splink's probabilistic links")
    ap.add_argument("--workdir", type=Path, help="keep the data and projects here")
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_identity_"))
    data = work / "data"
    if args.generate:
        write(work, args.customers)
        return
    if not (data / "customers.parquet").exists():
        # In a process of its own: a child's peak RSS counts its parent's at fork time.
        timed("generate", sys.executable, __file__, "--generate", "--workdir", str(work),
              "--customers", str(args.customers))  # fmt: skip
    print(f"data: {args.customers:,} demo customers in {data}", flush=True)

    def run(identity: bool) -> Timed:
        root = project(work / ("on" if identity else "off"), data, identity=identity,
                       splink=args.splink)  # fmt: skip
        label = "identity on" + (" + splink" if args.splink else "") if identity else "identity off"
        return timed(f"crmseg run ({label})", CRMSEG, "run", "-p", str(root), "--as-of",
                     f"{AS_OF:%Y-%m-%d}")  # fmt: skip

    off = run(False)
    on = run(True)
    report(f"identity resolution of {args.customers:,} customers", [(off, None), (on, off)])
    scored = timed("scores", *python(SCORES, str(work / "on"), str(data / "truth_people.parquet")))
    result = json.loads(scored.stdout)
    laps = result["seconds"]
    step = laps["identity"] + laps["writing"]
    print(
        f"identity (resolution {laps['identity']:.1f} s + writing its tables and the sources "
        f"{laps['writing']:.1f} s, from the run record): {step:.1f} s"
    )
    print(
        f"pairs: predicted {result['predicted_pairs']:,}, true {result['true_pairs']:,}, "
        f"precision {result['precision']:.4f}, recall {result['recall']:.4f}"
    )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
