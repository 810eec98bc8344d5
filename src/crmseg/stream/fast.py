"""The realtime plan for a few people, fast: the same wide query, compiled once, over their
rows gathered from memory.

At the processor's start each table the realtime segments read is read once into memory,
grouped by person (only the columns the compiled query names). A batch's people then cost
gathering their rows (array takes), not scanning the warehouse, and the query is compiled
once, not per batch: it is compiled at a reference instant, and a batch at another instant
shifts its rows' timestamps by the difference instead. That is exact because the rules it
serves read time only relative to the instant (windows, ``now - 30d``, ``days_since``): a rule
with an absolute date (``date('2024-01-01')``) or a ``date`` column keeps the general path.
Rows stored after the start are kept beside the grouped ones and gathered the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crmseg.rules import ast as A
from crmseg.stream.realtime import NEXT, PERSON, Realtime, _closure_nodes, referenced

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend

PREFIX = "__rt_"
# columns the plan reads without a rule naming them: when a customer begins, an event's name,
# what a consent row is about
_IMPLICIT = {"customers": ("signup_at",), "events": ("name", "occurred_at"),
             "consent": ("channel", "status", "purpose", "updated_at")}  # fmt: skip
MERGE_ROWS = 2_000_000  # rows stored since the start before they are grouped too


class PersonRows:
    """One table's rows grouped by person: gathering a few people's rows is array takes.

    People are numbered by the processor (``index``: person key -> number); rows of people it
    does not know (no customer record) can never be gathered, so they are left out."""

    def __init__(self, table: pa.Table, index: Mapping[str, int]) -> None:
        self.schema = table.schema
        self.index = index
        self._group(table)
        self._fresh()

    def _fresh(self) -> None:
        """No rows stored since the grouping."""
        # in blocks of one chunk each, a few (a take over many chunks copies them all first):
        # a block is merged into the one before it once that is not much bigger
        self.delta: list[pa.Table] = []
        self.delta_starts: list[int] = []
        self.delta_rows = 0
        # the new rows of a person as a chain, newest first: ``head`` per person, then
        # ``prev`` per new row (-1 ends it); a batch links thousands with a few array steps
        self.head = np.full(len(self.index), -1, np.int64)
        self.prev = np.full(1024, -1, np.int64)

    def _group(self, table: pa.Table) -> None:
        encoded = table.column("customer_id").combine_chunks().cast(pa.string())
        encoded = encoded.dictionary_encode()
        found = self.index.get
        numbers = np.array([found(k, -1) for k in encoded.dictionary.to_pylist()], np.int64)
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        person = np.where(codes >= 0, numbers[np.maximum(codes, 0)], -1) if len(codes) else codes
        keep = np.flatnonzero(person >= 0)
        order = keep[np.argsort(person[keep], kind="stable")]
        self.rows = table.take(pa.array(order)).combine_chunks()
        size = max(len(self.index), int(person.max()) + 1 if len(person) else 0)
        self.counts = np.bincount(person[order], minlength=size).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def add(self, rows: pa.Table, owner: np.ndarray | None = None) -> None:
        """Rows stored after the start (``owner``: each one's person number, when known),
        found by person through their chains (and grouped with the others once there are
        many)."""
        if owner is None:
            owner = _numbers(self.index, rows.column("customer_id").to_pylist())
        self.head = _grown(self.head, len(self.index))  # people numbered since
        first = self.delta_rows
        end = first + len(owner)
        if end > len(self.prev):
            self.prev = _grown(self.prev, max(end, 2 * len(self.prev)))
        rows_at = np.flatnonzero(owner >= 0)
        order = rows_at[np.argsort(owner[rows_at], kind="stable")]  # by person, then in order
        people = owner[order]
        at = order + first
        same = np.zeros(len(order), dtype=bool)
        same[1:] = people[1:] == people[:-1]
        # each row links to the one before it of its person: in this batch, or the head
        self.prev[at[same]] = at[np.flatnonzero(same) - 1]
        opens = ~same
        self.prev[at[opens]] = self.head[people[opens]]
        closes = np.ones(len(order), dtype=bool)
        closes[:-1] = ~same[1:]
        self.head[people[closes]] = at[closes]
        self.delta.append(rows.combine_chunks())
        self.delta_starts.append(first)
        while len(self.delta) > 1 and self.delta[-2].num_rows <= 2 * self.delta[-1].num_rows:
            last = self.delta.pop()
            self.delta_starts.pop()
            self.delta[-1] = pa.concat_tables([self.delta[-1], last]).combine_chunks()
        self.delta_rows = end
        if self.delta_rows >= MERGE_ROWS:
            self._group(pa.concat_tables([self.rows, *self.delta]))
            self._fresh()

    def take(self, people: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """The rows of ``people`` (their numbers), and each row's person as a position in
        ``people``."""
        where = np.flatnonzero((people >= 0) & (people < len(self.counts)))
        known = people[where]
        counts = self.counts[known]
        total = int(counts.sum())
        owners = [np.repeat(where, counts)]
        if total:
            # the ranges [start, start + count) of every person, as one index array
            ends = np.cumsum(counts)
            offsets = np.repeat(self.starts[known] - (ends - counts), counts)
            parts = [self.rows.take(pa.array(np.arange(total, dtype=np.int64) + offsets))]
        else:
            parts = [self.rows.slice(0, 0)]
        if self.delta_rows:
            mine = np.flatnonzero((people >= 0) & (people < len(self.head)))
            link = self.head[people[mine]]
            rows: list[np.ndarray] = []
            whose: list[np.ndarray] = []
            while True:  # one step down every chain at once
                live = link >= 0
                if not live.any():
                    break
                mine, link = mine[live], link[live]
                rows.append(link)
                whose.append(mine)
                link = self.prev[link]
            if rows:
                at, who = np.concatenate(rows), np.concatenate(whose)
                block = np.searchsorted(self.delta_starts, at, side="right") - 1
                for b in np.unique(block).tolist():
                    mine_b = block == b
                    local = at[mine_b] - self.delta_starts[b]
                    parts.append(self.delta[b].take(pa.array(local)))
                    owners.append(who[mine_b])
        return pa.concat_tables(parts), np.concatenate(owners)


class Fast:
    """The exact realtime segments, compiled once over gathered rows (see the module)."""

    def __init__(
        self,
        backend: Backend,
        rt: Realtime,
        tables: Mapping[str, ir.Table],
        names: Sequence[str],
        reference: datetime,
        index: Mapping[str, int],
    ) -> None:
        from ibis.common.exceptions import IbisError

        for name in names:
            for root in _closure_nodes(rt.plan, name) or []:
                if any(isinstance(n, A.Lit) and n.kind == "time" for n in A.walk(root)):
                    raise Unsupported(f"{name} compares with an absolute instant")
        # its own in-memory engine: it reads only the rows it is given, so a batch is
        # evaluated while the warehouse serves others
        engine = backend.private()
        if engine is None:
            raise Unsupported(f"the {backend.kind} backend has no private in-memory engine")
        self.backend = engine
        self.names = list(names)
        self.reference = reference
        read = sorted(n for n in tables if n in rt.read or n in _aggregated(rt, names))
        full = {n: tables[n].schema().to_pyarrow() for n in read}
        refs = {r for n in names for r in referenced(rt.plan, n)}
        for table, column in refs:
            schema = full.get(table)
            if (
                schema is not None
                and column in schema.names
                and pa.types.is_date(schema.field(column).type)
            ):
                raise Unsupported(f"{table}.{column} is a date: it cannot be shifted in time")
        # the timestamps next checks come from, computed here rather than in the query
        self.stamps = {n: [c for c in sorted(rt.stamps.get(n, ()))
                           if c in full[n].names and pa.types.is_timestamp(full[n].field(c).type)]
                       for n in read}  # fmt: skip
        self.steps = np.array(rt.steps(), dtype=np.int64)
        # only the columns the rules read (the rest of a table can be most of its size):
        # compiled over those alone, or over whole tables if the plan wants more
        needed = {n: {"customer_id", *self.stamps[n], *_IMPLICIT.get(n, ()),
                      *(c for t, c in refs if t == n)} for n in read}  # fmt: skip
        narrow = {n: pa.schema([f for f in full[n] if f.name in needed[n]]) for n in read}
        for schemas in (narrow, full):
            for n, schema in schemas.items():  # empty stand-ins to compile against
                engine.bind(PREFIX + n, schema.empty_table())
            named = {n: engine.relation(PREFIX + n) for n in read}
            try:  # over these tables only: a plan that wants another cannot take this path
                expr = rt.evaluate(named, reference, None, self.names, checks=False)
                break
            except KeyError as exc:
                raise Unsupported(f"the realtime segments read {exc} as well") from None
            except (AttributeError, IbisError):  # a column left out: whole tables then
                continue
        else:
            raise Unsupported("the realtime segments cannot be compiled over gathered rows")
        self.full = schemas
        self.run_expr = engine.prepared(expr, {PREFIX + n: schemas[n] for n in read})
        self.index = index
        self.cached = {
            n: PersonRows(backend.execute(_recent(tables[n], n, rt, reference, schemas[n])), index)
            for n in read
        }

    def add(
        self, name: str, rows: pa.Table, known: tuple[pa.Array, np.ndarray] | None = None
    ) -> None:
        """Rows a batch stored (person keys in customer_id); ``known``: keys and their
        numbers, covering the rows' keys, to number them by (an Arrow lookup)."""
        cache = self.cached.get(name)
        if cache is None:
            return
        owner = None
        if known is not None:
            keys, numbers = known
            found = pc.index_in(rows.column("customer_id"), value_set=keys)
            pos = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
            owner = np.where(pos >= 0, numbers[np.maximum(pos, 0)], -1) if len(pos) else None
        cache.add(_fill(rows, cache.schema).cast(cache.schema), owner)

    def run(self, keys: Sequence[str] | pa.Array, at: datetime,
            people: np.ndarray | None = None) -> pa.Table:  # fmt: skip
        """Membership, parts and next checks of ``keys`` at ``at`` (like Realtime.evaluate),
        ``people`` their numbers when known: the query over the shifted rows, the next checks
        over the true ones."""
        if people is None:
            listed = keys.to_pylist() if isinstance(keys, pa.Array) else keys
            people = _numbers(self.index, listed)
        shift = self.reference - at
        instant = int(np.datetime64(at, "us").astype(np.int64))
        best = np.full(len(keys), _NEVER, dtype=np.int64)
        bound: dict[str, pa.Table] = {}
        for n, cache in self.cached.items():
            rows, where = cache.take(people)  # where: each row's position in keys
            for c in self.stamps[n]:
                _earliest(best, where, rows.column(c), instant, self.steps)
            bound[PREFIX + n] = _widen(_shifted(rows, shift), self.full[n])
        result = self.run_expr(bound)
        given = keys if isinstance(keys, pa.Array) else pa.array(list(keys), pa.string())
        return _with_checks(result, given, best, people)


_NEVER = np.iinfo(np.int64).max


def _numbers(index: Mapping[Any, int], keys: Sequence[Any]) -> np.ndarray:
    """The person number of each key (-1: nobody numbered)."""
    return np.fromiter(map(index.get, keys, itertools.repeat(-1)), np.int64, len(keys))


def _grown(numbers: np.ndarray, size: int) -> np.ndarray:
    """``numbers`` extended to ``size`` with -1 (as it is when already that long)."""
    if len(numbers) >= size:
        return numbers
    out = np.full(size, -1, np.int64)
    out[: len(numbers)] = numbers
    return out


def _earliest(
    best: np.ndarray, where: np.ndarray, column: pa.ChunkedArray, at: int, steps: np.ndarray
) -> None:
    """Lower ``best`` (per key position) to each row's earliest candidate after ``at``: its
    timestamp plus the smallest step that takes it past ``at`` (microseconds)."""
    stamps = column.to_numpy(zero_copy_only=False)
    if not len(stamps):
        return
    valid = ~np.isnat(stamps)
    ts = stamps.astype("datetime64[us]").astype(np.int64)
    pos = np.searchsorted(steps, at - ts, side="right")
    ok = valid & (pos < len(steps))
    if ok.any():
        np.minimum.at(best, where[ok], ts[ok] + steps[pos[ok]])


def _with_checks(
    result: pa.Table, keys: pa.Array, best: np.ndarray, people: np.ndarray
) -> pa.Table:
    """``result`` with the next check and the number of each of its people (``people``: the
    keys' numbers), and a row (members of nothing) for each person with a check who does not
    exist yet."""
    found = pc.index_in(result.column("customer_id"), value_set=keys)
    mine = found.to_numpy(zero_copy_only=False).astype(np.int64)
    present = np.zeros(len(keys), dtype=bool)
    present[mine] = True
    later = np.flatnonzero(~present & (best != _NEVER))
    if len(later):
        ids_later = keys.take(pa.array(later))
        extra = pa.table(
            {
                f.name: ids_later if f.name == "customer_id" else pa.nulls(len(later), f.type)
                for f in result.schema
            }
        )
        result = pa.concat_tables([result, extra.cast(result.schema)])
        mine = np.concatenate([mine, later])
    values = best[mine]
    checks = pa.array(values.astype("datetime64[us]"), pa.timestamp("us"), mask=values == _NEVER)
    return result.append_column(NEXT, checks).append_column(PERSON, pa.array(people[mine]))


class Unsupported(Exception):
    """The segments read time in a way a shift cannot carry: the general path serves them."""


def _recent(
    table: ir.Table, name: str, rt: Realtime, start: datetime, schema: pa.Schema
) -> ir.Table:
    """The rows of ``table`` the exact segments may still read from ``start`` on: those
    within its horizon (a table read only through windows keeps only their span)."""
    from crmseg.sources.model import TABLES

    out = table.select(*schema.names)
    horizon = rt.horizon.get(name, math.inf)
    spec = TABLES.get(name)
    time = spec.time if spec is not None else None
    if math.isinf(horizon) or time is None or time not in schema.names:
        return out
    since = start - timedelta(seconds=horizon)
    column = out[time].cast("timestamp")
    return out.filter(column.isnull() | (column >= since))


def _aggregated(rt: Realtime, names: Sequence[str]) -> set[str]:
    from crmseg.stream.realtime import _tables

    out: set[str] = {"customers"}
    for n in names:
        out |= _tables(rt.plan, n)
    return out


def _shifted(table: pa.Table, shift: Any) -> pa.Table:
    """``table`` with every timestamp moved by ``shift``."""
    if not shift:
        return table
    by = pa.scalar(shift, pa.duration("us"))
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            moved = pc.add(table.column(i), by).cast(field.type)
            table = table.set_column(i, field, moved)
    return table


def _widen(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns the query never reads, as nulls, in the full schema."""
    n = table.num_rows
    arrays = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _fill(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    n = rows.num_rows
    arrays = [
        rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
