"""Any other SQL engine Ibis connects to (SQLite, Snowflake, BigQuery, Trino, ...), through
Ibis's API alone.

Nothing engine-specific is assumed: no schemas, no transactions, no reader of client files.
So the canonical schema is a catalog kept in the engine itself, like Spark's catalog file:

- every table is written once, under a name of its own (``crmseg__<name>__<id>``), and never
  changed after; a replaced table is a new one;
- every view is its SQL, kept with the canonical names it reads, and read as a subquery over
  whatever those names are at the time;
- the catalog table ``crmseg__catalog`` holds versions of the name -> object map. A run's
  ``pending`` block stages new tables and makes the next version current with one INSERT (one
  statement is atomic on every SQL engine), so a run killed at any point leaves the previous
  version and the tables it names. Tables no version names are dropped after the next commit.

One process writes a warehouse at a time (nothing here can lock an arbitrary engine). Files are
parsed by the embedded reader (DuckDB's, as for Postgres and Spark) and their rows copied in.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA, CopiesFilesIn, _first_line
from crmseg.errors import BackendError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.config import BackendConfig

PREFIX = "crmseg__"
TEMPORARY = "crmsegtmp_"  # scratch tables, and the objects of scratch warehouses
_REF = "__crmseg_ref__"  # stands for a canonical name in a view's stored SQL


@dataclass(frozen=True)
class Entry:
    """One object of the canonical schema: a table (``physical``: its own name in the
    engine) or a view (``sql``: its query, canonical names as references)."""

    name: str
    kind: str  # table | view
    physical: str | None = None
    sql: str | None = None


def _module(kind: str) -> Any:
    """Ibis's backend ``kind`` (with the fixes below, where it has any), or a one-line error
    naming what to install."""
    import importlib

    try:
        base = importlib.import_module(f"ibis.backends.{kind}").Backend
    except (ImportError, AttributeError) as exc:
        raise BackendError(
            f"the {kind} backend needs Ibis's {kind} driver: pip install "
            f"'ibis-framework[{kind}]' ({_first_line(exc)})"
        ) from None
    fixes = _FIXES.get(kind)
    return type(base.__name__, (base,), fixes)() if fixes else base()


def _sqlite_rows(self: Any, op: Any) -> None:
    """Ibis's SQLite binds in-memory rows from pandas, where a missing timestamp is NaT,
    which sqlite3 cannot bind: the rows go from Arrow as Python values (None for null)."""
    import sqlglot.expressions as sge

    table = sge.table_(op.name, quoted=self.compiler.quoted, catalog="temp")
    create = self._generate_create_table(table, op.schema).sql(self.dialect)
    insert = self._build_insert_template(op.name, schema=op.schema, catalog="temp", columns=True)
    data = op.data.to_pyarrow(op.schema)
    rows = zip(*(c.to_pylist() for c in data.columns), strict=True)
    with self.begin() as cursor:
        cursor.execute(create)
        cursor.executemany(insert, rows)


# what an Ibis backend gets wrong for crmseg's data, per engine
_FIXES: dict[str, dict[str, Any]] = {"sqlite": {"_register_in_memory_table": _sqlite_rows}}


class IbisBackend(CopiesFilesIn):
    # a micro-batch on a remote engine would cost seconds; real time is refused here
    streams = False

    def __init__(self, config: BackendConfig, path: str | None, scratch: bool = False) -> None:
        """``path``: the project-relative ``path`` setting resolved (a file engine's
        database), passed as the first argument of Ibis's ``connect``; ``scratch``: an empty
        warehouse of this process's own, removed on close (the objects carry a name of their
        own; a file engine runs in memory)."""
        from crmseg.backends.postgres import secret

        self.kind = config.kind
        module = _module(self.kind)
        settings: dict[str, Any] = dict(config.connect)
        password = secret(config.password_env, "backend", BackendError)
        if password is not None:
            settings["password"] = password
        args = [path] if path is not None and not scratch else []
        try:
            con = module.connect(*args, **settings)
        except ImportError as exc:  # Ibis imports the driver when it connects
            raise BackendError(
                f"the {self.kind} backend needs its driver: pip install "
                f"'ibis-framework[{self.kind}]' ({_first_line(exc)})"
            ) from None
        except Exception as exc:
            reason = _first_line(exc)
            if password:  # never echo a secret, whatever the driver put in its message
                reason = reason.replace(password, "***")
            where = f" {path}" if path else ""
            raise BackendError(
                f"cannot connect to the {self.kind} database{where}: {reason}"
            ) from None
        if not hasattr(con, "compiler") or not hasattr(con, "raw_sql"):
            with contextlib.suppress(Exception):
                con.disconnect()
            raise BackendError(
                f"the {self.kind} backend is not a SQL engine: crmseg runs on SQL engines"
            )
        self.dialect = con.name
        self.glot = con.compiler.dialect  # sqlglot's name may differ (mssql is tsql)
        self._glot_name = _glot_name(self.glot, con.name)
        from crmseg.backends.sql import compiler

        with contextlib.suppress(Exception):  # engines Ibis compiles for get crmseg's compiler
            con.compiler = compiler(con.name)
        super().__init__(con)
        self._scratch = scratch
        self.prefix = f"{TEMPORARY}w{uuid.uuid4().hex[:8]}__" if scratch else PREFIX
        self.catalog_table = f"{self.prefix}catalog"
        self._pending = False
        self._made: list[str] = []  # tables written in the pending block
        self._temps: set[str] = set()
        self._temp_id = uuid.uuid4().hex[:8]  # scratch names of this backend's own
        self._version, self._objects = self._load()

    @property
    def sqlglot_dialect(self) -> str:
        return self._glot_name

    # --- the catalog -------------------------------------------------------------------------

    def _load(self) -> tuple[int, dict[str, Entry]]:
        """The current version and its objects (none before the first write)."""
        if self.catalog_table not in self._list():
            return 0, {}
        t = self.con.table(self.catalog_table)
        try:
            rows = self.con.to_pyarrow(t.filter(t.version == t.version.max())).to_pylist()
        except Exception as exc:
            raise BackendError(f"cannot read {self.catalog_table}: {_first_line(exc)}") from None
        version = max((int(r["version"]) for r in rows), default=0)
        return version, {
            r["name"]: Entry(r["name"], r["kind"], r["physical"], r["sql"])
            for r in rows
            if r["kind"] != "none"
        }

    def _list(self) -> list[str]:
        try:
            return list(self.con.list_tables())
        except Exception as exc:
            raise BackendError(f"cannot list the {self.kind} tables: {_first_line(exc)}") from None

    def _commit(self) -> None:
        """Make the objects held in memory the next version, in one INSERT, then drop what no
        version names."""
        import ibis
        import pyarrow as pa

        # nothing left: the version is one marker row
        entries = sorted(self._objects.values(), key=lambda e: e.name) or [Entry("_", "none")]
        version = self._version + 1
        rows = pa.table(
            {
                "version": pa.array([version] * len(entries), pa.int64()),
                "name": pa.array([e.name for e in entries], pa.string()),
                "kind": pa.array([e.kind for e in entries], pa.string()),
                "physical": pa.array([e.physical for e in entries], pa.string()),
                "sql": pa.array([e.sql for e in entries], pa.string()),
            }
        )
        try:
            if self._current() != self._version:
                raise BackendError(
                    f"another process committed to the {self.kind} warehouse during this "
                    f"one's work (one writer at a time); nothing of this one was kept"
                )
            if self.catalog_table not in self._list():
                self.con.create_table(self.catalog_table, schema=ibis.schema(rows.schema))
            self.con.insert(self.catalog_table, ibis.memtable(rows))
        except Exception as exc:
            # what the catalog says is current again; what was staged goes
            self._version, self._objects = self._load()
            self._drop_made()
            if isinstance(exc, BackendError):
                raise
            raise BackendError(
                f"cannot record {self.catalog_table} version {version}: {_first_line(exc)}"
            ) from None
        self._version = version
        self._made = []
        self._collect()

    def _collect(self) -> None:
        """Drop the tables neither the current version nor the one before names (replaced
        ones, what a failed or killed run wrote). Older versions' rows stay: a few dozen per
        run, and a record of what each run made current."""
        named = {e.physical for e in self._objects.values() if e.physical}
        if self._version > 1:  # readers that opened the previous version keep its tables
            t = self.con.table(self.catalog_table)
            with contextlib.suppress(Exception):
                previous = self.con.to_pyarrow(
                    t.filter(t.version == self._version - 1, t.physical.notnull()).select(
                        "physical"
                    )
                )
                named |= set(previous.column(0).to_pylist())
        for table in self._list():
            if table.startswith(self.prefix) and table != self.catalog_table and table not in named:
                with contextlib.suppress(Exception):
                    self.con.drop_table(table, force=True)

    def _entry(self, name: str) -> Entry | None:
        return self._objects.get(name)

    def _set(self, entry: Entry) -> None:
        if not self._pending:
            self._refresh()
        self._objects[entry.name] = entry
        if not self._pending:
            self._commit()

    # --- running -----------------------------------------------------------------------------

    def execute(self, expr: ir.Expr) -> pa.Table:
        from ibis.common.exceptions import OperationNotDefinedError, UnsupportedOperationError

        try:
            result: pa.Table = self.con.to_pyarrow(expr)
            return result
        except BackendError:
            raise
        except (OperationNotDefinedError, UnsupportedOperationError) as exc:
            found = re.search(r"'(\w+)' operation", str(exc))
            what = found.group(1) if found else f"it: {_first_line(exc)}"
            raise BackendError(f"the {self.kind} backend cannot compute {what}") from exc
        except Exception as exc:
            raise BackendError(
                f"{self.kind} failed: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from exc

    # --- tables ------------------------------------------------------------------------------

    def table(self, name: str, database: str | None = None) -> ir.Table:
        if database != CANONICAL_SCHEMA:
            return super().table(name, database)
        entry = self._entry(name)
        if entry is None:
            raise BackendError(f"table {database}.{name} not found in the {self.kind} warehouse")
        if entry.kind == "table":
            assert entry.physical is not None
            return self.con.table(entry.physical)
        return self.con.sql(self._expand(name), dialect=self.dialect)

    def has_table(self, name: str, database: str | None = None) -> bool:
        if database == CANONICAL_SCHEMA:
            return self._entry(name) is not None
        return super().has_table(name, database)

    def canonical_tables(self) -> list[str]:
        return sorted(n for n in self._objects if not n.startswith("_") and self._entry(n))

    def stored_tables(self) -> list[str]:
        return sorted(n for n in self._objects if self._entry(n))

    def views(self) -> set[str]:
        return {n for n, e in self._objects.items() if e.kind == "view"}

    def ensure_schema(self) -> None:
        pass  # the canonical schema is the catalog: names carry its prefix

    def _physical(self, name: str) -> str:
        return f"{self.prefix}{name}__{uuid.uuid4().hex[:8]}"

    def put(self, name: str, expr: ir.Table, *, view: bool = False) -> None:
        if view:
            entry = Entry(name, "view", sql=self._stored(self.con.compile(expr)))
            self._set(entry)
            return
        physical = self._physical(name)
        try:
            self.con.create_table(physical, expr)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.con.drop_table(physical, force=True)
            raise BackendError(
                f"cannot write {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}",
                sql=self.sql_of(expr),
            ) from exc
        self._made.append(physical)
        self._set(Entry(name, "table", physical=physical))

    def drop(self, name: str) -> None:
        if not self._pending:
            self._refresh()
        if name in self._objects:
            del self._objects[name]
            if not self._pending:
                self._commit()

    def append(self, name: str, rows: pa.Table) -> None:
        """A new table of the old one's rows and ``rows``: the table changes only when the
        catalog does, like a put."""
        import ibis

        entry = self._entry(name)
        if entry is None or entry.kind != "table":
            self.put(name, ibis.memtable(rows))
            return
        old = self.canonical(name)
        new = ibis.memtable(rows.select(old.columns)).cast(old.schema())
        self.put(name, old.union(new))

    def _upload(self, expr: ir.Table) -> ir.Table:
        data = self.reader().execute(expr)
        return self.scratch(f"file_{uuid.uuid4().hex[:8]}", data)

    def scratch(self, name: str, expr: ir.Table | pa.Table) -> ir.Table:
        """A temporary table where the engine has them, else a table of this process's own
        dropped with ``drop_scratch`` (never in the catalog)."""
        physical = self._scratch_name(name)
        try:
            try:
                table = self.con.create_table(physical, expr, temp=True, overwrite=True)
            except Exception:  # no temporary tables here
                table = self.con.create_table(physical, expr, overwrite=True)
        except Exception as exc:
            raise BackendError(f"cannot materialise {name}: {_first_line(exc)}") from exc
        self._temps.add(physical)
        return table

    def _scratch_name(self, name: str) -> str:
        return f"{TEMPORARY}t{self._temp_id}_{name}"

    def drop_scratch(self, name: str) -> None:
        physical = self._scratch_name(name)
        with contextlib.suppress(Exception):
            self.con.drop_table(physical, force=True)
        self._temps.discard(physical)

    def write_parquet(self, expr: ir.Table, path: str) -> None:
        import pyarrow.parquet as pq

        try:
            pq.write_table(self.execute(expr), path)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot write {path}: {_first_line(exc)}") from None

    def checksum(self, table: ir.Table) -> str:
        """As the base class; where the engine has no row hash, computed by the embedded
        reader over the rows."""
        import ibis

        try:
            return super().checksum(table)
        except BackendError:
            pass
        reader = self.reader()
        return reader.checksum(ibis.memtable(self.execute(table)))

    # --- views and users' SQL: canonical names as references ----------------------------------

    def _stored(self, sql: str) -> str:
        """View SQL with each table of the catalog replaced by a reference to its name."""
        import sqlglot
        import sqlglot.expressions as sge

        by_physical = {e.physical: n for n, e in self._objects.items() if e.physical}
        tree = sqlglot.parse_one(sql, read=self.glot)
        for t in list(tree.find_all(sge.Table)):
            name = by_physical.get(t.name)
            if name is not None:
                t.set("this", sge.to_identifier(_REF + name, quoted=True))
                t.set("db", None)
        text: str = tree.sql(self.glot)
        return text

    def _expand(self, name: str, seen: tuple[str, ...] = ()) -> str:
        """A view's SQL over the current objects (views it reads become subqueries)."""
        entry = self._entry(name)
        assert entry is not None and entry.sql is not None
        if name in seen:
            raise BackendError(f"the view {CANONICAL_SCHEMA}.{name} reads itself")
        import sqlglot

        tree = sqlglot.parse_one(entry.sql, read=self.glot)
        resolved = self._resolved(tree, lambda t: t.name[len(_REF) :] if t.name.startswith(_REF)
                                  else None, (*seen, name))  # fmt: skip
        text: str = resolved.sql(self.glot)
        return text

    def _resolved(self, tree: Any, named: Any, seen: tuple[str, ...]) -> Any:
        """``tree`` with each table ``named`` picks out (a canonical name) replaced by its
        table, or by a subquery of its view."""
        import sqlglot
        import sqlglot.expressions as sge

        for t in list(tree.find_all(sge.Table)):
            name = named(t)
            if name is None:
                continue
            entry = self._entry(name)
            if entry is None:
                raise BackendError(f"table {CANONICAL_SCHEMA}.{name} not found")
            alias = t.alias or name
            if entry.kind == "table":
                new: Any = sge.Table(this=sge.to_identifier(entry.physical, quoted=True))
                new = new.as_(alias) if alias != entry.physical else new
            else:
                inner: Any = sqlglot.parse_one(self._expand(name, seen), read=self.glot)
                new = inner.subquery(alias)
            t.replace(new)
        return tree

    def sql(self, query: str, dialect: str | None = None) -> ir.Table:
        """As the base class; ``crmseg.<table>`` in the user's SQL names the catalog's
        current table (or its view's query), resolved after the SQL is in the engine's
        dialect."""
        import sqlglot

        source = dialect or self.written
        target = self.sqlglot_dialect
        try:
            text = query if source == target else sqlglot.transpile(query, read=source,
                                                                     write=target)[0]  # fmt: skip
            tree = sqlglot.parse_one(text, read=target)
        except sqlglot.errors.SqlglotError:
            return super().sql(query, dialect)  # which reports it
        tree = self._resolved(
            tree, lambda t: t.name if t.db == CANONICAL_SCHEMA and not t.catalog else None, ()
        )
        return super().sql(tree.sql(target), dialect=target)

    # --- runs --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def pending(self) -> Iterator[None]:
        """Stage and swap: tables are written under names of their own, and the catalog's
        next version is recorded at the end; on an error the staged tables are dropped."""
        if self._pending:
            yield
            return
        self._refresh()
        before = dict(self._objects)
        self._pending = True
        try:
            yield
        except BaseException:
            self._pending = False
            self._objects = before
            self._drop_made()
            raise
        self._pending = False
        self._commit()

    def _refresh(self) -> None:
        """Read the catalog again when another process committed since (its tables, not
        what this process last saw, are current)."""
        if self._current() != self._version:
            self._version, self._objects = self._load()

    def _current(self) -> int:
        """The catalog's newest version in the engine."""
        if self.catalog_table not in self._list():
            return 0
        t = self.con.table(self.catalog_table)
        try:
            return int(
                self.con.to_pyarrow(t.version.max().name("v").as_table()).column(0)[0].as_py() or 0
            )
        except Exception as exc:
            raise BackendError(f"cannot read {self.catalog_table}: {_first_line(exc)}") from None

    def _drop_made(self) -> None:
        """Drop the tables written since the last commit (they will never be named)."""
        for physical in self._made:
            with contextlib.suppress(Exception):
                self.con.drop_table(physical, force=True)
        self._made = []

    def close(self) -> None:
        for physical in list(self._temps):
            with contextlib.suppress(Exception):
                self.con.drop_table(physical, force=True)
        if self._scratch:  # nothing of a scratch warehouse stays
            for table in self._list():
                if table.startswith(self.prefix):
                    with contextlib.suppress(Exception):
                        self.con.drop_table(table, force=True)
        super().close()


def _glot_name(dialect: Any, fallback: str) -> str:
    """sqlglot's name of a dialect class (Ibis's mssql compiles to sqlglot's tsql)."""
    import sqlglot

    for name, known in sqlglot.Dialect.classes.items():
        if known is dialect and name:
            return str(name)
    return fallback
