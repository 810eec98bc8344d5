"""Backend functions Ibis has no portable operation for, one definition per dialect."""

# No `from __future__ import annotations`: Ibis reads these UDF signatures at definition time.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.backends.base import Backend


def parse_time(backend: "Backend", text: Any, fmt: str) -> Any:
    """``text`` read with the strptime format ``fmt`` as a naive timestamp; null where it
    does not match (so the loader can count and show those values)."""
    import ibis
    import ibis.expr.datatypes as dt

    if backend.dialect != "duckdb":  # a regular expression and arithmetic, as DuckDB reads
        from crmseg.backends.strptime import parse as portable

        return portable(text, fmt)

    @ibis.udf.scalar.builtin(name="try_strptime")
    def parse(value: str, layout: str) -> dt.timestamp:  # type: ignore[empty-body]
        """DuckDB's try_strptime(text, format) -> naive timestamp or null."""

    return parse(text, fmt)


def format_problem(backend: "Backend", fmt: str) -> str | None:
    """Why ``fmt`` cannot be read on this engine, or None (DuckDB reads every format)."""
    if backend.dialect == "duckdb":
        return None
    from crmseg.backends.strptime import compile_format

    try:
        compile_format(fmt)
    except ValueError as exc:
        return f"on the {backend.kind} backend, {exc}"
    return None


def not_finite(backend: "Backend", value: Any) -> Any:
    """Whether a float is NaN or an infinity (where floats cannot hold NaN, only the
    infinities: beyond the largest double)."""
    import sys

    import ibis

    from crmseg.backends.dialects import dialect_named

    if dialect_named(backend.dialect).nan:
        return value.isnan() | value.isinf()
    return value.abs() > ibis.literal(sys.float_info.max)


def missing(value: Any) -> Any:
    """Whether a float is null or NaN (NaN only where the engine of its tables has it)."""
    from crmseg.backends.dialects import dialect_of

    return value.isnull() | value.isnan() if dialect_of(value).nan else value.isnull()


def local_to_utc(backend: "Backend", value: Any, tz: str) -> Any:
    """A naive timestamp read as wall time in ``tz``, as naive UTC."""
    import ibis
    import ibis.expr.datatypes as dt

    if backend.dialect in ("duckdb", "postgres"):  # timezone(zone, ts) means the same in both

        @ibis.udf.scalar.builtin(name="timezone")
        def zoned(zone: str, ts: dt.timestamp) -> dt.Timestamp(timezone="UTC"):  # type: ignore[valid-type, empty-body]
            """timezone(zone, naive) -> an instant."""

        @ibis.udf.scalar.builtin(name="timezone")
        def wall(zone: str, ts: dt.Timestamp(timezone="UTC")) -> dt.timestamp:  # type: ignore[valid-type, empty-body]
            """timezone(zone, instant) -> naive wall time there."""

        return wall("UTC", zoned(tz, value))

    # Spark's to_utc_timestamp reads a wall time the clocks show twice (autumn) with the
    # summer offset; DuckDB and Postgres read it with the later, standard one. The later
    # reading is the wall time less the offset a few hours on; it is taken when it shows
    # the same wall time (only then is the time ambiguous).
    @ibis.udf.scalar.builtin(name="to_utc_timestamp")
    def to_utc(ts: dt.timestamp, zone: str) -> dt.timestamp:  # type: ignore[empty-body]
        """Spark's to_utc_timestamp(naive local, zone) -> naive UTC."""

    @ibis.udf.scalar.builtin(name="from_utc_timestamp")
    def from_utc(ts: dt.timestamp, zone: str) -> dt.timestamp:  # type: ignore[empty-body]
        """Spark's from_utc_timestamp(naive UTC, zone) -> naive local."""

    @ibis.udf.scalar.builtin(name="unix_micros")
    def micros(ts: dt.timestamp) -> dt.int64:  # type: ignore[empty-body]
        """Microseconds since 1970 (the session zone is UTC)."""

    @ibis.udf.scalar.builtin(name="timestamp_micros")
    def at(us: dt.int64) -> dt.timestamp:  # type: ignore[empty-body]
        """The timestamp that many microseconds after 1970."""

    first = to_utc(value, tz)
    later = at(micros(first) + 6 * 3600 * 1_000_000)
    offset = micros(from_utc(later, tz)) - micros(later)
    second = at(micros(value) - offset)
    ambiguous = (second > first) & (from_utc(second, tz) == value)
    return ibis.cases((ambiguous, second), else_=first)
