"""Benchmark: the demo catalog run on each engine, side by side, as a user runs it.

    .venv/bin/python benchmarks/bench_engines.py [--customers 500000] [--workdir DIR]

One demo shop is generated (``crmseg init --demo``) and copied once per engine; only the
``backend:`` line differs. Each step is its own ``crmseg`` process on those files, timed
wall-clock with its peak RSS:

* the first run (load every source, check quality, resolve identity, fit the models,
  compute and record the 26 segments);
* the next day's run (sources unchanged: the wide table is computed again);
* ``crmseg preview`` of one segment at a new instant (computed, not read from history);
* ``crmseg members`` of one segment at the first run (read from the recorded history).

``--states postgres`` adds the same steps with crmseg's records (the state) in Postgres:
``duckdb+pgstate`` (the DuckDB warehouse, state on the server) and ``postgres+pgstate``
(both on the server: the set-up for several processes).

DuckDB is the embedded default and the baseline of each step's ratio. Postgres is a real
server this script starts with ``initdb``/``pg_ctl`` on a free port of 127.0.0.1 (the tests'
cluster helper) and stops at the end; its peak RSS is crmseg's process only, not the
server's. PySpark runs in local mode on two cores (``local[2]``, driver memory 6 GB); its peak
RSS is the Python process's, not the JVM's (``--engines`` picks a subset).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _harness import CRMSEG, Timed, report, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' Postgres helper

from tests.postgres import Server, cluster

DAY1, DAY2, PREVIEW = "2026-11-01", "2026-11-02", "2026-11-02T12:00"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    ap.add_argument("--engines", default="duckdb,postgres,pyspark",
                    help="comma-separated, DuckDB always included (the baseline)")  # fmt: skip
    ap.add_argument("--states", default="", help="'postgres': also with the state there")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_engines_"))
    data = work / f"data{args.customers}"
    if not (data / "crmseg.yml").exists():
        shutil.rmtree(data, ignore_errors=True)
        timed("generate", CRMSEG, "init", str(data), "--demo", "--customers", str(args.customers))
    print(f"demo shop: {args.customers:,} customers in {data}", flush=True)

    with cluster() as server:
        database = server.database("bench")
        chosen = {"duckdb", *args.engines.split(",")}
        state = (
            f"state: {{kind: postgres, host: {server.host}, port: {server.port}, "
            f"user: {server.user}, database: {database}, schema: bench_state}}"
        )
        if "postgres" in args.states.split(","):
            chosen |= {"duckdb+pgstate", "postgres+pgstate"}
        engines = {
            e: line
            for e, line in {
                "duckdb": "backend: {kind: duckdb}",
                "postgres": server.backend(database),
                # the driver collects results (1 GB by default is short at 500k customers)
                "pyspark": 'backend: {kind: pyspark, master: "local[2]", '
                "conf: {spark.driver.memory: 6g}}",
                "duckdb+pgstate": "backend: {kind: duckdb}\n" + state,
                "postgres+pgstate": server.backend(server.database("bench2")) + "\n" + state,
            }.items()
            if e in chosen
        }
        steps: dict[str, list[Timed]] = {}
        for engine, line in engines.items():
            shop = work / f"{engine}{args.customers}"
            shutil.rmtree(shop, ignore_errors=True)
            shutil.copytree(data, shop, ignore=shutil.ignore_patterns(".crmseg"))
            config = shop / "crmseg.yml"
            lines = config.read_text().splitlines()
            config.write_text(
                "\n".join(line if x.startswith("backend:") else x for x in lines) + "\n"
            )
            if line.endswith("bench_state}"):  # a fresh state schema for this engine
                _drop_schema(server, database, "bench_state")
            p = ["-p", str(shop)]
            print(f"== {engine}", flush=True)
            steps[engine] = [
                timed(f"{engine}: crmseg run (first, fresh state)", CRMSEG, "run", *p,
                      "--as-of", DAY1),
                timed(f"{engine}: crmseg run (next day, sources unchanged)", CRMSEG, "run", *p,
                      "--as-of", DAY2),
                timed(f"{engine}: crmseg preview value.vip (computed)", CRMSEG, "preview",
                      "value.vip", *p, "--as-of", PREVIEW),
                timed(f"{engine}: crmseg members value.vip (from history)", CRMSEG, "members",
                      "value.vip", *p, "--as-of", DAY1),
            ]  # fmt: skip
            for step in steps[engine]:
                print(step.line(), flush=True)
    rows: list[tuple[Timed, Timed | None]] = []
    for i in range(len(steps["duckdb"])):
        base = steps["duckdb"][i]
        rows += [(base, None)] + [(s[i], base) for e, s in steps.items() if e != "duckdb"]
    report(f"engines, {args.customers:,} customers (ratio: to DuckDB)", rows)


def _drop_schema(server: Server, database: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=server.user,
                         dbname=database, autocommit=True) as con:  # fmt: skip
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
