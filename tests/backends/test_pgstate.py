"""The state on a real PostgreSQL server: the same records as on DuckDB for the same work,
several processes writing one state, servers that see each other's writes, and one-line
errors."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crmseg import Workspace
from crmseg.backends import open_state
from crmseg.config import StateConfig
from crmseg.demo.history import record_past_campaigns
from crmseg.demo.scaffold import DEMO_AS_OF, init_project
from crmseg.errors import ConflictError
from crmseg.server.keys import KeyStore
from tests.backends.test_postgres import _on
from tests.conftest import MakeProject, run_cli
from tests.postgres import Server

pytestmark = pytest.mark.postgres

# wall-clock instants (when something was done, not what it says): they differ between any
# two runs of the same work
VOLATILE = {
    "started_at", "finished_at", "computed_at", "logged_at", "proposed_at", "decided_at",
    "created_at", "activated_at", "checked_at", "recorded_at", "fitted_at", "delivered_at",
    "at", "changed_at", "forgotten_at", "updated_at", "details", "seconds", "synced_at",
    "fit_seconds",
}  # fmt: skip


def _state_line(server: Server, database: str, schema: str = "crmseg_state") -> str:
    return (
        f"state: {{kind: postgres, host: {server.host}, port: {server.port}, "
        f"user: {server.user}, database: {database}, schema: {schema}}}"
    )


def _config(server: Server, database: str) -> StateConfig:
    """A state on ``server`` in ``database`` (its default schema)."""
    settings = {"kind": "postgres", "host": server.host, "port": server.port,
                "user": server.user, "database": database}  # fmt: skip
    return StateConfig.model_validate(settings)


def _set(root: Path, key: str, line: str) -> None:
    """Replace (or add) the top-level ``key:`` line of the project's crmseg.yml."""
    config = root / "crmseg.yml"
    lines = [x for x in config.read_text().splitlines() if not x.startswith(f"{key}:")]
    config.write_text("\n".join([line, *lines]) + "\n")


