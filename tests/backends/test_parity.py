"""The parity suite: the whole demo catalog run on DuckDB, on a real PostgreSQL server and on
PySpark local mode gives the same answers (every segment's members, every trait of every
customer, campaign audiences, lift figures). Exact for memberships and counts; floats within
1e-9 relative."""

from __future__ import annotations

import math
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from tests.postgres import Server

# one worker computes DuckDB's answers once for both engines (see tests/conftest.py)
pytestmark = pytest.mark.xdist_group("spark")

AT = datetime(2026, 11, 1)
CUSTOMERS = 2000


def answers(root: Path) -> dict[str, Any]:
    """Everything the catalog answers at AT, after one run there."""
    with Workspace.open(root) as ws:
        ws.run(as_of=AT)
        members = {s.name: ws.members(s.name, as_of=AT) for s in ws.segments}
        tables = ws._loaded_tables()
        plan = ws._plan(tables)
        names = list(plan.traits)
        wide = plan.wide(tables, AT, ws._sql_segments(), select=names)
        rows = ws.backend.execute(
            wide.select("customer_id", *names).order_by("customer_id")
        ).to_pylist()
        audiences = {
            r.campaign: {
                "funnel": r.audience.funnel(),
                "treatment": sorted((c, v or "") for c, v in r.audience.treatment),
                "holdout": sorted(r.audience.holdout),
            }
            for r in ws.activate_due(dry_run=True, as_of=AT)
        }
        lift = [{k: v for k, v in r.items() if k != "computed_at"} for r in ws.measure_campaigns()]
    return {"members": members, "traits": rows, "audiences": audiences, "lift": lift}


def same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parity") / "duckdb"
    init_project(root, demo=True, customers=CUSTOMERS, seed=7)
    return root


@pytest.fixture(scope="module")
def duckdb_answers(demo: Path) -> dict[str, Any]:
    shop = demo.parent / "duckdb-run"
    shutil.copytree(demo, shop)
    answered = answers(shop)
    assert sum(len(m) for m in answered["members"].values()) > 1000  # the demo is not empty
    assert len(answered["traits"]) > CUSTOMERS * 0.9
    assert answered["audiences"] and any(a["treatment"] for a in answered["audiences"].values())
    assert answered["lift"]
    return answered


def on(demo: Path, engine: str, backend: str) -> Path:
    """A copy of the demo project whose ``backend:`` line is ``backend``."""
    shop = demo.parent / engine
    shutil.copytree(demo, shop)
    config = shop / "crmseg.yml"
    lines = [backend if x.startswith("backend:") else x for x in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")
    return shop


@pytest.mark.postgres
def test_the_demo_catalog_gives_the_same_answers_on_postgres(
    demo: Path, duckdb_answers: dict[str, Any], postgres: Server
) -> None:
    shop = on(demo, "postgres", postgres.backend(postgres.database("parity")))
    answered = answers(shop)
    for part in ("members", "traits", "audiences", "lift"):
        same(answered[part], duckdb_answers[part], part)


@pytest.mark.spark
def test_the_demo_catalog_gives_the_same_answers_on_pyspark(
    demo: Path, duckdb_answers: dict[str, Any], spark_ready: None
) -> None:
    shop = on(demo, "pyspark", 'backend: {kind: pyspark, master: "local[2]"}')
    answered = answers(shop)
    for part in ("members", "traits", "audiences", "lift"):
        same(answered[part], duckdb_answers[part], part)
