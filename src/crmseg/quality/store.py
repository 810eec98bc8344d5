"""Quality findings per run in the state database, so trends are visible.

Every run stores the report it was judged by: the one its load checked, or, when no source
changed since, the previous report again (``checked_at`` says when it was computed).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from crmseg.quality.checks import Finding, QualityReport

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

MIGRATIONS: list[list[str]] = [
    [
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
    ],
    # 2: enough to rebuild a report (a run that loads nothing reuses the last one).
    [
        "ALTER TABLE quality_findings ADD COLUMN max_rate DOUBLE DEFAULT 0",
        "ALTER TABLE quality_findings ADD COLUMN checked_at TIMESTAMP",
        """CREATE TABLE IF NOT EXISTS quality_reports (
            run_id INTEGER PRIMARY KEY,
            as_of TIMESTAMP NOT NULL,
            checked_at TIMESTAMP NOT NULL,
            reused BOOLEAN NOT NULL
        )""",
        "INSERT INTO quality_reports SELECT run_id, max(as_of), max(as_of), false "
        "FROM quality_findings GROUP BY run_id",
    ],
    # 3: examples stored before they were masked lose their personal data (new ones are
    # masked when found, keeping their shape; these old ones become "***").
    [
        "UPDATE quality_findings SET examples = regexp_replace(examples, "
        '\'"(email|phone|first_name|last_name|birth_date|city|region|company|id_value)": '
        '"([^"\\\\]|\\\\.)*"\', \'"\\1": "***"\', \'g\') '
        "WHERE table_name IN ('customers', 'identifiers')"
    ],
    # 4: the report's order kept in a column (not every engine has insertion-ordered row
    # ids); older reports order by check, table and column
    ["ALTER TABLE quality_findings ADD COLUMN seq INTEGER DEFAULT 0"],
]

_COLUMNS = (
    "run_id, as_of, check_name, table_name, column_name, severity, level, affected, total, "
    "rate, message, examples, max_rate, checked_at, seq"
)


class QualityStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("quality", MIGRATIONS)

    def save(
        self, run_id: int, as_of: datetime, report: QualityReport, reused: bool = False
    ) -> None:
        """Store the report a run was judged by (replacing any stored for that run)."""
        n = len(report.findings)
        findings = pa.table(
            {
                "run_id": pa.array([run_id] * n, pa.int32()),
                "as_of": pa.array([as_of] * n, pa.timestamp("us")),
                "check_name": pa.array([f.check for f in report.findings], pa.string()),
                "table_name": pa.array([f.table for f in report.findings], pa.string()),
                "column_name": pa.array([f.column for f in report.findings], pa.string()),
                "severity": pa.array([f.severity for f in report.findings], pa.string()),
                "level": pa.array([f.level for f in report.findings], pa.string()),
                "affected": pa.array([f.affected for f in report.findings], pa.int64()),
                "total": pa.array([f.total for f in report.findings], pa.int64()),
                "rate": pa.array([f.rate for f in report.findings], pa.float64()),
                "message": pa.array([f.message for f in report.findings], pa.string()),
                "examples": pa.array(
                    [json.dumps(f.examples, default=str) for f in report.findings], pa.string()
                ),
                "max_rate": pa.array([f.max_rate for f in report.findings], pa.float64()),
                "checked_at": pa.array([report.as_of] * n, pa.timestamp("us")),
                "seq": pa.array(range(n), pa.int32()),
            }
        )
        names = pa.table(
            {
                "run_id": pa.array([run_id] * len(report.event_names), pa.int32()),
                "name": pa.array(list(report.event_names), pa.string()),
                "events": pa.array(list(report.event_names.values()), pa.int64()),
            }
        )
        s = self.state
        with s.transaction():
            for table in ("quality_findings", "quality_event_names", "quality_reports"):
                s.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            with s.registered(_q_findings=findings):
                s.execute(f"INSERT INTO quality_findings ({_COLUMNS}) SELECT * FROM _q_findings")
            s.insert("quality_event_names", names)
            s.execute(
                "INSERT INTO quality_reports VALUES (?, ?, ?, ?)",
                [run_id, as_of, report.as_of, reused],
            )

    def latest(self) -> QualityReport | None:
        """The report of the newest run that stored one (as it was checked)."""
        rows = self.state.rows(
            "SELECT run_id, checked_at FROM quality_reports ORDER BY run_id DESC LIMIT 1"
        )
        if not rows:
            return None
        run_id, checked_at = rows[0]
        found = self.state.rows(
            "SELECT check_name, table_name, column_name, affected, total, severity, max_rate, "
            "message, examples FROM quality_findings WHERE run_id = ? "
            "ORDER BY seq, check_name, table_name, column_name",
            [run_id],
        )
        findings = [
            Finding(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], float(r[6] or 0), r[7],
                    json.loads(r[8]))
            for r in found
        ]  # fmt: skip
        names = self.state.rows(
            "SELECT name, events FROM quality_event_names WHERE run_id = ?", [run_id]
        )
        return QualityReport(checked_at, findings, {n: int(e) for n, e in names})

    def previous_event_names(self, before: datetime | None = None) -> set[str] | None:
        """Event names stored by the latest run with names (at or before ``before``)."""
        rows = self.state.rows(
            "SELECT DISTINCT q.run_id, r.as_of FROM quality_event_names q "
            "JOIN quality_reports r USING (run_id) "
            "WHERE (CAST($before AS TIMESTAMP) IS NULL OR r.as_of <= $before) "
            "ORDER BY r.as_of DESC, q.run_id DESC LIMIT 1",
            {"before": before},
        )
        if not rows:
            return None
        names = self.state.rows(
            "SELECT name FROM quality_event_names WHERE run_id = ?", [rows[0][0]]
        )
        return {r[0] for r in names}

    def trend(self, limit: int = 10) -> list[dict[str, Any]]:
        """Affected counts per check and table over the last ``limit`` runs, oldest first."""
        rows = self.state.rows(
            "WITH last AS (SELECT DISTINCT run_id, as_of FROM quality_findings "
            "ORDER BY as_of DESC, run_id DESC LIMIT ?) "
            "SELECT q.run_id, q.as_of, q.check_name, q.table_name, q.column_name, q.level, "
            "q.affected, q.total, q.rate FROM quality_findings q JOIN last USING (run_id) "
            "ORDER BY q.as_of, q.run_id, q.check_name, q.table_name, q.column_name",
            [limit],
        )
        keys = ("run_id", "as_of", "check", "table", "column", "level", "affected", "total", "rate")
        return [dict(zip(keys, r, strict=True)) for r in rows]
