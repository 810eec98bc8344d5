"""Shared fixtures: small real projects on disk (CSV files, a DuckDB warehouse, a state file)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.postgres import Server

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

CUSTOMERS_CSV = """\
customer_id,email,country,signup_at,plan,tier
1,anna@example.com,DE,2024-01-01 10:00:00,pro,gold
2,ben@example.com,AT,2024-02-01 10:00:00,basic,silver
3,cleo@example.com,FR,2024-03-01 10:00:00,,
4,dan@example.com,,2024-04-01 10:00:00,pro,gold
"""

ORDERS_CSV = """\
order_id,customer_id,created,total,category
10,1,2024-05-01 12:00:00,120.0,skincare
11,1,2024-06-01 12:00:00,80.5,makeup
12,2,2024-05-15 12:00:00,300.0,skincare
13,4,2024-07-01 12:00:00,50.0,haircare
"""

CONFIG = """\
name: test-shop
timezone: UTC
currency: EUR
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}
"""

SEGMENTS = """\
segments:
  - name: demographic.dach
    description: Customers in Germany or Austria.
    owner: crm-team
    rule: country in ('DE', 'AT')
  - name: value.buyers
    description: Customers with at least one order.
    owner: crm-team
    rule: count(orders) >= 1
"""

MakeProject = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Write a small project; keyword arguments replace or add files (None removes one)."""

    def make(name: str = "shop", **files: str | None) -> Path:
        root = tmp_path / name
        defaults: dict[str, str | None] = {
            "crmseg.yml": CONFIG,
            "data/customers.csv": CUSTOMERS_CSV,
            "data/orders.csv": ORDERS_CSV,
            "segments/core.yml": SEGMENTS,
        }
        for key, text in files.items():
            defaults[key.replace("__", "/").replace("_yml", ".yml").replace("_csv", ".csv")] = text
        for rel, text in defaults.items():
            if text is None:
                continue
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "crmseg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A PostgreSQL server on 127.0.0.1 for this test process (see tests/postgres.py)."""
    from tests.postgres import start

    yield from start()


OpenState = Callable[..., "StateStore"]


@pytest.fixture(scope="session")
def state_database(postgres: Server) -> str:
    """One database for the state tests on Postgres; each test takes schemas of its own."""
    return postgres.database("states")


@pytest.fixture(params=["duckdb", "postgres"])
def open_state(request: pytest.FixtureRequest, tmp_path: Path) -> OpenState:
    """``open_state(name)`` opens the state called ``name`` (again, when it was opened
    before: the same file or schema) on each engine the state runs on."""
    import uuid

    from crmseg.backends import open_state as opened
    from crmseg.config import StateConfig

    if request.param == "duckdb":
        return lambda name="state": opened(StateConfig(path=f"{name}.duckdb"), tmp_path)
    server: Server = request.getfixturevalue("postgres")
    database = request.getfixturevalue("state_database")
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(name: str = "state") -> StateStore:
        settings = {"kind": "postgres", "host": server.host, "port": server.port,
                    "user": server.user, "database": database,
                    "schema": f"{prefix}_{name}"}  # fmt: skip
        return opened(StateConfig.model_validate(settings), tmp_path)

    return make


@pytest.fixture(scope="session")
def spark_ready() -> None:
    """PySpark and a Java runtime are there for whole runs on Spark (CI installs Java;
    ``CRMSEG_REQUIRE_SPARK=1`` turns their absence into a failure instead of a skip)."""
    import importlib.util
    import shutil

    missing = [
        what
        for what, ok in (
            ("pyspark (pip install 'crmseg[spark]')", importlib.util.find_spec("pyspark")),
            ("java", shutil.which("java") or os.environ.get("JAVA_HOME")),
        )
        if not ok
    ]
    if missing:
        if os.environ.get("CRMSEG_REQUIRE_SPARK") == "1":
            pytest.fail(f"whole runs on Spark need {', '.join(missing)}")
        pytest.skip(f"whole runs on Spark need {', '.join(missing)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Spark tests share one xdist worker (``--dist loadgroup``): each worker would start
    and warm its own JVM (about 25 s) and two JVMs fight over two cores."""
    for item in items:
        if item.get_closest_marker("spark") is not None:
            item.add_marker(pytest.mark.xdist_group("spark"))
