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
import re
from collections.abc import Iterator, Mapping, Sequence
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

    def has_table(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()
        return bool(rows[0][0])

    def ensure(self, statements: Sequence[str]) -> None:
        """Run a stage's idempotent ``CREATE TABLE IF NOT EXISTS`` statements (its migration)."""
        for statement in statements:
            self.con.execute(statement)

    def _has_tables(self) -> bool:
        return self.has_table("runs")

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

        Runs may come in any time order (backfills): each run is a snapshot of membership at
        its as_of, and intervals always equal what the snapshots say when read in as_of order
        (see docs/history.md). A run at an instant that already has one replaces that
        instant's snapshot. ``fail_after`` injects a failure after that many segments (tests
        of atomicity).
        """
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
                self._splice(run_id, as_of, result)
        return RunRecord(run_id, as_of, started_at, finished_at, customers, dict(sources))

    def _next_run_id(self) -> int:
        rows = self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()
        return int(rows[0][0])

    def _next_instant(self, segment: str, at: datetime) -> tuple[datetime, int] | None:
        """The first later instant with a run of this segment, and that run's id."""
        rows = self.con.execute(
            "SELECT r.as_of, max(r.run_id) FROM runs r JOIN run_segments s USING (run_id) "
            "WHERE s.segment = ? AND r.as_of > ? GROUP BY r.as_of ORDER BY r.as_of LIMIT 1",
            [segment, at],
        ).fetchall()
        return (rows[0][0], int(rows[0][1])) if rows else None

    def _splice(self, run_id: int, at: datetime, result: SegmentResult) -> None:
        """Make the intervals agree with this snapshot at ``at``, whatever runs surround it.

        ``old`` is who the intervals say was a member at ``at``; customers who leave get their
        interval cut at ``at`` (resuming at the next run instant if they were still members
        then); customers who join get an interval from ``at`` to the next run instant, merged
        with an interval that ends exactly at ``at`` or starts at the next instant.
        """
        seg = result.segment
        nxt = self._next_instant(seg, at)
        n_at, n_run = nxt if nxt else (None, None)
        con = self.con
        con.register(
            "current_members", pa.table({"customer_id": pa.array(result.members, pa.string())})
        )
        try:
            active = (
                "segment = $seg AND entered_at <= $at AND (exited_at IS NULL OR exited_at > $at)"
            )
            params: dict[str, Any] = {"seg": seg, "at": at}
            self._x(
                "CREATE OR REPLACE TEMP TABLE old_members AS "
                f"SELECT DISTINCT customer_id FROM memberships WHERE {active}",
                params,
            )
            self._x(
                "CREATE OR REPLACE TEMP TABLE leaving AS SELECT customer_id FROM old_members "
                "EXCEPT SELECT customer_id FROM current_members"
            )
            self._x(
                "CREATE OR REPLACE TEMP TABLE joining AS SELECT customer_id FROM current_members "
                "EXCEPT SELECT customer_id FROM old_members"
            )
            # Leaving: the part of their interval after the next instant survives.
            if n_at is not None:
                self._x(
                    "INSERT INTO memberships SELECT segment, customer_id, $n, exited_at, "
                    f"definition_hash, $nrun, exited_run FROM memberships WHERE {active} "
                    "AND customer_id IN (SELECT customer_id FROM leaving) "
                    "AND (exited_at IS NULL OR exited_at > $n)",
                    {**params, "n": n_at, "nrun": n_run},
                )
            self._x(
                f"DELETE FROM memberships WHERE {active} AND entered_at = $at "
                "AND customer_id IN (SELECT customer_id FROM leaving)",
                params,
            )
            self._x(
                f"UPDATE memberships SET exited_at = $at, exited_run = $run WHERE {active} "
                "AND customer_id IN (SELECT customer_id FROM leaving)",
                {**params, "run": run_id},
            )
            # Joining: P = an interval ending exactly at `at`, Q = one starting at the next
            # instant. P+Q merge, P extends, Q starts earlier, or a new interval opens.
            self._x(
                "CREATE OR REPLACE TEMP TABLE p_end AS SELECT customer_id FROM memberships "
                "WHERE segment = $seg AND exited_at = $at "
                "AND customer_id IN (SELECT customer_id FROM joining)",
                params,
            )
            self._x(
                "CREATE OR REPLACE TEMP TABLE q_start AS "
                "SELECT customer_id, exited_at, exited_run FROM memberships "
                "WHERE segment = $seg AND $n IS NOT NULL AND entered_at = $n "
                "AND customer_id IN (SELECT customer_id FROM joining)",
                {**params, "n": n_at},
            )
            self._x(
                "UPDATE memberships m SET exited_at = q.exited_at, exited_run = q.exited_run "
                "FROM q_start q WHERE m.segment = $seg AND m.exited_at = $at "
                "AND m.customer_id = q.customer_id",
                params,
            )
            self._x(
                "DELETE FROM memberships WHERE segment = $seg AND entered_at = $n "
                "AND customer_id IN (SELECT customer_id FROM q_start) "
                "AND customer_id IN (SELECT customer_id FROM p_end)",
                {**params, "n": n_at},
            )
            self._x(
                "UPDATE memberships SET exited_at = $n, exited_run = $nrun "
                "WHERE segment = $seg AND exited_at = $at "
                "AND customer_id IN (SELECT customer_id FROM p_end) "
                "AND customer_id NOT IN (SELECT customer_id FROM q_start)",
                {**params, "n": n_at, "nrun": n_run},
            )
            self._x(
                "UPDATE memberships SET entered_at = $at, entered_run = $run, "
                "definition_hash = $hash WHERE segment = $seg AND entered_at = $n "
                "AND customer_id IN (SELECT customer_id FROM q_start) "
                "AND customer_id NOT IN (SELECT customer_id FROM p_end)",
                {**params, "n": n_at, "run": run_id, "hash": result.definition_hash},
            )
            self._x(
                "INSERT INTO memberships SELECT $seg, customer_id, $at, $n, $hash, $run, $nrun "
                "FROM joining WHERE customer_id NOT IN (SELECT customer_id FROM p_end) "
                "AND customer_id NOT IN (SELECT customer_id FROM q_start)",
                {**params, "n": n_at, "hash": result.definition_hash, "run": run_id, "nrun": n_run},
            )
        finally:
            con.unregister("current_members")
        entered, exited = self._flow(seg, at)
        self._x(
            "INSERT INTO run_segments VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                seg,
                result.definition_hash,
                result.definition,
                len(result.members),
                entered,
                exited,
            ],
        )
        if n_at is not None and n_run is not None:
            n_entered, n_exited = self._flow(seg, n_at)
            self._x(
                "UPDATE run_segments SET entered = ?, exited = ? WHERE run_id = ? AND segment = ?",
                [n_entered, n_exited, n_run, seg],
            )

    def _x(self, sql: str, params: Mapping[str, Any] | list[Any] | None = None) -> Any:
        """Execute with only the named parameters the statement uses (DuckDB insists)."""
        if isinstance(params, Mapping):
            used = set(re.findall(r"\$([a-z_]+)", sql))
            return self.con.execute(sql, {k: v for k, v in params.items() if k in used})
        return self.con.execute(sql, params or [])

    def _flow(self, segment: str, at: datetime) -> tuple[int, int]:
        """(entered, exited) at an instant: intervals start and end only at run instants."""
        rows = self.con.execute(
            "SELECT count(*) FILTER (WHERE entered_at = $at), "
            "count(*) FILTER (WHERE exited_at = $at) FROM memberships WHERE segment = $seg",
            {"seg": segment, "at": at},
        ).fetchall()
        return int(rows[0][0]), int(rows[0][1])

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

    def history(self, segment: str) -> list[dict[str, Any]]:
        """Size, entered and exited per run of a segment, in as_of order."""
        rows = self.con.execute(
            "SELECT r.run_id, r.as_of, r.customers, s.size, s.entered, s.exited, "
            "s.definition_hash FROM run_segments s JOIN runs r USING (run_id) "
            "WHERE s.segment = ? "
            # A rerun at the same instant replaced the earlier snapshot: show the newest only.
            "QUALIFY row_number() OVER (PARTITION BY r.as_of ORDER BY r.run_id DESC) = 1 "
            "ORDER BY r.as_of, r.run_id",
            [segment],
        ).fetchall()
        keys = ("run_id", "as_of", "customers", "size", "entered", "exited", "definition_hash")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def definitions_at(self, run_id: int) -> dict[str, tuple[str, str]]:
        """segment -> (definition hash, definition JSON) recorded by a run."""
        rows = self.con.execute(
            "SELECT segment, definition_hash, definition FROM run_segments WHERE run_id = ?",
            [run_id],
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def first_seen(self, segment: str, definition_hash: str) -> datetime | None:
        """The as_of of the first run that used this definition of the segment."""
        rows = self.con.execute(
            "SELECT min(r.as_of) FROM run_segments s JOIN runs r USING (run_id) "
            "WHERE s.segment = ? AND s.definition_hash = ?",
            [segment, definition_hash],
        ).fetchall()
        return rows[0][0] if rows else None

    def intervals(self, customer_id: str) -> list[dict[str, Any]]:
        """Every membership interval of one customer, by segment and time."""
        rows = self.con.execute(
            "SELECT segment, entered_at, exited_at, definition_hash FROM memberships "
            "WHERE customer_id = ? ORDER BY segment, entered_at",
            [customer_id],
        ).fetchall()
        keys = ("segment", "entered_at", "exited_at", "definition_hash")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def overlap(self, segments: list[str], at: datetime) -> list[tuple[str, str, int]]:
        """(a, b, shared members) for every ordered pair at an instant (a == b: size)."""
        self.con.register("chosen", pa.table({"segment": pa.array(segments, pa.string())}))
        try:
            rows = self.con.execute(
                "WITH m AS (SELECT segment, customer_id FROM memberships WHERE entered_at <= $at "
                "AND (exited_at IS NULL OR exited_at > $at) "
                "AND segment IN (SELECT segment FROM chosen)) "
                "SELECT a.segment, b.segment, count(*) FROM m a JOIN m b USING (customer_id) "
                "GROUP BY ALL",
                {"at": at},
            ).fetchall()
        finally:
            self.con.unregister("chosen")
        return [(r[0], r[1], int(r[2])) for r in rows]

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
