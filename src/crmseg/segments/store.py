"""Runs and membership history in the state database.

Membership is stored as intervals ``(segment, customer, entered_at, exited_at)`` with the runs
that opened and closed them: a customer is a member at instant D when ``entered_at <= D`` and
``exited_at`` is null or later than D. An interval's definition is the one recorded by the run
it started in. Every run writes its record and all of its interval changes in one
transaction, so a crash leaves the previous history intact.

Intervals are keyed by integers (``segment_keys``, ``people``); the view ``memberships`` shows
them with names. A run's memberships arrive as one Arrow table of keys and are spliced into the
intervals of all its segments at once by a fixed number of set-based statements, whatever the
number of segments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crmseg.backends.state import StateStore
from crmseg.errors import StateError

MIGRATIONS: list[list[str]] = [
    [
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
    ],
    # 2: what each run did (sources loaded or reused, fits, thresholds) and each segment's
    # English, so interactive commands answer from the record.
    [
        "ALTER TABLE runs ADD COLUMN details VARCHAR DEFAULT '{}'",
        "ALTER TABLE run_segments ADD COLUMN english VARCHAR DEFAULT ''",
    ],
    # 3: intervals keyed by integers (writing and joining strings dominated a run's cost);
    # ``memberships`` stays as a view with the names. An interval's definition is the one of
    # the run it (re)started in.
    [
        "CREATE TABLE segment_keys (sid INTEGER NOT NULL, segment VARCHAR NOT NULL)",
        "CREATE TABLE people (pid INTEGER NOT NULL, customer_id VARCHAR NOT NULL)",
        """CREATE TABLE intervals (
            sid INTEGER NOT NULL,
            pid INTEGER NOT NULL,
            entered_at TIMESTAMP NOT NULL,
            exited_at TIMESTAMP,
            entered_run INTEGER NOT NULL,
            exited_run INTEGER
        )""",
        "INSERT INTO segment_keys SELECT row_number() OVER (ORDER BY segment), segment "
        "FROM (SELECT segment FROM memberships UNION SELECT segment FROM run_segments)",
        "INSERT INTO people SELECT row_number() OVER (ORDER BY customer_id), customer_id "
        "FROM (SELECT DISTINCT customer_id FROM memberships)",
        "INSERT INTO intervals SELECT s.sid, p.pid, m.entered_at, m.exited_at, m.entered_run, "
        "m.exited_run FROM memberships m JOIN segment_keys s USING (segment) "
        "JOIN people p USING (customer_id)",
        "DROP TABLE memberships",
        "CREATE VIEW memberships AS SELECT s.segment, p.customer_id, i.entered_at, "
        "i.exited_at, i.entered_run, i.exited_run FROM intervals i "
        "JOIN segment_keys s USING (sid) JOIN people p USING (pid)",
    ],
]

_RUN_COLUMNS = "run_id, as_of, started_at, finished_at, customers, sources, details"
STREAM_RUN = 0  # the run of interval boundaries made by real time (runs count from 1)


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    as_of: datetime
    started_at: datetime
    finished_at: datetime
    customers: int
    sources: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentResult:
    """One segment's outcome in a run."""

    segment: str
    definition_hash: str
    definition: str
    members: pa.Array  # customer ids (strings)
    english: str = ""


