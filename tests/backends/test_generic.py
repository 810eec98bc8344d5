"""Another Ibis engine (``backend: {kind: <ibis backend>}``) through the generic backend:
SQLite as the real other engine, and DuckDB driven through the generic class too (so the
whole demo catalog is compared, not only what SQLite can compute)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crmseg import Workspace
from crmseg.backends.generic import PREFIX, IbisBackend
from crmseg.config import BackendConfig
from crmseg.demo.scaffold import init_project
from crmseg.errors import BackendError, CrmsegError
from tests.backends.test_parity import answers, same
from tests.segments.conftest import grow_customers

AT = dt.datetime(2026, 11, 1)
SQLITE = "backend: {kind: sqlite, path: .crmseg/warehouse.sqlite}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generic") / "demo"
    init_project(root, demo=True, customers=300, seed=7)
    return root


@pytest.fixture(scope="module")
def duckdb_answers(demo: Path) -> dict[str, Any]:
    shop = demo.parent / "duckdb"
    shutil.copytree(demo, shop)
    return answers(shop)


def copy(demo: Path, name: str, backend: str | None = None) -> Path:
    shop = demo.parent / name
    shutil.copytree(demo, shop)
    if backend is not None:
        config = shop / "crmseg.yml"
        lines = [
            backend if x.startswith("backend:") else x for x in config.read_text().splitlines()
        ]
        config.write_text("\n".join(lines) + "\n")
    return shop


@pytest.fixture
def generic_duckdb() -> Iterator[None]:
    """``kind: duckdb`` opened through the generic class instead of crmseg's DuckDB one."""
    import crmseg.backends as backends

    real = backends.connect

    def connect(config: BackendConfig, root: Path, memory: bool = False) -> Any:
        if config.kind != "duckdb":
            return real(config, root, memory)
        path = None if memory else str(root / ".crmseg" / "generic.duckdb")
        return IbisBackend(config, path, scratch=memory)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "connect", connect)
        yield


def test_the_demo_catalog_gives_the_same_answers_through_the_generic_backend(
    demo: Path, duckdb_answers: dict[str, Any], generic_duckdb: None
) -> None:
    shop = copy(demo, "generic-duckdb")
    answered = answers(shop)
    for part in ("members", "traits", "audiences", "lift"):
        same(answered[part], duckdb_answers[part], part)
    with Workspace.open(shop) as ws:
        assert isinstance(ws.backend, IbisBackend)  # the generic class did the work
        tables = ws.backend.con.list_tables()
    assert f"{PREFIX}catalog" in tables and not any(t.startswith("crmseg.") for t in tables)


# what SQLite 3.40 (Debian 12's, which Python uses) cannot compute: a median, and a window
# in sub-second time (Ibis needs SQLite 3.42 for it)
REFUSED = {"lifecycle.stage_new", "lifecycle.stage_loyal", "lifecycle.stage_at_risk",
           "lifecycle.stage_churned", "lifecycle.stage_reactivated", "risk.churn_high_value",
           "behavior.abandoned_cart"}  # fmt: skip


def test_sqlite_answers_like_duckdb_for_every_segment_it_computes(
    demo: Path, duckdb_answers: dict[str, Any]
) -> None:
    shop = copy(demo, "sqlite", SQLITE)
    computed = sorted(set(duckdb_answers["members"]) - REFUSED)
    assert len(computed) >= 15
    with Workspace.open(shop) as ws:
        ws.run(as_of=AT, select=computed)
        for name in computed:
            assert ws.members(name, as_of=AT) == duckdb_answers["members"][name], name
        with pytest.raises(CrmsegError, match="the sqlite backend cannot compute Median"):
            ws.run(as_of=AT, select=["lifecycle.stage_loyal"])
    assert "value.clv_top_20pct" in computed  # models fit on what SQLite summed


SQL_SEGMENTS = """segments:
  - name: value.big_orders_sql
    description: Ordered over 200 once.
    owner: data-team
    sql: select distinct customer_id from crmseg.orders where amount > 200
  - name: demographic.dach_sql
    description: Golden records in Germany, Austria or Switzerland (a view).
    owner: data-team
    sql: >-
      select g.customer_id from crmseg.golden_customers as g
      where g.country in ('DE', 'AT', 'CH')
"""


