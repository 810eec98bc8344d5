"""The state interface: numbered migrations, nested transactions, and parameters written as
literals giving exactly what binding gives."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmseg.backends.state import DuckDBState, literal
from crmseg.errors import StateError
from tests.conftest import OpenState

STEPS = [
    ["CREATE TABLE things (id INTEGER, name VARCHAR)"],
    ["ALTER TABLE things ADD COLUMN size BIGINT DEFAULT 0"],
]


def test_migrations_apply_once_and_in_order(open_state: OpenState) -> None:
    state = open_state()
    state.migrate("things", STEPS[:1])
    state.execute("INSERT INTO things VALUES (1, 'a')")
    state.migrate("things", STEPS[:1])  # nothing to do
    state.migrate("things", STEPS)  # only step 2 runs
    assert state.version("things") == 2
    assert state.rows("SELECT id, name, size FROM things") == [(1, "a", 0)]
    state.close()
    reopened = open_state()
    reopened.migrate("things", STEPS)
    assert reopened.rows("SELECT count(*) FROM things") == [(1,)]


def test_a_newer_schema_is_refused(open_state: OpenState) -> None:
    state = open_state()
    state.migrate("things", STEPS)
    with pytest.raises(StateError, match="newer crmseg"):
        state.migrate("things", STEPS[:1])


def test_a_failed_migration_step_changes_nothing(open_state: OpenState) -> None:
    """Each version is one transaction: the steps before a failing one stay, with their
    version; the failing one leaves nothing (here: its first statement's table)."""
    state = open_state()
    bad = ["CREATE TABLE half (x INTEGER)", "ALTER TABLE no_such_table ADD COLUMN x INTEGER"]
    with pytest.raises(Exception, match="no_such_table"):
        state.migrate("things", [*STEPS, bad])
    assert state.version("things") == len(STEPS)
    assert state.has_table("things") and not state.has_table("half")
    state.migrate("things", STEPS)  # the known steps are done: nothing to do
    columns = state.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'things' "
        "AND table_schema = current_schema() ORDER BY ordinal_position"
    )
    assert [c for (c,) in columns] == ["id", "name", "size"]


def test_nested_transactions_roll_back_together(open_state: OpenState) -> None:
    state = open_state()
    state.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), state.transaction():
        state.execute("INSERT INTO t VALUES (1)")
        with state.transaction():
            state.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("boom")
    assert state.rows("SELECT count(*) FROM t") == [(0,)]


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        max_size=30,
    ),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1)),
)


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_literals_read_back_as_bound_parameters(value: object) -> None:
    state = DuckDBState()
    text = literal(value)
    assert text is not None
    inlined = state.con.execute(f"SELECT {text}").fetchall()[0][0]
    bound = state.con.execute("SELECT ?", [value]).fetchall()[0][0]
    if isinstance(value, float) and value != value:
        assert inlined != inlined and bound != bound
    else:
        assert inlined == bound
    # through the interface (written in as a literal) the value comes back as bound
    back = state.rows("SELECT ?", [value])[0][0]
    assert back == bound or (back != back and bound != bound)


def test_reading_the_state_imports_no_pandas(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from crmseg.backends.state import DuckDBState\n"
        f"s = DuckDBState({str(tmp_path / 's.duckdb')!r})\n"
        "s.migrate('x', [['CREATE TABLE x (a VARCHAR, t TIMESTAMP)']])\n"
        "s.execute('INSERT INTO x VALUES (?, ?)', [\"it's\", None])\n"
        "print(s.rows('SELECT a FROM x WHERE a = $a', {'a': \"it's\"}))\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['[("it\'s",)]', "False"]
