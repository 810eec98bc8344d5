"""The embedded default: a DuckDB file under the project."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA, Backend, _first_line
from crmseg.backends.sql import compiler
from crmseg.errors import BackendError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa


class DuckDBBackend(Backend):
    kind = "duckdb"
    dialect = "duckdb"

    def __init__(
        self,
        path: Path | str = ":memory:",
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        read_only: bool = False,
    ) -> None:
        import ibis

        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            con = ibis.duckdb.connect(self.path, read_only=read_only, **config)
        except Exception as exc:
            raise BackendError(
                f"cannot open DuckDB database {self.path}: {_first_line(exc)}"
            ) from None
        con.compiler = compiler("duckdb")
        # Timestamps are naive UTC throughout; make DuckDB's own conversions agree.
        con.con.execute("SET TimeZone = 'UTC'")
        self._pending = False
        self._scratch: dict[str, pa.Table] = {}
        self._appendable: set[str] = set()  # tables append has made or found
        super().__init__(con)

    @property
    def raw(self) -> Any:
        """The underlying duckdb connection (for transactions)."""
        return self.con.con

    def execute(self, expr: ir.Expr) -> pa.Table:
        try:
            return self.con.to_pyarrow(expr)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"DuckDB failed: {_first_line(exc)}", sql=self.sql_of(expr)) from exc

    def append(self, name: str, rows: pa.Table) -> None:
        """As the base class, straight into DuckDB once the table exists (the stream appends
        every batch: the catalog lookup and Ibis's insert cost more than the rows)."""
        import sqlglot.expressions as sge

        if name not in self._appendable:
            super().append(name, rows)
            self._appendable.add(name)
            return
        target = sge.Table(
            this=sge.to_identifier(name, quoted=True),
            db=sge.to_identifier(CANONICAL_SCHEMA, quoted=True),
        )
        insert = sge.insert(sge.select(sge.Star()).from_("__crmseg_append"), target)
        try:
            self.raw.register("__crmseg_append", rows)
            self.raw.execute(insert.sql("duckdb"))
        except Exception as exc:
            raise BackendError(
                f"cannot append to {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}"
            ) from exc
        finally:
            self.raw.unregister("__crmseg_append")

    def private(self) -> Backend | None:
        return DuckDBBackend(":memory:")

    def bind(self, name: str, data: pa.Table) -> None:
        self.raw.register(name, data)

    def prepared(
        self, expr: ir.Table, relations: Mapping[str, pa.Schema]
    ) -> Callable[[Mapping[str, pa.Table]], pa.Table]:
        """Compiled once (compiling the stream's wide query costs more than running it on a
        batch's rows); each run registers the new rows under the relations' names, which
        DuckDB scans in place. Not a prepared statement: one keeps the Arrow data it was
        planned with, and copying the rows into tables for it costs more than planning."""
        from crmseg.backends.sql import to_sql

        text = to_sql(expr, "duckdb")
        raw = self.raw

        def run(bound: Mapping[str, pa.Table]) -> pa.Table:
            try:
                for name, data in bound.items():
                    raw.register(name, data)
                result: pa.Table = raw.execute(text).fetch_arrow_table()
            except Exception as exc:
                raise BackendError(f"DuckDB failed: {_first_line(exc)}", sql=text) from exc
            return result

        return run

    @property
    def snapshots(self) -> str | None:
        if self.path == ":memory:":
            return None
        return str(Path(self.path).with_suffix("")) + ".snapshots"

    def scratch(self, name: str, expr: ir.Table) -> ir.Table:
        """A working table held as Arrow in this process and scanned by DuckDB in place.

        Not a table in the database: inside a run's pending transaction DuckDB keeps the
        storage of every table created and dropped until the commit (400 MB of identity
        steps at 500k customers), while Arrow memory goes as soon as the step is dropped.
        Never written to the file either, which cost seconds per million rows."""
        try:
            data = self.con.to_pyarrow(expr)
        except Exception as exc:
            raise BackendError(
                f"cannot materialise {name}: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from exc
        self._scratch[name] = data
        self.raw.register(name, data)
        return self.con.table(name)

    def drop_scratch(self, name: str) -> None:
        if self._scratch.pop(name, None) is not None:
            self.raw.unregister(name)

    @contextmanager
    def splink(self, data: ir.Table) -> Iterator[tuple[Any, Any]]:
        """The local engine is DuckDB too: Splink's tables go to a private in-memory
        database, not this file (inside a run's transaction they would stay until commit)."""
        from crmseg.backends.local import splink_api

        with splink_api() as api:
            yield api, self.execute(data)

    def files(self, name: str, paths: list[str], file_format: str) -> ir.Table:
        """A persistent view over Parquet files (DuckDB reads them in place, as fast as its
        own tables); CSV is parsed once into a table."""
        if file_format != "parquet":
            return super().files(name, paths, file_format)
        import sqlglot.expressions as sge

        files = sge.Array(expressions=[sge.Literal.string(p) for p in paths])
        create = sge.Create(
            this=sge.Table(
                this=sge.to_identifier(name, quoted=True),
                db=sge.to_identifier(CANONICAL_SCHEMA, quoted=True),
            ),
            kind="VIEW",
            expression=sge.select(sge.Star()).from_(sge.func("read_parquet", files)),
        )
        self.ensure_schema()
        self.drop(name)
        try:
            self.raw.execute(create.sql("duckdb"))
        except Exception as exc:
            raise BackendError(f"DuckDB cannot read {paths[0]}: {_first_line(exc)}") from exc
        return self.canonical(name)

    @contextmanager
    def pending(self) -> Iterator[None]:
        """Keep table replacements uncommitted until the block ends without an error.

        Queries inside the block see the new tables; an error rolls them back, so a run that
        fails after loading leaves the previous data in place.
        """
        if self._pending:
            yield
            return
        self.raw.execute("BEGIN TRANSACTION")
        self._pending = True
        try:
            yield
        except BaseException:
            self._pending = False
            self.raw.execute("ROLLBACK")
            raise
        self._pending = False
        self.raw.execute("COMMIT")
