"""Shared fixtures: a small hand-checked CRM dataset, DuckDB tables and one Spark session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime as T
from typing import Any

import ibis
import pyarrow as pa
import pytest

from crmseg.rules import Schema

AS_OF = T(2024, 6, 1)

_TS = pa.timestamp("us")
_SCHEMAS: dict[str, dict[str, Any]] = {
    "customers": {
        "customer_id": pa.string(),
        "country": pa.string(),
        "plan": pa.string(),
        "city": pa.string(),
        "company_size": pa.int64(),
        "signup_at": _TS,
    },
    "orders": {
        "order_id": pa.string(),
        "customer_id": pa.string(),
        "ordered_at": _TS,
        "amount": pa.float64(),
        "returned_amount": pa.float64(),
        "discount": pa.float64(),
        "margin": pa.float64(),
        "category": pa.string(),
    },
    "events": {"customer_id": pa.string(), "name": pa.string(), "occurred_at": _TS},
    "messages": {
        "customer_id": pa.string(),
        "channel": pa.string(),
        "kind": pa.string(),
        "occurred_at": _TS,
    },
    "consent": {
        "customer_id": pa.string(),
        "channel": pa.string(),
        "status": pa.string(),
        "updated_at": _TS,
    },
    "subscriptions": {
        "customer_id": pa.string(),
        "status": pa.string(),
        "mrr": pa.float64(),
        "started_at": _TS,
    },
    "tickets": {
        "customer_id": pa.string(),
        "opened_at": _TS,
        "csat": pa.float64(),
        "refund_amount": pa.float64(),
    },
}

# as_of is 2024-06-01 00:00. c3 signs up after as_of and must never appear anywhere.
_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "customers": [
        ("c1", "DE", "pro", "Berlin", 10, T(2023, 1, 1)),
        ("c2", "AT", "free", "Wien", None, T(2023, 6, 1)),
        ("c3", "FR", "pro", "Paris", 5, T(2024, 7, 1)),
        ("c4", None, None, None, None, T(2024, 5, 31)),  # exactly as_of - 1d
        ("c5", "DE", "team", "Hamburg", None, None),  # unknown signup: exists
        ("c6", "US", "pro", "Boston", None, T(2024, 6, 1)),  # signs up exactly at as_of
    ],
    "orders": [
        ("o1", "c1", T(2024, 4, 2), 100.0, 0.0, 0.0, 10.0, "skincare"),  # as_of - 60d
        ("o2", "c1", T(2024, 5, 20, 12), 50.0, 10.0, 5.0, 5.0, "hair"),
        ("o3", "c1", T(2024, 6, 1), 30.0, None, 0.0, 3.0, "hair"),  # exactly as_of
        ("o4", "c1", T(2024, 6, 2), 1000.0, 0.0, 0.0, 1.0, "skincare"),  # after as_of
        ("o5", "c2", T(2024, 4, 1, 23, 59, 59), 200.0, 200.0, 0.0, 1.0, "skincare"),
        ("o6", "c2", T(2023, 1, 1), 40.0, 0.0, 0.0, 1.0, "skincare"),
        ("o7", "c5", T(2024, 5, 31, 0, 0, 1), 20.0, 0.0, 2.0, 1.0, None),
        ("o8", "c4", T(2024, 5, 31, 12), 10.0, 0.0, 0.0, 1.0, "toys"),
        ("o9", "c3", T(2024, 5, 1), 99.0, 0.0, 0.0, 1.0, "toys"),  # c3 does not exist yet
        ("o10", None, T(2024, 5, 1), 99.0, 0.0, 0.0, 1.0, "toys"),  # no customer
    ],
    "events": [
        ("c1", "cart", T(2024, 5, 31, 10)),
        ("c1", "buy", T(2024, 5, 31, 11)),  # exactly t + 1h
        ("c1", "login", T(2024, 5, 25)),
        ("c1", "login", T(2024, 5, 10)),
        ("c2", "cart", T(2024, 5, 31, 22)),
        ("c2", "buy", T(2024, 5, 31, 23, 0, 1)),  # t + 1h + 1s
        ("c2", "login", T(2024, 3, 3)),  # exactly as_of - 90d
        ("c4", "cart", T(2024, 5, 31, 23, 30)),  # its 1h window ends after as_of
        ("c5", "cart", T(2024, 5, 20, 10)),
        ("c5", "buy", T(2024, 5, 20, 10)),  # t' = t
        ("c6", "login", T(2024, 6, 1)),  # exactly as_of
        ("c6", "cart", T(2024, 6, 1, 0, 0, 1)),  # after as_of
        (None, "cart", T(2024, 5, 1)),  # anonymous
    ],
    "messages": [
        ("c1", "email", "open", T(2024, 5, 1)),
        ("c2", "email", "sent", T(2024, 5, 1)),
        ("c1", "sms", "click", T(2024, 5, 15)),
    ],
    "consent": [
        ("c1", "email", "opted_in", T(2024, 1, 1)),
        ("c1", "email", "opted_out", T(2024, 7, 1)),  # after as_of
        ("c2", "email", "opted_in", T(2024, 1, 1)),
        ("c2", "email", "opted_out", T(2024, 3, 1)),
        ("c4", "email", "opted_in", T(2024, 6, 1)),  # exactly as_of
        ("c5", "sms", "opted_in", T(2024, 1, 1)),
        ("c1", "sms", "opted_in", T(2024, 2, 1)),  # a tie: opted_out wins
        ("c1", "sms", "opted_out", T(2024, 2, 1)),
    ],
    "subscriptions": [
        ("c1", "active", 30.0, T(2023, 1, 1)),
        ("c2", "canceled", 10.0, T(2023, 6, 1)),
        ("c6", "active", 50.0, T(2024, 6, 2)),  # after as_of
    ],
    "tickets": [
        ("c1", T(2024, 5, 1), 5.0, 0.0),
        ("c1", T(2024, 5, 2), None, 15.0),
        ("c2", T(2024, 1, 1), 2.0, None),
    ],
}

_DTYPE = {
    pa.string(): "string",
    pa.int64(): "int",
    pa.float64(): "float",
    _TS: "timestamp",
}


def arrow_tables() -> dict[str, pa.Table]:
    out = {}
    for name, cols in _SCHEMAS.items():
        rows = _ROWS[name]
        arrays = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        out[name] = pa.table(arrays, schema=pa.schema(list(cols.items())))
    return out


def schema() -> Schema:
    return Schema({t: {c: _DTYPE[ty] for c, ty in cols.items()} for t, cols in _SCHEMAS.items()})  # type: ignore[misc]


def unbound_tables() -> dict[str, ibis.Table]:
    """Ibis tables without a backend (for SQL generation)."""
    return {
        t: ibis.table({c: str(ibis.dtype(ty)) for c, ty in cols.items()}, name=t)
        for t, cols in _SCHEMAS.items()
    }


@pytest.fixture(scope="session")
def duck() -> Iterator[tuple[Any, Mapping[str, ibis.Table]]]:
    con = ibis.duckdb.connect()
    tables = {n: con.create_table(n, t) for n, t in arrow_tables().items()}
    yield con, tables
    con.disconnect()


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover
        pytest.skip("pyspark is not installed (pip install 'crmseg[spark]')")
    # naive datetimes go through the Python process's local zone; pin it to UTC
    os.environ["TZ"] = "UTC"
    time.tzset()
    s = (
        SparkSession.builder.master("local[1]")
        .appName("crmseg-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def spark(spark_session: Any) -> tuple[Any, Mapping[str, ibis.Table]]:
    con = ibis.pyspark.connect(spark_session)
    tables = {}
    for name, t in arrow_tables().items():
        # from Python rows, not pandas: pandas would turn null floats into NaN
        df = spark_session.createDataFrame(_ROWS[name], schema=_spark_schema(t))
        df.createOrReplaceTempView(name)
        tables[name] = con.table(name)
    return con, tables


def _spark_schema(t: pa.Table) -> Any:
    from pyspark.sql import types as S

    m = {"string": S.StringType(), "int64": S.LongType(), "double": S.DoubleType()}
    fields = [
        S.StructField(
            f.name, S.TimestampType() if pa.types.is_timestamp(f.type) else m[str(f.type)], True
        )
        for f in t.schema
    ]
    return S.StructType(fields)


@pytest.fixture(scope="session")
def pg(postgres: Any) -> Iterator[tuple[Any, Mapping[str, ibis.Table]]]:
    """The dataset in a real PostgreSQL server (tests/postgres.py), through crmseg's
    backend: its compiler is the one whole runs use."""
    from crmseg.backends.postgres import PostgresBackend
    from crmseg.config import BackendConfig

    config = BackendConfig(
        kind="postgres", host=postgres.host, port=postgres.port, user=postgres.user,
        database=postgres.database("rules"),
    )  # fmt: skip
    backend = PostgresBackend(config)
    con = backend.con
    tables = {n: con.create_table(n, t) for n, t in arrow_tables().items()}
    yield con, tables
    backend.close()
