"""Forget leaves no trace: after forgetting people from a demo shop that ran, activated
campaigns and wrote a report, no table of either database and no file crmseg wrote holds any
of their ids, emails or phones, while everyone else's data is still there."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from crmseg.errors import ForgetError
from crmseg.sources.normalize import PhoneBook
from tests.conftest import MakeProject, run_cli

AT = datetime(2026, 11, 1)
INPUTS = ("data", "history", "truth")  # the user's own files, which crmseg only reads


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("forget") / "shop"
    init_project(root, demo=True, customers=1500, seed=7)
    with Workspace.open(root) as ws:
        ws.run(as_of=AT)
        for c in ws.campaigns:
            ws.activate(c.name)
        ws.report()
    return root


@pytest.fixture
def copy(shop: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shop"
    shutil.copytree(shop, out)
    return out


def _people(root: Path) -> tuple[list[str], list[str]]:
    """Some exported people (campaign members) and some merged by identity, then a control
    group of others."""

    def ids(where: str, order: str, n: int) -> list[str]:
        query = f"SELECT customer_id FROM crmseg.identity_map WHERE {where} ORDER BY {order}"
        return [r[0] for r in con.sql(f"{query} LIMIT {n}").fetchall()]

    with duckdb.connect(str(root / ".crmseg" / "warehouse.duckdb"), read_only=True) as con:
        merged = ids("customer_id <> customer_key", "customer_id", 4)
        others = ids("customer_id = customer_key", "customer_id DESC", 3)
    exported: list[str] = []
    for path in sorted((root / "exports").glob("*.csv")):
        lines = path.read_text().splitlines()[1:4]
        exported += [ln.split(",")[0].strip('"') for ln in lines]
    chosen = sorted(set(merged + exported))
    return chosen, [o for o in others if o not in chosen]


def _values(root: Path, ids: list[str]) -> list[str]:
    """Every id, email and phone (as loaded and as E.164) and identifier of the persons
    behind ``ids``, read straight from the warehouse."""
    con = duckdb.connect(str(root / ".crmseg" / "warehouse.duckdb"), read_only=True)
    con.execute("CREATE TEMP TABLE asked AS SELECT unnest(?) AS id", [ids])
    records = [
        r[0]
        for r in con.sql(
            "SELECT DISTINCT m.customer_id FROM crmseg.identity_map m WHERE m.customer_key IN "
            "(SELECT customer_key FROM crmseg.identity_map WHERE customer_id IN "
            "(SELECT id FROM asked)) UNION SELECT id FROM asked"
        ).fetchall()
    ]
    con.execute("CREATE TEMP TABLE rec AS SELECT unnest(?) AS id", [records])
    rows = con.sql(
        "SELECT email, phone, country FROM crmseg._raw_customers WHERE customer_id IN "
        "(SELECT id FROM rec)"
    ).fetchall()
    idents = con.sql(
        "SELECT id_value FROM crmseg._raw_identifiers WHERE customer_id IN (SELECT id FROM rec)"
    ).fetchall()
    con.close()
    book = PhoneBook("DE")
    out = set(records) | {v for (v,) in idents if v}
    for email, phone, country in rows:
        if email and email.strip():
            out |= {email, email.strip().lower()}
        if phone and phone.strip():
            out.add(phone)
            e164, _ = book.normalise([(phone, country)])[0]
            if e164:
                out.add(e164)
    return sorted(out)


def _token(needle: str) -> re.Pattern[bytes]:
    # a whole value, not a part of a longer one (dwilliams@x.com inside davidwilliams@x.com)
    edge = rb"[A-Za-z0-9_.%+-]"
    return re.compile(rb"(?<!" + edge + rb")" + re.escape(needle.encode()) + rb"(?!" + edge + rb")")


def _traces(root: Path, needles: list[str]) -> list[str]:
    """Where any needle still appears: every column of every table and view of both
    databases (cast to text), and every file under the project except the inputs."""
    found: list[str] = []
    tokens = {n: _token(n) for n in needles}
    for db in ("warehouse", "state"):
        con = duckdb.connect(str(root / ".crmseg" / f"{db}.duckdb"), read_only=True)
        con.execute("CREATE TEMP TABLE needles AS SELECT unnest(?) AS n", [needles])
        for schema, table, column in con.sql(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema <> 'temp'"
        ).fetchall():
            rows = con.sql(
                f'SELECT CAST(t."{column}" AS VARCHAR), needles.n FROM "{schema}"."{table}" t, '
                f'needles WHERE contains(CAST(t."{column}" AS VARCHAR), needles.n)'
            ).fetchall()
            hits = [n for text, n in rows if tokens[n].search(text.encode())]
            if hits:
                found.append(f"{db}:{schema}.{table}.{column} {hits[:3]}")
        con.close()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in INPUTS or path.suffix in (".wal",):
            continue
        if path.name.endswith(".duckdb"):
            continue
        data = path.read_bytes()
        hit = [n for n in needles if n.encode() in data and tokens[n].search(data)]
        if hit:
            found.append(f"{rel}: {hit[:3]}")
    return found


def test_forget_leaves_no_trace_and_keeps_everyone_else(copy: Path) -> None:
    chosen, others = _people(copy)
    assert len(chosen) >= 5 and others
    gone = _values(copy, chosen)
    kept = _values(copy, others)
    assert _traces(copy, gone), "the scan finds the people before they are forgotten"
    # ask by id for some, by email or phone for the others
    con = duckdb.connect(str(copy / ".crmseg" / "warehouse.duckdb"), read_only=True)
    by_contact = {
        r[0]: (r[1] or r[2])
        for r in con.sql(
            "SELECT customer_id, email, phone FROM crmseg.customers WHERE customer_id IN "
            f"({', '.join(repr(c) for c in chosen[::2])})"
        ).fetchall()
    }
    con.close()
    asked = [by_contact.get(c) or c for c in chosen[::2]] + chosen[1::2]
    with Workspace.open(copy) as ws:
        done = ws.forget(asked)
    assert done.unknown == [] and done.people >= len(chosen) - 4  # merged ids share a person
    assert done.records >= len(chosen)
    assert done.deletion_lists, "campaign members went to destinations"
    assert _traces(copy, gone) == []
    # everyone else is still everywhere they were
    left = _traces(copy, kept)
    assert any(t.startswith("warehouse:") for t in left)
    assert any(t.startswith("state:") for t in left)
    # deletion lists carry hashes only
    for path in done.deletion_lists:
        assert Path(path).read_text().startswith("kind,sha256\n")
    # the next run works and computes without them
    with Workspace.open(copy) as ws:
        ws.run(as_of=datetime(2026, 11, 2))
        members = {m for s in ws.segments for m in ws.members(s.name)}
    assert not members & set(gone)
    assert _traces(copy, gone) == []


def test_unknown_people_stop_the_request_unless_continue(copy: Path) -> None:
    chosen, _ = _people(copy)
    state = (copy / ".crmseg" / "state.duckdb").read_bytes()
    with (
        Workspace.open(copy) as ws,
        pytest.raises(ForgetError, match=re.escape("nobody@example.org")),
    ):
        ws.forget([chosen[0], "nobody@example.org"])
    assert (copy / ".crmseg" / "state.duckdb").read_bytes() == state  # nothing changed
    out = run_cli("forget", chosen[0], "nobody@example.org", "-p", str(copy))
    assert out.returncode == 1 and out.stderr.count("\n") <= 1
    assert "--continue" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("forget", chosen[0], "nobody@example.org", "--continue", "-p", str(copy))
    assert out.returncode == 0, out.stderr
    assert "not found: nobody@example.org" in out.stdout and "forgot 1 people" in out.stdout
    assert _traces(copy, [chosen[0]]) == []


def test_forget_reads_a_file_and_reports_a_missing_one(copy: Path, tmp_path: Path) -> None:
    chosen, _ = _people(copy)
    listing = tmp_path / "gone.txt"
    listing.write_text(f"{chosen[0]}\n\n{chosen[1]}\n")
    out = run_cli("forget", "--file", str(listing), "-p", str(copy))
    assert out.returncode == 0, out.stderr
    assert _traces(copy, chosen[:2]) == []
    out = run_cli("forget", "--file", str(tmp_path / "missing.txt"), "-p", str(copy))
    assert out.returncode == 1 and "missing.txt" in out.stderr and "Traceback" not in out.stderr


def _rewrite_sources(root: Path) -> None:
    """New bytes for every source file, same rows (as a user re-exporting old data)."""
    for path in sorted((root / "data").glob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table, path, row_group_size=max(1, table.num_rows // 3 + 1))


def test_forgotten_people_stay_out_when_sources_are_loaded_again(copy: Path) -> None:
    chosen, others = _people(copy)
    gone, kept = _values(copy, chosen[:4]), _values(copy, others)
    with Workspace.open(copy) as ws:
        ws.forget(chosen[:4])
    _rewrite_sources(copy)
    with Workspace.open(copy) as ws:
        ws.run(as_of=datetime(2026, 11, 2))
        latest = max(ws.runs(), key=lambda r: r.as_of)
        members = {m for s in ws.segments for m in ws.members(s.name)}
    assert latest.details["sources"]["customers"] == "loaded"  # read again from the files
    assert _traces(copy, gone) == []
    assert not members & set(gone)
    assert any(t.startswith("warehouse:") for t in _traces(copy, kept))


def test_suppression_can_be_turned_off(copy: Path) -> None:
    chosen, _ = _people(copy)
    with Workspace.open(copy) as ws:
        ws.forget(chosen[:1])
    config = copy / "crmseg.yml"
    config.write_text(config.read_text() + "privacy: {suppress_forgotten: false}\n")
    _rewrite_sources(copy)
    with Workspace.open(copy) as ws:
        ws.run(as_of=datetime(2026, 11, 2))
    assert _traces(copy, chosen[:1]), "loaded again: the source still holds them"


def test_values_match_whole_tokens_only() -> None:
    from crmseg.privacy.forget import PLACEHOLDER, Values

    v = Values(["dwilliams@icloud.com", "C0001", "+49 176 123"])
    assert not v.found_in("davidwilliams@icloud.com and C00012")
    assert v.found_in('["C0001", "x"]') and v.found_in("mail dwilliams@icloud.com.")
    assert v.found_in("call +49 176 123 now")
    assert v.replaced("C0001,davidwilliams@icloud.com,dwilliams@icloud.com.") == (
        f"{PLACEHOLDER},davidwilliams@icloud.com,{PLACEHOLDER}."
    )


KILLER = """
import os, signal, sys
from crmseg import Workspace
from crmseg.privacy import forget
forget.between_commits = lambda: os.kill(os.getpid(), signal.SIGKILL)
with Workspace.open(sys.argv[1]) as ws:
    ws.forget(sys.argv[2:])
