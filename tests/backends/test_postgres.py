"""The PostgreSQL backend on a real server: sources already in the database, runs that are
one transaction, unit tests in a scratch database, and one-line errors for bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from tests.conftest import MakeProject, run_cli
from tests.postgres import Server
from tests.segments.conftest import grow_customers

pytestmark = pytest.mark.postgres

T1 = datetime(2026, 10, 1)
T2 = datetime(2026, 11, 1)


def _on(root: Path, line: str) -> None:
    """Point the project's ``backend:`` at ``line``."""
    config = root / "crmseg.yml"
    text = config.read_text()
    if "backend:" in text:
        lines = [line if x.startswith("backend:") else x for x in text.splitlines()]
    else:
        lines = [line, *text.splitlines()]
    config.write_text("\n".join(lines) + "\n")


def _connect(server: Server, database: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=server.host, port=server.port, user=server.user, dbname=database, autocommit=True
    )


def test_sources_that_are_tables_in_the_database(
    postgres: Server, make_project: MakeProject
) -> None:
    db = postgres.database("tables")
    with _connect(postgres, db) as con:
        con.execute("CREATE SCHEMA shop")
        con.execute(
            "CREATE TABLE shop.people (customer_id text, country text, signup_at timestamp)"
        )
        con.execute(
            "INSERT INTO shop.people VALUES ('1', 'DE', '2024-01-01'), ('2', 'AT', '2024-02-01'),"
            " ('3', 'FR', '2024-03-01'), ('4', NULL, '2024-04-01')"
        )
        con.execute(
            "CREATE TABLE shop.sales (id int, customer_id text, ordered_at timestamp, total float8)"
        )
        con.execute(
            "INSERT INTO shop.sales VALUES (1, '1', '2024-05-01', 120),"
            " (2, '1', '2024-06-01', 80.5), (3, '2', '2024-05-15', 300)"
        )
    root = make_project(
        crmseg_yml=f"""\
        {postgres.backend(db)}
        name: tables
        sources:
          customers: {{table: shop.people}}
          orders: {{table: shop.sales, columns: {{order_id: id, amount: total}}}}
        """
    )
    with Workspace.open(root) as ws:
        first = ws.run(as_of=datetime(2024, 7, 1))
        assert ws.members("demographic.dach") == ["1", "2"]
        assert ws.members("value.buyers") == ["1", "2"]
        assert first.details["sources"]["orders"] == "loaded"
        again = ws.run(as_of=datetime(2024, 7, 2))
        assert again.details["sources"]["orders"] == "unchanged"  # the checksum held
    with _connect(postgres, db) as con:
        con.execute("INSERT INTO shop.sales VALUES (4, '4', '2024-06-20', 10)")
    with Workspace.open(root) as ws:
        third = ws.run(as_of=datetime(2024, 7, 3))
        assert third.details["sources"]["orders"] == "loaded"
        assert ws.members("value.buyers") == ["1", "2", "4"]


