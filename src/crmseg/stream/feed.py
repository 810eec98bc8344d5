"""``crmseg stream``: JSON lines from a file or stdin, in micro-batches, through the processor.

Lines are gathered until ``batch_size`` of them arrived or ``batch_ms`` passed since the first
one; each batch is checked (a bad line stops the stream, naming every bad line of its batch;
earlier batches stay stored), stored, and the people it touched re-evaluated. Between batches
the processor's sweeps run when due, so memberships that time ends are ended on time.

Instants are the wall clock, or with ``replay`` the data's own: a batch is evaluated at its
newest item's instant and the sweeps at each due instant before it, so a file of past events
gives the memberships and changes it would have given live.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from crmseg.stream.ingest import TIME, parse_lines

if TYPE_CHECKING:
    from crmseg.stream.processor import Changes, Processor

_END = object()


@dataclass
class Fed:
    items: int = 0
    batches: int = 0
    entered: int = 0
    exited: int = 0
    created: int = 0


def feed(
    processor: Processor,
    lines: Iterable[str],
    timezone: str,
    emit: Callable[[Changes], None],
    batch_size: int = 1000,
    batch_ms: int = 100,
    replay: bool = False,
) -> Fed:
    done = Fed()
    inbox: queue.Queue[object] = queue.Queue(maxsize=batch_size * 4)

    def read() -> None:
        for line in lines:
            inbox.put(line)
        inbox.put(_END)

    threading.Thread(target=read, name="crmseg-stream-reader", daemon=True).start()

    def out(changes: Changes) -> None:
        done.entered += changes.count("entered")
        done.exited += changes.count("exited")
        if changes:
            emit(changes)

    started = False
    if not replay:
        out(processor.start())
        started = True
    number = 0  # lines read so far
    batch: list[str] = []
    first = 1
    ended = False
    while not ended:
        timeout = batch_ms / 1000 if batch else _until_due(processor, replay)
        try:
            got = inbox.get(timeout=timeout)
        except queue.Empty:
            got = None
        if got is _END:
            ended = True
        elif isinstance(got, str):
            number += 1
            if got.strip():
                if not batch:
                    first = number
                batch.append(got)
                if len(batch) < batch_size:
                    continue
        elif not batch and not replay:  # nothing came: time may have ended memberships
            out(processor.sweep())
            continue
        if batch:
            parsed = parse_lines(batch, first, timezone)
            if not started:  # a replay starts at its first item (or where history ends)
                out(processor.start(_start(processor, parsed)))
                started = True
            stored = processor.ingest(parsed)
            at = _newest(parsed) if replay else None
            if replay and at is not None:  # what time changed before the batch's instant
                _sweeps_until(processor, at, out, before=True)
            out(processor.apply(at))
            done.items += len(batch)
            done.batches += 1
            done.created += len(stored.created)
            batch = []
    if not started:
        out(processor.start())
    elif replay and processor.at is not None:
        _sweeps_until(processor, processor.at, out)
    else:
        out(processor.sweep())
    return done


def _until_due(processor: Processor, replay: bool) -> float | None:
    if replay:
        return None
    due = processor.next_due()
    if due is None:
        return None
    wait = (due - processor.clock()).total_seconds()
    return max(0.0, min(wait, 3600.0))


def _sweeps_until(
    processor: Processor,
    at: datetime,
    out: Callable[[Changes], None],
    before: bool = False,
) -> None:
    """Every sweep due at or before ``at`` (strictly before, with ``before``: the batch at
    ``at`` re-evaluates its own people), each at its own instant."""
    for _ in range(1_000_000):  # bounded: each sweep moves the next check past its instant
        due = processor.next_due()
        if due is None or due > at or (before and due == at):
            return
        out(processor.sweep(due))


def _newest(batch: object) -> datetime | None:
    from crmseg.stream.ingest import Batch

    assert isinstance(batch, Batch)
    times = [t for name, rows in batch.tables.items() for t in rows.columns[TIME[name]]]
    return max(times) if times else None


def _start(processor: Processor, batch: object) -> datetime | None:
    """A replay starts just before its first item, or where the history ends if later (the
    processor never goes back in time)."""
    from crmseg.segments.store import History
    from crmseg.stream.ingest import Batch

    assert isinstance(batch, Batch)
    times = [t for name, rows in batch.tables.items() for t in rows.columns[TIME[name]]]
    history = History(processor.state)
    known = [t for n in processor.names if (t := history.latest_instant(n)) is not None]
    first = min(times) - timedelta(seconds=1) if times else None
    candidates = [t for t in (first, max(known) if known else None) if t is not None]
    return max(candidates) if candidates else None
