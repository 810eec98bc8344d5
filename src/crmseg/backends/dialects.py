"""What differs between engines, in one place: the rule compiler asks the dialect of the
data it compiles over instead of naming engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ibis.expr.types as ir


@dataclass(frozen=True)
class Dialect:
    name: str
    # an ordered-set aggregate (median) may run as a window over every row; where it may
    # not (Postgres), the median over customers is a scalar subquery
    median_window: bool = True
    # median and quantiles are exact (all three engines' are: Spark's percentile, not its
    # percentile_approx); an engine with only approximate ones would say so here
    exact_median: bool = True
    # floats hold NaN (isnan exists); SQLite stores NaN as null and has no isnan
    nan: bool = True


DIALECTS = {
    "duckdb": Dialect("duckdb"),
    "postgres": Dialect("postgres", median_window=False),
    "pyspark": Dialect("pyspark"),
    "sqlite": Dialect("sqlite", nan=False),
}


def dialect_named(name: str) -> Dialect:
    """What crmseg knows of the dialect ``name`` (defaults for an engine it does not list)."""
    return DIALECTS.get(name, Dialect(name))


def dialect_of(expr: ir.Expr) -> Dialect:
    """The dialect of the engine ``expr``'s tables live in (DuckDB's for in-memory data)."""
    try:
        backend = expr._find_backend(use_default=False)
    except Exception:  # in-memory tables only: Ibis's default engine, DuckDB
        return DIALECTS["duckdb"]
    return dialect_named(backend.name)
