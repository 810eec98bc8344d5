"""The state database: crmseg's own records (runs, membership history, quality findings,
activations, measurements, model fits), a DuckDB file by default.

Every stage keeps its tables behind its own store (``segments.store``, ``quality.store``,
``activation.store``, ``measurement.store``, ``models.store``), and each store speaks only this
interface: numbered migrations per component, parameterised statements, Arrow in and out,
transactions. No stage touches the engine's connection, so another engine (Postgres) can serve
the same stores.

These are crmseg's own tables, so statements are fixed text with parameters; user data only ever
enters as parameters or registered Arrow tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from crmseg.errors import StateError

Params = Mapping[str, Any] | Sequence[Any] | None

_META = "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)"


class StateStore:
    """The state database: one connection to DuckDB (:class:`DuckDBState`, the default) or
    PostgreSQL (:class:`crmseg.backends.pgstate.PostgresState`). Stores write DuckDB's SQL;
    another engine translates it. The migrations, and which rows :meth:`scrub` touches, are
    the same on every engine."""

    path: str  # where the state is, for messages
    dialect = "duckdb"
    row_id = "rowid"  # the engine's physical row address
    shared = False  # whether other processes write it meanwhile (a state on a server)

    def close(self) -> None:
        raise NotImplementedError

    # --- migrations ---------------------------------------------------------------------------

    def version(self, component: str) -> int:
        rows = self.rows("SELECT value FROM meta WHERE key = ?", [f"schema.{component}"])
        return int(rows[0][0]) if rows else 0

    def migrate(self, component: str, migrations: Sequence[Sequence[str]]) -> None:
        """Bring ``component``'s tables to the newest version: ``migrations[i]`` holds the
        statements that take version ``i`` to ``i + 1``; the version is kept in ``meta``."""
        have = self.version(component)
        if have > len(migrations):
            raise StateError(
                f"{self.path} was written by a newer crmseg ({component} schema {have}, this "
                f"version knows {len(migrations)}); upgrade crmseg"
            )
        if have == len(migrations):
            return
        # one transaction per version (DuckDB refuses to alter a table that the same
        # transaction updated); the version is read again inside each: another process may
        # have migrated meanwhile (transactions on a shared state take turns)
        for step in range(have, len(migrations)):
            with self.transaction():
                if self.version(component) > step:
                    continue
                for statement in migrations[step]:
                    self.execute(statement)
                self.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                    "excluded.value",
                    [f"schema.{component}", str(step + 1)],
                )

    # --- statements (each engine's own) -----------------------------------------------------

    def execute(self, sql: str, params: Params = None) -> None:
        raise NotImplementedError

    def rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def dicts(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        raise NotImplementedError

    def insert(self, table: str, data: pa.Table) -> None:
        """Append Arrow rows to one of crmseg's tables (columns in the table's order)."""
        raise NotImplementedError

    @contextmanager
    def registered(self, **tables: pa.Table) -> Iterator[None]:
        """Arrow tables visible to statements under these names for the block."""
        raise NotImplementedError
        yield

    _depth = 0  # how many transaction blocks are open

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements of the block commit together or not at all (blocks nest: only the
        outermost begins and commits)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        self._commit()

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        """Commit; a failure leaves no transaction open."""
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def text_columns(self) -> list[tuple[str, str]]:
        """(table, column) of every text column of every state table."""
        raise NotImplementedError

    def exclusive(self) -> None:
        """Inside a transaction: take the writers' turn now, before reading what the
        transaction will write from (the next id, the known people). Writes take it
        themselves; a DuckDB file has one writer anyway."""

    def claim(self, role: str) -> bool:
        """Take ``role`` (e.g. the stream processor) for this connection's life; False when
        another process holds it. Only one process opens a DuckDB state: always True."""
        return True

    def writes(self) -> int | None:
        """How many transactions were committed to a state other processes write too (their
        readers drop what they cached when it moves); None: only this process writes."""
        return None

    def scrub(
        self,
        values: pa.Array,
        keys: pa.Array,
        replace: Callable[[str], str],
        key_columns: Sequence[str] = ("customer_id", "customer_key"),
    ) -> int:
        """Remove people from every table: rows where a text column equals one of ``values``,
        or a ``key_columns`` column one of ``keys``, are deleted; longer text that contains one
        of either (JSON lists of examples, batch payloads) is passed through ``replace``. Call
        inside ``transaction``. Returns the rows touched."""
        import pyarrow as pa
        import pyarrow.compute as pc

        both = pc.unique(pa.concat_arrays([values.cast(pa.string()), keys.cast(pa.string())]))
        columns: dict[str, list[str]] = {}
        for table, column in self.text_columns():
            columns.setdefault(table, []).append(column)
        touched = 0
        with self.registered(
            __forget=pa.table({"v": both}),
            __values=pa.table({"v": values.cast(pa.string())}),
            __keys=pa.table({"v": keys.cast(pa.string())}),
        ):
            for table, cols in columns.items():
                q = _quoted(table)
                hit = " OR ".join(
                    f"{_quoted(c)} IN (SELECT v FROM __values)"
                    + (f" OR {_quoted(c)} IN (SELECT v FROM __keys)" if c in key_columns else "")
                    for c in cols
                )
                touched += int(self.rows(f"SELECT count(*) FROM {q} WHERE {hit}")[0][0])
                self.execute(f"DELETE FROM {q} WHERE {hit}")
                for c in cols:
                    touched += self._replace_in(q, _quoted(c), replace)
        return touched

    def _replace_in(self, table: str, column: str, replace: Callable[[str], str]) -> int:
        # Only text longer than any id, email or phone can hold one among other text.
        rowid = self.row_id
        rows = self.rows(
            f"SELECT {rowid}, {column} FROM {table} WHERE length({column}) > 40 AND EXISTS "
            f"(SELECT 1 FROM __forget WHERE strpos({table}.{column}, v) > 0)"
        )
        if not rows:
            return 0
        changed = 0
        for rid, text in rows:
            new = replace(text)
            if new != text:  # contains() also finds a value inside a longer one
                self.execute(f"UPDATE {table} SET {column} = ? WHERE {self.row_id} = ?", [new, rid])
                changed += 1
        return changed

    def has_table(self, name: str) -> bool:
        rows = self.rows(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
            "AND table_schema = current_schema()",
            [name],
        )
        return bool(rows[0][0])


class DuckDBState(StateStore):
    """The state in a DuckDB file (or in memory: tests, and scratch work of a command)."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        import duckdb

        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise StateError(
                f"cannot open the state database {self.path}: {_first(exc)} "
                "(is another crmseg process using it?)"
            ) from exc
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(_META)
        self._depth = 0

    def close(self) -> None:
        self.con.close()

    def execute(self, sql: str, params: Params = None) -> None:
        self._run(sql, params)

    def rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return list(self._run(sql, params).fetchall())

    def dicts(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cur = self._run(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        table: pa.Table = self._run(sql, params).fetch_arrow_table()
        return table

    def insert(self, table: str, data: pa.Table) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
            raise StateError(f"not a state table name: {table!r}")
        with self.registered(__insert=data):
            self.con.execute(f"INSERT INTO {table} SELECT * FROM __insert")

    @contextmanager
    def registered(self, **tables: pa.Table) -> Iterator[None]:
        for name, data in tables.items():
            self.con.register(name, data)
        try:
            yield
        finally:
            for name in tables:
                self.con.unregister(name)

    def _run(self, sql: str, params: Params) -> Any:
        if not params:
            return self.con.execute(sql)
        text = _inline(sql, params)
        if text is not None:
            return self.con.execute(text)
        if isinstance(params, Mapping):
            # DuckDB insists that a statement gets exactly the named parameters it uses.
            used = set(re.findall(r"\$([a-z_][a-z0-9_]*)", sql))
            return self.con.execute(sql, {k: v for k, v in params.items() if k in used})
        return self.con.execute(sql, list(params))

    def _begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def _commit(self) -> None:
        self.con.execute("COMMIT")  # DuckDB ends the transaction when its commit fails

    def _rollback(self) -> None:
        self.con.execute("ROLLBACK")

    def text_columns(self) -> list[tuple[str, str]]:
        return [
            (str(t), str(c))
            for t, c in self.rows(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_schema, table_name) "
                "WHERE t.table_type = 'BASE TABLE' AND c.data_type = 'VARCHAR' "
                "ORDER BY c.table_name, c.ordinal_position"
            )
        ]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PLACEHOLDER = re.compile(r"\?|\$([a-z_][a-z0-9_]*)")


def literal(value: Any) -> str | None:
    """``value`` as an SQL literal of DuckDB (and standard SQL), or None for other types.

    Strings are quoted with single quotes doubled, the only escape standard SQL strings have,
    so any text is one literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"CAST('{value}' AS DOUBLE)"
        text = repr(value)
        # An exponent makes it a DOUBLE literal (plain 1.5 would be read as a DECIMAL).
        return text if "e" in text else f"{text}e0"
    if isinstance(value, str):
        if "\x00" in value:
            return None
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return None
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return None


def _inline(sql: str, params: Params) -> str | None:
    """The statement with its parameters written as literals, or None when one cannot be.

    Binding parameters makes DuckDB import pandas (a third of a second, on every command
    that reads the state); crmseg's statements are fixed text whose only ``?`` and ``$name``
    are placeholders, so writing the values in as literals is equivalent."""
    named: Mapping[str, Any] = params if isinstance(params, Mapping) else {}
    listed: list[Any] = [] if isinstance(params, Mapping) else list(params or [])
    position = 0
    failed = False

    def swap(m: re.Match[str]) -> str:
        nonlocal position, failed
        if m.group(0) == "?":
            if named or position >= len(listed):
                failed = True
                return m.group(0)
            value = listed[position]
            position += 1
        else:
            if m.group(1) not in named:
                failed = True
                return m.group(0)
            value = named[m.group(1)]
        text = literal(value)
        if text is None:
            failed = True
            return m.group(0)
        return text

    out = _PLACEHOLDER.sub(swap, sql)
    if failed or "'" in _PLACEHOLDER.sub("", sql):
        return None  # a quote in the fixed text: placeholders might sit inside a string
    return out


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
