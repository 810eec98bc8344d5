"""Quality findings per run in the state database, so trends are visible.

Our own tables, created by an idempotent migration on first write. Reads never create them
(a failed run must leave the state file untouched).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore
    from crmseg.quality.checks import QualityReport

_DDL = [
    """CREATE TABLE IF NOT EXISTS quality_findings (
        run_id INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        check_name VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL,
        column_name VARCHAR,
        severity VARCHAR NOT NULL,
        level VARCHAR NOT NULL,
        affected BIGINT NOT NULL,
        total BIGINT NOT NULL,
        rate DOUBLE NOT NULL,
        message VARCHAR NOT NULL,
        examples VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS quality_event_names (
        run_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        events BIGINT NOT NULL
    )""",
]


def migrate(state: StateStore) -> None:
    state.ensure(_DDL)


def save(state: StateStore, run_id: int, report: QualityReport) -> None:
    """Store a run's findings and event names (one transaction)."""
    migrate(state)
    findings = pa.table(
        {
            "run_id": pa.array([run_id] * len(report.findings), pa.int32()),
            "as_of": pa.array([report.as_of] * len(report.findings), pa.timestamp("us")),
            "check_name": [f.check for f in report.findings],
            "table_name": [f.table for f in report.findings],
            "column_name": pa.array([f.column for f in report.findings], pa.string()),
            "severity": [f.severity for f in report.findings],
            "level": [f.level for f in report.findings],
            "affected": pa.array([f.affected for f in report.findings], pa.int64()),
            "total": pa.array([f.total for f in report.findings], pa.int64()),
            "rate": pa.array([f.rate for f in report.findings], pa.float64()),
            "message": [f.message for f in report.findings],
            "examples": [json.dumps(f.examples, default=str) for f in report.findings],
        }
    )
    names = pa.table(
        {
            "run_id": pa.array([run_id] * len(report.event_names), pa.int32()),
            "name": pa.array(list(report.event_names), pa.string()),
            "events": pa.array(list(report.event_names.values()), pa.int64()),
        }
    )
    with state.transaction():
        state.con.register("_q_findings", findings)
        state.con.register("_q_names", names)
        try:
            state.con.execute("DELETE FROM quality_findings WHERE run_id = ?", [run_id])
            state.con.execute("DELETE FROM quality_event_names WHERE run_id = ?", [run_id])
            state.con.execute("INSERT INTO quality_findings SELECT * FROM _q_findings")
            state.con.execute("INSERT INTO quality_event_names SELECT * FROM _q_names")
        finally:
            state.con.unregister("_q_findings")
            state.con.unregister("_q_names")


def previous_event_names(state: StateStore, before: datetime | None = None) -> set[str] | None:
    """Event names stored by the latest run with names (at or before ``before``); None if none."""
    if not state.has_table("quality_event_names") or not state.has_table("runs"):
        return None
    where = "WHERE r.as_of <= ?" if before is not None else ""
    params: list[Any] = [before] if before is not None else []
    rows = state.con.execute(
        "SELECT q.run_id FROM quality_event_names q JOIN runs r USING (run_id) "
        f"{where} ORDER BY r.as_of DESC, q.run_id DESC LIMIT 1",
        params,
    ).fetchall()
    if not rows:
        return None
    names = state.con.execute(
        "SELECT name FROM quality_event_names WHERE run_id = ?", [rows[0][0]]
    ).fetchall()
    return {r[0] for r in names}


def trend(state: StateStore, limit: int = 10) -> list[dict[str, Any]]:
    """Affected counts per check and table over the last ``limit`` runs, oldest first."""
    if not state.has_table("quality_findings"):
        return []
    rows = state.con.execute(
        "WITH last AS (SELECT DISTINCT run_id, as_of FROM quality_findings "
        "ORDER BY as_of DESC, run_id DESC LIMIT ?) "
        "SELECT q.run_id, q.as_of, q.check_name, q.table_name, q.column_name, q.level, "
        "q.affected, q.total, q.rate FROM quality_findings q JOIN last USING (run_id) "
        "ORDER BY q.as_of, q.run_id, q.check_name, q.table_name, q.column_name",
        [limit],
    ).fetchall()
    keys = ("run_id", "as_of", "check", "table", "column", "level", "affected", "total", "rate")
    return [dict(zip(keys, r, strict=True)) for r in rows]