def test_sql_segments_read_the_current_tables_and_views(demo: Path) -> None:
    """``crmseg.<name>`` in users' SQL names the catalog's table, or its view's query."""
    names = ["value.big_orders_sql", "demographic.dach_sql"]
    members = {}
    for engine, backend in (("duckdb", None), ("sqlite", SQLITE)):
        shop = copy(demo, f"sql-{engine}", backend)
        (shop / "segments" / "custom.yml").write_text(SQL_SEGMENTS)
        with Workspace.open(shop) as ws:
            ws.run(as_of=AT, select=names)
            members[engine] = {n: ws.members(n, as_of=AT) for n in names}
    assert all(members["duckdb"].values())
    assert members["sqlite"] == members["duckdb"]


def test_a_construct_sqlite_lacks_is_one_located_line(demo: Path) -> None:
    shop = copy(demo, "sqlite-cli", SQLITE)
    proc = subprocess.run(
        [sys.executable, "-m", "crmseg", "run", "-p", str(shop), "--as-of", "2026-11-01",
         "-s", "lifecycle.stage_new"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    expected = ("error: segments/models.yml:4: segment lifecycle.stage_new cannot be "
                "computed: the sqlite backend cannot compute Median")  # fmt: skip
    assert lines[-1].startswith(expected), lines
    assert "Traceback" not in proc.stderr
    # a model's own query: the segment that needs it, and which model traits
    proc = subprocess.run(
        [sys.executable, "-m", "crmseg", "run", "-p", str(shop), "--as-of", "2026-11-01",
         "-s", "risk.churn_high_value", "-s", "value.vip"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()][-1]
    assert last.startswith("error: segments/models.yml:84: segment risk.churn_high_value cannot "
                           "be computed: its model traits (churn.risk) cannot: the sqlite backend "
                           "cannot compute Median"), last  # fmt: skip
    with Workspace.open(shop) as ws:
        assert ws.runs() == []  # nothing recorded


def test_sqlites_arg_min_takes_the_row_of_its_own_key() -> None:
    """Ibis reads it from a bare column, which SQLite takes from the row of the query's last
    min() or max(): here there are others beside it."""
    import ibis

    from crmseg.backends.sql import compiler

    con = ibis.sqlite.connect()
    con.compiler = compiler("sqlite")
    day = dt.date
    t = con.create_table(
        "t",
        pa.table({
            "g": [1, 1, 1, 2, 2],
            "k": pa.array([3, -5, None, 10, 2], pa.int64()),
            "v": ["a", "b", "c", "d", "e"],
            "d": [day(2026, 1, 3), day(2026, 1, 1), day(2026, 1, 2), None, day(2025, 1, 1)],
        }),
    )  # fmt: skip
    q = t.group_by("g").aggregate(
        low=t.k.min(), high=t.k.max(), at_low=t.v.argmin(t.k), at_high=t.v.argmax(t.k),
        first=t.v.argmin(t.d), last=t.k.argmax(t.d),
    )  # fmt: skip
    rows = con.to_pyarrow(q.order_by("g")).to_pylist()
    assert rows == [
        {"g": 1, "low": -5, "high": 3, "at_low": "b", "at_high": "a", "first": "b", "last": 3},
        {"g": 2, "low": 2, "high": 10, "at_low": "e", "at_high": "d", "first": "e", "last": 2},
    ]
    # text keys order by their bytes (JSON would escape some), floats keep all 17 digits
    u = con.create_table(
        "u",
        pa.table({"s": ["a", "a\x01", "a!"], "f": [0.1 + 0.2, 2 / 3, None], "k": [1, 2, 3]}),
    )
    pick = u.aggregate(most=u.k.argmax(u.s), least=u.k.argmin(u.s), f=u.f.argmin(u.k),
                       g=u.f.argmax(u.s), h=u.f.argmax(u.k))  # fmt: skip
    assert con.to_pyarrow(pick).to_pylist() == [
        {"most": 3, "least": 1, "f": 0.1 + 0.2, "g": None, "h": None}
    ]


def _catalog(shop: Path) -> tuple[int, list[str]]:
    """The catalog's current version and the tables of the SQLite file."""
    import sqlite3

    with sqlite3.connect(shop / ".crmseg" / "warehouse.sqlite") as con:
        version = con.execute(f"SELECT max(version) FROM {PREFIX}catalog").fetchone()[0]
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return int(version), sorted(tables)


def _named(shop: Path, version: int) -> set[str]:
    """The tables versions ``version`` and the one before name."""
    import sqlite3

    with sqlite3.connect(shop / ".crmseg" / "warehouse.sqlite") as con:
        rows = con.execute(
            f"SELECT physical FROM {PREFIX}catalog WHERE version >= ? AND physical IS NOT NULL",
            [version - 1],
        ).fetchall()
    return {r[0] for r in rows}


SEGMENTS = ["value.vip", "lifecycle.repeat", "demographic.dach"]


def test_a_failed_or_killed_run_leaves_the_previous_version(demo: Path) -> None:
    shop = copy(demo, "sqlite-kill", SQLITE)
    with Workspace.open(shop) as ws:
        ws.run(as_of=AT, select=SEGMENTS)
        before = {n: ws.members(n, as_of=AT) for n in SEGMENTS}
        customers = ws.backend.scalar(ws.backend.canonical("customers").count())
    version, tables = _catalog(shop)
    grow_customers(shop)  # so the next run loads and writes again
    with Workspace.open(shop) as ws, pytest.raises(Exception, match="injected failure"):
        ws.run(as_of=AT, select=SEGMENTS, _fail_after=0)
    assert _catalog(shop) == (version, tables)  # what the failed run staged is gone
    command = [sys.executable, "-m", "crmseg", "run", "-p", str(shop), "--as-of", "2026-11-01",
               *(a for n in SEGMENTS for a in ("-s", n))]  # fmt: skip
    killed = 0
    for delay in (0.5, 1.0, 1.5, 2.5):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed += 1
        with Workspace.open(shop) as ws:
            assert _catalog(shop)[0] == version, delay
            assert ws.backend.scalar(ws.backend.canonical("customers").count()) == customers
            assert {n: ws.members(n, as_of=AT) for n in SEGMENTS} == before, delay
    assert killed, "every run finished before its kill"
    assert subprocess.run(command, capture_output=True).returncode == 0
    new_version, tables = _catalog(shop)
    assert new_version > version
    with Workspace.open(shop) as ws:
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == customers + 1
    # only what the current and the previous version name (and the catalog) is left: the
    # tables killed runs staged went
    assert set(tables) == {*_named(shop, new_version), f"{PREFIX}catalog"}


def test_a_writer_that_fell_behind_keeps_nothing(tmp_path: Path) -> None:
    """Two processes on one warehouse: the one whose run began before the other's commit
    is refused at its own commit, and what it staged goes."""
    import ibis

    config = BackendConfig(kind="sqlite", path="w.sqlite")
    path = str(tmp_path / "w.sqlite")
    first, second = IbisBackend(config, path), IbisBackend(config, path)
    try:
        first.put("t", ibis.memtable({"a": [1]}))
        with pytest.raises(BackendError, match="another process committed"), second.pending():
            second.put("u", ibis.memtable({"b": [2]}))
            first.put("t", ibis.memtable({"a": [1, 2]}))
        assert second.canonical_tables() == ["t"]  # what the catalog says, not what it staged
        assert second.scalar(second.canonical("t").count()) == 2
        assert not any("__u__" in t for t in second.con.list_tables())
    finally:
        first.close()
        second.close()


def test_settings_of_another_engine_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'oracel'.*sqlite"):
        BackendConfig(kind="oracel")
    with pytest.raises(ValueError, match="'threads' is not a setting of the sqlite backend"):
        BackendConfig(kind="sqlite", threads=2)
    with pytest.raises(ValueError, match="'connect' is not a setting of the duckdb backend"):
        BackendConfig(kind="duckdb", connect={"x": 1})
    config = BackendConfig(kind="snowflake", connect={"account": "a", "user": "u"},
                           password_env="CRMSEG_TEST_UNSET_SECRET")  # fmt: skip
    with pytest.raises(BackendError, match=r"backend\.password_env: the environment variable"):
        IbisBackend(config, None)
    try:
        import snowflake.connector  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match=r"pip install 'ibis-framework\[snowflake\]'"):
            IbisBackend(BackendConfig(kind="snowflake", connect={"account": "a"}), None)
    with pytest.raises(BackendError, match="cannot connect to the sqlite database"):
        IbisBackend(BackendConfig(kind="sqlite"), str(tmp_path / "missing" / "w.sqlite"))


def test_unit_tests_run_in_a_scratch_warehouse_that_goes_away(demo: Path) -> None:
    shop = copy(demo, "sqlite-unit", SQLITE)
    proc = subprocess.run(
        [sys.executable, "-m", "crmseg", "test", "-p", str(shop)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed, 0 failed" in proc.stdout
    assert not (shop / ".crmseg" / "warehouse.sqlite").exists()  # in memory, never the file


def test_real_time_is_refused_on_another_engine(demo: Path) -> None:
    shop = copy(demo, "sqlite-stream", SQLITE)
    with Workspace.open(shop) as ws:
        ws.run(as_of=AT, select=SEGMENTS[:1])
    proc = subprocess.run(
        [sys.executable, "-m", "crmseg", "stream", "-p", str(shop)],
        input="", capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "not available on the sqlite backend" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
