"""Loading a user's tables into the canonical data model.

``plan_sources`` reads every configured source, applies the column mapping, checks required
columns and types and collects *every* problem before raising one SourceError; nothing is
written. ``load_sources`` then writes the sources that changed (``crmseg.sources.sync``) in one
transaction, so a failed load leaves the previous tables as they were.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import Backend
from crmseg.backends.functions import format_problem, not_finite
from crmseg.config import Config, Constant, InputConfig, SourceConfig
from crmseg.errors import BackendError, SourceError
from crmseg.sources import expressions, retention
from crmseg.sources.model import IBIS_TYPES, TABLES, DType, Table
from crmseg.sources.normalize import blank

if TYPE_CHECKING:
    import ibis.expr.types as ir

Progress = Callable[[str, float], None]

# A string whose time of day ends in an explicit UTC offset: such timestamps ignore the source
# timezone. The time part is required so a date's "-01" is never read as an offset.
_OFFSET = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclass
class Planned:
    """A source ready to materialise: its canonical expression and where it came from."""

    name: str
    origin: str
    expr: ir.Table
    extra_columns: list[str] = field(default_factory=list)
    # Cheap to recompute on every read (no text parsing, no join): may stay a view.
    light: bool = True
    # column -> values that were NaN or infinite (loaded as missing); counted when planned.
    nonfinite: dict[str, int] = field(default_factory=dict)
    # The rows its retention window leaves out (None: no window).
    expired: ir.Table | None = None


@dataclass(frozen=True)
class Check:
    """Values of one column that must convert: those present whose conversion is missing
    are counted and reported under ``label`` as not being ``shape``."""

    table: str
    label: str  # column 'total' (orders.amount)
    shape: str  # float, or timestamp in the format '%d/%m/%Y'
    raw: Any
    converted: Any


def _numbers(
    backend: Backend,
    raw: ir.Table,
    source: SourceConfig,
    target: tuple[str, str],
    want: DType,
    tz: str,
    checks: list[Check],
) -> Callable[[str], Any] | None:
    """How an expression mapping of a numeric column reads text columns: as numbers written
    the source's way (``decimal``), each conversion checked like a mapped column's. None for
    other targets (text is read as it is)."""
    if want not in ("int", "float"):
        return None
    table, col = target
    seen: set[str] = set()

    def read(name: str) -> Any:
        value = raw[name]
        if _family(value.type()) != "string":
            return value
        number, check = _convert(backend, value, "float", tz, None, source.decimal)
        if name not in seen:
            seen.add(name)
            label = f"column {name!r} (read by {table}.{col})"
            checks.append(Check(table, label, "a number", value, check))
        return number

    return read


def _origin(source: SourceConfig) -> str:
    if source.derive is not None:
        return f"customers derived from {source.derive}"
    if source.sql is not None:
        return "sql source"
    return source.path if source.path is not None else f"table {source.table}"


def _read(
    backend: Backend,
    root: Path,
    source: SourceConfig,
    problems: list[str],
    table: Table,
    tz: str,
    files: list[str] | None = None,
    inputs: Mapping[str, InputConfig] | None = None,
) -> Any:
    """The raw Ibis table of one source, or None after recording why it cannot be read.

    ``files`` replaces the configured path's matches (snapshots of them)."""
    origin = _origin(source)
    if source.sql is not None:
        return _query(backend, root, table.name, source, inputs or {}, problems)
    if source.table is not None:
        database, _, name = source.table.rpartition(".")
        if not backend.has_table(name, database=database or None):
            problems.append(
                f"{origin}: no such table in the {backend.kind} database{source.named_at}"
            )
            return None
        return backend.table(name, database=database or None)
    assert source.path is not None
    pattern = str(root / source.path)  # an absolute path stays as it is
    matches = files if files is not None else sorted(glob.glob(pattern))
    if not matches:
        problems.append(f"{origin}: file not found{source.named_at}")
        return None
    try:
        if source.file_format == "parquet":
            return backend.read_parquet(matches)
        if source.delimiter == "whitespace":
            return _whitespace(backend, matches)
        options: dict[str, Any] = {"max_line_size": MAX_CSV_LINE}
        if source.delimiter:
            options["delim"] = source.delimiter
        raw = backend.read_csv(matches, **options)
        if tz != "UTC":
            # The CSV sniffer reads a column mixing naive and offset timestamps as UTC
            # instants; read such columns as text so naive values get the source timezone.
            zoned = [
                theirs
                for col in table.columns
                if col.dtype == "timestamp"
                and (theirs := source.columns.get(col.name, col.name)) in raw.columns
                and raw[theirs].type().is_timestamp()
                and raw[theirs].type().timezone
            ]
            if zoned:
                raw = backend.read_csv(matches, types=dict.fromkeys(zoned, "string"), **options)
        return raw
    except Exception as exc:
        problems.append(f"{origin}: cannot read {source.file_format}: {_reason(exc, matches)}")
        return None


