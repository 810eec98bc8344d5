"""The state database: runs, segment membership intervals and logs (a DuckDB file).

Membership is stored as intervals ``(segment, customer_id, entered_at, exited_at,
definition_hash)``: a customer is a member at instant D when ``entered_at <= D`` and
``exited_at`` is null or later than D. Every run writes its record and all of its interval
changes in one transaction, so a crash leaves the previous state intact.

This is crmseg's own schema, so its statements are fixed text with parameters; user data only
ever enters as parameters or registered Arrow tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from crmseg.errors import StateError

SCHEMA_VERSION = 1

_DDL = [
    """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id INTEGER PRIMARY KEY,
        as_of TIMESTAMP NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        customers BIGINT NOT NULL,
        sources VARCHAR NOT NULL,
        version VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS run_segments (
        run_id INTEGER NOT NULL,
        segment VARCHAR NOT NULL,
        definition_hash VARCHAR NOT NULL,
        definition VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        entered BIGINT NOT NULL,
        exited BIGINT NOT NULL,
        PRIMARY KEY (run_id, segment)
    )""",
    """CREATE TABLE IF NOT EXISTS memberships (
        segment VARCHAR NOT NULL,
        customer_id VARCHAR NOT NULL,
        entered_at TIMESTAMP NOT NULL,
        exited_at TIMESTAMP,
        definition_hash VARCHAR NOT NULL,
        entered_run INTEGER NOT NULL,
        exited_run INTEGER
    )""",
]


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    as_of: datetime
    started_at: datetime
    finished_at: datetime
    customers: int
    sources: dict[str, int]


@dataclass(frozen=True)
class SegmentResult:
    """One segment's outcome in a run."""

    segment: str
    definition_hash: str
    definition: str
    members: pa.Array  # customer ids (strings)


