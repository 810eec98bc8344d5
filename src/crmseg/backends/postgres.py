"""PostgreSQL: the warehouse in a database server, through Ibis and psycopg.

Postgres cannot read files on the client, so files are parsed by the embedded reader (the
same one DuckDB projects use, so both engines load identical rows) and copied in with
``COPY ... FROM STDIN``; tables already in the database are read where they are. DDL is
transactional in Postgres, so a run's ``pending`` block is one transaction, as on DuckDB.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA, CopiesFilesIn, _first_line
from crmseg.errors import BackendError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.config import BackendConfig


# The views reading a table, through any depth of views; the deepest last.
_DEPENDENTS = """
WITH RECURSIVE deps(oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON d.objid = r.oid
    WHERE d.refobjid = %(target)s::regclass AND r.ev_class <> %(target)s::regclass
    UNION
    SELECT r.ev_class, deps.depth + 1
    FROM deps JOIN pg_depend d ON d.refobjid = deps.oid JOIN pg_rewrite r ON d.objid = r.oid
    WHERE r.ev_class <> deps.oid
)
SELECT n.nspname, c.relname, pg_get_viewdef(c.oid), max(deps.depth) AS depth
FROM deps JOIN pg_class c ON c.oid = deps.oid JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY n.nspname, c.relname, c.oid
ORDER BY depth, n.nspname, c.relname
"""


def _ibis_class() -> Any:
    """Ibis's Postgres backend, with in-memory tables copied in by ``COPY`` (Ibis inserts
    them a row at a time: minutes for a million rows)."""
    try:
        from ibis.backends.postgres import Backend as IbisPostgres
    except ImportError as exc:  # psycopg missing
        raise BackendError(
            "the postgres backend needs psycopg: pip install 'crmseg[postgres]'"
        ) from exc

    class Postgres(IbisPostgres):  # type: ignore[misc]
        def _register_in_memory_table(self, op: Any) -> None:
            import sqlglot as sg
            import sqlglot.expressions as sge

            schema = op.schema
            create = sge.Create(
                kind="TABLE",
                this=sge.Schema(
                    this=sg.to_identifier(op.name, quoted=True),
                    expressions=schema.to_sqlglot_column_defs(self.dialect),
                ),
                properties=sge.Properties(expressions=[sge.TemporaryProperty()]),
            )
            data = op.data.to_pyarrow(schema)
            name = sg.to_identifier(op.name, quoted=True).sql(self.dialect)
            with self.con.cursor() as cursor, self.con.transaction():
                cursor.execute(create.sql(self.dialect))
                copy_in(cursor, name, data)
                # without statistics the planner takes a new table for one row and joins it
                # by nested loops: minutes for a wide query over 500k customers
                cursor.execute(f"ANALYZE {name}")

    return Postgres


def _flat(expr: ir.Table) -> bool:
    """Whether every column has a CSV form Arrow reads back exactly (no lists, structs,
    maps, intervals or binary)."""
    return all(
        t.is_string() or t.is_numeric() or t.is_boolean()
        or (t.is_temporal() and not t.is_time() and not t.is_interval())
        for t in expr.schema().types
    )  # fmt: skip


def secret(env: str | None, section: str, error: type[Exception]) -> str | None:
    """The password in the environment variable ``env`` names (``password_env``), if any;
    a named variable that is not set is ``error`` located at ``section``."""
    if not env:
        return None
    password = os.environ.get(env)
    if password is None:
        raise error(f"{section}.password_env: the environment variable {env} is not set")
    return password


def copy_in(cursor: Any, target: str, data: pa.Table) -> None:
    """Append ``data`` to the table named ``target`` (quoted SQL) with one COPY.

    Arrow writes the rows as CSV; quoted empty strings stay empty strings and unquoted
    empty fields are NULL, which is how Postgres's CSV format reads them."""
    import pyarrow as pa
    import pyarrow.csv as csv

    if data.num_rows == 0:
        return
    nested = [f.name for f in data.schema if pa.types.is_nested(f.type)]
    if nested:  # lists and structs have no CSV form: Postgres reads them as literals
        raise BackendError(f"cannot copy the nested columns {nested} into {target}")
    columns = ", ".join(f'"{c}"' for c in data.column_names)
    buffer = io.BytesIO()
    csv.write_csv(
        data,
        buffer,
        csv.WriteOptions(include_header=False, quoting_style="all_valid"),
    )
    statement = f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)"
    with cursor.copy(statement) as copy:
        view = buffer.getbuffer()
        for start in range(0, len(view), 1 << 20):
            copy.write(view[start : start + (1 << 20)])


