"""The PySpark backend in local mode: a killed run leaves the previous catalog and data, one
process at a time opens a warehouse, unit tests never touch it, files load the same rows as
on DuckDB, and bad settings get one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from crmseg import Workspace
from crmseg.errors import BackendError, CrmsegError, SourceError, StateError
from tests.backends.test_postgres import (
    MESSY_CUSTOMERS,
    MESSY_ORDERS,
    MESSY_PROJECT,
    _loaded,
    _on,
)
from tests.conftest import MakeProject, run_cli

pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("spark_ready")]

# small data: adaptive planning and many shuffle partitions cost more than they save; a
# static setting (driver memory) is taken at start and never set on a running session
SPARK = (
    'backend: {kind: pyspark, master: "local[2]", conf: {spark.sql.adaptive.enabled: "false",'
    ' spark.sql.shuffle.partitions: "2", spark.driver.memory: 1g}}'
)
T1 = datetime(2026, 10, 1)
T2 = datetime(2026, 11, 1)


def _catalog(root: Path) -> dict[str, str]:
    objects = json.loads((root / ".crmseg" / "spark" / "catalog.json").read_text())["objects"]
    return {o["name"]: o.get("path") or o["sql"] for o in objects}


def test_a_killed_run_leaves_the_previous_data(make_project: MakeProject) -> None:
    # the small project: the subprocess's fresh JVM is the cost (the demo made this 80 s)
    root = make_project()
    _on(root, SPARK)
    with Workspace.open(root) as ws:
        ws.run(as_of=T1)
        names = [s.name for s in ws.segments]
        before = {n: ws.members(n, as_of=T1) for n in names}
        customers = ws.backend.scalar(ws.backend.canonical("customers").count())
    catalog = _catalog(root)
    with (root / "data" / "customers.csv").open("a") as f:  # the next run loads again
        f.write("5,eve@example.com,DE,2024-05-01 10:00:00,pro,gold\n")
    # the first table the run writes anew: killed there, it has written and not committed
    written = root / ".crmseg" / "spark" / "tables" / "customers"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmseg", "run", "-p", str(root), "--as-of", f"{T2:%Y-%m-%d}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it once it has written a new table (a second customers folder) and before it
        # commits: the catalog it would replace must be the one it read
        deadline = time.monotonic() + 240
        while len(list(written.iterdir())) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
        # meanwhile, nobody else opens the warehouse (the lock is taken first: this fails
        # before starting anything)
        with (
            pytest.raises(BackendError, match="in use by another crmseg process"),
            Workspace.open(root) as busy,
        ):
            busy.backend  # noqa: B018 (opening it is the test)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert len(list(written.iterdir())) == 2  # the killed run's folder is there
    assert _catalog(root) == catalog
    with Workspace.open(root) as ws:
        assert [r.as_of for r in ws.runs()] == [T1]
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == customers
        for n in names:
            assert ws.members(n, as_of=T1) == before[n], n
        # the next commit removes what the killed run wrote
        with ws.backend.pending():
            ws.backend.append("_probe", pa.table({"x": [1]}))
        assert len(list(written.iterdir())) == 1
        assert _catalog(root)["customers"] == catalog["customers"]


def test_a_failed_run_restores_the_catalog_in_the_same_process(
    make_project: MakeProject,
) -> None:
    """Also: unit tests run in a temporary warehouse, and real time is refused."""
    root = make_project(
        tests__dach_yml="""\
        tests:
          - name: dach
            as_of: 2024-06-01
            customers:
              - {customer_id: a, country: DE}
              - {customer_id: b, country: FR}
            expect:
              demographic.dach: [a]
        """,
    )
    _on(root, SPARK)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
        catalog = _catalog(root)
        dach = ws.members("demographic.dach")
        (root / "data" / "customers.csv").write_text(
            "customer_id,email,country,signup_at,plan,tier\n9,z@example.com,DE,2024-01-01,pro,gold\n"
        )
        with pytest.raises(StateError, match="injected"):
            ws.run(as_of=datetime(2024, 7, 2), _fail_after=0)
        assert _catalog(root) == catalog
        # the session reads the previous tables again, not the failed run's
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 4
        assert ws.members("demographic.dach") == dach
        with pytest.raises(BackendError, match="not available on the pyspark backend"):
            ws.processor()  # real time is refused in one line, not half-run
        temporary = set(Path(tempfile.gettempdir()).glob("crmseg-spark-*"))
        results = ws.test()
        assert [r.ok for r in results] == [True], results
        # the unit test's rows went to a temporary warehouse, removed afterwards
        assert set(Path(tempfile.gettempdir()).glob("crmseg-spark-*")) == temporary
    assert _catalog(root) == catalog


def test_files_load_the_same_rows_and_errors_as_on_duckdb(make_project: MakeProject) -> None:
    files = MESSY_PROJECT
    duck = make_project("duck", **files)
    spark = make_project("spark", **files)
    _on(spark, SPARK)
    expected = _loaded(duck)
    assert expected["customers"][1]["signup_at"] == datetime(2024, 2, 29, 21, 30)
    assert _loaded(spark) == expected
    bad = MESSY_CUSTOMERS.replace("2024-10-27 02:30:00", "2023-02-29 10:00").replace("-2e3", "x")
    for root in (duck, spark):
        (root / "data" / "customers.csv").write_text(bad)
        (root / "data" / "orders.csv").write_text(MESSY_ORDERS.replace("29/2/2024", "30/2/2024"))
    error = run_cli("run", "-p", str(duck)).stderr
    assert "found 1 value that is not (e.g. '2023-02-29 10:00')" in error
    assert "(e.g. '30/2/2024 11:59 pm')" in error
    # in this process (a CLI process would start another JVM): the same lines
    with Workspace.open(spark) as ws, pytest.raises(CrmsegError) as caught:
        ws.run(as_of=datetime(2024, 12, 1))
    assert isinstance(caught.value, SourceError)
    shown = ["error: " + caught.value.problems[0], *("  " + p for p in caught.value.problems[1:])]
    assert "\n".join(shown) == error.strip().replace(str(duck), str(spark))


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("{kind: pyspark, host: db.example.com}", "'host' is not a setting of the pyspark backend"),
        (
            '{kind: pyspark, master: "nowhere://1"}',
            "error: cannot start Spark (nowhere://1): Master must either be yarn or start with",
        ),
        ("{kind: pyspark, conf: [1]}", "[backend.conf]: Input should be a valid dictionary"),
    ],
)
def test_bad_spark_settings_get_one_line(
    make_project: MakeProject, backend: str, expected: str
) -> None:
    root = make_project()
    _on(root, "backend: " + backend)
    result = subprocess.run(
        [sys.executable, "-m", "crmseg", "run", "-p", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_the_engine_is_told_by_the_catalog_not_the_folder(make_project: MakeProject) -> None:
    """A catalog file that is not crmseg's gives one line naming it, and nothing is lost."""
    root = make_project()
    _on(root, SPARK)
    folder = root / ".crmseg" / "spark"
    folder.mkdir(parents=True)
    (folder / "catalog.json").write_text(textwrap.dedent("{not json"))
    result = run_cli("run", "-p", str(root))
    assert result.returncode == 1
    assert "catalog.json: not a crmseg Spark catalog" in result.stderr
    assert (folder / "catalog.json").read_text() == "{not json"