class StateStore:
    """Runs and membership history in a DuckDB file (or in memory for tests)."""

    def __init__(self, path: Path | str = ":memory:", read_only: bool = False) -> None:
        import duckdb

        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            self.con = duckdb.connect(":memory:")
        else:
            try:
                self.con = duckdb.connect(self.path, read_only=read_only)
            except duckdb.Error as exc:
                raise StateError(
                    f"cannot open the state database {self.path}: {_first(exc)} "
                    "(is another crmseg process using it?)"
                ) from exc
        self.con.execute("SET TimeZone = 'UTC'")
        if not read_only or self.path == ":memory:":
            self._migrate()

    def _migrate(self) -> None:
        for statement in _DDL:
            self.con.execute(statement)
        row = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        if not row:
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        elif int(row[0][0]) > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer crmseg (state schema {row[0][0]}); upgrade"
            )

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _has_tables(self) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'"
        ).fetchall()
        return bool(rows[0][0])

    # --- runs ------------------------------------------------------------------------------

    def last_run(self) -> RunRecord | None:
        if not self._has_tables():
            return None
        rows = self.con.execute(
            "SELECT run_id, as_of, started_at, finished_at, customers, sources FROM runs "
            "ORDER BY as_of DESC, run_id DESC LIMIT 1"
        ).fetchall()
        return _run(rows[0]) if rows else None

    def runs(self) -> list[RunRecord]:
        if not self._has_tables():
            return []
        rows = self.con.execute(
            "SELECT run_id, as_of, started_at, finished_at, customers, sources FROM runs "
            "ORDER BY as_of, run_id"
        ).fetchall()
        return [_run(r) for r in rows]

    def record_run(
        self,
        as_of: datetime,
        started_at: datetime,
        finished_at: datetime,
        customers: int,
        sources: Mapping[str, int],
        results: list[SegmentResult],
        version: str,
        fail_after: int | None = None,
    ) -> RunRecord:
        """Write a run and its membership changes atomically.

        Runs move forward in time: an as_of earlier than the last run's is refused (history
        backfill is its own feature). A run at the same as_of as the last one replaces that
        instant's memberships.
        ``fail_after`` injects a failure after that many segments (tests of atomicity).
        """
        last = self.last_run()
        if last is not None and as_of < last.as_of:
            raise StateError(
                f"as_of {as_of:%Y-%m-%d %H:%M:%S} is before the last run's "
                f"({last.as_of:%Y-%m-%d %H:%M:%S}); runs must move forward in time"
            )
        with self.transaction():
            run_id = self._next_run_id()
            self.con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    as_of,
                    started_at,
                    finished_at,
                    customers,
                    json.dumps(dict(sources), sort_keys=True),
                    version,
                ],
            )
            for i, result in enumerate(results):
                if fail_after is not None and i >= fail_after:
                    raise StateError(f"injected failure after {fail_after} segments")
                entered, exited = self._apply(run_id, as_of, result)
                self.con.execute(
                    "INSERT INTO run_segments VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        result.segment,
                        result.definition_hash,
                        result.definition,
                        len(result.members),
                        entered,
                        exited,
                    ],
                )
        return RunRecord(run_id, as_of, started_at, finished_at, customers, dict(sources))

    def _next_run_id(self) -> int:
        rows = self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()
        return int(rows[0][0])

    def _apply(self, run_id: int, as_of: datetime, result: SegmentResult) -> tuple[int, int]:
        """Close intervals of customers who left, open intervals for those who entered."""
        current = pa.table({"customer_id": pa.array(result.members, pa.string())})
        self.con.register("current_members", current)
        try:
            exited = self.con.execute(
                "UPDATE memberships SET exited_at = ?, exited_run = ? "
                "WHERE segment = ? AND exited_at IS NULL "
                "AND customer_id NOT IN (SELECT customer_id FROM current_members)",
                [as_of, run_id, result.segment],
            ).fetchall()[0][0]
            entered = self.con.execute(
                "INSERT INTO memberships "
                "SELECT ?, c.customer_id, ?, NULL, ?, ?, NULL FROM current_members c "
                "WHERE c.customer_id NOT IN (SELECT customer_id FROM memberships "
                "WHERE segment = ? AND exited_at IS NULL)",
                [result.segment, as_of, result.definition_hash, run_id, result.segment],
            ).fetchall()[0][0]
            # A rerun at the same instant can close an interval it opened: such an interval
            # was never visible to any as-of query.
            self.con.execute(
                "DELETE FROM memberships WHERE segment = ? AND exited_at <= entered_at",
                [result.segment],
            )
        finally:
            self.con.unregister("current_members")
        return int(entered), int(exited)

    # --- queries ---------------------------------------------------------------------------

    def run_at(self, as_of: datetime | None) -> RunRecord | None:
        """The latest run at or before ``as_of`` (or the latest run)."""
        if as_of is None:
            return self.last_run()
        if not self._has_tables():
            return None
        rows = self.con.execute(
            "SELECT run_id, as_of, started_at, finished_at, customers, sources FROM runs "
            "WHERE as_of <= ? ORDER BY as_of DESC, run_id DESC LIMIT 1",
            [as_of],
        ).fetchall()
        return _run(rows[0]) if rows else None

    def segments_in_run(self, run_id: int) -> dict[str, dict[str, Any]]:
        rows = self.con.execute(
            "SELECT segment, definition_hash, size, entered, exited FROM run_segments "
            "WHERE run_id = ? ORDER BY segment",
            [run_id],
        ).fetchall()
        return {
            r[0]: {"definition_hash": r[1], "size": r[2], "entered": r[3], "exited": r[4]}
            for r in rows
        }

    def members(self, segment: str, at: datetime) -> list[str]:
        rows = self.con.execute(
            "SELECT customer_id FROM memberships WHERE segment = ? AND entered_at <= ? "
            "AND (exited_at IS NULL OR exited_at > ?) ORDER BY customer_id",
            [segment, at, at],
        ).fetchall()
        return [r[0] for r in rows]


def _run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
