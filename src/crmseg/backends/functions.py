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

    from crmseg.errors import BackendError

    if backend.dialect != "duckdb":
        raise BackendError(f"formats: parsing with a format is not available on {backend.dialect}")

    @ibis.udf.scalar.builtin(name="try_strptime")
    def parse(value: str, layout: str) -> dt.timestamp:  # type: ignore[empty-body]
        """DuckDB's try_strptime(text, format) -> naive timestamp or null."""

    return parse(text, fmt)


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

    @ibis.udf.scalar.builtin(name="to_utc_timestamp")
    def to_utc(ts: dt.timestamp, zone: str) -> dt.timestamp:  # type: ignore[empty-body]
        """Spark's to_utc_timestamp(naive local, zone) -> naive UTC."""

    return to_utc(value, tz)
