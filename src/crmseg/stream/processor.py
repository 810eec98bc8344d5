"""The stream processor: the current members of every realtime segment, kept exact.

``start`` evaluates the realtime segments for everyone at one instant and aligns the history
with it; ``ingest`` makes a batch durable; ``apply`` re-evaluates the people stored batches
touched; ``sweep`` re-evaluates those whose next check has come (time alone changed them:
a window passed, a ``then not ... within`` ran out) and, every ``stream.sweep_seconds``,
everyone for the segments that cannot be scheduled exactly. Every entry and exit goes to the
membership history and the change log in one transaction, with its reason (the parts of the
rule that turned) and its cause (which batch, or the sweep).

One processor writes at a time (the caller serialises it, like runs).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crmseg.stream.changes import ChangeLog
from crmseg.stream.realtime import NEXT, PERSON, Realtime

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore
    from crmseg.config import Config
    from crmseg.segments.compiled import Catalog
    from crmseg.segments.store import History
    from crmseg.stream.fast import Fast
    from crmseg.stream.ingest import Batch
    from crmseg.stream.store import Stored, StreamStore


def now() -> datetime:
    """The stream's clock: naive UTC to the microsecond (an item stamped on arrival must be
    visible to the evaluation right after it)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Change:
    segment: str
    customer_id: str
    change: str  # entered | exited
    at: datetime
    reason: str
    cause: str

    def as_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "customer_id": self.customer_id,
                "change": self.change, "at": self.at.isoformat(sep=" "),
                "reason": self.reason, "cause": self.cause}  # fmt: skip


CHANGES = pa.schema(
    [("segment", pa.string()), ("customer_id", pa.string()), ("change", pa.string()),
     ("at", pa.timestamp("us")), ("reason", pa.string()), ("cause", pa.string())]
)  # fmt: skip


class Changes:
    """Entries and exits, column by column (a batch under load makes thousands): iterating
    gives :class:`Change` objects, in order."""

    def __init__(self, table: pa.Table | None = None) -> None:
        self.table = CHANGES.empty_table() if table is None else table

    def __add__(self, other: Changes) -> Changes:
        if not other.table.num_rows:
            return self
        if not self.table.num_rows:
            return other
        return Changes(pa.concat_tables([self.table, other.table]))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __bool__(self) -> bool:
        return bool(self.table.num_rows > 0)

    def __iter__(self) -> Iterator[Change]:
        for row in self.table.to_pylist():
            yield Change(**row)

    @property
    def segments(self) -> set[str]:
        return set(pc.unique(self.table.column("segment")).to_pylist())

    def count(self, change: str) -> int:
        return int(pc.sum(pc.equal(self.table.column("change"), change)).as_py() or 0)