def _run(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crmseg", "run", "-p", str(root), "--as-of", f"{T2:%Y-%m-%d}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_run_leaves_the_previous_data(postgres: Server, tmp_path: Path) -> None:
    root = tmp_path / "shop"
    init_project(root, demo=True, customers=1500, seed=3)
    _on(root, postgres.backend(postgres.database("killed")))
    with Workspace.open(root) as ws:
        ws.run(as_of=T1)
        names = [s.name for s in ws.segments]
        before = {n: ws.members(n, as_of=T1) for n in names}
        customers = ws.backend.scalar(ws.backend.canonical("customers").count())
    grow_customers(root)
    outcomes = []
    for delay in (0.5, 1.5, 2.5, 3.5, 5.0):
        proc = _run(root)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            outcomes.append("killed")
        else:
            outcomes.append("finished")
        proc.wait()
        if outcomes[-1] == "finished":
            break
        with Workspace.open(root) as ws:
            runs = [r.as_of for r in ws.runs()]
            loaded = ws.backend.scalar(ws.backend.canonical("customers").count())
            assert runs in ([T1], [T1, T2]), delay
            if runs == [T1, T2]:  # killed after its last commit, while ending
                assert loaded == customers + 1, delay  # recorded: its data is committed
                break
            # the warehouse commits first: a kill between the two commits leaves the new
            # data without a run (tests/segments/test_atomicity.py), never a run without it
            assert loaded in (customers, customers + 1), delay
            for n in names:
                assert ws.members(n, as_of=T1) == before[n], (delay, n)
    assert "killed" in outcomes
    assert _run(root).wait() == 0
    with Workspace.open(root) as ws:
        assert [r.as_of for r in ws.runs()][-1] == T2
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == customers + 1
        # the identity view over customers was made again over the new table
        assert "golden_customers" in ws.backend.views()


def test_unit_tests_never_touch_the_project_database(
    postgres: Server, make_project: MakeProject
) -> None:
    db = postgres.database("unit")
    root = make_project(
        crmseg_yml=postgres.backend(db)
        + "\n"
        + textwrap.dedent("""\
            name: unit
            sources:
              customers: {path: data/customers.csv}
            """),
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
        segments__core_yml="""\
        segments:
          - name: demographic.dach
            description: DACH.
            owner: crm-team
            rule: country in ('DE', 'AT', 'CH')
        """,
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
        assert ws.members("demographic.dach") == ["1", "2"]
    result = run_cli("test", "-p", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    with Workspace.open(root) as ws:  # the project's rows are as they were
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 4
    with _connect(postgres, "postgres") as con:  # and the scratch database is gone
        names = [r[0] for r in con.execute("SELECT datname FROM pg_database").fetchall()]
    assert not [n for n in names if n.startswith("crmseg_scratch_")]


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            "{kind: postgres, host: 127.0.0.1, port: PORT, password_env: CRMSEG_TEST_SECRET}",
            "error: cannot connect to PostgreSQL at 127.0.0.1:PORT: ",
        ),
        (
            "{kind: postgres, port: 5432, password_env: CRMSEG_TEST_UNSET}",
            "error: backend.password_env: the environment variable CRMSEG_TEST_UNSET is not set",
        ),
        (
            "{kind: postgres, path: warehouse.duckdb}",
            "crmseg.yml:1:10 [backend]: 'path' is not a setting of the postgres backend",
        ),
        ("{host: db.example.com}", "[backend]: 'host' is not a setting of the duckdb backend"),
        (
            "{kind: orcale}",
            "[backend.kind]: unknown backend 'orcale'; expected "
            "duckdb, postgres, pyspark or another Ibis backend (athena, ",
        ),
        (
            "{kind: snowflake, connect: {account: a, password: hunter2-secret}}",
            "[backend.connect]: 'password' looks like a secret: keep it out of the file",
        ),
        (
            "{kind: snowflake, connect: {account: a}}",
            "error: the snowflake backend needs its driver: pip install "
            "'ibis-framework[snowflake]'",
        ),
    ],
)
def test_bad_backend_settings_get_one_line(
    make_project: MakeProject, backend: str, expected: str
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    root = make_project()
    _on(root, "backend: " + backend.replace("PORT", port))
    env = {**os.environ, "CRMSEG_TEST_SECRET": "hunter2-secret", "COLUMNS": "200"}
    env.pop("CRMSEG_TEST_UNSET", None)
    result = subprocess.run(
        [sys.executable, "-m", "crmseg", "run", "-p", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected.replace("PORT", port) in lines[0]
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_sql_segments_written_for_duckdb_run_on_postgres(
    postgres: Server, make_project: MakeProject
) -> None:
    # DuckDB's spellings: strftime and an unquoted INTERVAL; Postgres knows neither
    query = (
        "SELECT customer_id FROM crmseg.customers "
        "WHERE strftime(signup_at, '%m') = '01' OR signup_at < DATE '2024-03-15' - INTERVAL 30 DAY"
    )
    segments = f"""\
    segments:
      - name: custom.early
        description: Signed up in January, or before mid-February.
        owner: crm-team
        sql: "{query}"
    """
    duck = make_project("duck", segments__core_yml=segments)
    with Workspace.open(duck) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
        expected = ws.members("custom.early")
    assert expected == ["1", "2"]
    root = make_project("pg", segments__core_yml=segments)
    _on(root, postgres.backend(postgres.database("dialect")).replace("}", ", sql_dialect: duckdb}"))
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 7, 1))
        assert ws.members("custom.early") == expected
    _on(root, postgres.backend("dialect"))  # written for DuckDB, read as Postgres SQL
    result = run_cli("run", "-p", str(root))
    assert result.returncode == 1
    assert result.stderr.startswith("error: segments/core.yml:"), result.stderr
    assert "custom.early" in result.stderr


MESSY_CUSTOMERS = """\
customer_id,country,signup_at,tier_score,vip
1,DE,2024-01-01 10:00:00,1.5,true
2,AT,2024-02-29T23:30:00+02:00,,no
3,FR,2024-03-31 02:30,7,
4,,2024-10-27 02:30:00,-2e3,yes
"""


# order times in a strptime format (12-hour clock, day first, padded or not), one in the
# spring gap and one in the autumn overlap of Berlin's clocks
MESSY_ORDERS = """\
order_id,customer_id,ordered_at,amount
o1,1,03/02/2024 1:05 PM,10
o2,2,3/2/2024 12:00 am,20
o3,3,31/03/2024 02:30 AM,5
o4,4,27/10/2024 2:30 am,7
o5,1,29/2/2024 11:59 pm,1
"""
ORDERS_FORMAT = "%d/%m/%Y %I:%M %p"

# a project reading MESSY_CUSTOMERS and MESSY_ORDERS in Berlin time (files for make_project)
MESSY_PROJECT = {
    "crmseg_yml": f"""\
    name: messy
    timezone: Europe/Berlin
    sources:
      customers: {{path: data/customers.csv}}
      orders: {{path: data/orders.csv, formats: {{ordered_at: "{ORDERS_FORMAT}"}}}}
    """,
    "data__customers_csv": MESSY_CUSTOMERS,
    "data__orders_csv": MESSY_ORDERS,
    "segments__core_yml": """\
    segments:
      - name: demographic.dach
        description: DACH.
        owner: crm-team
        rule: country in ('DE', 'AT')
    """,
}


def _loaded(root: Path) -> dict[str, list[dict[str, object]]]:
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 12, 1))
        return {
            name: ws.backend.execute(ws.backend.canonical(name).order_by(key)).to_pylist()
            for name, key in (("customers", "customer_id"), ("orders", "order_id"))
        }


