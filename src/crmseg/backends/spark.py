"""PySpark: the warehouse as Parquet folders under the project, run by a Spark session.

Spark without a metastore forgets its catalog when the process ends, and has no transactions.
So crmseg keeps its own catalog, ``catalog.json`` in the warehouse folder: every table of the
canonical schema is a folder of Parquet files (a new folder each time it is written), every view
its Spark SQL. Each process registers them in a database of its own in Spark's catalog (an
in-process catalog is shared by every session of one JVM, so two backends in one process never
see each other's tables). A run's ``pending`` block is stage-and-swap: tables are written to new
folders, and the catalog file is replaced in one rename at the end, so a run killed at any
point leaves the previous catalog and the folders it names untouched. Folders no catalog names
are removed after the next commit.

Files are parsed by the embedded reader (DuckDB's, as for Postgres, so every engine loads the
same rows from the same CSV); Parquet files are read by Spark itself. One process at a time
opens a warehouse (a lock file, as DuckDB locks its file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA, Backend, _first_line
from crmseg.errors import BackendError, CrmsegError, MissingDependencyError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

CATALOG = "catalog.json"
_TOKEN = "__crmseg_schema__"  # stands for this process's database name in stored view SQL

# Spark's log4j defaults print a banner and warnings on every command
_LOG4J = """rootLogger.level = warn
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""


def _similarity_jar() -> str | None:
    """Splink's jar of Spark SQL string similarities (jaro_winkler and others) for this Spark
    major version, when Splink is installed. It must be on the classpath when the JVM starts,
    so every session gets it, whatever identity.splink.engine says."""
    import importlib.util

    spec = importlib.util.find_spec("splink")
    if spec is None or spec.origin is None:
        return None
    import pyspark

    major = pyspark.__version__.split(".")[0]
    jars = sorted(
        (Path(spec.origin).parent / "internals" / "files" / "spark_jars").glob(
            f"scala-udf-similarity-*_spark{major}.x.jar"
        )
    )
    return str(jars[-1]) if jars else None


