"""The state database on PostgreSQL: the same stores and statements as on DuckDB, so several
crmseg processes (servers, schedulers, the command line) can write and read one history.

The stores write their statements in DuckDB's SQL (the default engine); here each statement
is transpiled once by sqlglot and cached. Parameters are bound by psycopg, Arrow tables are
copied into temporary tables with ``COPY``, and every transaction first takes one advisory
lock of the state's schema: writers take turns, as DuckDB's single writer does, while readers
never wait (each statement reads what was committed before it).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crmseg.backends.state import Params, StateStore, _first
from crmseg.errors import StateError

if TYPE_CHECKING:
    import pyarrow as pa

    from crmseg.config import StateConfig


@functools.lru_cache(maxsize=4096)
def translate(sql: str, bound: bool) -> tuple[str, ...]:
    """``sql`` (one statement in DuckDB's dialect, ``?`` and ``$name`` placeholders) as
    Postgres statements with psycopg's placeholders, run in order; only the last one takes
    the parameters. ``bound``: parameters follow, so a literal ``%`` is doubled."""
    import ibis.backends.sql.dialects  # noqa: F401 (see below)
    import sqlglot
    import sqlglot.expressions as sge
    from sqlglot.errors import SqlglotError

    # Ibis adds to sqlglot's Postgres generator when its dialects are imported (make_date
    # for DateFromParts, ...), and sqlglot fixes a generator's dispatch the first time one
    # is made: generating here first would leave a later Postgres warehouse in this process
    # writing date_from_parts, which Postgres lacks.
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
        before = []
        if isinstance(tree, sge.Create) and tree.args.get("replace") and tree.kind == "TABLE":
            # no CREATE OR REPLACE TABLE in Postgres
            before.append(sge.Drop(this=tree.this.copy(), kind="TABLE", exists=True))
            tree.set("replace", False)
        texts = [t.sql("postgres") for t in before] + [_portable(tree).sql("postgres")]
    except SqlglotError as exc:  # crmseg's own statements: a bug, said plainly
        raise StateError(f"cannot translate a state statement for PostgreSQL: {exc}") from exc
    if bound:
        texts[-1] = re.sub(r"%(?!s\b|\([a-z_][a-z0-9_]*\)s)", "%%", texts[-1])
    return tuple(texts)


def _portable(tree: Any) -> Any:
    """Text columns made with the "C" collation, and what sqlglot leaves in DuckDB's terms:
    subqueries in FROM without a name (Postgres
    before 16 needs one), ``GROUP BY ALL`` (the positions of the selected expressions
    without an aggregate), ``any_value`` (none before Postgres 16; ``min`` is one of the
    values) and ``arg_max``/``arg_min`` (the first of an ordered array, rows with a null key
    left out as DuckDB does)."""
    import sqlglot.expressions as sge

    count = 0

    def rewrite(node: Any) -> Any:
        nonlocal count
        if (
            isinstance(node, sge.ColumnDef)
            and node.args.get("kind") is not None
            and node.args["kind"].this in (sge.DataType.Type.VARCHAR, sge.DataType.Type.TEXT)
            and not node.find(sge.CollateColumnConstraint)
        ):
            # text compares and sorts byte by byte, as on DuckDB, whatever the database's
            # collation (en_US would put '_x' before 'B')
            column = node.copy()
            collate = sge.CollateColumnConstraint(this=sge.to_identifier("C", quoted=True))
            column.append("constraints", sge.ColumnConstraint(kind=collate))
            return column
        if isinstance(node, sge.Group) and node.args.get("all") and node.parent is not None:
            select = node.parent
            keys = [
                sge.Literal.number(i + 1)
                for i, e in enumerate(select.expressions)
                if not e.find(sge.AggFunc)
            ]
            return sge.Group(expressions=keys)
        if isinstance(node, sge.IgnoreNulls) and isinstance(node.this, sge.AnyValue):
            return sge.Min(this=node.this.this.copy())
        if isinstance(node, sge.AnyValue):
            return sge.Min(this=node.this.copy())
        if (
            isinstance(node, sge.Subquery)
            and not node.alias
            and isinstance(node.parent, (sge.From, sge.Join))
        ):
            count += 1
            return sge.Subquery(
                this=node.this, alias=sge.TableAlias(this=sge.to_identifier(f"_q{count}"))
            )
        if isinstance(node, (sge.ArgMax, sge.ArgMin)):
            key = node.expression
            ordered = sge.Ordered(
                this=key.copy(), desc=isinstance(node, sge.ArgMax), nulls_first=False
            )
            agg = sge.Filter(
                this=sge.ArrayAgg(this=sge.Order(this=node.this.copy(), expressions=[ordered])),
                expression=sge.Where(
                    this=sge.Not(this=sge.Is(this=key.copy(), expression=sge.Null()))
                ),
            )
            # sqlglot counts from 0 (it writes Postgres's 1)
            return sge.Bracket(this=sge.Paren(this=agg), expressions=[sge.Literal.number(0)])
        return node

    return tree.transform(rewrite)


def sql_text(template: str, *names: str) -> Any:
    """A statement with quoted identifiers in its ``{}`` places."""
    from psycopg import sql

    return sql.SQL(template).format(*(sql.Identifier(n) for n in names))


def _arrow_type(oid: int) -> pa.DataType:
    import pyarrow as pa

    types = {
        16: pa.bool_(),
        20: pa.int64(),
        21: pa.int16(),
        23: pa.int32(),
        700: pa.float32(),
        701: pa.float64(),
        1082: pa.date32(),
        1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"),
        1700: pa.float64(),  # numeric: see _numeric (whole numbers are cast back to int64)
        1007: pa.list_(pa.int32()),
        1016: pa.list_(pa.int64()),
        1009: pa.list_(pa.string()),
        1015: pa.list_(pa.string()),
    }
    return types.get(oid, pa.string())


def _numeric(column: list[Any]) -> pa.Array:
    """Postgres sums and counts of integers are ``numeric``; DuckDB's are integers."""
    import pyarrow as pa

    if all(v is None or isinstance(v, int) for v in column):
        return pa.array(column, pa.int64())
    return pa.array([None if v is None else float(v) for v in column], pa.float64())


def _adapters(con: Any) -> None:
    """``numeric`` values come back as ``int`` when whole and ``float`` otherwise (DuckDB
    gives integers for sums of integers and doubles for averages), never ``Decimal``."""
    from psycopg.adapt import Loader

    class Numeric(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode()
            if re.fullmatch(r"-?\d+", text):
                return int(text)
            return float(text)

    con.adapters.register_loader("numeric", Numeric)
    # Python text is sent as ``text``, not ``unknown``: a list of strings is then a text[]
    # (``unnest(?)`` has one reading), as DuckDB types it
    from psycopg.types.string import StrDumper

    con.adapters.register_dumper(str, StrDumper)


def _pg_type(field: pa.Field) -> str:
    import pyarrow as pa

    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return 'text COLLATE "C"'  # as the state's own text columns (see _portable)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t):
        return "integer"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    raise StateError(f"cannot keep a column of type {t} ({field.name}) in the state on PostgreSQL")


class PostgresState(StateStore):
    """The state in one schema of a PostgreSQL database."""

    dialect = "postgres"
    shared = True
    row_id = "CAST(ctid AS VARCHAR)"  # compared as text: a tid has no parameter type

    def __init__(self, config: StateConfig) -> None:
        try:
            import psycopg  # noqa: F401 (here: a missing extra is one line)
        except ImportError:
            raise StateError(
                "the state on PostgreSQL needs psycopg: pip install 'crmseg[postgres]'"
            ) from None
        from crmseg.backends.postgres import secret

        password = secret(config.password_env, "state", StateError)
        self.schema = config.db_schema
        where = f"{config.host}:{config.port}"
        self.path = f"the state schema {self.schema} on PostgreSQL at {where}"
        self._settings: dict[str, Any] = {
            "host": config.host,
            "port": config.port,
            "user": config.user,
            "password": password,
            "dbname": config.database,
            "connect_timeout": 10,
            "application_name": "crmseg",
        }
        self._probe: Any = None
        self._where = where
        self._claims: set[str] = set()
        self.con = self._connect()
        self._depth = 0
        self._wrote = False  # whether the transaction under way wrote (see ``writes``)
        self._locked = False  # whether it holds the writers' turn (see ``exclusive``)
        self._mine = 0  # transactions this connection committed with writes
        self._columns: dict[str, list[str]] = {}
        # one at a time: CREATE SCHEMA IF NOT EXISTS is not safe against a concurrent one
        with self._errors(), self.transaction():
            self.exclusive()
            self.con.execute(sql_text("CREATE SCHEMA IF NOT EXISTS {}", self.schema))
            self.con.execute(sql_text("SET search_path TO {}", self.schema))
            self.con.execute("SET TimeZone = 'UTC'")
            self.con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> Any:
        import psycopg

        try:
            con = psycopg.connect(**self._settings, autocommit=True)
        except Exception as exc:
            reason, password = _first(exc), self._settings["password"]
            if password:  # never echo a secret, whatever the driver put in its message
                reason = reason.replace(password, "***")
            raise StateError(f"cannot connect to PostgreSQL at {self._where}: {reason}") from None
        _adapters(con)
        return con

    def _revive(self) -> bool:
        """A connection the server dropped (a restart, an idle timeout) is opened again
        between transactions; True when it was. Inside one, its work is lost: the error
        stands."""
        if self._depth or not self.con.broken:
            return False
        self.con = self._connect()
        self.con.execute(sql_text("SET search_path TO {}", self.schema))
        self.con.execute("SET TimeZone = 'UTC'")
        for role in self._claims:  # session locks went with the old connection
            if not self.claim(role):
                raise StateError(f"lost the {role} to another process while reconnecting")
        return True

    def close(self) -> None:
        for con in (self.con, self._probe):
            if con is not None:
                with contextlib.suppress(Exception):
                    con.close()

    # --- statements ---------------------------------------------------------------------------

    def _cursor(self, sql: str, params: Params, again: bool = True) -> Any:
        import psycopg

        bound = bool(params)
        *first, text = translate(sql, bound)
        cursor = self.con.cursor()
        try:
            with self._errors(text):
                for statement in first:
                    cursor.execute(statement)
                if not bound:
                    cursor.execute(text)
                elif isinstance(params, Mapping):
                    cursor.execute(text, dict(params))
                else:
                    cursor.execute(text, list(params or []))
        except StateError as exc:
            if again and isinstance(exc.__cause__, psycopg.OperationalError) and self._revive():
                return self._cursor(sql, params, again=False)
            raise
        return cursor

    def execute(self, sql: str, params: Params = None) -> None:
        self.exclusive()
        self._wrote = True
        if sql.lstrip()[:6].upper() in ("ALTER ", "CREATE", "DROP T"):
            self._columns.clear()  # the tables' columns as ``insert`` knew them may change
        self._cursor(sql, params).close()

    def rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        with self._cursor(sql, params) as cursor:
            return list(cursor.fetchall()) if cursor.description else []

    def dicts(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        with self._cursor(sql, params) as cursor:
            names = [d.name for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        import pyarrow as pa

        with self._cursor(sql, params) as cursor:
            rows = cursor.fetchall()
            arrays = []
            for i, d in enumerate(cursor.description):
                values = [r[i] for r in rows]
                if d.type_code == 1700:
                    arrays.append(_numeric(values))
                else:
                    arrays.append(pa.array(values, _arrow_type(d.type_code)))
            return pa.table(arrays, names=[d.name for d in cursor.description])

    def insert(self, table: str, data: pa.Table) -> None:
        from crmseg.backends.postgres import copy_in

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
            raise StateError(f"not a state table name: {table!r}")
        if table not in self._columns:
            self._columns[table] = [
                str(r[0])
                for r in self.rows(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND table_schema = current_schema() ORDER BY ordinal_position",
                    [table],
                )
            ]
        # the table's columns in order, as DuckDB's INSERT ... SELECT * takes them
        named = data.rename_columns(self._columns[table][: data.num_columns])
        self.exclusive()
        self._wrote = True
        with self._errors(), self.con.cursor() as cursor:
            copy_in(cursor, f'"{table}"', named)

    @contextmanager
    def registered(self, **tables: pa.Table) -> Iterator[None]:
        from psycopg import sql

        from crmseg.backends.postgres import copy_in

        made = []
        try:
            with self._errors(), self.con.cursor() as cursor:
                for name, data in tables.items():
                    target = sql.Identifier(name)
                    columns = sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f)))
                        for f in data.schema
                    )
                    cursor.execute(
                        sql.SQL("CREATE TEMPORARY TABLE {} ({})").format(target, columns)
                    )
                    made.append(name)
                    copy_in(cursor, f'"{name}"', data)
                    if data.num_rows > 1000:  # the planner guesses badly on a new table
                        cursor.execute(sql.SQL("ANALYZE {}").format(target))
            yield
        finally:
            from psycopg.pq import TransactionStatus

            # in a failed transaction its rollback removes them (a statement would fail)
            if self.con.info.transaction_status != TransactionStatus.INERROR:
                for name in made:
                    # a lost connection took them with it: the error that matters is raised
                    with contextlib.suppress(Exception):
                        self.con.execute(
                            sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name))
                        )

    def _begin(self) -> None:
        self._wrote = self._locked = False
        self._revive()
        with self._errors():
            self.con.execute("BEGIN")

    def _commit(self) -> None:
        try:
            with self._errors():
                if self._wrote:
                    self.con.execute(
                        "INSERT INTO meta VALUES ('writes', '1') ON CONFLICT (key) DO UPDATE "
                        "SET value = CAST(CAST(meta.value AS bigint) + 1 AS text)"
                    )
                self.con.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if self._wrote:
            self._mine += 1

    def _rollback(self) -> None:
        # also after a failed COMMIT or lock wait: the connection is usable again
        with contextlib.suppress(Exception):
            self.con.execute("ROLLBACK")

    def exclusive(self) -> None:
        if self._depth and not self._locked:
            # writers take turns (see the module's docstring); from here to the commit
            with self._errors():
                self.con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.schema])
            self._locked = True

    def claim(self, role: str) -> bool:
        # a session lock: held until this connection closes, then free for another process
        with self._errors():
            row = self.con.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", [f"{self.schema}.{role}"]
            ).fetchone()
        if row and row[0]:
            self._claims.add(role)
            return True
        return False

    def writes(self) -> int | None:
        # on a connection of its own: the main one may be inside another thread's transaction
        with self._errors():
            if self._probe is None or self._probe.broken:
                self._probe = self._connect()
            row = self._probe.execute(
                sql_text("SELECT value FROM {}.meta WHERE key = 'writes'", self.schema)
            ).fetchone()
        # this process's own commits are not news to it
        return (int(row[0]) if row else 0) - self._mine

    @contextmanager
    def _errors(self, sql: str | None = None) -> Iterator[None]:
        """Driver errors as one located line; the statement stays on the exception."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            error = StateError(f"the state database ({self.path}) failed: {_first(exc)}")
            error.sql = sql  # type: ignore[attr-defined]
            raise error from exc

    def text_columns(self) -> list[tuple[str, str]]:
        return [
            (str(t), str(c))
            for t, c in self.rows(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c "
                "JOIN information_schema.tables t USING (table_schema, table_name) "
                "WHERE t.table_type = 'BASE TABLE' AND c.table_schema = current_schema() "
                "AND c.data_type IN ('text', 'character varying') "
                "ORDER BY c.table_name, c.ordinal_position"
            )
        ]
