"""Where SQL runs. One base class, one abstract ``execute``; everything else builds on it.

Callers hand the backend Ibis expressions, never SQL strings; the dialect appears only when
an expression is compiled here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crmseg.errors import BackendError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa
    from ibis.backends import BaseBackend

# Canonical tables live in their own schema so they never collide with a user's tables.
CANONICAL_SCHEMA = "crmseg"


class Backend(ABC):
    """A database that runs crmseg's Ibis expressions."""

    kind: str = "abstract"
    dialect: str = "duckdb"  # Ibis's name: its compiler, crmseg's dialect table
    # whether real time (crmseg stream, POST /events) runs here
    streams: bool = True

    _files: Backend | None = None  # see ``reader``

    def __init__(self, con: BaseBackend) -> None:
        self.con = con
        # the dialect users' SQL (``sql:`` segments and sources) is written in
        self.written = self.dialect

    @property
    def sqlglot_dialect(self) -> str:
        """The dialect's name for sqlglot (Ibis registers its own names, pyspark and mssql
        among them, when it loads)."""
        return self.dialect

    @abstractmethod
    def execute(self, expr: ir.Expr) -> pa.Table:
        """Run an expression and return its result as Arrow; failures raise BackendError."""

    # --- built on execute / the Ibis connection ------------------------------------------------

    def sql_of(self, expr: ir.Expr) -> str:
        from crmseg.backends.sql import to_sql

        try:
            return to_sql(expr, self.dialect)
        except Exception:  # compiling for the message must never hide the real error
            return "<could not compile expression>"

    def scalar(self, expr: ir.Scalar) -> Any:
        table = self.execute(expr.name("value").as_table())
        return table.column(0)[0].as_py() if table.num_rows else None

    def table(self, name: str, database: str | None = None) -> ir.Table:
        try:
            return self.con.table(name, database=database)
        except Exception as exc:
            where = f"{database}.{name}" if database else name
            raise BackendError(
                f"table {where} not found in the {self.kind} database: {exc}"
            ) from None

    def has_table(self, name: str, database: str | None = None) -> bool:
        try:
            return name in self.con.list_tables(database=database)
        except Exception:
            return False

    def canonical(self, name: str) -> ir.Table:
        """A loaded canonical table (see crmseg.sources)."""
        return self.table(name, database=CANONICAL_SCHEMA)

    def stored_tables(self) -> list[str]:
        """Every object of the canonical schema, bookkeeping included (views too: see
        :meth:`views`)."""
        try:
            return sorted(self.con.list_tables(database=CANONICAL_SCHEMA))
        except Exception as exc:  # a forget must never pass over tables it could not list
            raise BackendError(
                f"cannot list the tables of {CANONICAL_SCHEMA}: {_first_line(exc)}"
            ) from None

    def canonical_tables(self) -> list[str]:
        """Loaded tables (canonical and identity's); crmseg's bookkeeping (``_sources``) and
        snapshot readers (``_raw_*``) start with an underscore and are left out."""
        try:
            names = self.con.list_tables(database=CANONICAL_SCHEMA)
        except Exception:
            return []
        return sorted(n for n in names if not n.startswith("_"))

    def sql(self, query: str, dialect: str | None = None) -> ir.Table:
        """A user's own SQL (the ``sql:`` escape hatch, ``sql:`` sources) as an Ibis table;
        written in ``dialect`` (default: the project's ``backend.sql_dialect``), transpiled
        to the engine's with sqlglot when they differ."""
        import sqlglot

        source = dialect or self.written
        target = self.sqlglot_dialect
        text = query
        if source != target:
            try:
                text = sqlglot.transpile(query, read=source, write=target)[0]
            except sqlglot.errors.SqlglotError as exc:
                raise BackendError(f"invalid {source} SQL: {_first_line(exc)}", sql=query) from None
        try:
            return self.con.sql(text, dialect=target)
        except Exception as exc:
            raise BackendError(f"invalid SQL: {_first_line(exc)}", sql=text) from None

    # --- the canonical schema, one object at a time (call inside ``pending``) ---------------

    def put(self, name: str, expr: ir.Table, *, view: bool = False) -> None:
        """Create or replace ``crmseg.<name>`` as a table (or a view) of ``expr``."""
        self.ensure_schema()
        self.drop(name)
        try:
            if view:
                self.con.create_view(name, expr, database=CANONICAL_SCHEMA, overwrite=True)
            else:
                self.con.create_table(name, expr, database=CANONICAL_SCHEMA, overwrite=True)
        except Exception as exc:
            raise BackendError(
                f"cannot write {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}",
                sql=self.sql_of(expr),
            ) from exc

    def drop(self, name: str) -> None:
        """Drop ``crmseg.<name>`` (a table or a view) if it exists."""
        try:
            self.con.drop_table(name, database=CANONICAL_SCHEMA, force=True)
        except Exception:
            self.con.drop_view(name, database=CANONICAL_SCHEMA, force=True)

    def views(self) -> set[str]:
        """The views of the canonical schema (the rest of ``canonical_tables`` are tables)."""
        import sqlglot.expressions as sge

        query = (
            sge.select("table_name")
            .from_(sge.table_("tables", db="information_schema"))
            .where(
                sge.column("table_schema").eq(sge.Literal.string(CANONICAL_SCHEMA))
                & sge.column("table_type").eq(sge.Literal.string("VIEW"))
            )
        )
        try:
            rows = self.execute(self.con.sql(query.sql(self.dialect))).column(0).to_pylist()
        except Exception as exc:
            raise BackendError(
                f"cannot list the views of {CANONICAL_SCHEMA}: {_first_line(exc)}"
            ) from None
        return {str(r) for r in rows}

    def append(self, name: str, rows: pa.Table) -> None:
        """Add ``rows`` to the table ``crmseg.<name>``, made with their schema if it is new
        (call inside ``pending`` to make several appends one commit)."""
        import ibis

        self.ensure_schema()
        try:
            if name not in self.con.list_tables(database=CANONICAL_SCHEMA):
                self.con.create_table(name, schema=ibis.schema(rows.schema),
                                      database=CANONICAL_SCHEMA)  # fmt: skip
            self.con.insert(name, ibis.memtable(rows), database=CANONICAL_SCHEMA)
        except Exception as exc:
            raise BackendError(
                f"cannot append to {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}"
            ) from exc

    # --- queries compiled once, over relations rebound to new data each time -----------------

    def private(self) -> Backend | None:
        """A separate in-memory engine of the same dialect for work over Arrow data alone
        (None when this engine has none)."""
        return None

    def bind(self, name: str, data: pa.Table) -> None:
        """Make ``data`` queryable as the relation ``name`` in this session, replacing what
        had the name (the stream's gathered rows)."""
        raise BackendError(f"the {self.kind} backend cannot bind Arrow data to a name")

    def relation(self, name: str) -> ir.Table:
        """A relation made by :meth:`bind`, as an Ibis table."""
        return self.con.table(name)

    def prepared(
        self, expr: ir.Table, relations: Mapping[str, pa.Schema]
    ) -> Callable[[Mapping[str, pa.Table]], pa.Table]:
        """``expr`` (over the ``relations`` made by :meth:`bind`) compiled once; the callable
        gives each relation its new rows and runs it."""
        raise BackendError(f"the {self.kind} backend cannot run prepared queries")

    def remove_rows(self, name: str, keep: ir.Table) -> None:
        """Replace the table ``crmseg.<name>`` by ``keep`` (an expression over it): the rows
        are read out first, so the new table never reads the one it replaces."""
        import ibis

        self.put(name, ibis.memtable(self.execute(keep)))

    def write_parquet(self, expr: ir.Table, path: str) -> None:
        """Write ``expr`` to one Parquet file."""
        try:
            self.con.to_parquet(expr, path)
        except Exception as exc:
            raise BackendError(
                f"cannot write {path}: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from None

    def scratch(self, name: str, expr: ir.Table) -> ir.Table:
        """A working table that lives until ``drop_scratch`` (identity's intermediate steps).
        Engines with temporary tables keep it out of the database file."""
        self.put(name, expr)
        return self.canonical(name)

    def drop_scratch(self, name: str) -> None:
        self.drop(name)

    @contextmanager
    def splink(self, data: ir.Table) -> Iterator[tuple[Any, Any]]:
        """Splink's database API on this engine and ``data`` as an input it can register,
        for ``identity.splink.engine: warehouse``; what Splink made is gone after the block."""
        raise BackendError(
            f"identity.splink.engine: warehouse: Splink has no API for the {self.kind} "
            "backend here (it runs on pyspark, and duckdb is local anyway); set engine: local"
        )
        yield  # pragma: no cover - makes this a generator

    def ensure_schema(self) -> None:
        try:
            if CANONICAL_SCHEMA not in self.con.list_databases():
                self.con.create_database(CANONICAL_SCHEMA, force=True)
        except Exception as exc:
            raise BackendError(f"cannot create schema {CANONICAL_SCHEMA}: {exc}") from exc

    def read_csv(self, paths: list[str], **options: Any) -> ir.Table:
        """Delimited text files as a table (``options``: the CSV reader's settings, DuckDB's
        names; engines without a reader of client files parse them with DuckDB's)."""
        return self.con.read_csv(paths, **options)

    def read_parquet(self, paths: list[str]) -> ir.Table:
        return self.con.read_parquet(paths)

    def files(self, name: str, paths: list[str], file_format: str) -> ir.Table:
        """``crmseg.<name>``: a persistent view reading ``paths`` with the engine's own reader
        (engines without one copy the rows in)."""
        parquet = file_format == "parquet"
        self.put(name, self.read_parquet(paths) if parquet else self.read_csv(paths))
        return self.canonical(name)

    @property
    def snapshots(self) -> str | None:
        """Folder for snapshots of source files next to the warehouse (None: in memory)."""
        return None

    def checksum(self, table: ir.Table) -> str:
        """Row count and an order-independent hash of every row, to tell whether a table
        source changed since it was loaded."""
        import ibis

        row = ibis.struct({c: table[c] for c in table.columns}).hash()
        result = self.execute(table.aggregate(n=table.count(), h=row.cast("decimal(38, 0)").sum()))
        values = result.to_pylist()[0]
        return f"{values['n']}:{values['h']}"

    @contextmanager
    def pending(self) -> Iterator[None]:
        """Hold table replacements until the block succeeds (backends without transactions
        replace immediately)."""
        yield

    @contextmanager
    def session(self) -> Iterator[Backend]:
        yield self

    def reader(self) -> Backend:
        """A private in-memory DuckDB that parses files for engines that cannot read them
        the way crmseg reads them (Postgres on a server, Spark's CSV reader), so every
        engine loads the same rows; made on first use, closed with this backend."""
        if self._files is None:
            from crmseg.backends.duckdb import DuckDBBackend

            self._files = DuckDBBackend(":memory:")
        return self._files

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
        disconnect = getattr(self.con, "disconnect", None)
        if disconnect is not None:
            disconnect()


class CopiesFilesIn(Backend):
    """An engine that cannot read files the way crmseg reads them: the embedded reader
    parses them and ``_upload`` copies the rows in."""

    def read_csv(self, paths: list[str], **options: Any) -> ir.Table:
        return self._upload(self.reader().con.read_csv(paths, **options))

    def read_parquet(self, paths: list[str]) -> ir.Table:
        return self._upload(self.reader().con.read_parquet(paths))

    @abstractmethod
    def _upload(self, expr: ir.Table) -> ir.Table:
        """A temporary table of ``expr``'s rows (an expression of the embedded reader)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