def _session(master: str, conf: Mapping[str, str], log: Path | None = None) -> Any:
    """A new Spark session (its own temporary views and settings) on the process's Spark
    context, which is started on first use with its output in ``log`` (the JVM writes
    warnings to the terminal otherwise)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise BackendError(
            "the pyspark backend needs PySpark: pip install 'crmseg[spark]'"
        ) from exc
    log4j = Path(tempfile.gettempdir()) / "crmseg-spark-log4j2.properties"
    if not log4j.exists():
        log4j.write_text(_LOG4J)
    builder = (
        SparkSession.builder.master(master)
        .appName("crmseg")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j.configurationFile=file:{log4j}")
    )
    jar = _similarity_jar()
    if jar is not None:
        jars = [conf["spark.jars"], jar] if conf.get("spark.jars") else [jar]
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in conf.items():
        if key != "spark.jars" or jar is None:
            builder = builder.config(key, value)
    try:
        with _output_to(log):
            base = builder.getOrCreate()
    except Exception as exc:
        reason = _jvm_reason(log) or _first_line(exc)
        where = f" (its log: {log})" if log else ""
        raise BackendError(f"cannot start Spark ({master}): {reason}{where}") from None
    session = base.newSession()
    # PySpark 4 also logs every failed query as a JSON stack trace on standard error;
    # crmseg reports the failure itself, in one line
    import logging

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logging.getLogger(name).disabled = True
    settings = {
        "spark.sql.shuffle.partitions": "8",
        **dict(conf),
        # pinned whatever the project says: timestamps are naive UTC throughout (as on
        # DuckDB and Postgres), and Parquet and Arrow carry them exactly
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.parquet.inferTimestampNTZ.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    for key, value in settings.items():
        # static settings (spark.driver.memory) only reach a context that starts now;
        # a session takes the SQL ones
        if session.conf.isModifiable(key):
            try:
                session.conf.set(key, value)
            except Exception as exc:
                raise BackendError(
                    f"backend.conf: Spark refuses {key}={value!r}: {_first_line(exc)}"
                ) from None
    return session


def _jvm_reason(log: Path | None) -> str | None:
    """The message of the JVM's last exception in ``log`` (PySpark only says the gateway
    exited)."""
    if log is None or not log.exists():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Exception" in line and ": " in line and not line.startswith((" ", "\t")):
            return line.split(": ", 1)[1].strip()
    return None


@contextlib.contextmanager
def _output_to(log: Path | None) -> Iterator[None]:
    """Standard error sent to ``log`` while a JVM is started (it inherits it for good)."""
    from pyspark import SparkContext

    if log is None or SparkContext._active_spark_context is not None:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "a") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _ibis_class() -> Any:
    """Ibis's PySpark backend, with results through Spark's Arrow output and in-memory
    tables written as Parquet and read by Spark (Ibis goes through pandas both ways, which
    turns null numbers into NaN)."""
    from ibis.backends.pyspark import Backend as IbisSpark

    class Spark(IbisSpark):  # type: ignore[misc]
        owner: SparkBackend

        def _register_in_memory_table(self, op: Any) -> None:
            data = op.data.to_pyarrow(op.schema)
            frame = self.owner._arrow_frame(data, f"memtable-{op.name}")
            frame.createOrReplaceTempView(op.name)

        def to_pyarrow(self, expr: Any, /, *, params: Any = None, limit: Any = None,
                       **kwargs: Any) -> Any:  # fmt: skip
            table = expr.as_table()
            frame = self.owner._frame(table, params=params, limit=limit)
            data = _conform(frame.toArrow(), table.schema().to_pyarrow())
            return expr.__pyarrow_result__(data)

        def execute(self, expr: Any, /, *, params: Any = None, limit: Any = None,
                    **kwargs: Any) -> Any:  # fmt: skip
            from ibis.formats.pandas import PandasData

            table = expr.as_table()
            data = self.to_pyarrow(table, params=params, limit=limit)
            return expr.__pandas_result__(
                PandasData.convert_table(data.to_pandas(), table.schema())
            )

    return Spark


def _naive_utc(data: pa.Table) -> pa.Table:
    """Naive timestamps marked UTC, as Spark writes its own: Parquet then says "adjusted to
    UTC" and Spark reads them as its timestamp type."""
    import pyarrow as pa

    fields = []
    for field in data.schema:
        t = field.type
        if pa.types.is_timestamp(t) and t.tz is None:
            field = field.with_type(pa.timestamp("us", tz="UTC"))
        elif pa.types.is_timestamp(t) and t.unit == "ns":
            field = field.with_type(pa.timestamp("us", tz=t.tz))
        fields.append(field)
    schema = pa.schema(fields)
    return data if schema == data.schema else data.cast(schema)


def _instants(schema: pa.Schema) -> list[str]:
    """Columns holding zoned timestamps (instants)."""
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.tz is not None]


def _parquet_instants(path: str) -> list[str]:
    """Zoned timestamp columns of a Parquet file, as DuckDB reads it (UTC-adjusted ones)."""
    import pyarrow.parquet as pq

    try:
        return _instants(pq.read_schema(path))
    except Exception:  # Spark reads it, or says why
        return []


