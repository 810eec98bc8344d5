"""Real time inside ``crmseg serve``: ``POST /events`` stores a batch and answers once it is
durable; a worker thread then re-evaluates the people it touched, runs the sweeps when they
are due, and delivers the change log to webhooks.

The worker evaluates whatever arrived while its previous evaluation ran, all at once, so
batches grow with the load instead of queueing. Items stored but not evaluated yet are the
backlog; a batch that would take it past ``stream.max_pending`` waits (up to two seconds) for
room, so producers slow to the evaluation's pace; past that, or when the workspace stays busy
(a long run), ``POST /events`` answers 429 with Retry-After and stores nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from crmseg.errors import BackpressureError, CrmsegError
from crmseg.stream.processor import now as utcnow

if TYPE_CHECKING:
    from crmseg.server.app import Server
    from crmseg.stream.processor import Changes, Processor

BUSY_SECONDS = 2.0  # longest wait for the workspace before answering 429
CATCH_UP_SECONDS = 0.2  # sweeps this far behind take everyone due at once


class StreamWorker:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.processor: Processor | None = None
        self.version = 0  # bumped after every write to the change log (long polls watch it)
        self.error: str | None = None  # the last evaluation's failure, if any
        self.applied = 0  # items evaluated since the server started
        self.started_at: Any = None
        self._wake = threading.Event()
        self._drained = threading.Condition()  # notified when the backlog shrank
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="crmseg-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def reset(self) -> None:
        """Definitions or the history changed under the processor (a run, an approval, a
        forget): it starts again from the history, which also evaluates what was stored and
        not evaluated yet (call with the workspace held)."""
        if self.processor is not None:
            self.processor.closed = True  # an evaluation under way writes nothing
        self.processor = None
        self.server.ws.stream_evaluated = {}

    @property
    def active(self) -> bool:
        return self.processor is not None

    def _ensure(self) -> Processor:
        if self.processor is None:
            processor = self.server.ws.processor(guard=lambda: self.server.lock)
            changes = processor.start()
            self.processor = processor
            self.started_at = processor.at
            self._changed(changes)
        return self.processor

    # --- ingest -----------------------------------------------------------------------------

    def ingest(self, items: Any) -> dict[str, Any]:
        """Check and store one batch; its answer once it is durable."""
        from crmseg.stream.ingest import parse

        server = self.server
        config = server.ws.config.stream
        batch = parse(items, server.ws.config.timezone)  # bad items: nothing is held
        if self.processor is not None:  # a full backlog: wait a little for it to drain
            self._room(self.processor, batch.size, config.max_pending)
        with self._held():  # the processor takes it again (reentrant) to store
            processor = self._ensure()
            if processor.backlog + batch.size > config.max_pending:
                raise BackpressureError(
                    f"{processor.backlog:,} items wait to be evaluated (most: "
                    f"{config.max_pending:,}); nothing stored, send again shortly",
                    retry_after=1,
                )
            stored = processor.ingest(batch)
        self._wake.set()
        return {
            "batch": stored.batch,
            "items": stored.items,
            "rows": stored.rows,
            "created": stored.created,
            "people": len(stored.touched),
        }

    def _room(self, processor: Processor, size: int, most: int) -> None:
        """Wait (up to BUSY_SECONDS) until ``size`` more items fit in the backlog: a
        producer slows to the evaluation's pace instead of sleeping through a 429."""
        deadline = time.monotonic() + BUSY_SECONDS
        with self._drained:
            while processor.backlog + size > most and time.monotonic() < deadline:
                self._drained.wait(max(0.0, deadline - time.monotonic()))

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        if not self.server.lock.acquire(timeout=BUSY_SECONDS):
            raise BackpressureError(
                "the workspace is busy (a run is going); nothing stored, send again shortly",
                retry_after=5,
            )
        try:
            yield
        finally:
            self.server.lock.release()

    # --- the worker -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._step()
            except CrmsegError as exc:
                self.error = str(exc)
            except Exception as exc:  # recorded, not raised: the server keeps serving
                self.error = f"internal error: {type(exc).__name__}: {exc}"
            self._deliver()

    def _timeout(self) -> float:
        p = self.processor
        if p is None:
            return 1.0
        if p.pending:
            return 0.0
        due = p.next_due()
        if due is None:
            return 1.0
        return max(0.0, min(1.0, (due - utcnow()).total_seconds()))

    def _step(self) -> None:
        p = self.processor
        if p is None:
            with self.server.lock:
                if not self._wanted():
                    return
                p = self._ensure()  # sweeps run even before the first event
        # the processor holds the workspace only to read the warehouse or write the state
        changes = self._drain()
        due, now = p.next_due(), utcnow()
        if due is not None and due <= now:
            # at the check's own instant, so an exit is stamped exactly; when behind,
            # everyone due at once (each change stamped at its own check instant)
            late = (now - due).total_seconds() > CATCH_UP_SECONDS
            changes += p.sweep(now if late else due)
        self.error = None
        if not p.closed:
            self.server.ws.stream_evaluated = p.current_through(utcnow())
        self._changed(changes)

    def _drain(self) -> Changes:
        from crmseg.stream.processor import Changes

        p = self.processor
        if p is None or not p.pending:
            return Changes()
        before = p.evaluated
        changes = p.apply(taken=self._room_made)
        self.applied += p.evaluated - before
        return changes

    def _room_made(self) -> None:
        """The backlog was taken for evaluation: producers waiting for room may store
        (while it is evaluated, not after)."""
        with self._drained:
            self._drained.notify_all()

    def _wanted(self) -> bool:
        """Whether to start the processor unasked: realtime segments over loaded data."""
        ws = self.server.ws
        realtime = any(s.spec.refresh == "realtime" for s in ws.segments)
        return realtime and "customers" in ws.backend.canonical_tables()

    def _changed(self, changes: Changes) -> None:
        if changes:
            self.server.stream_changed(changes.segments)
            self.version += 1

    def _deliver(self) -> None:
        hooks = self.server.ws.config.stream.webhooks
        if not hooks or self.processor is None:
            return
        from crmseg.stream.deliver import deliver

        with contextlib.suppress(Exception):  # a receiver's trouble never stops the worker
            deliver(self.processor.log, hooks, lambda: self.server.lock)

    def status(self) -> dict[str, Any]:
        p = self.processor
        return {
            "running": p is not None,
            "started_at": self.started_at,
            "evaluated_at": p.at if p else None,
            "backlog": p.backlog if p else 0,
            "applied": self.applied,
            "next_due": p.next_due() if p else None,
            "last_change": p.last_change if p else None,
            "segments": p.names if p else [],
            "error": self.error,
        }

    def wait_for(self, version: int, seconds: float) -> None:
        """Block (in a thread) until the change log moves past ``version`` or time is up."""
        deadline = time.monotonic() + seconds
        while self.version == version and time.monotonic() < deadline:
            time.sleep(0.02)
