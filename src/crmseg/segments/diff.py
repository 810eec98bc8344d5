"""``diff``: how changed or new definitions would move membership, before they are applied.

Each changed segment is computed twice on the same data at the same instant: with its working
definition and with the one its latest run recorded. Both get exactly the project's library
and model traits (the old definitions form a catalog of their own). Nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.rules import Plan
    from crmseg.segments.catalog import Segment
    from crmseg.segments.compiled import Catalog
    from crmseg.segments.store import History


def recorded_definitions(catalog: Catalog, history: History) -> dict[str, tuple[str, str]]:
    """segment -> (hash, definition JSON) as its latest run recorded it."""
    out: dict[str, tuple[str, str]] = {}
    for seg in catalog.segments:
        runs = history.history(seg.name)
        if runs:
            out[seg.name] = history.definitions_at(runs[-1]["run_id"])[seg.name]
    return out


def diff(
    catalog: Catalog,
    history: History,
    backend: Backend,
    tables: Mapping[str, ir.Table],
    sql: Mapping[str, ir.Table],
    at: datetime,
) -> list[dict[str, Any]]:
    """Per changed or new segment: added, removed and unchanged members with examples."""
    from crmseg.segments.compiled import Catalog
    from crmseg.segments.sql import recorded_sql, sql_tables

    recorded = recorded_definitions(catalog, history)
    changed = [s for s in catalog.segments if recorded.get(s.name, ("", ""))[0] != s.hash]
    if not changed:
        return []
    names = [s.name for s in changed]
    new = member_sets(backend, catalog.plan(tables), tables, at, sql, names)
    old_names = [n for n in names if n in recorded]
    old: dict[str, set[str]] = {n: set() for n in names}
    if old_names:
        bodies = {n: json.loads(recorded[n][1]) for n in old_names}
        old_segments = []
        for seg in catalog.segments:
            if seg.name in bodies:
                body = bodies[seg.name]
                definition = replace(seg.definition, text=body.get("rule"), sql=body.get("sql"))
                spec = seg.spec.model_copy(
                    update={"rule": body.get("rule"), "sql": body.get("sql")}
                )
                seg = replace(seg, spec=spec, definition=definition)
            old_segments.append(seg)
        before = Catalog(catalog.config, old_segments, catalog.traits, catalog.model_provider)
        old_sql = dict(sql)
        sql_bodies = {n: q for n in old_names if (q := recorded_sql(recorded[n][1])) is not None}
        if sql_bodies:
            chosen = [s for s in old_segments if s.name in sql_bodies]
            old_sql.update(sql_tables(backend, chosen, sql_bodies))
        old.update(member_sets(backend, before.plan(tables), tables, at, old_sql, old_names))
    out = []
    for name in names:
        added = sorted(new[name] - old[name])
        removed = sorted(old[name] - new[name])
        out.append(
            {
                "segment": name,
                "status": "changed" if name in recorded else "new",
                "added": len(added),
                "removed": len(removed),
                "unchanged": len(new[name] & old[name]),
                "examples_added": added[:5],
                "examples_removed": removed[:5],
                "as_of": at,
            }
        )
    return out


def member_sets(
    backend: Backend,
    plan: Plan,
    tables: Mapping[str, ir.Table],
    at: datetime,
    sql: Mapping[str, ir.Table],
    names: Sequence[str],
) -> dict[str, set[str]]:
    import pyarrow.compute as pc

    wide = plan.wide(tables, at, sql, select=list(names))
    result = backend.execute(wide.select("customer_id", *names))
    ids = result.column("customer_id")
    return {n: set(pc.filter(ids, result.column(n)).to_pylist()) for n in names}


def definition_history(recorded: list[dict[str, Any]], current: Segment) -> list[dict[str, Any]]:
    """Each definition a segment ran with (``History.definitions``) and, last, its working
    one when no run used it yet; each with a unified diff of its rule (or SQL) against the
    one before."""
    import difflib

    versions = [dict(v) for v in recorded]
    if not versions or versions[-1]["definition_hash"] != current.hash:
        body = json.loads(current.recorded)
        versions.append({"run_id": None, "as_of": None, "definition_hash": current.hash,
                         "definition": body})  # fmt: skip
    before: list[str] = []
    for v in versions:
        text = (v["definition"].get("rule") or v["definition"].get("sql") or "").splitlines()
        v["text"] = "\n".join(text)
        v["diff"] = (
            "\n".join(difflib.unified_diff(before, text, "before", "after", lineterm="", n=2))
            if before
            else ""
        )
        before = text
    return versions
