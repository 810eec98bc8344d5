"""``sql:`` segments: a user's own query returning customer ids, the language's escape hatch.

Their SQL sees the warehouse's record ids; the result is mapped to person keys when identity
ran, so a merged person counts once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from crmseg.errors import BackendError, SegmentError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.segments.catalog import Segment


def sql_tables(
    backend: Backend,
    segments: Sequence[Segment],
    bodies: Mapping[str, str] | None = None,
) -> dict[str, ir.Table]:
    """Every ``sql:`` segment as a table of person keys. ``bodies`` replaces a segment's SQL
    (diff evaluates recorded definitions)."""
    from crmseg.identity.resolve import keyed_ids

    if "customers" not in backend.canonical_tables():
        return {}  # on a first load the tables they name do not exist yet
    loaded = {n: backend.canonical(n) for n in backend.canonical_tables()}
    out: dict[str, ir.Table] = {}
    for seg in segments:
        query = (bodies or {}).get(seg.name, seg.spec.sql)
        if query is None:
            continue
        where = f"{seg.file}:{seg.line}: segment {seg.name}"
        try:
            table = backend.sql(query)
        except BackendError as exc:
            raise SegmentError(f"{where}: {exc}") from None
        if "customer_id" not in table.columns:
            raise SegmentError(
                f"{where}: the sql must return a customer_id column "
                f"(it returns {', '.join(table.columns)})"
            )
        out[seg.name] = keyed_ids(table.select("customer_id"), loaded)
    return out


def recorded_sql(definition: str) -> str | None:
    """The SQL of a definition as runs record it (None for a rule)."""
    body = json.loads(definition)
    sql = body.get("sql")
    return str(sql) if sql else None