MAX_CSV_LINE = 8 << 20  # bytes; DuckDB's default is 2 MB


def referenced_inputs(
    source: SourceConfig, inputs: Mapping[str, InputConfig], dialect: str
) -> list[str]:
    """The inputs a ``sql:`` source's query names (unparseable queries name none: reading
    them reports why)."""
    import sqlglot
    import sqlglot.expressions as sge

    if source.sql is None:
        return []
    try:
        tree = sqlglot.parse_one(source.sql, read=dialect)
    except sqlglot.errors.ParseError:
        return []
    return sorted({t.name for t in tree.find_all(sge.Table) if t.name in inputs and not t.db})


def _query(
    backend: Backend,
    root: Path,
    name: str,
    source: SourceConfig,
    inputs: Mapping[str, InputConfig],
    problems: list[str],
) -> Any:
    """A ``sql:`` source: the user's query, with each input it names bound as a CTE of that
    input's Ibis expression (the query tree is edited, never pasted as text)."""
    import sqlglot
    import sqlglot.expressions as sge

    assert source.sql is not None
    where = f"sources.{name}.sql{source.named_at}"
    dialect = backend.sqlglot_dialect
    try:
        tree = sqlglot.parse_one(source.sql, read=backend.written)
    except sqlglot.errors.ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        at = f" at line {detail.get('line')}, column {detail.get('col')}" if detail else ""
        problems.append(f"{where}: the query does not parse{at}: {detail.get('description', exc)}")
        return None
    if not isinstance(tree, sge.Query):
        problems.append(f"{where}: expected a SELECT query, got {tree.key.upper()}")
        return None
    for used in referenced_inputs(source, inputs, backend.written):
        given = inputs[used]
        as_source = SourceConfig(
            path=given.path, table=given.table, format=given.format, delimiter=given.delimiter
        )
        as_source._where = given._where
        raw = _read(backend, root, as_source, problems, TABLES["customers"], "UTC")
        if raw is None:
            problems[-1] = f"input {used}: {problems[-1]}"
            return None
        body = sqlglot.parse_one(str(backend.con.compile(raw)), read=dialect)
        assert isinstance(body, sge.Query)
        tree = tree.with_(used, as_=body)
    try:
        return backend.sql(tree.sql(dialect), dialect=dialect)
    except BackendError as exc:
        problems.append(f"{where}: {str(exc).splitlines()[0]}")
        return None


_UNIT = "\x1f"  # ASCII unit separator: never in a text export, so each line is one value


def _whitespace(backend: Backend, files: list[str]) -> ir.Table:
    """Text files whose columns are separated by runs of spaces or tabs (fixed-width logs such
    as CDNOW's): each line read whole and split; the first line of the first file names the
    columns, and lines repeating it (each file's header) or blank ones are skipped."""
    import ibis

    with open(files[0], encoding="utf-8-sig") as f:
        header = next((line.split() for line in f if line.strip()), [])
    if not header:
        raise ValueError(f"{files[0]}: the file is empty")
    lines = backend.read_csv(
        files,
        columns={"line": "VARCHAR"},
        delim=_UNIT,
        quote="",
        escape="",
        header=False,
        auto_detect=False,
        max_line_size=MAX_CSV_LINE,
    )
    text = lines.line.strip()
    lines = lines.filter(text.notnull() & (text != "")).select(line=text)
    parts = lines.line.re_split(r"\s+")
    rows = lines.filter(parts.join(" ") != " ".join(header))
    parts = rows.line.re_split(r"\s+")
    # DuckDB's lists are 1-based through Ibis' 0-based index: parts[i] is the (i+1)-th value.
    return rows.select(
        **{name: ibis.ifelse(parts.length() > i, parts[i], ibis.null("string"))
           for i, name in enumerate(header)}
    )  # fmt: skip