def _visible(folder: Path) -> list[Path]:
    """The data files of a folder as Spark lists them (names starting _ or . are not)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(("_", ".")))


class SparkBackend(Backend):
    kind = "pyspark"
    dialect = "pyspark"
    # a micro-batch would cost seconds of Spark jobs; the realtime plan is not tested here
    streams = False

    def __init__(
        self,
        warehouse: Path | str | None,
        *,
        master: str = "local[*]",
        conf: Mapping[str, str] | None = None,
    ) -> None:
        """``warehouse``: the folder of the catalog and its tables; None for an empty one in
        a temporary folder, removed on close (``crmseg test``, read-only verbs)."""
        self._temporary = warehouse is None
        folder = (
            Path(tempfile.mkdtemp(prefix="crmseg-spark-")) if warehouse is None else Path(warehouse)
        )
        folder = folder.resolve()  # Spark reads a relative LOCATION from its own folder
        self.path = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock(folder)
        try:
            shutil.rmtree(folder / "_work", ignore_errors=True)  # a killed process's, if any
            self._catalog = self._load()  # a bad catalog fails before Spark starts
            self.spark = _session(master, conf or {}, folder / "spark.log")
            self.db = f"crmseg_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            self._work = folder / "_work" / self.db  # memtables, scratch and file uploads
            self._work.mkdir(parents=True, exist_ok=True)
            con = _ibis_class()().connect(self.spark)
            con.owner = self  # writes the in-memory tables Ibis registers
            from crmseg.backends.sql import compiler

            con.compiler = compiler("pyspark")
            super().__init__(con)
            self._pending = False
            self._made: dict[str, str] = {}  # what is in Spark's catalog now, and its kind
            self._register_all()
        except BaseException:
            if hasattr(self, "db") and hasattr(self, "spark"):  # nothing of it stays in Spark
                with contextlib.suppress(Exception):
                    self.spark.sql(f"DROP DATABASE IF EXISTS {self._q(self.db)} CASCADE")
                shutil.rmtree(folder / "_work" / self.db, ignore_errors=True)
            self._lock.close()  # a failed open leaves the warehouse to others
            if self._temporary:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    # --- the lock and the catalog file -----------------------------------------------------

    @staticmethod
    def _take_lock(folder: Path) -> Any:
        import fcntl

        handle = open(folder / "lock", "a+")  # noqa: SIM115 (held for the backend's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BackendError(
                f"the Spark warehouse {folder} is in use by another crmseg process"
            ) from None
        return handle

    def _load(self) -> list[dict[str, Any]]:
        path = self.path / CATALOG
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text())
            objects = data["objects"]
            assert isinstance(objects, list)
            return objects
        except Exception as exc:
            raise BackendError(f"{path}: not a crmseg Spark catalog ({exc})") from None

    def _save(self) -> None:
        """Replace the catalog file in one rename (what makes a run's tables current)."""
        path = self.path / CATALOG
        temp = path.with_name(f".{CATALOG}.{uuid.uuid4().hex[:8]}")
        with open(temp, "w") as handle:
            json.dump({"version": 1, "objects": self._catalog}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _entry(self, name: str) -> dict[str, Any] | None:
        return next((o for o in self._catalog if o["name"] == name), None)

    def _set(self, entry: dict[str, Any]) -> None:
        for i, o in enumerate(self._catalog):
            if o["name"] == entry["name"]:
                self._catalog[i] = entry
                break
        else:
            self._catalog.append(entry)
        if not self._pending:
            self._save()
            self._collect()

    def _unset(self, name: str) -> None:
        self._catalog = [o for o in self._catalog if o["name"] != name]
        if not self._pending:
            self._save()
            self._collect()

    def _location(self, entry: Mapping[str, Any]) -> Path:
        return self.path / str(entry["path"])

    def _collect(self) -> None:
        """Remove table folders the committed catalog does not name (replaced tables, and
        what a killed or failed run wrote)."""
        named = {self._location(o).resolve() for o in self._catalog if o["kind"] == "table"}
        tables = self.path / "tables"
        if not tables.is_dir():
            return
        for table in tables.iterdir():
            for folder in table.iterdir():
                if folder.resolve() not in named:
                    shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                table.rmdir()  # only when empty

    # --- Spark's catalog, made from ours ---------------------------------------------------

    def _q(self, *parts: str) -> str:
        return ".".join("`" + p.replace("`", "``") + "`" for p in parts)

    def _sql(self, statement: str) -> Any:
        try:
            return self.spark.sql(statement)
        except Exception as exc:
            raise BackendError(f"Spark failed: {_first_line(exc)}", sql=statement) from None

    def _register(self, entry: Mapping[str, Any]) -> None:
        name = self._q(self.db, entry["name"])
        self._unregister(entry["name"])
        if entry["kind"] == "table":
            # with the schema given, Spark reads no file footers to infer it
            from pyspark.sql.types import StructType

            schema = StructType.fromJson(entry["schema"])
            try:
                self.spark.catalog.createTable(
                    f"{self.db}.{entry['name']}", path=str(self._location(entry)),
                    source="parquet", schema=schema,
                )  # fmt: skip
            except Exception as exc:
                raise BackendError(f"Spark failed: {_first_line(exc)}") from None
        else:
            self._sql(f"CREATE VIEW {name} AS {self._unstored(entry['sql'])}")
        self._made[entry["name"]] = entry["kind"]

    def _unregister(self, name: str) -> None:
        """Take ``name`` out of Spark's catalog (it refuses DROP VIEW on a table)."""
        kind = self._made.pop(name, None)
        if kind is not None:
            what = "TABLE" if kind == "table" else "VIEW"
            self._sql(f"DROP {what} IF EXISTS {self._q(self.db, name)}")

    def _register_all(self) -> None:
        """Every object of the catalog in this session: tables, then views (a view needs
        what it reads; views over views are retried until all are made)."""
        self._sql(f"DROP DATABASE IF EXISTS {self._q(self.db)} CASCADE")
        self._sql(f"CREATE DATABASE {self._q(self.db)}")
        self._made = {}
        for entry in self._catalog:
            if entry["kind"] == "table":
                self._register(entry)
        views = [e for e in self._catalog if e["kind"] == "view"]
        while views:
            left = []
            for entry in views:
                try:
                    self._register(entry)
                except BackendError:
                    left.append(entry)
            if len(left) == len(views):
                self._register(left[0])  # raises the real error
            views = left

    def _stored(self, sql: str) -> str:
        """View SQL with this process's database name replaced by a token."""
        return self._swap(sql, self.db, _TOKEN)

    def _unstored(self, sql: str) -> str:
        return self._swap(sql, _TOKEN, self.db)

    @staticmethod
    def _swap(sql: str, old: str, new: str) -> str:
        import sqlglot
        import sqlglot.expressions as sge

        tree = sqlglot.parse_one(sql, read="spark")
        for table in tree.find_all(sge.Table):
            if table.db == old:
                table.set("db", sge.to_identifier(new, quoted=True))
        return tree.sql("spark")

    # --- running -----------------------------------------------------------------------------

    def _frame(self, expr: ir.Expr, **compile: Any) -> Any:
        """A Spark DataFrame of ``expr`` (in-memory tables it reads are registered first)."""
        table = expr.as_table()
        self.con._run_pre_execute_hooks(table)
        return self.spark.sql(self.con.compile(table, **compile))

    def execute(self, expr: ir.Expr) -> pa.Table:
        import ibis.expr.types as ir

        try:
            table = expr.as_table() if not isinstance(expr, ir.Table) else expr
            result: pa.Table = self.con.to_pyarrow(table)
            return result
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Spark failed: {_first_line(exc)}", sql=self.sql_of(expr)) from exc

    def _arrow_frame(self, data: pa.Table, label: str) -> Any:
        """Arrow rows as a Spark DataFrame, through one Parquet file of this process's work
        folder (exact types, null numbers stay null)."""
        import pyarrow.parquet as pq

        folder = self._work / f"{label}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        pq.write_table(_naive_utc(data), folder / "part-0.parquet")
        return self.spark.read.parquet(str(folder))

    # --- tables ------------------------------------------------------------------------------

    def table(self, name: str, database: str | None = None) -> ir.Table:
        """A table of the canonical schema is made from the schema the catalog keeps (Ibis
        would ask Spark for it, a tenth of a second per table)."""
        if database != CANONICAL_SCHEMA:
            return super().table(name, database)
        entry = self._entry(name)
        if entry is None:
            raise BackendError(f"table {database}.{name} not found in the pyspark warehouse")
        return self._ibis_table(name, entry["schema"], entry.get("instants", ()), self.db)

    def _ibis_table(
        self, name: str, schema: Any, instants: Any, database: str | None = None
    ) -> ir.Table:
        """An Ibis table over a Spark relation of ``schema`` (its JSON form). Spark has one
        timestamp type for naive and zoned values; ``instants`` are the columns that were
        zoned where they came from, which the loader reads as instants, not wall time."""
        import ibis.expr.datatypes as dt
        import ibis.expr.operations as ops
        import ibis.expr.schema as sch
        from ibis.backends.pyspark.datatypes import PySparkType
        from pyspark.sql.types import StructType

        struct = dict(PySparkType.to_ibis(StructType.fromJson(schema)).fields)
        for column in instants:
            struct[column] = dt.Timestamp(timezone="UTC", nullable=struct[column].nullable)
        namespace = ops.Namespace(database=database)
        table: ir.Table = ops.DatabaseTable(
            name, schema=sch.Schema(struct), source=self.con, namespace=namespace
        ).to_expr()
        return table

    def has_table(self, name: str, database: str | None = None) -> bool:
        if database == CANONICAL_SCHEMA:
            return self._entry(name) is not None
        return super().has_table(name, database)

    def canonical_tables(self) -> list[str]:
        return sorted(o["name"] for o in self._catalog if not o["name"].startswith("_"))

    def stored_tables(self) -> list[str]:
        return sorted(o["name"] for o in self._catalog)

    def sql(self, query: str, dialect: str | None = None) -> ir.Table:
        """As the base class; ``crmseg.<table>`` in the user's SQL names this process's
        database in Spark's catalog."""
        import sqlglot
        import sqlglot.expressions as sge

        source = dialect or self.written
        try:
            tree = sqlglot.parse_one(query, read=source)
        except sqlglot.errors.SqlglotError:
            return super().sql(query, dialect)  # which reports it
        for table in tree.find_all(sge.Table):
            if table.db == CANONICAL_SCHEMA and not table.catalog:
                table.set("db", sge.to_identifier(self.db))
        return super().sql(tree.sql(source), dialect=source)

    def views(self) -> set[str]:
        return {o["name"] for o in self._catalog if o["kind"] == "view"}

    def ensure_schema(self) -> None:
        pass  # the database is made when the backend opens

    def _new_folder(self, name: str) -> tuple[Path, str]:
        relative = f"tables/{name}/{uuid.uuid4().hex[:12]}"
        return self.path / relative, relative

    def put(self, name: str, expr: ir.Table, *, view: bool = False) -> None:
        if view:
            self.con._run_pre_execute_hooks(expr)
            sql = self.con.compile(expr)
            entry: dict[str, Any] = {"name": name, "kind": "view", "sql": self._stored(sql)}
            try:
                self._register(entry)
                schema = self.spark.table(self._q(self.db, name)).schema
            except Exception as exc:
                raise BackendError(
                    f"cannot write {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}",
                    sql=self.sql_of(expr),
                ) from None
            entry["schema"] = schema.jsonValue()
            self._set(entry)
            return
        folder, relative = self._new_folder(name)
        try:
            frame = self._frame(expr)
            frame.write.parquet(str(folder))
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise BackendError(
                f"cannot write {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}",
                sql=self.sql_of(expr),
            ) from None
        entry = {
            "name": name,
            "kind": "table",
            "path": relative,
            "schema": frame.schema.jsonValue(),
        }
        self._register(entry)
        self._set(entry)

    def drop(self, name: str) -> None:
        entry = self._entry(name)
        if entry is None:
            return
        self._unregister(name)
        self._unset(name)

    def append(self, name: str, rows: pa.Table) -> None:
        """A new folder with the old one's files (hard links, no copy) and one more file of
        ``rows``: the table changes only when the catalog does, like a put."""
        entry = self._entry(name)
        if entry is None or entry["kind"] != "table":
            import ibis

            self.put(name, ibis.memtable(rows))
            return
        import pyarrow.parquet as pq

        old = self._location(entry)
        folder, relative = self._new_folder(name)
        folder.mkdir(parents=True)
        try:
            for file in _visible(old):
                try:
                    os.link(file, folder / file.name)
                except OSError:  # another file system
                    shutil.copy2(file, folder / file.name)
            if rows.num_rows:
                target = self.table(name, CANONICAL_SCHEMA).schema().to_pyarrow()
                data = _naive_utc(rows.select(target.names).cast(target))
                pq.write_table(data, folder / f"part-append-{uuid.uuid4().hex}.parquet")
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise BackendError(
                f"cannot append to {CANONICAL_SCHEMA}.{name}: {_first_line(exc)}"
            ) from None
        entry = {**entry, "path": relative}
        self._register(entry)
        self._set(entry)

    def files(self, name: str, paths: list[str], file_format: str) -> ir.Table:
        """Parquet files Spark reads where they are: a table over their folder when they are
        all of it (snapshots), else their rows written into the warehouse."""
        if file_format == "parquet" and paths:
            folder = Path(paths[0]).parent
            if {Path(p) for p in paths} == set(_visible(folder)):
                where = folder.resolve()
                inside = where.is_relative_to(self.path.resolve())
                path = str(where.relative_to(self.path.resolve())) if inside else str(where)
                try:
                    schema = self.spark.read.parquet(str(where)).schema.jsonValue()
                except Exception as exc:
                    raise BackendError(
                        f"Spark cannot read {paths[0]}: {_first_line(exc)}"
                    ) from None
                entry = {"name": name, "kind": "table", "path": path, "schema": schema,
                         "instants": _parquet_instants(paths[0])}  # fmt: skip
                self._register(entry)
                self._set(entry)
                return self.canonical(name)
        return super().files(name, paths, file_format)

    def read_parquet(self, paths: list[str]) -> ir.Table:
        name = f"_crmseg_file_{uuid.uuid4().hex[:8]}"
        try:
            frame = self.spark.read.parquet(*paths)
            frame.createOrReplaceTempView(name)
        except Exception as exc:
            raise BackendError(f"Spark cannot read {paths[0]}: {_first_line(exc)}") from None
        return self._ibis_table(name, frame.schema.jsonValue(), _parquet_instants(paths[0]))

    def read_csv(self, paths: list[str], **options: Any) -> ir.Table:
        """Parsed by the embedded reader (Spark's CSV reader types and quotes differently),
        the rows handed to Spark as Parquet."""
        reader = self.reader()
        data = reader.execute(reader.con.read_csv(paths, **options))
        name = f"_crmseg_file_{uuid.uuid4().hex[:8]}"
        frame = self._arrow_frame(data, name)
        frame.createOrReplaceTempView(name)
        return self._ibis_table(name, frame.schema.jsonValue(), _instants(data.schema))

    def scratch(self, name: str, expr: ir.Table) -> ir.Table:
        """A working table: Parquet in this process's work folder, read through a temporary
        view (never in the catalog)."""
        folder = self._work / f"scratch-{name}-{uuid.uuid4().hex[:8]}"
        try:
            self._frame(expr).write.parquet(str(folder))
            self.spark.read.parquet(str(folder)).createOrReplaceTempView(name)
        except Exception as exc:
            raise BackendError(
                f"cannot materialise {name}: {_first_line(exc)}", sql=self.sql_of(expr)
            ) from None
        return self.con.table(name)

    def drop_scratch(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.spark.catalog.dropTempView(name)

    @contextmanager
    def splink(self, data: ir.Table) -> Iterator[tuple[Any, Any]]:
        """Splink's SparkAPI on this session. Its intermediate tables break lineage as Parquet
        in this process's work folder (not a checkpoint folder shared by the JVM), and its
        temporary views and files are gone after the block."""
        try:
            from splink import SparkAPI
        except ImportError:
            raise MissingDependencyError("splink", "identity") from None
        jars = self.spark.sparkContext.getConf().get("spark.jars", "") or ""
        if "scala-udf-similarity" not in jars:
            raise BackendError(
                "identity.splink.engine: warehouse: this Spark context started without "
                "Splink's similarity jar (Splink was installed after it started?); restart"
            )
        folder = self._work / f"splink-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)

        class API(SparkAPI):  # type: ignore[misc]
            def _get_checkpoint_dir_path(self, spark_df: Any) -> str:
                return str(folder)

            def _break_lineage_and_repartition(
                self, spark_df: Any, templated_name: str, physical_name: str
            ) -> Any:
                # every EM iteration reads the counts of each comparison vector: without
                # this they are computed again from the pairs each time (a Spark job)
                if templated_name == "__splink__agreement_pattern_counts":
                    path = str(folder / physical_name)
                    spark_df.write.mode("overwrite").parquet(path)
                    return self.spark.read.parquet(path)
                return super()._break_lineage_and_repartition(  # type: ignore[no-untyped-call]
                    spark_df, templated_name, physical_name
                )

        before = {t.name for t in self.spark.catalog.listTables() if t.isTemporary}
        try:
            api = API(  # type: ignore[no-untyped-call]
                spark_session=self.spark, break_lineage_method="parquet"
            )
            yield api, self._frame(data)
        except CrmsegError:
            raise
        except Exception as exc:
            raise BackendError(f"Splink failed on Spark: {_first_line(exc)}") from exc
        finally:
            with contextlib.suppress(Exception):
                for view in self.spark.catalog.listTables():
                    if view.isTemporary and view.name not in before:
                        self.spark.catalog.dropTempView(view.name)
            shutil.rmtree(folder, ignore_errors=True)

    def write_parquet(self, expr: ir.Table, path: str) -> None:
        import pyarrow.parquet as pq

        try:
            pq.write_table(_naive_utc(self.execute(expr)), path)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot write {path}: {_first_line(exc)}") from None

    @property
    def snapshots(self) -> str | None:
        return None if self._temporary else str(self.path / "snapshots")

    def checksum(self, table: ir.Table) -> str:
        """Row count and an order-independent sum of every row's 64-bit hash."""
        import ibis

        row = ibis.struct({c: table[c] for c in table.columns})
        frame = self._frame(table.select(h=row.hash()))
        try:
            r = frame.selectExpr("count(*) AS n", "sum(cast(h AS decimal(38, 0))) AS h").collect()
        except Exception as exc:
            raise BackendError(f"Spark failed: {_first_line(exc)}") from None
        return f"{r[0]['n']}:{r[0]['h']}"

    @contextlib.contextmanager
    def pending(self) -> Iterator[None]:
        """Stage and swap: writes go to new folders and the catalog changes in memory; the
        catalog file is replaced at the end. On an error Spark's catalog is made again
        from the previous one."""
        if self._pending:
            yield
            return
        before = [dict(o) for o in self._catalog]
        self._pending = True
        try:
            yield
        except BaseException:
            self._pending = False
            self._catalog = before
            with contextlib.suppress(Exception):
                self._register_all()
            with contextlib.suppress(Exception):
                self._collect()
            raise
        self._pending = False
        self._save()
        self._collect()

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
        with contextlib.suppress(Exception):
            self.spark.sql(f"DROP DATABASE IF EXISTS {self._q(self.db)} CASCADE")
        with contextlib.suppress(Exception):
            for view in self.spark.catalog.listTables():
                if view.isTemporary:
                    self.spark.catalog.dropTempView(view.name)
        shutil.rmtree(self._work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.path / "_work").rmdir()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark's Arrow result with the expression's types (its timestamps carry UTC)."""
    import pyarrow as pa

    if data.schema == schema:
        return data
    data = data.rename_columns(schema.names)
    columns = []
    for name, column, want in zip(schema.names, data.columns, schema.types, strict=True):
        try:
            columns.append(column.cast(want))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise BackendError(
                f"Spark returned {name} as {column.type}, not {want}: {_first_line(exc)}"
            ) from None
    return pa.table(columns, schema=schema)