"""


def test_a_forget_killed_between_commits_is_finished_by_the_next_command(copy: Path) -> None:
    import subprocess
    import sys

    chosen, others = _people(copy)
    gone, kept = _values(copy, chosen[:3]), _values(copy, others)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(copy), *chosen[:3]], timeout=300)
    assert proc.returncode == -9  # killed after the warehouse committed
    left = _traces(copy, gone)
    assert left and all(not t.startswith("warehouse:") for t in left)  # the state still holds them
    out = run_cli("run", "--as-of", "2026-11-02", "-p", str(copy))
    assert out.returncode == 0, out.stderr
    assert _traces(copy, gone) == []
    assert any(t.startswith("state:") for t in _traces(copy, kept))


def test_numeric_ids_are_forgotten_only_as_customer_ids(make_project: MakeProject) -> None:
    """CSV sources copied in as tables, ids 1..4: forgetting customer 1 removes customer 1's
    rows and orders, and not order 1 (customer 2's) or anything else that only looks like
    the id."""
    root = make_project(
        data__orders_csv="""\
        order_id,customer_id,created,total,category
        1,2,2024-05-01 12:00:00,120.0,skincare
        2,1,2024-06-01 12:00:00,80.5,makeup
        3,4,2024-07-01 12:00:00,50.0,haircare
        """
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        before = {s.name: ws.members(s.name) for s in ws.segments}
        done = ws.forget(["1"])
    assert done.records == 1
    with duckdb.connect(str(root / ".crmseg" / "warehouse.duckdb"), read_only=True) as con:
        orders = con.sql("SELECT order_id, customer_id FROM crmseg.orders ORDER BY 1").fetchall()
        emails = [r[0] for r in con.sql("SELECT email FROM crmseg.customers ORDER BY 1").fetchall()]
    assert orders == [("1", "2"), ("3", "4")]  # order 2 was customer 1's
    assert emails == ["ben@example.com", "cleo@example.com", "dan@example.com"]
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 2))
        after = {s.name: ws.members(s.name) for s in ws.segments}
    assert after == {k: [m for m in v if m != "1"] for k, v in before.items()}
    assert _traces(root, ["anna@example.com"]) == []


PHONES_CSV = """\
customer_id,email,phone,country,signup_at
1,anna@example.com,0176 1234567,DE,2024-01-01 10:00:00
2,ben@example.com,+43 660 1234567,AT,2024-02-01 10:00:00
3,cleo@example.com,,FR,2024-03-01 10:00:00
4,dan@example.com,,,2024-04-01 10:00:00
"""


def test_a_phone_in_any_spelling_finds_its_person(make_project: MakeProject) -> None:
    root = make_project(data__customers_csv=PHONES_CSV)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        done = ws.forget(["+49 (176) 123-4567"])  # stored as 0176 1234567 in Germany
    assert (done.people, done.records, done.unknown) == (1, 1, [])
    assert _traces(root, ["anna@example.com", "0176 1234567", "+491761234567"]) == []
    assert _traces(root, ["ben@example.com"])  # the others stay


def test_forget_before_anything_is_loaded_says_so(make_project: MakeProject) -> None:
    root = make_project()
    out = run_cli("forget", "1", "-p", str(root))
    assert out.returncode == 1 and "run `crmseg run` first" in out.stderr
    assert "Traceback" not in out.stderr and not (root / ".crmseg" / "state.duckdb").exists()


def test_a_forgotten_phone_keeps_a_new_record_out(make_project: MakeProject) -> None:
    """The person comes back under a new id with only their phone (another spelling): the
    suppression list still holds them out."""
    root = make_project(data__customers_csv=PHONES_CSV)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        ws.forget(["1"])
    data = root / "data" / "customers.csv"
    data.write_text(data.read_text() + "9,,+49 176 1234567,DE,2024-05-01 10:00:00\n")
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 2))
        members = {m for s in ws.segments for m in ws.members(s.name)}
    assert "9" not in members and "2" in members
    assert _traces(root, ["+49 176 1234567", "+491761234567"]) == []