def test_sources_that_are_tables_in_spark(make_project: MakeProject, tmp_path: Path) -> None:
    """A source that is a table of Spark's catalog (one JVM's in-memory catalog here; a
    metastore in production) is read where it is, and its checksum tells a change."""
    root = make_project(
        crmseg_yml=f"""\
        {SPARK}
        name: tables
        sources:
          customers: {{table: shop_t.people}}
          orders: {{table: shop_t.sales, columns: {{order_id: id, amount: total}}}}
        """,
        # user SQL names the canonical schema crmseg, whatever Spark's catalog calls it
        segments__sql_yml="""\
        segments:
          - name: custom.big_spenders
            description: Spent 200 or more in one order.
            owner: crm-team
            sql: "SELECT DISTINCT customer_id FROM crmseg.orders WHERE amount >= 200"
        """,
    )
    with Workspace.open(root) as ws:
        spark = ws.backend.spark  # type: ignore[attr-defined]
        spark.sql("CREATE DATABASE IF NOT EXISTS shop_t")
        for name, columns, rows in (
            ("people", "customer_id string, country string, signup_at timestamp",
             "('1', 'DE', TIMESTAMP '2024-01-01'), ('2', 'AT', TIMESTAMP '2024-02-01'), "
             "('3', 'FR', TIMESTAMP '2024-03-01'), ('4', NULL, TIMESTAMP '2024-04-01')"),
            ("sales", "id int, customer_id string, ordered_at timestamp, total double",
             "(1, '1', TIMESTAMP '2024-05-01', 120D), (2, '1', TIMESTAMP '2024-06-01', 80.5D), "
             "(3, '2', TIMESTAMP '2024-05-15', 300D)"),
        ):  # fmt: skip
            spark.sql(f"DROP TABLE IF EXISTS shop_t.{name}")
            spark.sql(
                f"CREATE TABLE shop_t.{name} ({columns}) USING parquet LOCATION '{tmp_path / name}'"
            )
            spark.sql(f"INSERT INTO shop_t.{name} VALUES {rows}")
        first = ws.run(as_of=datetime(2024, 7, 1))
        assert ws.members("demographic.dach") == ["1", "2"]
        assert ws.members("value.buyers") == ["1", "2"]
        assert ws.members("custom.big_spenders") == ["2"]
        assert first.details["sources"]["orders"] == "loaded"
        again = ws.run(as_of=datetime(2024, 7, 2))
        assert again.details["sources"]["orders"] == "unchanged"  # the checksum held
        spark.sql("INSERT INTO shop_t.sales VALUES (4, '4', TIMESTAMP '2024-06-20', 10D)")
        third = ws.run(as_of=datetime(2024, 7, 3))
        assert third.details["sources"]["orders"] == "loaded"
        assert ws.members("value.buyers") == ["1", "2", "4"]


