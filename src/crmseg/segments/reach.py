"""Reach: how many of a segment's members each channel may contact, counting consent exactly
as rules do (``consent.<channel>``: the latest row per customer and channel at the instant,
opted_out on a tie, rows with a purpose left out). Nothing else of a campaign's funnel
(suppression, caps, holdouts) applies: that is the campaign's audience preview."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.rules import Plan


def channels_in(backend: Backend, tables: Mapping[str, ir.Table]) -> list[str]:
    """The channels the consent data speaks of, in the data model's order."""
    from crmseg.sources.model import CHANNELS

    cs = tables.get("consent")
    if cs is None:
        return []
    if "purpose" in cs.columns:
        cs = cs.filter(cs.purpose.isnull())
    found = set(backend.execute(cs.select("channel").distinct()).column(0).to_pylist())
    return [c for c in CHANNELS if c in found]


def reach(
    backend: Backend,
    plan: Plan,
    tables: Mapping[str, ir.Table],
    at: datetime,
    members: Sequence[str],
) -> dict[str, Any]:
    """Members, and per channel those with consent at ``at``."""
    import ibis
    import pyarrow as pa

    from crmseg.rules import ast as A

    chans = channels_in(backend, tables)
    out: dict[str, Any] = {"as_of": at, "members": len(members), "channels": {}}
    if not chans or not members:
        out["channels"] = {c: 0 for c in chans}
        return out
    wide = plan.wide(tables, at, select=[], extra={f"__reach_{c}": A.Consent(c) for c in chans})
    who = ibis.memtable(pa.table({"customer_id": pa.array(list(members), pa.string())}))
    wide = wide.semi_join(who, wide.customer_id == who.customer_id)
    sums = wide.aggregate(
        **{c: wide[f"__reach_{c}"].cast("int64").sum().fill_null(0) for c in chans}
    )
    row = backend.execute(sums).to_pylist()[0]
    out["channels"] = {c: int(row[c] or 0) for c in chans}
    return out