def _reason(exc: BaseException, files: list[str]) -> str:
    """Why a file could not be read, in one line. DuckDB quotes the offending line in full and
    may cut it inside a character (a decode error instead of its message), so a line over the
    limit is found here and named."""
    csvs = [f for f in files if not f.lower().endswith((".parquet", ".pq"))]
    for path in csvs:
        line = _long_line(path, MAX_CSV_LINE)
        if line is not None:
            return (
                f"{path}:{line}: the line is longer than {MAX_CSV_LINE >> 20} MiB, the longest "
                "a CSV line may be (a cell holding a whole file?)"
            )
    text = str(exc) if not isinstance(exc, UnicodeDecodeError) else type(exc).__name__
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


def _long_line(path: str, limit: int) -> int | None:
    """The 1-based number of the first line of ``path`` longer than ``limit`` bytes."""
    number, length = 1, 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                start = 0
                while (end := chunk.find(b"\n", start)) != -1:
                    if length + end - start > limit:
                        return number
                    number, length, start = number + 1, 0, end + 1
                length += len(chunk) - start
                if length > limit:
                    return number
    except OSError:
        return None
    return None


def _family(dtype: Any) -> str:
    if dtype.is_string():
        return "string"
    if dtype.is_boolean():
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_floating() or dtype.is_decimal():
        return "float"
    if dtype.is_timestamp():
        return "timestamp_tz" if dtype.timezone else "timestamp"
    if dtype.is_date():
        return "date"
    return "other"


def dtype_of(ibis_dtype: Any) -> DType:
    """The rule-language type of a column (extra user columns included)."""
    fam = _family(ibis_dtype)
    return {
        "string": "string",
        "bool": "bool",
        "int": "int",
        "float": "float",
        "timestamp": "timestamp",
        "timestamp_tz": "timestamp",
        "date": "date",
    }.get(fam, "string")  # type: ignore[return-value]


def _localize(backend: Backend, value: Any, tz: str) -> Any:
    """Naive local wall time in ``tz`` -> naive UTC."""
    if tz == "UTC":
        return value
    from crmseg.backends.functions import local_to_utc

    return local_to_utc(backend, value, tz)


def _convert(
    backend: Backend,
    raw: Any,
    want: DType,
    tz: str,
    fmt: str | None = None,
    decimal: str = ".",
) -> tuple[Any, Any | None]:
    """(converted value, value-or-null used to count conversion failures); ``fmt``: the
    strptime format of a text timestamp or date; ``decimal``: the separator of text numbers
    (with ``,`` the points are thousands separators)."""
    import ibis
    import ibis.expr.datatypes as dt

    fam = _family(raw.type())
    target = IBIS_TYPES[want]
    if want in ("string", "json"):
        return raw.cast("string"), None
    if (
        fmt is not None
        and want in ("timestamp", "date")
        and fam not in ("timestamp", "timestamp_tz", "date")
    ):
        from crmseg.backends.functions import parse_time

        parsed = parse_time(backend, raw.cast("string").strip(), fmt)
        value = parsed.cast(dt.date) if want == "date" else _localize(backend, parsed, tz)
        return value, value
    if want == "timestamp":
        if fam == "timestamp":
            return _localize(backend, raw, tz), None
        if fam == "timestamp_tz":
            return raw.cast(dt.Timestamp(timezone="UTC")).cast(dt.timestamp), None
        if fam == "date":
            return _localize(backend, raw.cast(dt.timestamp), tz), None
        text = raw.cast("string").strip()
        with_offset = text.try_cast(dt.Timestamp(timezone="UTC")).cast(dt.timestamp)
        naive = _localize(backend, text.try_cast(dt.timestamp), tz)
        value = ibis.cases((text.re_search(_OFFSET), with_offset), else_=naive)
        return value, value
    if want == "date":
        if fam in ("timestamp", "timestamp_tz"):
            return raw.cast(dt.date), None
        if fam == "date":
            return raw, None
        value = raw.cast("string").strip().try_cast(dt.date)
        return value, value
    if want == "int":
        if fam == "int":
            return raw.cast(target), None
        value = raw.try_cast(dt.float64)
        whole = (value == value.floor()) & ~not_finite(backend, value)
        exact = ibis.ifelse(whole, value.cast(target), ibis.null(dt.int64))
        return exact, exact
    if want == "float":
        if fam in ("int", "float"):
            return raw.cast(target), None
        text = raw.cast("string").strip()
        if decimal == ",":
            text = text.replace(".", "").replace(",", ".")
        value = text.try_cast(dt.float64)
        return value, value
    if want == "bool":
        if fam == "bool":
            return raw, None
        text = raw.cast("string").strip().lower()
        value = ibis.cases(
            (text.isin(["true", "t", "yes", "y", "1"]), True),
            (text.isin(["false", "f", "no", "n", "0"]), False),
            else_=ibis.null(dt.boolean),
        )
        return value, value
    raise AssertionError(want)