class History:
    """Runs, segment results and membership intervals (the segments stage's store)."""

    def __init__(self, state: StateStore, remember: bool = False) -> None:
        self.state = state
        # person keys -> pid, kept between calls (``remember``: a writer that is the only
        # one while it lives, such as the stream processor; on a shared state, where
        # another process's run adds people meanwhile, new ones are looked up first)
        self._people: dict[str, int] | None = {} if remember else None
        self._top = 0  # the highest pid in _people
        self._sids: dict[str, int] = {}  # segment -> sid, with remember
        state.migrate("segments", MIGRATIONS)

    def forget(self, customer_ids: pa.Array) -> int:
        """Delete the membership intervals of these customers (their keys go with the other
        rows naming them, see :meth:`crmseg.backends.state.StateStore.scrub`). Sizes recorded
        per run stay: they are counts, not people."""
        s = self.state
        if not s.has_table("people"):
            return 0
        with s.registered(__gone=pa.table({"customer_id": customer_ids})):
            gone = "SELECT pid FROM people WHERE customer_id IN (SELECT customer_id FROM __gone)"
            n = int(s.rows(f"SELECT count(*) FROM intervals WHERE pid IN ({gone})")[0][0])
            s.execute(f"DELETE FROM intervals WHERE pid IN ({gone})")
        return n

    # --- writing a run ------------------------------------------------------------------------

    def record_run(
        self,
        as_of: datetime,
        started_at: datetime,
        finished_at: datetime,
        customers: int,
        sources: Mapping[str, int],
        results: Sequence[SegmentResult],
        version: str,
        details: Mapping[str, Any] | None = None,
        fail_after: int | None = None,
    ) -> RunRecord:
        """Write a run and its membership changes atomically.

        Runs may come in any time order (backfills): each run is a snapshot of membership at
        its as_of, and intervals always equal what the snapshots say when read in as_of order
        (see docs/history.md). A run at an instant that already has one replaces that
        instant's snapshot. ``fail_after`` injects a failure once that many segments are
        written (tests of atomicity).
        """
        state = self.state
        info = dict(details or {})
        with state.transaction():
            state.exclusive()  # new keys and the run's id are this writer's
            chosen, members = self._keyed(results)
            run_id = int(state.rows("SELECT coalesce(max(run_id), 0) + 1 FROM runs")[0][0])
            state.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    as_of,
                    started_at,
                    finished_at,
                    customers,
                    json.dumps(dict(sources), sort_keys=True),
                    json.dumps(info, sort_keys=True, default=str),
                    version,
                ],
            )
            with state.registered(_chosen=chosen):
                self._splice(run_id, as_of, members)
            if fail_after is not None:
                raise StateError(f"injected failure after {fail_after} segments")
        return RunRecord(run_id, as_of, started_at, finished_at, customers, dict(sources), info)

    def _keyed(self, results: Sequence[SegmentResult]) -> tuple[pa.Table, pa.Table]:
        """The run's segments (one row each, with their sid) and all of its memberships as
        one Arrow table of (sid, pid); unseen segments and customers get new keys."""
        s = self.state
        names = [r.segment for r in results]
        chosen = pa.table(
            {
                "segment": pa.array(names, pa.string()),
                "definition_hash": pa.array([r.definition_hash for r in results], pa.string()),
                "definition": pa.array([r.definition for r in results], pa.string()),
                "size": pa.array([len(r.members) for r in results], pa.int64()),
                "english": pa.array([r.english for r in results], pa.string()),
            }
        )
        order = pa.array(np.arange(len(names), dtype=np.int64))
        with s.registered(_names=chosen.select(["segment"]).append_column("i", order)):
            s.execute(
                "INSERT INTO segment_keys SELECT (SELECT coalesce(max(sid), 0) FROM "
                "segment_keys) + row_number() OVER (ORDER BY segment), segment FROM _names "
                "WHERE segment NOT IN (SELECT segment FROM segment_keys)"
            )
            sids = s.arrow(
                "SELECT k.sid FROM _names n JOIN segment_keys k USING (segment) ORDER BY n.i"
            ).column(0)
        chosen = chosen.append_column("sid", sids)
        unique, where = _positions([r.members for r in results])
        lookup = self._person_keys(unique)
        sizes = np.array([len(r.members) for r in results], dtype=np.int64)
        members = pa.table(
            {
                "sid": pa.array(np.repeat(sids.to_numpy(), sizes).astype(np.int32)),
                "pid": pa.array(lookup[where] if len(where) else lookup[:0]),
            }
        )
        return chosen, members

    def _segment_keys(self, names: Sequence[str]) -> pa.Array:
        """The sid of each of ``names``, giving unseen segments the next keys."""
        s = self.state
        order = pa.array(np.arange(len(names), dtype=np.int64))
        table = pa.table({"segment": pa.array(list(names), pa.string()), "i": order})
        with s.registered(_names=table):
            s.execute(
                "INSERT INTO segment_keys SELECT (SELECT coalesce(max(sid), 0) FROM "
                "segment_keys) + row_number() OVER (ORDER BY segment), segment FROM "
                "(SELECT DISTINCT segment FROM _names) "
                "WHERE segment NOT IN (SELECT segment FROM segment_keys)"
            )
            sids: pa.Array = (
                s.arrow("SELECT k.sid FROM _names n JOIN segment_keys k USING (segment) "
                        "ORDER BY n.i").column(0).combine_chunks()
            )  # fmt: skip
        return sids

    def apply_stream(self, changes: pa.Table) -> None:
        """Entries and exits made by real time: ``changes`` has segment, customer_id, change
        (entered or exited) and at, at most one per segment and person. An entry opens an
        interval, an exit closes the open one; their run is :data:`STREAM_RUN`. Call inside
        a transaction with the change log's rows."""
        if changes.num_rows == 0:
            return
        self.state.exclusive()  # new keys, and the open intervals it closes, are this writer's
        segment = changes.column("segment")
        names = pc.unique(segment)
        sids = self._stream_sids(names.to_pylist()).take(pc.index_in(segment, value_set=names))
        pids = self._stream_pids(changes.column("customer_id").to_pylist())
        keyed = pa.table(
            {
                "sid": sids.cast(pa.int32()),
                "pid": pa.array(pids, pa.int32()),
                "entered": pc.equal(changes.column("change"), "entered"),
                "changed_at": changes.column("at").cast(pa.timestamp("us")),
            }
        )
        entries = int(pc.sum(keyed.column("entered")).as_py() or 0)
        with self.state.registered(_stream_changes=keyed):
            if entries < keyed.num_rows:  # the update scans the intervals: only for exits
                self.state.execute(
                    "UPDATE intervals SET exited_at = c.changed_at, exited_run = 0 "
                    "FROM _stream_changes c WHERE NOT c.entered AND intervals.sid = c.sid "
                    "AND intervals.pid = c.pid AND intervals.exited_at IS NULL"
                )
            if entries:
                self.state.execute(
                    "INSERT INTO intervals SELECT sid, pid, changed_at, NULL, 0, NULL "
                    "FROM _stream_changes WHERE entered"
                )

    def _stream_sids(self, names: list[str]) -> pa.Array:
        """The sid of each of ``names`` (distinct); with ``remember``, from the ones this
        store has seen (a segment's key never changes once given)."""
        if self._people is None:
            return self._segment_keys(names)
        known = self._sids
        missing = [n for n in names if n not in known]
        if missing:
            known.update(zip(missing, self._segment_keys(missing).to_pylist(), strict=True))
        return pa.array([known[n] for n in names], pa.int64())

    def _known(self) -> dict[str, int]:
        """The person keys this store remembers, read on first use."""
        known = self._people
        assert known is not None
        if not known:
            known.update((str(c), int(p)) for p, c in self.state.rows(
                "SELECT pid, customer_id FROM people"))  # fmt: skip
            self._top = max(known.values(), default=0)
        return known

    def warm(self) -> None:
        """With ``remember``, read the person keys now (every person: a few hundred ms at
        500k), not on the first write that needs them."""
        if self._people is not None:
            self._known()

    def _stream_pids(self, ids: list[str]) -> np.ndarray:
        """The pid of each of ``ids``, new people numbered after the known ones; with
        ``remember``, from the keys this store has seen (no read of every person)."""
        if self._people is None:
            arrow = pa.array(ids, pa.string())
            unique = pc.unique(arrow)
            where = pc.index_in(arrow, value_set=unique).to_numpy()
            found: np.ndarray = self._person_keys(unique)[where]
            return found
        known = self._known()
        fresh = sorted(set(ids).difference(known))
        top = self._top
        if fresh and self.state.shared:
            # another process may have numbered them, or others, since the keys were read:
            # these are looked up, and new ones numbered after the stored top (the caller
            # holds the writers' turn, see ``apply_stream``)
            stored = self.state.rows(
                "SELECT pid, customer_id FROM people WHERE customer_id IN (SELECT unnest(?))",
                [fresh],
            )
            known.update((str(c), int(p)) for p, c in stored)
            fresh = [k for k in fresh if k not in known]
            top = int(self.state.rows("SELECT coalesce(max(pid), 0) FROM people")[0][0])
        if fresh:
            pids = np.arange(top + 1, top + 1 + len(fresh), dtype=np.int32)
            self.state.insert(
                "people",
                pa.table({"pid": pa.array(pids), "customer_id": pa.array(fresh, pa.string())}),
            )
            known.update(zip(fresh, (int(p) for p in pids), strict=True))
            self._top = top + len(fresh)
        return np.fromiter(map(known.__getitem__, ids), dtype=np.int32, count=len(ids))

    def latest_instant(self, segment: str) -> datetime | None:
        """The newest instant the segment's history knows: its last run, or a later entry
        or exit made by real time."""
        rows = self.state.rows(
            "SELECT max(x) FROM (SELECT max(r.as_of) AS x FROM runs r JOIN run_segments s "
            "USING (run_id) WHERE s.segment = $seg UNION ALL "
            "SELECT max(CASE WHEN i.exited_run = 0 THEN i.exited_at ELSE i.entered_at END) "
            "FROM intervals i JOIN segment_keys k USING (sid) WHERE k.segment = $seg "
            "AND (i.entered_run = 0 OR i.exited_run = 0))",
            {"seg": segment},
        )
        return rows[0][0] if rows else None

    def _person_keys(self, ids: pa.Array) -> np.ndarray:
        """The pid of each of ``ids`` (distinct), giving unseen ones the next keys in id order.

        A hash lookup in Arrow against the stored keys: a join in the database cost a
        second per run at 500k customers, and almost every run adds nobody."""
        s = self.state
        people = s.arrow("SELECT pid, customer_id FROM people")
        known = pc.index_in(ids, value_set=people.column("customer_id").combine_chunks())
        new = pc.is_null(known)
        if pc.any(new).as_py():
            fresh = pc.filter(ids, new)
            fresh = fresh.take(pc.sort_indices(fresh))
            top = int(pc.max(people.column("pid")).as_py() or 0) if people.num_rows else 0
            added = pa.table(
                {
                    "pid": pa.array(np.arange(top + 1, top + 1 + len(fresh), dtype=np.int32)),
                    "customer_id": fresh,
                }
            )
            s.insert("people", added)
            people = pa.concat_tables([people.cast(added.schema), added])
            known = pc.index_in(ids, value_set=people.column("customer_id").combine_chunks())
        pids: np.ndarray = people.column("pid").combine_chunks().to_numpy(zero_copy_only=False)
        out: np.ndarray = pids[known.to_numpy(zero_copy_only=False)].astype(np.int32)
        return out

    def _splice(self, run_id: int, at: datetime, current: pa.Table) -> None:
        """Make the intervals of every chosen segment agree with this snapshot at ``at``,
        whatever runs surround it.

        The old members are those the intervals say were members at ``at``. Leavers get their
        interval cut at ``at`` (resuming at the segment's next run instant if they were still
        members then); joiners get an interval from ``at`` to the next run instant, merged with
        an interval that ends exactly at ``at`` (P) or starts at the next instant (Q). Steps
        that cannot apply (no later run, no interval ending at ``at``) are skipped, so a run at
        a new latest instant costs one read, two set differences and the writes.
        """
        state = self.state
        x = state.execute
        p = {"at": at, "run": run_id}

        any_rows, active = self._any_rows, _ACTIVE
        # The next run instant of each segment after `at`, and the newest run there.
        x(
            "CREATE OR REPLACE TEMP TABLE _next AS "
            "WITH later AS (SELECT c.sid, r.as_of, r.run_id FROM runs r "
            "JOIN run_segments s USING (run_id) JOIN _chosen c USING (segment) "
            "WHERE r.as_of > $at), "
            "firsts AS (SELECT sid, min(as_of) AS n_at FROM later GROUP BY sid) "
            "SELECT f.sid, f.n_at, max(l.run_id) AS n_run FROM firsts f "
            "JOIN later l ON l.sid = f.sid AND l.as_of = f.n_at "
            "GROUP BY f.sid, f.n_at",
            p,
        )
        later = any_rows("_next")
        # Intervals start and end only at run instants: unless an earlier run happened at
        # this very instant, no interval ends exactly at `at`.
        again = bool(
            state.rows(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE as_of = $at AND run_id <> $run)", p
            )[0][0]
        )
        # Intervals never overlap: at most one per (segment, person) is active at `at`.
        old = state.arrow(
            f"SELECT m.sid, m.pid FROM intervals m JOIN _chosen c USING (sid) WHERE {active}", p
        )
        split = _differences(old, current)
        if split is None:  # too many keys for bitmaps: one full join finds both differences
            with state.registered(_old=old, _cur=current):
                diff = state.arrow(
                    "SELECT o.sid AS o_sid, o.pid AS o_pid, c.sid AS c_sid, c.pid AS c_pid "
                    "FROM _old o FULL JOIN _cur c ON c.sid = o.sid AND c.pid = o.pid "
                    "WHERE o.sid IS NULL OR c.sid IS NULL"
                )
            split = tuple(
                pa.table({"sid": t.column(f"{a}_sid"), "pid": t.column(f"{a}_pid")})
                for a, t in (
                    ("o", diff.filter(pc.is_null(diff.column("c_sid")))),
                    ("c", diff.filter(pc.is_null(diff.column("o_sid")))),
                )
            )
        leaving, joining = split
        with state.registered(_leaving=leaving, _joining=joining):
            self._apply(run_id, at, leaving, joining, later, again)

    def _apply(
        self,
        run_id: int,
        at: datetime,
        leaving: pa.Table,
        joining: pa.Table,
        later: bool,
        again: bool,
    ) -> None:
        """The writes of ``_splice`` (``_leaving``, ``_joining``, ``_next`` and ``_chosen``
        are visible to its statements)."""
        state = self.state
        x = state.execute
        p = {"at": at, "run": run_id}

        any_rows, active, same = self._any_rows, _ACTIVE, _SAME
        if leaving.num_rows:
            # Leaving: the part of their interval after the next instant survives.
            if later:
                x(
                    "INSERT INTO intervals SELECT m.sid, m.pid, n.n_at, m.exited_at, "
                    "n.n_run, m.exited_run FROM intervals m "
                    "JOIN _leaving l USING (sid, pid) JOIN _next n USING (sid) "
                    f"WHERE {active} AND (m.exited_at IS NULL OR m.exited_at > n.n_at)",
                    p,
                )
            x(
                f"DELETE FROM intervals m USING _leaving l WHERE {same.format('l')} "
                f"AND {active} AND m.entered_at = $at",
                p,
            )
            x(
                "UPDATE intervals m SET exited_at = $at, exited_run = $run FROM _leaving l "
                f"WHERE {same.format('l')} AND {active}",
                p,
            )
        # Joining: P ends exactly at `at`, Q starts at the next instant. P+Q merge, P extends,
        # Q starts earlier, or a new interval opens.
        merged = False
        if again:
            x(
                "CREATE OR REPLACE TEMP TABLE _p AS SELECT m.sid, m.pid "
                "FROM intervals m JOIN _joining j USING (sid, pid) "
                "WHERE m.exited_at = $at",
                p,
            )
            merged = any_rows("_p")
        else:
            x("CREATE OR REPLACE TEMP TABLE _p AS SELECT sid, pid FROM intervals LIMIT 0")
        if later:
            x(
                "CREATE OR REPLACE TEMP TABLE _q AS SELECT m.sid, m.pid, m.exited_at, "
                "m.exited_run, n.n_at FROM intervals m JOIN _joining j USING (sid, pid) "
                "JOIN _next n USING (sid) WHERE m.entered_at = n.n_at"
            )
            merged = merged or any_rows("_q")
        else:
            x(
                "CREATE OR REPLACE TEMP TABLE _q AS SELECT m.sid, m.pid, m.exited_at, "
                "m.exited_run, m.entered_at AS n_at FROM intervals m LIMIT 0"
            )
        if merged:
            x(
                "UPDATE intervals m SET exited_at = q.exited_at, exited_run = q.exited_run "
                f"FROM _q q WHERE {same.format('q')} AND m.exited_at = $at",
                p,
            )
            x(
                f"DELETE FROM intervals m USING _q q WHERE {same.format('q')} "
                "AND m.entered_at = q.n_at AND EXISTS (SELECT 1 FROM _p p WHERE "
                "p.sid = q.sid AND p.pid = q.pid)"
            )
            x(
                "UPDATE intervals m SET exited_at = n.n_at, exited_run = n.n_run "
                "FROM (SELECT p.sid, p.pid, n.n_at, n.n_run FROM _p p "
                "LEFT JOIN _next n USING (sid) WHERE NOT EXISTS (SELECT 1 FROM _q q WHERE "
                "q.sid = p.sid AND q.pid = p.pid)) n "
                f"WHERE {same.format('n')} AND m.exited_at = $at",
                p,
            )
            x(
                "UPDATE intervals m SET entered_at = $at, entered_run = $run "
                "FROM (SELECT q.sid, q.pid, q.n_at FROM _q q "
                "WHERE NOT EXISTS (SELECT 1 FROM _p p WHERE "
                "p.sid = q.sid AND p.pid = q.pid)) q "
                f"WHERE {same.format('q')} AND m.entered_at = q.n_at",
                p,
            )
            x(
                "INSERT INTO intervals SELECT j.sid, j.pid, $at, n.n_at, $run, n.n_run "
                "FROM _joining j LEFT JOIN _next n USING (sid) WHERE NOT EXISTS "
                "(SELECT 1 FROM _p p WHERE p.sid = j.sid AND p.pid = j.pid) AND NOT EXISTS "
                "(SELECT 1 FROM _q q WHERE q.sid = j.sid AND q.pid = j.pid)",
                p,
            )
        elif later:
            x(
                "INSERT INTO intervals SELECT j.sid, j.pid, $at, n.n_at, $run, n.n_run "
                "FROM _joining j LEFT JOIN _next n USING (sid)",
                p,
            )
        else:  # a run at the newest instant: new intervals stay open
            x("INSERT INTO intervals SELECT sid, pid, $at, NULL, $run, NULL FROM _joining", p)
        # Entered/exited at this instant, and at each segment's next instant (intervals start
        # and end only at run instants). Unless an earlier run shares this instant, the
        # intervals entering or leaving at it are exactly the joiners and leavers.
        tallies: dict[str, pa.Table] = {}
        if again:
            counts = (
                "SELECT m.sid, count(*) FILTER (WHERE m.entered_at = $at) AS entered, "
                "count(*) FILTER (WHERE m.exited_at = $at) AS exited FROM intervals m "
                "JOIN _chosen c USING (sid) WHERE m.entered_at = $at OR m.exited_at = $at "
                "GROUP BY m.sid"
            )
        else:
            counts, tallies["_counts"] = "SELECT * FROM _counts", _per_segment(leaving, joining)
        with state.registered(**tallies):
            x(
                "INSERT INTO run_segments (run_id, segment, definition_hash, definition, "
                "size, entered, exited, english) "
                "SELECT $run, c.segment, c.definition_hash, c.definition, c.size, "
                "coalesce(f.entered, 0), coalesce(f.exited, 0), c.english FROM _chosen c "
                f"LEFT JOIN ({counts}) f USING (sid)",
                p,
            )
        if later:
            x(
                "UPDATE run_segments r SET entered = f.entered, exited = f.exited FROM "
                "(SELECT c.segment, n.n_run, "
                "count(m.sid) FILTER (WHERE m.entered_at = n.n_at) AS entered, "
                "count(m.sid) FILTER (WHERE m.exited_at = n.n_at) AS exited "
                "FROM _next n JOIN _chosen c USING (sid) LEFT JOIN intervals m USING (sid) "
                "GROUP BY c.segment, n.n_run) f "
                "WHERE r.run_id = f.n_run AND r.segment = f.segment"
            )
        for temp in ("_next", "_p", "_q"):
            x(f"DROP TABLE IF EXISTS {temp}")

    def _any_rows(self, table: str) -> bool:
        return bool(self.state.rows(f"SELECT EXISTS (SELECT 1 FROM {table})")[0][0])

    # --- runs ---------------------------------------------------------------------------------

    def last_run(self) -> RunRecord | None:
        rows = self.state.rows(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY as_of DESC, run_id DESC LIMIT 1"
        )
        return _run(rows[0]) if rows else None

    def runs(self) -> list[RunRecord]:
        rows = self.state.rows(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY as_of, run_id")
        return [_run(r) for r in rows]

    def run(self, run_id: int) -> RunRecord | None:
        rows = self.state.rows(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
        return _run(rows[0]) if rows else None

    def run_at(self, as_of: datetime | None) -> RunRecord | None:
        """The latest run at or before ``as_of`` (or the latest run)."""
        if as_of is None:
            return self.last_run()
        rows = self.state.rows(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE as_of <= ? "
            "ORDER BY as_of DESC, run_id DESC LIMIT 1",
            [as_of],
        )
        return _run(rows[0]) if rows else None

    def segment_run(self, segment: str, as_of: datetime | None) -> RunRecord | None:
        """The newest run of ``segment`` at or before ``as_of`` (any instant when None)."""
        rows = self.state.rows(
            f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLUMNS.split(','))} "
            "FROM runs r JOIN run_segments s USING (run_id) WHERE s.segment = $seg "
            "AND (CAST($at AS TIMESTAMP) IS NULL OR r.as_of <= $at) "
            "ORDER BY r.as_of DESC, r.run_id DESC LIMIT 1",
            {"seg": segment, "at": as_of},
        )
        return _run(rows[0]) if rows else None

    def latest_runs(self) -> dict[str, tuple[int, datetime]]:
        """segment -> (run id, as_of) of its newest run (by instant)."""
        rows = self.state.rows(
            "SELECT s.segment, arg_max(r.run_id, (r.as_of, r.run_id)), max(r.as_of) "
            "FROM runs r JOIN run_segments s USING (run_id) GROUP BY s.segment"
        )
        return {str(r[0]): (int(r[1]), r[2]) for r in rows}

    def segments_in_run(self, run_id: int) -> dict[str, dict[str, Any]]:
        rows = self.state.rows(
            "SELECT segment, definition_hash, size, entered, exited, english FROM run_segments "
            "WHERE run_id = ? ORDER BY segment",
            [run_id],
        )
        return {
            r[0]: {
                "definition_hash": r[1],
                "size": r[2],
                "entered": r[3],
                "exited": r[4],
                "english": r[5],
            }
            for r in rows
        }

    def history(self, segment: str) -> list[dict[str, Any]]:
        """Size, entered and exited per run of a segment, in as_of order."""
        # A rerun at the same instant replaced the earlier snapshot: show the newest only
        # (the order outside: a subquery's order is not kept on every engine)
        rows = self.state.rows(
            "SELECT run_id, as_of, customers, size, entered, exited, definition_hash FROM ("
            "SELECT r.run_id, r.as_of, r.customers, s.size, s.entered, s.exited, "
            "s.definition_hash, row_number() OVER (PARTITION BY r.as_of ORDER BY r.run_id DESC)"
            " AS newest FROM run_segments s JOIN runs r USING (run_id) WHERE s.segment = ?) "
            "WHERE newest = 1 ORDER BY as_of, run_id",
            [segment],
        )
        keys = ("run_id", "as_of", "customers", "size", "entered", "exited", "definition_hash")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def definitions_at(self, run_id: int) -> dict[str, tuple[str, str]]:
        """segment -> (definition hash, definition JSON) recorded by a run."""
        rows = self.state.rows(
            "SELECT segment, definition_hash, definition FROM run_segments WHERE run_id = ?",
            [run_id],
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def definitions(self, segment: str) -> list[dict[str, Any]]:
        """Each definition a segment was run with, in order, from the first run that used it
        (a definition used again after another counts again)."""
        rows = self.state.rows(
            "SELECT r.run_id, r.as_of, s.definition_hash, s.definition FROM run_segments s "
            "JOIN runs r USING (run_id) WHERE s.segment = ? ORDER BY r.as_of, r.run_id",
            [segment],
        )
        out: list[dict[str, Any]] = []
        for run_id, as_of, digest, body in rows:
            if not out or out[-1]["definition_hash"] != digest:
                out.append({"run_id": run_id, "as_of": as_of, "definition_hash": digest,
                            "definition": json.loads(body)})  # fmt: skip
        return out

    def first_seen(self, segment: str, definition_hash: str) -> datetime | None:
        """The as_of of the first run that used this definition of the segment."""
        rows = self.state.rows(
            "SELECT min(r.as_of) FROM run_segments s JOIN runs r USING (run_id) "
            "WHERE s.segment = ? AND s.definition_hash = ?",
            [segment, definition_hash],
        )
        return rows[0][0] if rows else None

    # --- membership ---------------------------------------------------------------------------

    def intervals(self, customer_id: str) -> list[dict[str, Any]]:
        """Every membership interval of one customer, by segment and time, with the runs that
        opened and closed it."""
        rows = self.state.rows(
            "SELECT m.segment, m.entered_at, m.exited_at, r.definition_hash, m.entered_run, "
            "m.exited_run FROM memberships m LEFT JOIN run_segments r "
            "ON r.run_id = m.entered_run AND r.segment = m.segment "
            "WHERE m.customer_id = ? ORDER BY m.segment, m.entered_at",
            [customer_id],
        )
        keys = (
            "segment",
            "entered_at",
            "exited_at",
            "definition_hash",
            "entered_run",
            "exited_run",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def overlap(self, segments: list[str], at: datetime) -> list[tuple[str, str, int]]:
        """(a, b, shared members) for every ordered pair at an instant (a == b: size)."""
        chosen = pa.table({"segment": pa.array(segments, pa.string())})
        with self.state.registered(_chosen_overlap=chosen):
            rows = self.state.rows(
                "WITH m AS (SELECT segment, customer_id FROM memberships WHERE entered_at <= $at "
                "AND (exited_at IS NULL OR exited_at > $at) "
                "AND segment IN (SELECT segment FROM _chosen_overlap)) "
                "SELECT a.segment, b.segment, count(*) FROM m a JOIN m b USING (customer_id) "
                "GROUP BY ALL",
                {"at": at},
            )
        return [(r[0], r[1], int(r[2])) for r in rows]

    def members(self, segment: str, at: datetime, limit: int | None = None) -> list[str]:
        """Members at ``at`` in id order (the first ``limit`` of them when given)."""
        rows = self.state.rows(
            "SELECT customer_id FROM memberships WHERE segment = $seg AND entered_at <= $at "
            "AND (exited_at IS NULL OR exited_at > $at) ORDER BY customer_id"
            + (" LIMIT $limit" if limit is not None else ""),
            {"seg": segment, "at": at, "limit": limit},
        )
        return [r[0] for r in rows]

    def member_table(self, segments: Sequence[str], at: datetime) -> pa.Table:
        """(segment, customer_id, entered_at) of every member of ``segments`` at ``at``, by
        segment and id; ``entered_at`` opens the membership that holds at ``at``."""
        chosen = pa.table({"segment": pa.array(list(segments), pa.string())})
        with self.state.registered(_chosen_members=chosen):
            return self.state.arrow(
                "SELECT segment, customer_id, entered_at FROM memberships "
                "WHERE entered_at <= $at AND (exited_at IS NULL OR exited_at > $at) "
                "AND segment IN (SELECT segment FROM _chosen_members) "
                "ORDER BY segment, customer_id",
                {"at": at},
            )


# Bitmaps of (segment, person) cells are the fast way to the differences up to this many
# cells (bytes); bigger key spaces take one full join in the database.
BITMAP_CELLS = 1 << 27


def _differences(old: pa.Table, cur: pa.Table) -> tuple[pa.Table, pa.Table] | None:
    """(leaving, joining): the (sid, pid) pairs only in ``old``, and only in ``cur``.

    Both sets are distinct. Keys are small dense integers, so one byte per cell marks old
    (1) and current (2) membership: a tenth of the cost of a hash join at 8M members."""
    osid, opid = (old.column(c).to_numpy() for c in ("sid", "pid"))
    csid, cpid = (cur.column(c).to_numpy() for c in ("sid", "pid"))
    if not len(osid):  # nobody to leave; every member joins
        return old, cur
    width = int(max(opid.max(), cpid.max() if len(cpid) else 0)) + 1
    height = int(max(osid.max(), csid.max() if len(csid) else 0)) + 1
    if width * height > BITMAP_CELLS:
        return None
    cells = np.zeros(width * height, dtype=np.uint8)
    cells[osid.astype(np.int64) * width + opid] = 1
    cells[csid.astype(np.int64) * width + cpid] += 2  # distinct keys: no repeated index

    def pairs(mark: int) -> pa.Table:
        flat = np.flatnonzero(cells == mark)
        return pa.table(
            {
                "sid": pa.array((flat // width).astype(np.int32)),
                "pid": pa.array((flat % width).astype(np.int32)),
            }
        )

    return pairs(1), pairs(2)


# An interval active at $at, and the same (segment, person) as alias {0}.
_ACTIVE = "m.entered_at <= $at AND (m.exited_at IS NULL OR m.exited_at > $at)"
_SAME = "m.sid = {0}.sid AND m.pid = {0}.pid"


def _per_segment(leaving: pa.Table, joining: pa.Table) -> pa.Table:
    """(sid, entered, exited): the joiners and leavers of each segment."""
    sids = [t.column("sid").to_numpy() for t in (joining, leaving)]
    size = max((int(s.max()) + 1 for s in sids if len(s)), default=0)
    entered, exited = (np.bincount(s, minlength=size) for s in sids)
    return pa.table(
        {
            "sid": pa.array(np.arange(size, dtype=np.int32)),
            "entered": pa.array(entered.astype(np.int64)),
            "exited": pa.array(exited.astype(np.int64)),
        }
    )


def _positions(members: Sequence[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """(distinct ids, position of every member in them), members of all segments in order.

    A run passes its members dictionary-encoded over the run's customer ids: then the
    dictionary is the distinct set and the indices are the positions, with no hashing."""
    if members and all(isinstance(m, pa.DictionaryArray) for m in members):
        first = members[0].dictionary
        if all(m.dictionary.equals(first) for m in members[1:]):
            indices = [m.indices.to_numpy(zero_copy_only=False) for m in members]
            where = np.concatenate(indices) if indices else np.zeros(0, np.int64)
            return first.cast(pa.string()), where
    ids = [pa.array(m, pa.string()) if not isinstance(m, pa.Array) else m for m in members]
    ids = [m.cast(pa.string()) for m in ids]
    everyone = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    # One person key per distinct id (a run's members are a few ids many times over).
    unique = everyone.unique()
    where = pc.index_in(everyone, value_set=unique).to_numpy(zero_copy_only=False)
    return unique, where


def _run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), json.loads(row[6] or "{}")
    )