def test_splink_runs_on_spark_itself() -> None:
    """``identity.splink.engine: warehouse`` trains and scores with Splink's SparkAPI on the
    backend's own session (the similarity jar is on its classpath): the same pairs as Splink
    on the embedded DuckDB, probabilities agreeing to float rounding, and nothing of
    Splink's left in the session or the work folder."""
    pytest.importorskip("splink")
    import ibis

    from crmseg.backends.duckdb import DuckDBBackend
    from crmseg.backends.spark import SparkBackend
    from crmseg.config import IdentityConfig
    from crmseg.demo.generator import generate
    from crmseg.identity.components import Scratch
    from crmseg.identity.probabilistic import splink_links
    from crmseg.sources.normalize import PhoneBook

    customers = generate(400, 8, T2)["customers"]
    conf = {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "2"}
    found = []
    for engine in ("local", "warehouse"):
        cfg = IdentityConfig.model_validate({"splink": {"enabled": True, "engine": engine}})
        backend = DuckDBBackend() if engine == "local" else SparkBackend(None, conf=conf)
        try:
            scratch = Scratch(backend)
            _, matches = splink_links(scratch, ibis.memtable(customers), cfg, PhoneBook("DE"))
            pair = ["customer_id_l", "customer_id_r"]
            found.append(backend.execute(matches.order_by(pair)).to_pylist())
            scratch.close()
            if isinstance(backend, SparkBackend):
                views = [t.name for t in backend.spark.catalog.listTables() if t.isTemporary]
                assert not [v for v in views if v.startswith("__splink")], views
                assert not list(backend._work.glob("splink-*"))
        finally:
            backend.close()
    a, b = found
    assert a, "Splink found no pairs: the comparison says nothing"
    assert [(x["customer_id_l"], x["customer_id_r"]) for x in a] == [
        (y["customer_id_l"], y["customer_id_r"]) for y in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["match_probability"] == pytest.approx(y["match_probability"], rel=1e-6)