class Processor:
    def __init__(
        self,
        backend: Backend,
        state: StateStore,
        catalog: Catalog,
        config: Config,
        tables: Callable[[], Mapping[str, ir.Table]],
        sql: Callable[[], Mapping[str, ir.Table]] | None = None,
        clock: Callable[[], datetime] = now,
        use_fast: bool = True,
        guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        if not backend.streams:
            from crmseg.errors import BackendError

            raise BackendError(
                f"real time (crmseg stream, POST /events) is not available on the "
                f"{backend.kind} backend; use duckdb or postgres"
            )
        if not state.claim("stream"):
            from crmseg.errors import ConflictError

            # two processors would each record entries and exits from their own view
            raise ConflictError(
                "another crmseg process runs the stream processor of this state: one at a "
                "time (send events to that one)"
            )
        self.backend = backend
        self.state = state
        self.catalog = catalog
        self.config = config
        self.tables = tables
        self.sql = sql or (lambda: {})
        self.clock = clock
        self.use_fast = use_fast
        # held around every use of the warehouse and the state (the server's workspace
        # lock): evaluating over rows held in memory needs neither
        self.guard = guard
        self.names = [s.name for s in catalog.segments if s.spec.refresh == "realtime"]
        self.hashes = {s.name: s.hash for s in catalog.segments}
        self.log = ChangeLog(state)
        self.store: StreamStore | None = None
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.members: dict[str, np.ndarray] = {}
        self.bits: dict[str, np.ndarray] = {}
        self.checks = Checks()  # each person's next check (when time alone may change them)
        self.last_full: datetime | None = None
        self.at: datetime | None = None  # the latest instant evaluated
        self._realtime: tuple[int, Realtime] | None = None
        # stored, not yet evaluated: appended by whoever stores, taken by whoever evaluates
        # (deque appends and pops are safe between threads)
        self.inbox: deque[Stored] = deque()
        self.evaluated = 0  # items taken from the inbox and evaluated
        self.closed = False  # set when a run or new definitions replace this processor
        self.last_change = self.log.last_id()  # the change log's newest id
        self.fast: Fast | None = None  # the exact segments over rows held in memory
        self.history: History | None = None
        self.slow_reason: str | None = None  # why there is no fast path, when there is none
        self._by_key: Any = None  # a pandas Index of ``keys`` (see ``_lookup``)

    # --- setting up -------------------------------------------------------------------------

    def realtime(self, tables: Mapping[str, ir.Table]) -> Realtime:
        """The realtime segments compiled for data shaped like ``tables`` (once per plan)."""
        plan = self.catalog.plan(tables)
        if self._realtime is None or self._realtime[0] != id(plan):
            self._realtime = (id(plan), Realtime(plan, self.names))
            self.fast = None
        return self._realtime[1]

    def _fast(self, rt: Realtime, tables: Mapping[str, ir.Table], at: datetime) -> Fast | None:
        """The fast path for the exact segments, built once (None where it cannot serve)."""
        from crmseg.stream.fast import Fast, Unsupported

        if self.fast is None and rt.exact and self.slow_reason is None and self.use_fast:
            try:
                with self.guard():
                    self.fast = Fast(self.backend, rt, tables, rt.exact, at, self.index)
            except Unsupported as exc:
                self.slow_reason = str(exc)
        return self.fast

    def _current(self) -> tuple[Mapping[str, ir.Table], Realtime]:
        """The tables (empty when the fast path serves: reading them costs more than a
        batch) and the compiled realtime segments."""
        if self.fast is not None and self._realtime is not None:
            return {}, self._realtime[1]
        with self.guard():
            tables = self.tables()
            return tables, self.realtime(tables)

    def _exact(
        self,
        rt: Realtime,
        tables: Mapping[str, ir.Table],
        at: datetime,
        keys: Sequence[str] | pa.Array,
        people: np.ndarray | None = None,
    ) -> pa.Table:
        fast = self.fast if not tables else self._fast(rt, tables, at)
        if fast is not None:
            return fast.run(keys, at, people)
        listed = keys.to_pylist() if isinstance(keys, pa.Array) else keys
        return self._run(rt, tables, at, listed, rt.exact)

    def _run(
        self,
        rt: Realtime,
        tables: Mapping[str, ir.Table],
        at: datetime,
        keys: Sequence[str] | None,
        names: Sequence[str],
    ) -> pa.Table:
        """The general path: the plan over the warehouse."""
        with self.guard():
            return rt.run(self.backend.execute, tables or self.tables(), at, keys, names,
                          self.sql())  # fmt: skip

    def open_store(self) -> StreamStore:
        from crmseg.identity.directory import Directory
        from crmseg.sources.normalize import PhoneBook
        from crmseg.stream.store import StreamStore

        if self.store is None:
            b = self.backend
            with self.guard():
                loaded = {n: b.canonical(n) for n in b.canonical_tables()}
                ident = self.config.identity
                phones = PhoneBook(ident.default_region)
                directory = Directory.build(b, loaded, ident, phones)
                self.store = StreamStore(b, directory, self.config.stream.unknown_people)
        return self.store

    def start(self, at: datetime | None = None) -> Changes:
        """Everyone's membership of the realtime segments at ``at`` (default: now), with the
        history aligned to it (changes since the history's last word, cause ``stream start``)."""
        from crmseg.segments.store import History

        at = at or self.clock()
        self.open_store()
        with self.guard():
            tables = self.tables()
            rt = self.realtime(tables)
            result = rt.run(self.backend.execute, tables, at, sql=self.sql())
            history = History(self.state)
            known_by = {n: history.members(n, history.latest_instant(n) or at) for n in self.names}
        self._grow(result.column("customer_id").to_pylist())
        for name in self.names:
            known = known_by[name]
            flags = np.zeros(len(self.keys), dtype=bool)
            where = [self.index[k] for k in known if k in self.index]
            flags[where] = True
            self.members[name] = flags
            self.bits[name] = np.zeros(len(self.keys), dtype=np.uint32)
        changes = self._compare(rt, result, self.names, at, "stream start", first=True)
        self.last_full = at
        self.at = at
        self._write(changes)
        # what the first batch would otherwise pay for: the rows read into memory, the
        # query's first run, the history's person keys, the index of keys
        self._lookup(pa.array(self.keys[:1], pa.string()))
        fast = self._fast(rt, tables, at)
        if fast is not None:
            fast.run([], at)
        if self.history is None:
            self.history = History(self.state, remember=True)
        with self.guard():
            self.history.warm()
        return changes

    # --- batches ----------------------------------------------------------------------------

    def ingest(self, batch: Batch) -> Stored:
        """Store ``batch`` durably (nothing is evaluated yet: see :meth:`apply`). Safe from
        another thread than the one evaluating: it only adds to the inbox."""
        store = self.open_store()
        with self.guard():
            stored = store.store(batch)
        self.inbox.append(stored)
        return stored

    @property
    def pending(self) -> bool:
        return bool(self.inbox)

    @property
    def backlog(self) -> int:
        """Items stored but not yet evaluated."""
        return sum(s.items for s in list(self.inbox))

    def apply(self, at: datetime | None = None, taken: Callable[[], None] | None = None) -> Changes:
        """Re-evaluate the people the stored batches touched, at ``at`` (default: now);
        ``taken`` is called once they are out of the backlog, before the evaluation."""
        batches: list[Stored] = []
        while self.inbox:
            batches.append(self.inbox.popleft())
        if taken is not None:
            taken()
        if not batches:
            return Changes()
        changes = self._evaluate(batches, at)
        self.evaluated += sum(s.items for s in batches)
        return changes

    def _evaluate(self, batches: list[Stored], at: datetime | None) -> Changes:
        every = pa.chunked_array([s.touched for s in batches], pa.string())
        touched = pc.unique(every)
        touched = touched.take(pc.array_sort_indices(touched))  # in key order
        numbers = self._lookup(touched)
        new = numbers < 0
        if new.any():  # numbered first: their new rows are found by number
            fresh = touched.filter(pa.array(new)).to_pylist()
            self._grow(fresh)
            numbers[new] = [self.index[k] for k in fresh]
        if self.fast is not None:  # their rows, beside the ones held since the start
            known = (touched, numbers)
            for stored in batches:
                for name, rows in stored.tables.items():
                    self.fast.add(name, rows, known)
        at = self._instant(at)
        tables, rt = self._current()
        names = [*rt.exact, *rt.local]
        first, last = batches[0].batch, batches[-1].batch
        cause = f"batch {first}" if first == last else f"batches {first}-{last}"
        cause += f" ({sum(s.items for s in batches)} items)"
        if not names:
            return Changes()
        changes = Changes()
        if rt.exact:
            result = self._exact(rt, tables, at, touched, numbers)
            if self.fast is None:  # the fast path answers only for the people it was given
                self._grow(result.column("customer_id").to_pylist())
            changes += self._compare(rt, result, rt.exact, at, cause)
        if rt.local:
            result = self._run(rt, tables, at, touched.to_pylist(), rt.local)
            self._grow(result.column("customer_id").to_pylist())
            changes += self._compare(rt, result, rt.local, at, cause)
        self.at = at
        self._write(changes)
        return changes

    # --- time -------------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """When :meth:`sweep` has work next: the earliest next check, or the next periodic
        sweep when some segments need one."""
        due = self.checks.earliest()
        rt = self._realtime[1] if self._realtime else None
        if rt is not None and (rt.local or rt.population) and self.last_full is not None:
            full = self.last_full + timedelta(seconds=self.config.stream.sweep_seconds)
            due = full if due is None else min(due, full)
        return due

    def sweep(self, at: datetime | None = None) -> Changes:
        """Re-evaluate everyone whose next check is at or before ``at`` (default: now), and
        everyone for the periodic segments when their interval has passed."""
        at = self._instant(at)
        due = self.checks.take(at)
        tables, rt = self._current()
        changes = Changes()
        if len(due[0]) and rt.exact:
            keys = [self.keys[i] for i in due[0].tolist()]
            result = self._exact(rt, tables, at, keys, due[0])
            # a change is stamped at the person's own check instant, the moment time changed
            # it (the sweep runs when the first one comes, so they are at most as late as it)
            changes += self._compare(rt, result, rt.exact, at, "sweep (time passed)", due)
        periodic = [*rt.local, *rt.population]
        every = timedelta(seconds=self.config.stream.sweep_seconds)
        if periodic and (self.last_full is None or at >= self.last_full + every):
            result = self._run(rt, tables, at, None, periodic)
            self._grow(result.column("customer_id").to_pylist())
            changes += self._compare(rt, result, periodic, at, "periodic sweep")
            self.last_full = at
        self.at = at
        self._write(changes)
        return changes

    def _instant(self, at: datetime | None) -> datetime:
        at = at or self.clock()
        # instants never go back: the history's intervals are written in time order
        return max(at, self.at) if self.at is not None else at

    # --- comparing --------------------------------------------------------------------------

    def _lookup(self, keys: pa.Array) -> np.ndarray:
        """The number of each of ``keys`` (-1: none yet), all at once: a hash index over
        the numbered keys (positions are numbers), with the few numbered since it was made
        looked up one by one until there are enough to make it again."""
        import pandas as pd

        count = len(self.keys)
        if self._by_key is None or count - len(self._by_key) > 50_000:
            self._by_key = pd.Index(self.keys, dtype=object)
        values = keys.to_numpy(zero_copy_only=False)
        out: np.ndarray = self._by_key.get_indexer(values).astype(np.int64, copy=False)
        if count > len(self._by_key):
            missing = np.flatnonzero(out < 0)
            if len(missing):
                found = self.index.get
                out[missing] = [found(k, -1) for k in values[missing].tolist()]
        return out

    def _grow(self, ids: Sequence[str]) -> None:
        fresh = set(ids).difference(self.index)
        if not fresh:
            return
        new = [k for k in dict.fromkeys(ids) if k in fresh]  # numbered in order of mention
        for k in new:
            self.index[k] = len(self.keys)
            self.keys.append(k)
        extra = len(new)
        for name in self.members:
            self.members[name] = np.concatenate([self.members[name], np.zeros(extra, bool)])
            self.bits[name] = np.concatenate([self.bits[name], np.zeros(extra, np.uint32)])
        self.checks.grow(extra)

    def _compare(
        self,
        rt: Realtime,
        result: pa.Table,
        names: Sequence[str],
        at: datetime,
        cause: str,
        stamps: tuple[np.ndarray, np.ndarray] | None = None,
        first: bool = False,
    ) -> Changes:
        """The entries and exits ``result`` makes, stamped ``at`` (or, with ``stamps``, a
        person's own check instant: their numbers, sorted, and instants)."""
        ids = result.column("customer_id").combine_chunks()
        idx = np.zeros(0, np.int64)
        if PERSON in result.column_names:  # the fast path numbered them
            idx = result.column(PERSON).to_numpy().astype(np.int64, copy=False)
        if len(idx) != len(ids) or (idx < 0).any():  # not numbered (or not all): by key
            found = self.index.__getitem__
            idx = np.fromiter(map(found, ids.to_pylist()), dtype=np.int64, count=len(ids))
        when = np.full(len(idx), np.datetime64(at, "us"))
        if stamps is not None and len(stamps[0]):
            numbers, instants = stamps
            pos = np.minimum(np.searchsorted(numbers, idx), len(numbers) - 1)
            hit = numbers[pos] == idx
            when[hit] = instants[pos[hit]]
        made: list[pa.Table] = []
        for name in names:
            now = _flags(result.column(name))
            parts = rt.parts[name]
            bits = np.zeros(len(ids), dtype=np.uint32)
            for j, p in enumerate(parts):
                bits |= _flags(result.column(p.column)).astype(np.uint32) << np.uint32(j)
            turned = np.flatnonzero(now != self.members[name][idx])
            if len(turned):
                before = self.bits[name][idx[turned]]
                made.append(_changes(name, ids, turned, now[turned], before, bits[turned],
                                     when[turned], tuple(parts), cause, first))  # fmt: skip
            self.members[name][idx] = now
            self.bits[name][idx] = bits
        if rt.exact and any(n in rt.exact for n in names):
            nxt = result.column(NEXT).to_numpy(zero_copy_only=False).astype("datetime64[us]")
            self.checks.set(idx, nxt)
        return Changes(pa.concat_tables(made)) if made else Changes()

    def _write(self, changes: Changes) -> None:
        from crmseg.segments.store import History

        if not changes:
            return
        if self.history is None:
            # one for the processor's life: it keeps the person keys it has seen (runs,
            # which add people too, restart the processor)
            self.history = History(self.state, remember=True)
        table = changes.table
        segment = table.column("segment")
        names = pc.unique(segment)
        hashes = pa.array([self.hashes[n] for n in names.to_pylist()], pa.string())
        logged = pa.table(
            {
                "segment": segment,
                "customer_id": table.column("customer_id"),
                "change": table.column("change"),
                "changed_at": table.column("at"),
                "reason": table.column("reason"),
                "cause": table.column("cause"),
                "definition_hash": hashes.take(pc.index_in(segment, value_set=names)),
            }
        )
        try:
            with self.guard():
                if self.closed:  # replaced meanwhile: its successor starts from the history
                    return
                with self.state.transaction():
                    self.history.apply_stream(table.select(["segment", "customer_id", "change",
                                                            "at"]))  # fmt: skip
                    last = self.log.add(logged)
                self.last_change = last
        except BaseException:
            self.history = None  # what it remembered may not have been committed
            raise

    def current_through(self, now: datetime) -> dict[str, datetime]:
        """Up to which instant each realtime segment is known current: the exact ones up to
        ``now`` (sweeps come when they are due), the periodic ones up to their last full
        sweep."""
        rt = self._realtime[1] if self._realtime else None
        if rt is None or self.at is None:
            return {}
        full = self.last_full or self.at
        return {n: now if n in rt.exact else full for n in self.names}

    def members_of(self, name: str) -> set[str]:
        """The current members of a realtime segment, as the processor holds them."""
        flags = self.members[name]
        return {self.keys[i] for i in np.flatnonzero(flags)}


def _flags(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as a numpy array, null as False (a rule that ends unknown is out)."""
    filled = pc.fill_null(column, False)
    out: np.ndarray = filled.to_numpy(zero_copy_only=False).astype(bool)
    return out


class Checks:
    """Each person's next check, and the earliest of them: the instants in a numpy array,
    found through buckets of one second (a batch sets thousands: no Python object each).

    Safe between threads (the server's status asks for the earliest while the worker sets
    and takes): even reading tidies the buckets."""

    def __init__(self) -> None:
        self.at = np.full(0, np.datetime64("NaT"), dtype="datetime64[us]")
        self.buckets: dict[int, list[np.ndarray]] = {}  # second -> people with a check in it
        self.seconds: list[int] = []  # a heap of the buckets' seconds
        self.lock = threading.Lock()

    def grow(self, extra: int) -> None:
        nat = np.full(extra, np.datetime64("NaT"), dtype="datetime64[us]")
        with self.lock:
            self.at = np.concatenate([self.at, nat])

    def set(self, people: np.ndarray, at: np.ndarray) -> None:
        """The next check of ``people`` is ``at`` (NaT: none; a person named twice: the
        last)."""
        with self.lock:
            self._set(people, at)

    def _set(self, people: np.ndarray, at: np.ndarray) -> None:
        _, last = np.unique(people[::-1], return_index=True)
        if len(last) < len(people):
            keep = np.sort(len(people) - 1 - last)
            people, at = people[keep], at[keep]
        self.at[people] = at
        ok = ~np.isnat(at)
        if not ok.any():
            return
        people, seconds = people[ok], at[ok].astype(np.int64) // 1_000_000
        order = np.argsort(seconds, kind="stable")
        seconds, people = seconds[order], people[order]
        starts = np.flatnonzero(np.diff(seconds)) + 1
        for second, group in zip(seconds[np.r_[0, starts]].tolist(), np.split(people, starts),
                                 strict=True):  # fmt: skip
            if second not in self.buckets:
                self.buckets[second] = []
                heapq.heappush(self.seconds, second)
            self.buckets[second].append(group)

    def _live(self, second: int) -> tuple[np.ndarray, np.ndarray]:
        """The people whose check is still in ``second``, and their checks."""
        parts = self.buckets[second]
        people = np.unique(np.concatenate(parts))
        at = self.at[people]
        live = ~np.isnat(at)
        live[live] = at[live].astype(np.int64) // 1_000_000 == second
        people, at = people[live], at[live]
        self.buckets[second] = [people]
        return people, at

    def earliest(self) -> datetime | None:
        with self.lock:
            return self._earliest()

    def _earliest(self) -> datetime | None:
        while self.seconds:
            second = self.seconds[0]
            people, at = self._live(second)
            if len(people):
                out: datetime = at.min().astype(datetime)
                return out
            heapq.heappop(self.seconds)
            del self.buckets[second]
        return None

    def take(self, until: datetime) -> tuple[np.ndarray, np.ndarray]:
        """The people whose check is at or before ``until`` (sorted) and their checks; those
        checks are cleared."""
        with self.lock:
            return self._take(until)

    def _take(self, until: datetime) -> tuple[np.ndarray, np.ndarray]:
        end = np.datetime64(until, "us")
        last = int(end.astype(np.int64)) // 1_000_000
        people: list[np.ndarray] = []
        instants: list[np.ndarray] = []
        while self.seconds and self.seconds[0] <= last:
            second = self.seconds[0]
            mine, at = self._live(second)
            due = at <= end
            people.append(mine[due])
            instants.append(at[due])
            if not due.all():  # only in the last second: the rest stays for later
                self.buckets[second] = [mine[~due]]
                break
            heapq.heappop(self.seconds)
            del self.buckets[second]
        if not people:
            return np.zeros(0, np.int64), np.zeros(0, "datetime64[us]")
        found, at = np.concatenate(people), np.concatenate(instants)
        order = np.argsort(found, kind="stable")
        found, at = found[order], at[order]
        self.at[found] = np.datetime64("NaT")
        return found, at


def _changes(
    name: str,
    ids: pa.Array,
    turned: np.ndarray,
    entered: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    when: np.ndarray,
    parts: tuple[Any, ...],
    cause: str,
    first: bool,
) -> pa.Table:
    """The changes of one segment, as rows of :data:`CHANGES` (a reason per combination of
    parts that turned, not per person)."""
    n = len(turned)
    # one row per combination of (parts before, parts after, entered)
    code = (before.astype(np.uint64) << np.uint64(32)) | after.astype(np.uint64)
    kinds, which = np.unique(np.stack([code, entered.astype(np.uint64)], axis=1), axis=0,
                             return_inverse=True)  # fmt: skip
    reasons = [_reason(parts, int(k) >> 32, int(k) & 0xFFFFFFFF, bool(e), first)
               for k, e in kinds.tolist()]  # fmt: skip
    zeros = pa.array(np.zeros(n, np.int32))
    return pa.table(
        {
            "segment": pa.array([name], pa.string()).take(zeros),
            "customer_id": ids.take(pa.array(turned)),
            "change": pa.array(["exited", "entered"]).take(pa.array(entered.astype(np.int8))),
            "at": pa.array(when, pa.timestamp("us")),
            "reason": pa.array(reasons, pa.string()).take(pa.array(which.ravel())),
            "cause": pa.array([cause], pa.string()).take(zeros),
        },
        schema=CHANGES,
    )


@functools.lru_cache(maxsize=4096)  # few combinations of parts turn: one string each
def _reason(parts: tuple[Any, ...], before: int, after: int, entered: bool, first: bool) -> str:
    """Which parts of the rule turned: ``turned true: ...; turned false: ...``."""
    if first:
        return "in at the stream's start" if entered else "out at the stream's start"
    if len(parts) <= 1:
        return "the rule became true" if entered else "the rule became false"
    rose = [p.text for j, p in enumerate(parts) if after >> j & 1 and not before >> j & 1]
    fell = [p.text for j, p in enumerate(parts) if before >> j & 1 and not after >> j & 1]
    out = []
    if rose:
        out.append("turned true: " + "; ".join(rose))
    if fell:
        out.append("turned false: " + "; ".join(fell))
    return ", ".join(out) or ("the rule became true" if entered else "the rule became false")