def _value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)  # stored JSON: compared as values (floats within 1e-9)
        except ValueError:
            return v
    return v


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within 1e-9 relative (sums in another order differ in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _records(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """Every state table's rows (sorted, wall-clock columns left out)."""
    state = ws.state
    tables = [
        str(r[0])
        for r in state.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    ]
    out = {}
    for table in tables:
        # a shared state counts its committed writes (servers drop stale answers by it)
        data = state.arrow(
            "SELECT * FROM meta WHERE key <> 'writes'"
            if table == "meta"
            else f'SELECT * FROM "{table}"'
        )
        keep = [c for c in data.column_names if c not in VOLATILE]
        rows = [tuple(_value(r[c]) for c in keep) for r in data.select(keep).to_pylist()]
        out[table] = sorted(rows, key=repr)
    return out


def _work(root: Path) -> dict[str, Any]:
    """What `crmseg demo` does and more: history, a run, the report, activation, measurement,
    a proposal and its approval, a forget; returns what the user saw."""
    record_past_campaigns(root)  # the demo's past send log, into this project's state
    seen: dict[str, Any] = {}
    with Workspace.open(root) as ws:
        ws.backfill(DEMO_AS_OF - timedelta(days=30), DEMO_AS_OF - timedelta(days=30),
                    timedelta(days=30))  # fmt: skip
        ws.run(as_of=DEMO_AS_OF)
        ws.run(as_of=DEMO_AS_OF - timedelta(days=45))  # a backfill between two runs
        ws.report(root / "report.html")
        seen["activated"] = [r.summary() for r in ws.activate_due(as_of=DEMO_AS_OF)]
        seen["outcomes"] = ws.measure_outcomes()
        seen["campaigns"] = ws.measure_campaigns()
        seen["stability"] = ws.measure_stability()
        seen["review"] = ws.measure_review()
        seen["quality"] = ws.quality_trend()
        change = ws.propose(
            "segments:\n  - name: value.big\n    description: Big spenders.\n"
            "    owner: crm-team\n    rule: sum(orders.amount) >= 500\n",
            by="ana",
        )
        ws.decide(change.change_id, True, by="ben")
        ws.run(as_of=DEMO_AS_OF + timedelta(days=1))
        person = ws.members("value.big")[0]
        ws.forget([person])
        seen["members"] = {s.name: ws.members(s.name) for s in ws.segments}
        seen["history"] = [(r.run_id, r.as_of, r.customers) for r in ws.runs()]
        seen["records"] = _records(ws)
    return seen


def _clean(seen: dict[str, Any], root: Path) -> dict[str, Any]:
    """What the user saw without wall-clock instants (nested in dicts and lists) and with
    the project's folder as ``<root>``."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if isinstance(v, str):
            v = v.replace(str(root), "<root>")
        return _value(v)

    return {k: walk(v) for k, v in seen.items()}


def test_the_same_work_keeps_the_same_records(postgres: Server, tmp_path: Path) -> None:
    duck, pg = tmp_path / "duck", tmp_path / "pg"
    for root in (duck, pg):
        init_project(root, demo=True, customers=300, seed=5)
    (pg / ".crmseg" / "state.duckdb").unlink()  # init recorded past campaigns there
    _set(pg, "state", _state_line(postgres, postgres.database("records")))
    a, b = _clean(_work(duck), duck), _clean(_work(pg), pg)
    assert not (pg / ".crmseg" / "state.duckdb").exists()
    assert sorted(a["records"]) == sorted(b["records"])
    differ = [t for t in a["records"] if not _same(a["records"][t], b["records"][t])]
    differ += [k for k in a if k != "records" and not _same(a[k], b[k])]
    assert not differ, differ
    assert a["records"]["intervals"], "the comparison must cover history"


def test_several_processes_write_one_state(postgres: Server, tmp_path: Path) -> None:
    """Two runs at once from two processes on one Postgres warehouse and state: both are
    recorded, and history equals the same two runs made one after the other on DuckDB."""
    db = postgres.database("writers")
    ref, shared = tmp_path / "ref", tmp_path / "shared"
    for root in (ref, shared):
        init_project(root, demo=True, customers=300, seed=6)
    (shared / ".crmseg" / "state.duckdb").unlink()
    _on(shared, postgres.backend(db))
    _set(shared, "state", _state_line(postgres, db))
    dates = [datetime(2026, 9, 1), datetime(2026, 10, 1)]
    with Workspace.open(shared) as reader:  # a server's workspace, open before the runs
        assert reader.runs() == []
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "crmseg",
                    "run",
                    "-p",
                    str(shared),
                    "--as-of",
                    f"{d:%Y-%m-%d}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for d in dates
        ]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert sorted(r.as_of for r in reader.runs()) == dates
        seen = {
            (s.name, d): reader.members(s.name, as_of=d) for s in reader.segments for d in dates
        }
    with Workspace.open(ref) as ws:
        for d in dates:
            ws.run(as_of=d)
        assert seen == {
            (s.name, d): ws.members(s.name, as_of=d) for s in ws.segments for d in dates
        }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("state: {kind: postgres, port: PORT, user: nobody_here}",
         'role "nobody_here" does not exist'),
        ("state: {kind: postgres, port: 1, password_env: CRMSEG_TEST_SECRET}",
         "cannot connect to PostgreSQL at 127.0.0.1:1"),
        ("state: {kind: postgres, path: x.duckdb}",
         "'path' is not a setting of the postgres state"),
        ("state: {kind: duckdb, schema: s}", "'schema' is not a setting of the duckdb state"),
        ("state: {kind: postgres, schema: 'a b'}", "state.schema"),
    ],
)  # fmt: skip
def test_bad_state_settings_get_one_line(
    postgres: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: str
) -> None:
    monkeypatch.setenv("CRMSEG_TEST_SECRET", "hunter2-secret")
    root = tmp_path / "shop"
    init_project(root)
    _set(root, "state", line.replace("PORT", str(postgres.port)))
    done = run_cli("runs", "-p", str(root))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_a_newer_state_is_refused(postgres: Server) -> None:
    config = _config(postgres, postgres.database("newer"))
    state = open_state(config, Path("."))
    state.execute("INSERT INTO meta VALUES ('schema.segments', '99')")
    state.close()
    from crmseg.errors import StateError
    from crmseg.segments.store import History

    state = open_state(config, Path("."))
    with pytest.raises(StateError, match="written by a newer crmseg"):
        History(state)
    state.close()


def test_servers_see_each_others_writes(postgres: Server, tmp_path: Path) -> None:
    """Two `crmseg serve` processes on one Postgres warehouse and state: a run through one is
    what the other answers within seconds (its cached answers are dropped)."""
    from tests.activation.conftest import customers_csv
    from tests.server.conftest import served, write_shop

    root = write_shop(tmp_path / "shop", 12)
    db = postgres.database("servers")
    _on(root, postgres.backend(db))
    _set(root, "state", _state_line(postgres, db))
    first = datetime(2024, 8, 1)
    with (
        contextlib.contextmanager(served)(root, first) as a,
        contextlib.contextmanager(served)(root, first) as b,
    ):
        path = "/segments/custom.everyone/members"
        assert len(b.call("GET", path, "viewer")[1]["members"]) == 12  # now cached in b
        (root / "data" / "customers.csv").write_text(customers_csv(20))
        status, body, _ = a.call("POST", "/runs?as_of=2024-09-01", "editor")
        assert status == 200, body
        deadline = time.monotonic() + 10
        while len(b.call("GET", path, "viewer")[1]["members"]) != 20:
            assert time.monotonic() < deadline, "the other server kept its stale answer"
            time.sleep(0.2)
        # each server's start ran the project once at the first instant
        runs = [r["as_of"][:10] for r in b.call("GET", "/runs", "viewer")[1]]
        assert runs == ["2024-08-01", "2024-08-01", "2024-09-01"]
        # the keys a and b were started with are in the one state: each server takes both,
        # and a key revoked elsewhere (here: this process) stops working on both
        key = b.keys["viewer"]
        assert a.call("GET", "/runs", key=key)[0] == 200
        with Workspace.open(root) as ws:
            KeyStore(ws.state).revoke(key.split("_")[1])
        deadline = time.monotonic() + 10
        while (
            a.call("GET", "/runs", key=key)[0] != 401 or b.call("GET", "/runs", key=key)[0] != 401
        ):
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.2)


def test_one_stream_processor_per_shared_state(postgres: Server, make_project: MakeProject) -> None:
    """Two processors would each record entries and exits from their own view: the second
    process is refused in one line until the first one closes."""
    root = make_project()
    db = postgres.database("streams")
    _on(root, postgres.backend(db))
    _set(root, "state", _state_line(postgres, db))
    with Workspace.open(root) as first, Workspace.open(root) as second:
        first.run(as_of=datetime(2024, 7, 1))
        first.processor()
        first.processor()  # its own again (a server restarts it after each run)
        with pytest.raises(ConflictError, match="another crmseg process runs the stream"):
            second.processor()
        first.close()
        second.processor()


def test_writes_count_other_processes_only(postgres: Server) -> None:
    """A server drops its caches when another process wrote: its own commits are not news
    (or it would restart its stream processor after each of its own batches)."""
    config = _config(postgres, postgres.database("counts"))
    mine, other = open_state(config, Path(".")), open_state(config, Path("."))
    try:
        mine.migrate("things", [["CREATE TABLE things (x INTEGER)"]])
        seen = mine.writes()
        with mine.transaction():
            mine.execute("INSERT INTO things VALUES (1)")
        assert mine.writes() == seen
        with other.transaction():
            other.execute("INSERT INTO things VALUES (2)")
        assert mine.writes() == seen + 1
        before = other.writes()
        with mine.transaction():  # reads only: nothing to tell anyone
            mine.rows("SELECT count(*) FROM things")
        assert other.writes() == before
    finally:
        mine.close()
        other.close()


def test_text_orders_as_on_duckdb_whatever_the_collation(postgres: Server) -> None:
    """The state's text sorts byte by byte (DuckDB's order) in a database whose collation
    sorts otherwise (ICU en-US puts '_x' and 'a' before 'B')."""
    import psycopg

    from crmseg.backends.state import DuckDBState
    from crmseg.segments.store import History, SegmentResult

    with psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                         dbname="postgres", autocommit=True) as con:  # fmt: skip
        con.execute("DROP DATABASE IF EXISTS icu_state")
        con.execute(
            "CREATE DATABASE icu_state TEMPLATE template0 LOCALE_PROVIDER icu "
            "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    config = _config(postgres, "icu_state")
    ids = ["c", "_x", "B", "a", "Zed", "ä"]
    at = datetime(2026, 1, 1)
    orders = []
    for state in (DuckDBState(), open_state(config, Path("."))):
        history = History(state)
        result = SegmentResult("s.x", "h", "rule", pa.array(ids, pa.string()))
        history.record_run(at, at, at, 6, {"customers": 6}, [result], "t")
        orders.append(history.members("s.x", at))
        state.close()
    assert orders[0] == sorted(ids)  # bytes: B, Zed, _x, a, c, ä
    assert orders[1] == orders[0]


def test_a_dropped_connection_is_opened_again(postgres: Server) -> None:
    """A server restart or an idle timeout ends the state's connection: the next statement
    between transactions opens it again (a server keeps answering), with its claims."""
    import psycopg

    config = _config(postgres, postgres.database("revive"))
    state, other = open_state(config, Path(".")), open_state(config, Path("."))
    try:
        assert state.claim("stream")
        pid = state.rows("SELECT pg_backend_pid()")[0][0]
        with psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                             dbname="revive", autocommit=True) as admin:  # fmt: skip
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert state.rows("SELECT pg_backend_pid()")[0][0] != pid
        with state.transaction():
            state.execute("CREATE TABLE t (x INTEGER)")
        assert not other.claim("stream")  # taken again by the new connection
    finally:
        state.close()
        other.close()


def test_a_change_decided_meanwhile_elsewhere_stands(
    postgres: Server, make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers deciding one proposal at once: the first decision stands, and the second
    approval takes back the file it wrote."""
    from crmseg.segments import changes

    root = make_project()
    db = postgres.database("decide")
    _on(root, postgres.backend(db))
    _set(root, "state", _state_line(postgres, db))
    text = "segments:\n  - name: value.big\n    description: Big.\n    owner: crm-team\n" \
        "    rule: sum(orders.amount) >= 100\n"  # fmt: skip
    before = {p.name: p.read_text() for p in (root / "segments").iterdir()}
    with Workspace.open(root) as first, Workspace.open(root) as second:
        first.run(as_of=datetime(2024, 7, 1))
        change = first.propose(text, by="ana")
        # the other server rejects it while this one writes its approval
        monkeypatch.setattr(
            changes, "after_write", lambda: second.decide(change.change_id, False, by="cem")
        )
        with pytest.raises(ConflictError, match="was already rejected"):
            first.decide(change.change_id, True, by="ben")
        assert first.changes()[0].status == "rejected"
    assert {p.name: p.read_text() for p in (root / "segments").iterdir()} == before


def test_the_stream_numbers_people_another_process_added(postgres: Server) -> None:
    """The stream processor keeps person keys between batches; on a shared state a run of
    another process adds people meanwhile: each person keeps one key, and keys stay unique."""
    from crmseg.segments.store import History, SegmentResult

    config = _config(postgres, postgres.database("pids"))
    a, b = open_state(config, Path(".")), open_state(config, Path("."))
    t1, t2, t3 = datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 3)

    def run(at: datetime, ids: list[str]) -> None:
        result = SegmentResult("s.x", "h", "rule", pa.array(ids, pa.string()))
        History(b).record_run(at, at, at, len(ids), {"customers": len(ids)}, [result], "t")

    def stream(history: History, at: datetime, ids: list[str]) -> None:
        changes = pa.table({"segment": ["s.x"] * len(ids), "customer_id": ids,
                            "change": ["entered"] * len(ids), "at": [at] * len(ids)})  # fmt: skip
        with a.transaction():
            history.apply_stream(changes)

    try:
        run(t1, ["p1", "p2"])
        processor = History(a, remember=True)
        stream(processor, t1, ["p3"])
        run(t2, ["p4", "p1"])  # another process numbers p4 meanwhile
        stream(processor, t3, ["p4", "p5"])
        people = a.rows("SELECT customer_id, pid FROM people ORDER BY pid")
        assert [c for c, _ in people] == ["p1", "p2", "p3", "p4", "p5"]
        assert [p for _, p in people] == [1, 2, 3, 4, 5]
    finally:
        a.close()
        b.close()


def test_a_state_statement_first_leaves_postgres_sql_intact() -> None:
    """sqlglot fixes a generator's dispatch the first time one is made, and Ibis adds
    Postgres spellings (make_date, ...) when its dialects are imported: a state statement
    translated before any Ibis import once made a later Postgres warehouse in the same
    process write date_from_parts (CLV models failed). A fresh interpreter sees the order."""
    code = (
        "from crmseg.backends.pgstate import translate\n"
        "translate('SELECT 1', False)\n"
        "import ibis\n"
        "from crmseg.backends.sql import to_sql\n"
        "t = ibis.table({'y': 'int64'}, name='t')\n"
        "print(to_sql(t.select(d=ibis.date(t.y, 1, 1)), 'postgres'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "MAKE_DATE(" in out and "DATE_FROM_PARTS" not in out, out