def test_files_load_the_same_rows_and_errors_as_on_duckdb(
    postgres: Server, make_project: MakeProject
) -> None:
    files = MESSY_PROJECT
    duck = make_project("duck", **files)
    pg = make_project("pg", **files)
    _on(pg, postgres.backend(postgres.database("messy")))
    expected = _loaded(duck)
    people, orders = expected["customers"], expected["orders"]
    assert people[1]["signup_at"] == datetime(2024, 2, 29, 21, 30)  # its own offset
    assert people[0]["signup_at"] == datetime(2024, 1, 1, 9)  # Berlin wall time
    assert orders[0]["ordered_at"] == datetime(2024, 2, 3, 12, 5)  # 1:05 PM in Berlin
    assert orders[1]["ordered_at"] == datetime(2024, 2, 2, 23)  # 12:00 am, the day before
    # rows 3 and 4 fall in the spring gap and the autumn overlap of Berlin's clocks: whatever
    # the reading, the engines must agree on it
    assert _loaded(pg) == expected
    # values that are not what the column holds: the same located error on both
    bad = MESSY_CUSTOMERS.replace("2024-10-27 02:30:00", "2023-02-29 10:00").replace("-2e3", "x")
    for root in (duck, pg):
        (root / "data" / "customers.csv").write_text(bad)
        (root / "data" / "orders.csv").write_text(MESSY_ORDERS.replace("29/2/2024", "30/2/2024"))
    errors = [run_cli("run", "-p", str(root)).stderr for root in (duck, pg)]
    assert "found 1 value that is not (e.g. '2023-02-29 10:00')" in errors[0]
    assert "(e.g. '30/2/2024 11:59 pm')" in errors[0]
    assert errors[1] == errors[0].replace(str(duck), str(pg))


