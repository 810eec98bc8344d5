"""The embedded default: a DuckDB file under the project."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import Backend, _first_line
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
        # Timestamps are naive UTC throughout; make DuckDB's own conversions agree.
        con.con.execute("SET TimeZone = 'UTC'")
        self._pending = False
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

    def replace_tables(self, tables: dict[str, ir.Table], database: str) -> None:
        raw = self.raw
        try:
            if database not in self.con.list_databases():
                self.con.create_database(database)
        except Exception as exc:
            raise BackendError(f"DuckDB failed: {_first_line(exc)}") from exc
        own = not self._pending
        if own:
            raw.execute("BEGIN TRANSACTION")
        current = ""
        try:
            for name, expr in tables.items():
                current = self.sql_of(expr)
                self.con.create_table(name, expr, database=database, overwrite=True)
            # A source removed from the config must not linger as a stale table.
            for stale in set(self.con.list_tables(database=database)) - set(tables):
                self.con.drop_table(stale, database=database)
            if own:
                raw.execute("COMMIT")
        except Exception as exc:
            if own:
                raw.execute("ROLLBACK")
            raise BackendError(f"DuckDB failed: {_first_line(exc)}", sql=current) from exc

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
