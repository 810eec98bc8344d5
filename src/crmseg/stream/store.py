"""Making a checked batch durable: its rows are appended to the warehouse's ``stream_*`` tables
in one commit, with the person each item names; only then is the batch acknowledged.

An item naming nobody known creates a person (``stream.unknown_people: create``: a customer
record with the given id, or an id derived from the email or phone, signed up at the item's
instant) or makes the whole batch refused (``reject``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from crmseg.errors import EventError
from crmseg.sources.streamed import ensure, schema, stream_table
from crmseg.stream.ingest import TIME, Batch

if TYPE_CHECKING:
    from crmseg.backends.base import Backend
    from crmseg.identity.directory import Directory


@dataclass
class Stored:
    """What one stored batch did."""

    batch: int  # its number, in order of arrival
    items: int
    touched: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # each once
    created: list[str] = field(default_factory=list)  # record ids of new people
    rows: dict[str, int] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # what was written


class StreamStore:
    def __init__(self, backend: Backend, directory: Directory, unknown: str = "create") -> None:
        self.backend = backend
        self.directory = directory
        self.unknown = unknown
        ensure(backend)
        self.last_batch = self._last_batch()

    def _last_batch(self) -> int:
        top = 0
        for name in ("events", "orders", "consent", "customers"):
            table = stream_table(name)
            if table in self.backend.canonical_tables():
                t = self.backend.canonical(table)
                top = max(top, int(self.backend.scalar(t.stream_batch.max()) or 0))
        return top

    def store(self, batch: Batch) -> Stored:
        """Append ``batch`` in one commit and say whom it touched; an unknown person under
        ``reject`` refuses the whole batch (nothing stored)."""
        number = self.last_batch + 1
        done = Stored(number, batch.size)
        people: dict[str, dict[str, Any]] = {}  # new record id -> its customers row
        problems: list[tuple[int, str, str]] = []
        keys: dict[str, list[str]] = {}
        found = self.directory.find
        for name, rows in batch.tables.items():
            out = keys[name] = []
            times = rows.columns[TIME[name]]
            for i, (kind, value) in enumerate(rows.who):
                key = found(kind, value)
                if key is None:
                    if self.unknown == "reject":
                        where = batch.first + rows.items[i]
                        problems.append((where, kind, f"nobody known has {kind} {value!r}"))
                        out.append("")
                        continue
                    key = self.directory.new_id(kind, value)
                    if key not in people:
                        people[key] = {"customer_id": key, "signup_at": times[i],
                                       "email": value if kind == "email" else None,
                                       "phone": value if kind == "phone" else None,
                                       "_who": (kind, value)}  # fmt: skip
                    else:
                        people[key]["signup_at"] = min(people[key]["signup_at"], times[i])
                out.append(key)
        if problems:
            raise EventError(sorted(problems), batch.source)
        tables: dict[str, pa.Table] = {}
        for name, rows in batch.tables.items():
            columns = dict(rows.columns)
            columns["customer_id"] = keys[name]
            tables[name] = _table(name, columns, number)
        every = pa.chunked_array([pa.array(k, pa.string()) for k in keys.values()], pa.string())
        done.touched = pc.unique(every)
        if people:
            rows_ = [{k: v for k, v in p.items() if k != "_who"} for p in people.values()]
            people_ = {c: [r[c] for r in rows_] for c in rows_[0]}
            tables["customers"] = _table("customers", people_, number)
        with self.backend.pending():
            for name, data in tables.items():
                self.backend.append(stream_table(name), data)
        # only after the commit: a failed commit leaves the directory as the warehouse is
        for key, p in people.items():
            self.directory.add(key, *p["_who"])
            done.created.append(key)
        self.last_batch = number
        done.rows = {n: t.num_rows for n, t in tables.items()}
        done.tables = tables
        return done


def _table(name: str, columns: dict[str, list[Any]], batch: int) -> pa.Table:
    """``columns`` as the rows of ``crmseg.stream_<name>`` (absent columns null)."""
    shape = schema(name)
    n = len(next(iter(columns.values())))
    arrays = [
        pa.array([batch] * n, pa.int64()) if f.name == "stream_batch"
        else pa.array(columns[f.name], f.type) if f.name in columns
        else pa.nulls(n, f.type)
        for f in shape
    ]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=shape)
