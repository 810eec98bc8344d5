"""Property: any rule the language accepts has the same members on DuckDB, on Postgres and on
PySpark.

Rules come from the fuzz generator (``tests/rules/rulegen.py``: traits, attributes,
aggregates with where/within, sequences, functions, case, in, between, like, literals at the
edges), seeded by hypothesis, over the same 400-customer demo loaded into each engine. A
rule the engines refuse must be refused by both. ``CRMSEG_PROPERTY_EXAMPLES`` sets how many
batches of 25 rules (default 4 here; docs/backends.md gives a longer run's figures).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from crmseg.errors import BackendError, RuleError, RuleErrors
from crmseg.rules.defs import Definition
from tests.postgres import Server
from tests.rules.rulegen import RuleGen

AT = datetime(2026, 11, 1)
EXAMPLES = int(os.environ.get("CRMSEG_PROPERTY_EXAMPLES", "4"))
BATCH = 25


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agree") / "demo"
    init_project(root, demo=True, customers=400, seed=5)
    return root


def _opened(demo: Path, name: str, backend: str | None) -> Workspace:
    root = demo.parent / name
    shutil.copytree(demo, root)
    if backend is not None:
        config = root / "crmseg.yml"
        lines = [backend if x.startswith("backend:") else x
                 for x in config.read_text().splitlines()]  # fmt: skip
        config.write_text("\n".join(lines) + "\n")
    ws = Workspace.open(root)
    ws.load()  # the canonical tables are what the rules read (a whole run: a minute on Spark)
    return ws


@pytest.fixture(scope="module")
def duck(demo: Path) -> Iterator[Workspace]:
    with _opened(demo, "duckdb", None) as ws:
        yield ws


@pytest.fixture(scope="module")
def pg(demo: Path, postgres: Server) -> Iterator[Workspace]:
    with _opened(demo, "postgres", postgres.backend(postgres.database("agree"))) as ws:
        yield ws


@pytest.fixture(scope="module")
def spark(demo: Path, spark_ready: None) -> Iterator[Workspace]:
    # small data: adaptive planning and many shuffle partitions cost more than they save
    line = (
        'backend: {kind: pyspark, master: "local[2]", conf: {spark.sql.adaptive.enabled:'
        ' "false", spark.sql.shuffle.partitions: "2"}}'
    )
    with _opened(demo, "pyspark", line) as ws:
        yield ws


def _members(ws: Workspace, defs: list[Definition]) -> dict[str, Any]:
    """Each rule's members, or the word ``refused`` when the engine refuses it."""
    tables = {n: ws.backend.canonical(n) for n in ws.backend.canonical_tables()}
    try:
        plan = ws.compiled.plan(tables, defs)
        names = [d.name for d in defs]
        wide = plan.wide(tables, AT, select=names)
        rows = ws.backend.execute(wide.select("customer_id", *names)).to_pylist()
    except BackendError as exc:
        if len(defs) == 1:
            return {defs[0].name: f"refused: {exc}"}
        half = len(defs) // 2
        return _members(ws, defs[:half]) | _members(ws, defs[half:])
    return {n: sorted(r["customer_id"] for r in rows if r[n]) for n in names}


def _batch(duck: Workspace, seed: int) -> list[Definition]:
    """Up to BATCH generated rules that DuckDB's rule checker accepts."""
    gen = RuleGen(seed)
    defs = []
    for i in range(BATCH * 3):  # about half the generated rules are (meant to be) rejected
        d = Definition(f"custom.r{i}", "segment", gen.rule(), None, "segments/r.yml", 1, 1)
        try:
            tables = {n: duck.backend.canonical(n) for n in duck.backend.canonical_tables()}
            duck.compiled.plan(tables, [d])
        except (RuleError, RuleErrors):
            continue
        defs.append(d)
        if len(defs) == BATCH:
            break
    assert defs
    return defs


def _compare(duck: Workspace, other: Workspace, seed: int) -> None:
    defs = _batch(duck, seed)
    expected = _members(duck, defs)
    got = _members(other, defs)
    differ = {d.text: (expected[d.name], got[d.name]) for d in defs
              if not _agree(expected[d.name], got[d.name])}  # fmt: skip
    assert not differ, differ
    assert any(not isinstance(v, str) for v in expected.values())


PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.postgres
@PROPERTY
@given(seed=st.integers(0, 2**31))
def test_every_accepted_rule_has_the_same_members_on_postgres(
    duck: Workspace, pg: Workspace, seed: int
) -> None:
    _compare(duck, pg, seed)


@pytest.mark.spark
@settings(PROPERTY, max_examples=max(1, EXAMPLES // 2))  # Spark: ~4 s a batch, and the suite's time
@given(seed=st.integers(0, 2**31))
def test_every_accepted_rule_has_the_same_members_on_pyspark(
    duck: Workspace, spark: Workspace, seed: int
) -> None:
    _compare(duck, spark, seed)


def _agree(duck: Any, other: Any) -> bool:
    """Same members, or both refused; and the one listed difference (docs/backends.md): a
    number past the engine's range. DuckDB makes a float past 1.8e308 infinity (IEEE 754)
    and rounds an integer at the int64 edge; Postgres ("out of range") and Spark
    ("ARITHMETIC_OVERFLOW") refuse it with an error that names the segment."""
    if isinstance(duck, str) or isinstance(other, str):
        overflow = not isinstance(duck, str) and (
            "out of range" in other or "ARITHMETIC_OVERFLOW" in other
        )
        return overflow or (isinstance(duck, str) and isinstance(other, str))
    return bool(duck == other)