class PostgresBackend(CopiesFilesIn):
    kind = "postgres"
    dialect = "postgres"

    def __init__(self, config: BackendConfig, scratch: bool = False) -> None:
        """``scratch``: an empty database of its own, dropped on close (``crmseg test``
        loads fixture rows there, never into the project's database)."""
        self.where = f"{config.host}:{config.port}"
        self._admin: Any = None
        password = secret(config.password_env, "backend", BackendError)
        settings: dict[str, Any] = {
            "host": config.host,
            "port": config.port,
            "user": config.user,
            "password": password,
            "connect_timeout": 10,
            "application_name": "crmseg",
        }
        database = config.database
        try:
            if scratch:
                import psycopg
                import sqlglot as sg

                database = f"crmseg_scratch_{os.urandom(6).hex()}"
                self._admin = psycopg.connect(dbname=config.database, autocommit=True, **settings)
                self._admin.execute(f"CREATE DATABASE {sg.to_identifier(database).sql('postgres')}")
                self._scratch_db = database
            con = _ibis_class()().connect(database=database, **settings)
        except BackendError:
            raise
        except Exception as exc:
            reason = _first_line(exc)
            if password:  # never echo a secret, whatever the driver put in its message
                reason = reason.replace(password, "***")
            raise BackendError(f"cannot connect to PostgreSQL at {self.where}: {reason}") from None
        from crmseg.backends.sql import compiler

        con.compiler = compiler("postgres")
        # JIT compiles a wide query's hundreds of expressions for seconds (3.7 s of a 3.8 s
        # query on 2,000 customers) before the first row. Parallel plans stay off: on 500k
        # customers the churn sample's parallel hash join left the leader at 100% and its
        # workers blocked sending rows for over 8 minutes; the serial plan takes 30 s.
        with con.con.cursor() as cursor:
            cursor.execute("SET jit = off")
            cursor.execute("SET max_parallel_workers_per_gather = 0")
        self._depth = 0
        self._temp = 0
        super().__init__(con)

    @property
    def raw(self) -> Any:
        """The psycopg connection."""
        return self.con.con

    def execute(self, expr: ir.Expr) -> pa.Table:
        import ibis.expr.types as ir

        try:
            if isinstance(expr, ir.Table) and _flat(expr):
                return self._copy_out(expr)
            return self.con.to_pyarrow(expr)
        except BackendError:
            raise
        except Exception as exc:
            self._recover()
            raise BackendError(
                f"PostgreSQL failed: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from exc

    def _copy_out(self, expr: ir.Table) -> pa.Table:
        """The rows of ``expr`` through ``COPY ... TO STDOUT`` as CSV, parsed by Arrow with
        the expression's own types: Ibis fetches rows as Python tuples (seconds for 500k
        customers' traits), and the server cursor it uses rules out parallel plans."""
        import pyarrow.csv as csv

        schema = expr.schema().to_pyarrow()
        self.con._run_pre_execute_hooks(expr)  # in-memory tables it reads are copied in
        query = f"COPY ({self.con.compile(expr)}) TO STDOUT WITH (FORMAT csv)"
        buffer = io.BytesIO()
        with self.raw.cursor() as cursor, cursor.copy(query) as copy:
            for chunk in copy:
                buffer.write(chunk)
        buffer.seek(0)
        if not buffer.getbuffer().nbytes:
            return schema.empty_table()
        return csv.read_csv(
            buffer,
            read_options=csv.ReadOptions(column_names=schema.names, block_size=1 << 24),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types=schema,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,  # "" is an empty text, nothing is null
                null_values=[""],
                true_values=["t"],
                false_values=["f"],
            ),
        )

    def _recover(self) -> None:
        """After a failed statement outside a transaction block, the connection is usable
        again (inside one, the block's rollback does it)."""
        if self._depth == 0:
            with contextlib.suppress(Exception):
                self.raw.rollback()

    # --- files: parsed here, copied in -------------------------------------------------------

    def _upload(self, expr: ir.Table) -> ir.Table:
        """A temporary table of ``expr``'s rows (it lives until the connection closes)."""
        import ibis

        data = self.reader().execute(expr)
        self._temp += 1
        name = f"_crmseg_file_{os.getpid()}_{self._temp}"
        schema = ibis.schema(data.schema)
        try:
            self.con.create_table(name, schema=schema, temp=True)
            with self.raw.cursor() as cursor:
                copy_in(cursor, f'"{name}"', data)
                cursor.execute(f'ANALYZE "{name}"')
        except Exception as exc:
            self._recover()
            raise BackendError(f"cannot copy rows into PostgreSQL: {_first_line(exc)}") from exc
        return self.con.table(name)

    def append(self, name: str, rows: pa.Table) -> None:
        import ibis

        self.ensure_schema()
        try:
            if name not in self.con.list_tables(database=CANONICAL_SCHEMA):
                self.con.create_table(name, schema=ibis.schema(rows.schema),
                                      database=CANONICAL_SCHEMA)  # fmt: skip
            with self.raw.cursor() as cursor:
                copy_in(cursor, f'"{CANONICAL_SCHEMA}"."{name}"', rows)
        except Exception as exc:
            self._recover()
            raise BackendError(
                f"cannot append to {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}"
            ) from exc

    def scratch(self, name: str, expr: ir.Table) -> ir.Table:
        """A temporary table: it never reaches the database's storage for others."""
        try:
            self.con.drop_table(name, force=True)
            table = self.con.create_table(name, expr, temp=True)
            with self.raw.cursor() as cursor:
                cursor.execute(f'ANALYZE "{name}"')
            return table
        except Exception as exc:
            self._recover()
            raise BackendError(
                f"cannot materialise {name}: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from exc

    def drop_scratch(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.con.drop_table(name, force=True)

    @contextmanager
    def splink(self, data: ir.Table) -> Iterator[tuple[Any, Any]]:
        raise BackendError(
            "identity.splink.engine: warehouse: Splink's Postgres dialect has no Jaro-Winkler "
            "or Damerau-Levenshtein, which the name, email and birth date comparisons use; "
            "set engine: local"
        )
        yield  # pragma: no cover - makes this a generator

    def put(self, name: str, expr: ir.Table, *, view: bool = False) -> None:
        """As the base class; views over the replaced object are made again over the new one.

        Postgres binds a view to the table it reads when the view is made, so replacing a
        table drops its views (DuckDB and Spark look tables up by name when a view is
        read): the views' definitions are read first and run again after."""
        dependents = self._dependents(name)
        super().put(name, expr, view=view)
        try:
            with self.raw.cursor() as cursor:
                if not view:  # statistics now: autovacuum would analyze it only later
                    cursor.execute(f'ANALYZE "{CANONICAL_SCHEMA}"."{name}"')
                for statement in dependents:
                    cursor.execute(statement)
        except Exception as exc:
            raise BackendError(
                f"cannot make the views over {CANONICAL_SCHEMA}.{name} again: {_first_line(exc)}"
            ) from exc

    def _dependents(self, name: str) -> list[str]:
        """CREATE VIEW statements of every view that reads ``crmseg.<name>``, directly or
        through other views, in an order that makes each after what it reads."""
        if not self.has_table(name, CANONICAL_SCHEMA):
            return []
        with self.raw.cursor() as cursor:
            rows = cursor.execute(_DEPENDENTS, {"target": f'"{CANONICAL_SCHEMA}"."{name}"'})
            return [
                f'CREATE VIEW "{schema}"."{view}" AS {definition}'
                for schema, view, definition, _ in rows.fetchall()
            ]

    def drop(self, name: str) -> None:
        """Drop ``crmseg.<name>`` whether a table or a view, and the views over it (see
        ``put``). Postgres refuses DROP TABLE on a view, and a failed statement would end the
        run's transaction."""
        import sqlglot.expressions as sge

        views = self.views() if self.has_table(name, CANONICAL_SCHEMA) else set()
        kind = "VIEW" if name in views else "TABLE"
        drop = sge.Drop(
            kind=kind,
            this=sge.Table(
                this=sge.to_identifier(name, quoted=True),
                db=sge.to_identifier(CANONICAL_SCHEMA, quoted=True),
            ),
            exists=True,
            cascade=True,
        )
        with self.raw.cursor() as cursor:
            cursor.execute(drop.sql("postgres"))

    def checksum(self, table: ir.Table) -> str:
        """Row count and an order-independent sum of every row's md5 (Ibis cannot hash a
        whole row on Postgres)."""
        import sqlglot as sg

        body = sg.select("*").from_(self.con.compiler.to_sqlglot(table).subquery("r"))
        query = (
            "SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(CAST(s AS text)), 1, 15))"
            f"::bit(60)::bigint::numeric), 0) AS h FROM ({body.sql('postgres')}) AS s"
        )
        try:
            with self.raw.cursor() as cursor:
                row = cursor.execute(query).fetchone()
        except Exception as exc:
            self._recover()
            raise BackendError(f"PostgreSQL failed: {_first_line(exc)}", sql=query) from exc
        assert row is not None
        return f"{row[0]}:{row[1]}"

    @contextlib.contextmanager
    def pending(self) -> Iterator[None]:
        """One transaction: Postgres rolls back created and dropped tables too. Writers of
        one database take turns (an advisory lock held to the end of the transaction): two
        processes replacing the same tables at once would fail on each other's drops."""
        self._depth += 1
        try:
            if self._depth > 1:
                yield
                return
            with self.raw.transaction():
                with self.raw.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('crmseg.warehouse'))")
                yield
        finally:
            self._depth -= 1

    def close(self) -> None:
        super().close()
        if self._admin is not None:
            import sqlglot as sg

            with contextlib.suppress(Exception):
                name = sg.to_identifier(self._scratch_db).sql("postgres")
                self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self._admin.close()
            self._admin = None
