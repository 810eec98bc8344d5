"""Freshness: when each segment last ran, when it is due by its ``refresh``, and whether it is
stale, plus the record of scheduled attempts that :mod:`crmseg.server.scheduler` writes.

A segment is **due** once its last run's instant plus its refresh interval has passed (never
run: due now). It is **stale** when a due run has not finished within the grace period, or
when it never ran: a scheduled run that keeps failing makes its segments stale after the grace,
never fresh-looking. ``realtime`` segments are refreshed hourly by the batch scheduler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore
    from crmseg.segments.catalog import Segment

INTERVALS = {
    "realtime": timedelta(hours=1),  # until events stream in (see docs/server.md)
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
}

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS schedule_attempts (
        attempt_id INTEGER PRIMARY KEY,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        segments VARCHAR NOT NULL,
        ok BOOLEAN NOT NULL,
        run_id INTEGER,
        error VARCHAR,
        failures INTEGER NOT NULL,
        retry_at TIMESTAMP
    )"""
    ],
]


@dataclass
class Freshness:
    segment: str
    refresh: str
    last_run: int | None
    last_as_of: datetime | None
    next_due: datetime
    due: bool
    stale: bool
    reason: str  # why stale (or "fresh")


def freshness(
    segments: list[Segment],
    latest: dict[str, tuple[int, datetime]],
    now: datetime,
    grace: timedelta,
    failing: str | None = None,
) -> list[Freshness]:
    """Per segment at ``now``: its last run (from ``latest``: segment -> (run id, as_of)),
    next due instant, and staleness; ``failing`` is the error of the latest scheduled
    attempt when it failed."""
    out = []
    for seg in segments:
        every = INTERVALS[seg.spec.refresh]
        run = latest.get(seg.name)
        if run is None:
            out.append(Freshness(seg.name, seg.spec.refresh, None, None, now, True, True,
                                 "never run"))  # fmt: skip
            continue
        run_id, as_of = run
        next_due = as_of + every
        late = now - next_due
        stale = late > grace
        if stale:
            reason = f"due since {next_due:%Y-%m-%d %H:%M} UTC and not run"
            if failing:
                reason += f"; the last scheduled run failed: {failing}"
        else:
            reason = "fresh"
        due = late >= timedelta(0)
        out.append(Freshness(seg.name, seg.spec.refresh, run_id, as_of, next_due, due, stale,
                             reason))  # fmt: skip
    return out


class ScheduleStore:
    """Scheduled attempts, newest last; the latest one's failures count the backoff."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("schedule", MIGRATIONS)

    def record(
        self,
        started: datetime,
        finished: datetime,
        segments: list[str],
        run_id: int | None,
        error: str | None,
        retry_max: timedelta,
    ) -> dict[str, Any]:
        """Record an attempt; a failure waits 1, 2, 4, ... minutes (at most ``retry_max``)
        before the next one."""
        last = self.latest()
        failures = 0 if error is None else (last["failures"] if last else 0) + 1
        retry_at = None
        if error is not None:
            retry_at = finished + min(timedelta(minutes=2 ** (failures - 1)), retry_max)
        with self.state.transaction():
            self.state.exclusive()  # the next id is this writer's
            rows = self.state.rows("SELECT coalesce(max(attempt_id), 0) + 1 FROM schedule_attempts")
            self.state.execute(
                "INSERT INTO schedule_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [int(rows[0][0]), started, finished, json.dumps(segments), error is None,
                 run_id, error, failures, retry_at],
            )  # fmt: skip
        found = self.latest()
        assert found is not None
        return found

    def latest(self) -> dict[str, Any] | None:
        found = self.attempts(1)
        return found[0] if found else None

    def attempts(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.state.dicts(
            "SELECT * FROM schedule_attempts ORDER BY attempt_id DESC LIMIT ?", [limit]
        )
        return [{**r, "segments": json.loads(r["segments"])} for r in rows]
