"""The in-process engine for work on rows already pulled out of the warehouse, whatever the
warehouse's engine: an in-memory DuckDB nobody else sees."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def splink_api() -> Iterator[Any]:
    """Splink's database API over a private in-memory DuckDB, closed after the block.

    Probabilistic matching compares the prepared customer columns the identity stage pulled
    out (with phones normalised in Python), so it runs here on every warehouse engine: the
    same Splink SQL, so the same links, on DuckDB, Postgres or Spark."""
    import duckdb
    from splink import DuckDBAPI

    con = duckdb.connect()
    try:
        yield DuckDBAPI(connection=con)
    finally:
        con.close()