def plan_sources(
    config: Config,
    root: Path,
    backend: Backend,
    progress: Progress | None = None,
    *,
    only: set[str] | None = None,
    files: Mapping[str, list[str] | None] | None = None,
    raw_tables: Mapping[str, Any] | None = None,
) -> dict[str, Planned]:
    """Read, map and check every source (or those in ``only``); raise one SourceError
    listing every problem. ``raw_tables`` are sources already read (snapshot views);
    ``files`` replace a source's configured matches."""
    problems: list[str] = []
    planned: dict[str, Planned] = {}
    checks: list[Check] = []
    numbers: list[tuple[str, str, Any]] = []  # table, column, converted float
    raws: dict[str, Any] = {}
    names = [n for n in config.sources if only is None or n in only]
    for i, name in enumerate(names):
        if progress:
            progress(f"reading {name}", i / max(len(names), 1))
        source = config.sources[name]
        if source.derive is not None:
            continue  # built from the other sources below
        canonical = TABLES[name]
        origin = _origin(source)
        tz = source.timezone or config.timezone
        if raw_tables is not None and name in raw_tables:
            raw = raw_tables[name]
        else:
            wanted = (files or {}).get(name)
            raw = _read(backend, root, source, problems, canonical, tz, wanted, config.inputs)
        if raw is None:
            continue
        raws[name] = raw
        found = list(raw.columns)
        theirs_for: dict[str, str] = {}
        constants: dict[str, Any] = {}
        computed: dict[str, Any] = {}  # canonical column -> an expression over theirs
        parses = False
        for col in canonical.columns:
            theirs = source.columns.get(col.name, col.name if col.name in found else None)
            if theirs is None:
                continue
            if isinstance(theirs, Constant):
                constants[col.name] = theirs.value
                continue
            mapped_at = source.mapping_at(col.name)
            if theirs not in found and expressions.is_expression(theirs):
                read = _numbers(backend, raw, source, (name, col.name), col.dtype, tz, checks)
                before = len(checks)
                try:
                    computed[col.name] = expressions.compile_mapping(theirs, raw, read)
                except ValueError as exc:
                    problems.append(f"{origin}: column mapping {name}.{col.name}{mapped_at}: {exc}")
                parses = parses or len(checks) > before  # text read as numbers
                continue
            if theirs not in found:
                problems.append(
                    f"{origin}: column mapping {name}.{col.name} -> {theirs!r}{mapped_at}: no "
                    f"column {theirs!r} (found: {', '.join(found)})"
                )
                continue
            theirs_for[col.name] = theirs
        missing = [
            c
            for c in canonical.required
            if c not in theirs_for and c not in source.columns and not _derived(name, c)
        ]
        for col_name in missing:
            problems.append(
                f"{origin}: required column {name}.{col_name} is missing (found: "
                f"{', '.join(found)}; map one with columns: {{{col_name}: <your column>}})"
            )
        unreadable: set[str] = set()  # formats refused above: their columns are skipped
        for key, layout in source.formats.items():
            found_col = next((c for c in canonical.columns if c.name == key), None)
            if found_col is None or found_col.dtype not in ("timestamp", "date"):
                times = [c.name for c in canonical.columns if c.dtype in ("timestamp", "date")]
                problems.append(
                    f"{origin}: formats.{key}: {name} has no timestamp or date column {key!r} "
                    f"(timestamp and date columns: {', '.join(times) or 'none'})"
                )
            elif (why := format_problem(backend, layout)) is not None:
                problems.append(f"{origin}: formats.{key}: {why}")
                unreadable.add(key)
        values: dict[str, Any] = {}
        for col in canonical.columns:
            if col.name in constants:
                import ibis

                value = constants[col.name]
                text = str(value) if col.dtype in ("string", "json") else value
                values[col.name] = ibis.literal(text).cast(IBIS_TYPES[col.dtype])
                continue
            theirs_col = theirs_for.get(col.name)
            if theirs_col is None and col.name not in computed:
                continue
            given = raw[theirs_col] if theirs_col is not None else computed[col.name]
            fmt = source.formats.get(col.name)
            if col.name in unreadable:
                continue  # said above; the source is refused
            converted, check = _convert(backend, given, col.dtype, tz, fmt, source.decimal)
            if col.dtype == "float":
                # NaN sorts above every number and sums to NaN: such values are missing.
                # Counting them is a scan only the quality checks read.
                if config.quality.enabled:
                    numbers.append((name, col.name, converted))
                converted = _finite(backend, converted)
            values[col.name] = converted
            if check is not None:
                parses = True
                label = f"column {source.columns.get(col.name, col.name)!r} ({name}.{col.name})"
                shape = f"{col.dtype} in the format {fmt!r}" if fmt else str(col.dtype)
                checks.append(Check(name, label, shape, given, check))
        used = set(theirs_for.values()) | set(values)
        extras = [c for c in found if c not in used]
        for extra in extras:
            values[extra] = raw[extra]
        if not values:
            continue
        planned[name] = Planned(name, origin, raw.select(**values), extras, light=not parses)
    _check_types(backend, config, root, planned, raws, checks, numbers, problems)
    if problems:
        raise SourceError(problems)
    if "order_items" in planned and "orders" in config.sources:
        items = planned["order_items"]
        if any(c not in items.expr.columns for c in ("customer_id", "ordered_at")):
            orders = planned["orders"].expr if "orders" in planned else backend.canonical("orders")
            items.expr = _fill_items(items.expr, orders)
            items.light = False  # a join: materialised, not a view
    customers = config.sources.get("customers")
    if customers is not None and customers.derive is not None and "customers" in names:
        base = customers.derive
        rows = planned[base].expr if base in planned else backend.canonical(base)
        planned["customers"] = Planned(
            "customers", _origin(customers), _derive_customers(base, rows), light=False
        )
    for name, at in retention.cutoffs(config).items():
        p = planned.get(name)
        if p is not None and TABLES[name].time in p.expr.columns:
            p.expr, p.expired = retention.split(name, p.expr, at)
    return planned


