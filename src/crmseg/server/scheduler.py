"""The scheduler inside ``crmseg serve``: every ``schedule.check_seconds`` it runs the segments
that are due by their ``refresh`` (one run for all of them, at the current instant), then
activates the campaigns due by their schedule. It takes the same run lock as ``POST /runs``,
so runs never overlap. A failed attempt is recorded with its error and retried after 1, 2, 4,
... minutes (at most ``schedule.retry_max_minutes``); its segments turn stale after the grace.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from crmseg.errors import CrmsegError
from crmseg.segments.runs import utcnow
from crmseg.segments.schedule import ScheduleStore

if TYPE_CHECKING:
    from crmseg.server.app import Server


class Scheduler:
    def __init__(self, server: Server, clock: Callable[[], datetime] = utcnow) -> None:
        self.server = server
        self.clock = clock
        self.config = server.ws.config.schedule
        self.store = ScheduleStore(server.ws.state)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick: datetime | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def disable(self) -> None:
        """Serve without scheduling (``crmseg serve --no-schedule``, ``schedule.enabled``)."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="crmseg-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # never let the loop die: tick records a failed attempt itself
            with contextlib.suppress(Exception):
                self.tick()
            self._stop.wait(self.config.check_seconds)

    def tick(self) -> dict[str, Any]:
        """One look for due work; what it did (``skipped`` with a reason, or the attempt)."""
        server = self.server
        now = self.clock()
        self.last_tick = now
        if not server.running.acquire(blocking=False):
            return {"skipped": "a run is going"}
        try:
            with server.lock:
                return self._due(now)
        finally:
            server.running.release()

    def _due(self, now: datetime) -> dict[str, Any]:
        ws = self.server.ws
        # servers sharing a state (on Postgres): one schedules, the others stand by (two
        # would run and activate the same due work); held until its connection closes
        if not ws.state.claim("scheduler"):
            return {"skipped": "another server schedules this project"}
        last = self.store.latest()
        if last is not None and not last["ok"] and last["retry_at"] and now < last["retry_at"]:
            return {"skipped": f"retrying at {last['retry_at']:%Y-%m-%d %H:%M:%S} UTC"}
        due = [f.segment for f in ws.freshness(now) if f.due]
        if not due:
            return {"skipped": "nothing due"}
        run_id, error = None, None
        try:
            try:
                with self.server.tracked("scheduler", now) as progress:
                    result = ws.run(as_of=now, select=due, progress=progress)
            finally:
                self.server.changed()
            run_id = result.run_id
            ws.record("scheduler", "run", f"run {run_id} ({len(due)} due segments)")
            if self.config.activate:
                for done in ws.activate_due(as_of=now):
                    ws.record("scheduler", "activate", f"campaign {done.campaign}")
        except CrmsegError as exc:
            error = str(exc)
        except Exception as exc:  # recorded, not raised: the server keeps serving
            error = f"internal error: {type(exc).__name__}: {exc}"
        retry_max = timedelta(minutes=self.config.retry_max_minutes)
        return self.store.record(now, self.clock(), due, run_id, error, retry_max)
