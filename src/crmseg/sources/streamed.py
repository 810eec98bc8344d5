"""Rows that arrived by stream (``crmseg stream``, ``POST /events``) beside the loaded sources.

They are kept in their own warehouse tables, ``crmseg.stream_<table>``, so reloading a source
never drops them, and every reader of the canonical tables (runs, previews, real time) sees a
canonical table as its source's rows plus its streamed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from crmseg.sources.model import IBIS_TYPES, TABLES

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.backends.base import Backend

STREAMED = ("customers", "events", "orders", "consent")
PREFIX = "stream_"
_ARROW = {"string": "string", "int": "int64", "float": "float64", "bool": "bool",
          "timestamp": "timestamp[us]", "date": "date32", "json": "string"}  # fmt: skip


def stream_table(name: str) -> str:
    return PREFIX + name


def with_streamed(
    tables: Mapping[str, ir.Table], loaded: Mapping[str, ir.Table]
) -> dict[str, ir.Table]:
    """``tables`` (canonical, as read) with the streamed rows of ``loaded`` added: aligned to
    the table's columns (missing ones null), or the streamed rows alone when the project has
    no such source."""
    out = dict(tables)
    for name in STREAMED:
        extra = loaded.get(stream_table(name))
        if extra is None:
            continue
        base = out.get(name)
        out[name] = (
            _aligned(extra, base, name) if base is None else base.union(_aligned(extra, base, name))
        )
    return out


def _aligned(extra: ir.Table, base: ir.Table | None, name: str) -> ir.Table:
    import ibis
    import ibis.expr.datatypes as dt

    if base is None:
        columns = {c.name: dt.dtype(IBIS_TYPES[c.dtype]) for c in TABLES[name].columns}
    else:
        columns = {c: t.copy(nullable=True) for c, t in base.schema().items()}
    return extra.select(
        **{c: (extra[c] if c in extra.columns else ibis.null()).cast(t) for c, t in columns.items()}
    )


def watermark(backend: Backend) -> dict[str, int]:
    """Per stream table, its newest batch number: what the loaded data is also a function of
    (cached scans keyed on the sources alone would miss streamed rows)."""
    out: dict[str, int] = {}
    names = backend.canonical_tables()
    for name in STREAMED:
        table = stream_table(name)
        if table in names:
            out[table] = int(backend.scalar(backend.canonical(table).stream_batch.max()) or 0)
    return out


def schema(name: str) -> pa.Schema:
    """The columns of ``crmseg.stream_<name>``: the canonical table's, and the batch number."""
    import pyarrow as pa

    fields = [pa.field(c.name, pa.type_for_alias(_ARROW[c.dtype])) for c in TABLES[name].columns]
    return pa.schema([*fields, pa.field("stream_batch", pa.int64())])


def ensure(backend: Backend) -> None:
    """Make the empty stream tables that do not exist yet, so rules over events, orders and
    consent check before the first item arrives (projects with realtime segments)."""
    have = set(backend.canonical_tables())
    for name in STREAMED:
        if stream_table(name) not in have:
            backend.append(stream_table(name), schema(name).empty_table())