def _derive_customers(table: str, rows: ir.Table) -> ir.Table:
    """One customer per distinct id of ``rows``, signed up at their first row."""
    import ibis

    time = TABLES[table].time
    known = rows.filter(rows.customer_id.notnull() & ~blank(rows.customer_id.cast("string")))
    first = known[time].min() if time is not None else ibis.null("timestamp")
    return known.group_by(customer_id=known.customer_id.cast("string")).aggregate(signup_at=first)


def _derived(table: str, column: str) -> bool:
    return table == "order_items" and column in ("customer_id", "ordered_at")


def _fill_items(items: ir.Table, orders: ir.Table) -> ir.Table:
    """order_items take customer_id and ordered_at from their order when not mapped."""
    missing = [c for c in ("customer_id", "ordered_at") if c not in items.columns]
    if not missing:
        return items
    lookup = orders.select("order_id", *missing)
    joined = items.left_join(lookup, "order_id")
    cols = [c for c in joined.columns if not c.endswith("_right")]
    ordered = ["order_id", *missing, *[c for c in cols if c not in ("order_id", *missing)]]
    return joined.select(*ordered)


def _finite(backend: Backend, value: Any) -> Any:
    import ibis

    return ibis.ifelse(not_finite(backend, value), ibis.null("float64"), value)