def test_a_format_the_engine_cannot_read_is_one_located_line(
    postgres: Server, make_project: MakeProject
) -> None:
    root = make_project(
        crmseg_yml="""\
        name: shop
        sources:
          customers: {path: data/customers.csv}
          orders: {path: data/orders.csv, formats: {ordered_at: "%a %d %b %Y"}}
        """,
        data__orders_csv="order_id,customer_id,ordered_at,amount\n1,1,Mon 05 Feb 2024,3\n",
    )
    _on(root, postgres.backend(postgres.database("formats")))
    done = run_cli("run", "-p", str(root))
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "error: data/orders.csv: formats.ordered_at: on the postgres backend, %a is not "
        "supported (supported: %Y %y %m %d %H %I %M %S %f %p %b %B %% (and %-m, %-d, ...))"
    )


def test_probabilistic_identity_links_the_same_people(postgres: Server, tmp_path: Path) -> None:
    """Splink compares the prepared customer columns each engine pulls out, on an embedded
    DuckDB (docs/backends.md): the same links, weights and people on Postgres as on DuckDB.
    Splink on Postgres itself is refused in one line."""
    pytest.importorskip("splink")
    duck, pg = tmp_path / "duck", tmp_path / "pg"
    for root in (duck, pg):
        init_project(root, demo=True, customers=600, seed=8)
        with (root / "crmseg.yml").open("a") as f:
            f.write("identity: {splink: {enabled: true}}\n")
    _on(pg, postgres.backend(postgres.database("splink")))
    found = []
    for root in (duck, pg):
        with Workspace.open(root) as ws:
            ws.run(as_of=T2)
            tables = {}
            pair = ["customer_id_l", "customer_id_r"]
            for name, key in (("identity_map", "customer_id"), ("identity_matches", pair)):
                t = ws.backend.canonical(name)
                tables[name] = ws.backend.execute(t.order_by(key)).to_pylist()
            found.append(tables)
    a, b = found
    assert a["identity_matches"], "Splink found no pairs: the comparison says nothing"
    assert a["identity_map"] == b["identity_map"]
    assert len(a["identity_matches"]) == len(b["identity_matches"])
    for x, y in zip(a["identity_matches"], b["identity_matches"], strict=True):
        assert (x["customer_id_l"], x["customer_id_r"]) == (y["customer_id_l"], y["customer_id_r"])
        assert abs(x["match_probability"] - y["match_probability"]) <= 1e-9
    # Splink's own Postgres API cannot compare names: one line says so, nothing is lost
    config = pg / "crmseg.yml"
    text = config.read_text().replace("enabled: true}", "enabled: true, engine: warehouse}")
    config.write_text(text)
    result = run_cli("run", "-p", str(pg))
    assert result.returncode == 1
    assert "identity.splink.engine: warehouse" in result.stderr
    assert "Jaro-Winkler" in result.stderr and "Traceback" not in result.stderr
    with Workspace.open(pg) as ws:
        t = ws.backend.canonical("identity_map")
        assert ws.backend.execute(t.order_by("customer_id")).to_pylist() == b["identity_map"]