def _check_types(
    backend: Backend,
    config: Config,
    root: Path,
    planned: Mapping[str, Planned],
    raws: Mapping[str, Any],
    checks: list[Check],
    numbers: list[tuple[str, str, Any]],
    problems: list[str],
) -> None:
    """Count, per column, values that are present but do not convert, and numbers that are
    not finite (one query per table)."""
    by_table: dict[str, list[Check]] = {}
    for c in checks:
        by_table.setdefault(c.table, []).append(c)
    floats: dict[str, list[tuple[str, Any]]] = {}
    for table, col, value in numbers:
        floats.setdefault(table, []).append((col, value))
    for table in sorted({*by_table, *floats}):  # one order of problems on every run
        if table not in planned:
            continue
        cols = by_table.get(table, [])
        aggs: dict[str, Any] = {}
        for i, c in enumerate(cols):
            bad = c.raw.notnull() & ~blank(c.raw.cast("string")) & c.converted.isnull()
            aggs[f"n{i}"] = bad.sum()
            aggs[f"e{i}"] = c.raw.cast("string").arbitrary(where=bad)
        for i, (_col, value) in enumerate(floats.get(table, [])):
            aggs[f"x{i}"] = not_finite(backend, value).sum()
        try:
            result = backend.execute(raws[table].aggregate(**aggs)).to_pylist()[0]
        except BackendError as exc:
            source = config.sources[table]
            files = sorted(glob.glob(str(root / source.path))) if source.path else []
            problems.append(f"{planned[table].origin}: cannot read: {_reason(exc, files)}")
            continue
        for i, (col, _value) in enumerate(floats.get(table, [])):
            if n := result[f"x{i}"] or 0:
                planned[table].nonfinite[col] = int(n)
        for i, c in enumerate(cols):
            n = result[f"n{i}"] or 0
            if n:
                problems.append(
                    f"{planned[table].origin}: {c.label}: expected {c.shape}, found {n} "
                    f"value{'s' * (n > 1)} that {'are' if n > 1 else 'is'} not "
                    f"(e.g. {result[f'e{i}']!r})"
                )


def load_sources(
    config: Config, root: Path, backend: Backend, progress: Progress | None = None
) -> dict[str, int]:
    """Check, then write every source that changed since the last load, in one transaction
    (see :mod:`crmseg.sources.sync`). Returns the row count of every source."""
    from crmseg.sources import sync

    with backend.pending():
        found = sync.prepare(config, root, backend, progress)
        try:
            counts = sync.commit(backend, found, progress=progress)
        except BaseException:
            found.discard()
            raise
    sync.cleanup(backend)
    return counts


def dated(tables: Mapping[str, ir.Table]) -> bool:
    """Whether every customer of ``tables`` has a ``signup_at`` (asked of the engine each
    time: the same table may hold other rows after a load; a plan for undated customers
    reads every activity table)."""
    customers = tables.get("customers")
    if customers is None:
        return True
    if "signup_at" not in customers.columns:
        return False
    return not bool(customers.signup_at.isnull().any().execute())


def schema_from(tables: Mapping[str, ir.Table]) -> dict[str, dict[str, DType]]:
    """Column types of canonical tables (loaded or planned), for the rule type checker."""
    out: dict[str, dict[str, DType]] = {}
    for name, expr in tables.items():
        if name not in TABLES:
            continue
        table: Table = TABLES[name]
        cols: dict[str, DType] = {}
        for col, dtype in expr.schema().items():
            canonical = table.column(col)
            cols[col] = canonical.dtype if canonical else dtype_of(dtype)
        out[name] = cols
    return out
