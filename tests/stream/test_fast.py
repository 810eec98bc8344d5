"""The in-memory pieces of real time's fast path against plain Python: rows gathered per
person (grouped ones, chained new ones, blocks merged, regrouping) and the next checks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crmseg.stream import fast
from crmseg.stream.fast import PersonRows
from crmseg.stream.processor import Checks, _changes, _reason


def _rows(keys: list[str | None], first: int) -> pa.Table:
    return pa.table({"customer_id": pa.array(keys, pa.string()),
                     "n": pa.array(range(first, first + len(keys)), pa.int64())})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(-1, 30), max_size=40), max_size=25),
    asked=st.lists(st.sets(st.integers(-1, 35), max_size=12), min_size=1, max_size=5),
    merge=st.sampled_from([10**9, 60]),
)
def test_person_rows_gathers_what_was_stored(
    batches: list[list[int]], asked: list[set[int]], merge: int
) -> None:
    """Every row of the asked people, each once, with its owner; people unknown or without
    rows get none (-1 stands for a key nobody has, 30+ for people numbered later)."""
    index = {f"c{i}": i for i in range(25)}
    key = {i: (f"c{i}" if i >= 0 else None) for i in range(-1, 31)}
    initial = [random.Random(i).randrange(-1, 25) for i in range(50)]
    old = fast.MERGE_ROWS
    fast.MERGE_ROWS = merge
    try:
        rows = PersonRows(_rows([key[k] for k in initial], 0), index)
        stored = list(enumerate(initial))
        n = len(initial)
        for batch in batches:
            for k in batch:  # people first seen in this batch are numbered before it is added
                if k >= 0 and key[k] not in index:
                    index[key[k]] = len(index)
            owner = np.array([index.get(str(key[k]), -1) for k in batch], np.int64)
            # numbered by the caller (as the processor does) or by the rows' keys
            rows.add(_rows([key[k] for k in batch], n), owner if len(stored) % 2 else None)
            stored += [(n + j, k) for j, k in enumerate(batch)]
            n += len(batch)
            for people in asked:
                numbers = np.array(
                    sorted({index.get(f"c{p}", -1) if p >= 0 else -1 for p in people}), np.int64
                )
                got, where = rows.take(numbers)
                owners = numbers[where].tolist()
                pairs = sorted(zip(got.column("n").to_pylist(), owners, strict=True))
                wanted = sorted(
                    (i, index[key[k]])
                    for i, k in stored
                    if k >= 0 and key[k] in index and index[key[k]] in set(numbers.tolist())
                )
                assert pairs == wanted
    finally:
        fast.MERGE_ROWS = old


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.tuples(st.integers(0, 19), st.none() | st.integers(0, 5_000_000)),
                     max_size=15),
            st.integers(0, 3_000_000),
        ),
        max_size=15,
    )
)  # fmt: skip
@example(steps=[([(1, 100), (1, 150)], 0), ([(1, 200)], 0), ([], 1_000_000)])
def test_checks_give_every_due_person_once_at_their_instant(
    steps: list[tuple[list[tuple[int, int | None]], int]],
) -> None:
    """Setting checks (microseconds after T0, None for none) and taking those due, against a
    plain dict; the earliest is the dict's minimum."""
    t0 = datetime(2026, 1, 1)
    checks = Checks()
    checks.grow(20)
    plain: dict[int, datetime] = {}
    clock = 0
    for sets, advance in steps:  # a person named twice in one call: the last counts
        people = np.array([p for p, _ in sets], np.int64)
        at = np.array(
            [np.datetime64("NaT") if u is None else np.datetime64(t0 + timedelta(microseconds=u))
             for _, u in sets],
            dtype="datetime64[us]",
        )  # fmt: skip
        if len(people):
            checks.set(people, at)
        for p, u in sets:
            if u is None:
                plain.pop(p, None)
            else:
                plain[p] = t0 + timedelta(microseconds=u)
        assert checks.earliest() == min(plain.values(), default=None)
        clock += advance
        until = t0 + timedelta(microseconds=clock)
        found, when = checks.take(until)
        wanted = sorted((p, w) for p, w in plain.items() if w <= until)
        assert list(zip(found.tolist(), when.astype(datetime).tolist(), strict=True)) == wanted
        for p, _ in wanted:
            del plain[p]


def test_checks_set_with_nothing_due() -> None:
    checks = Checks()
    checks.grow(3)
    checks.set(np.array([0, 1], np.int64), np.array(["NaT", "NaT"], "datetime64[us]"))
    assert checks.earliest() is None
    found, _ = checks.take(datetime(2030, 1, 1))
    assert found.tolist() == []


@pytest.mark.parametrize("people", [[], [0]])
def test_person_rows_with_nothing_stored_later(people: list[int]) -> None:
    rows = PersonRows(_rows(["c0", "c0", None], 0), {"c0": 0})
    got, where = rows.take(np.array(people, np.int64))
    assert got.column("n").to_pylist() == ([0, 1] if people else [])
    assert where.tolist() == ([0, 0] if people else [])


@dataclass(frozen=True)
class _Part:
    text: str


@settings(max_examples=60, deadline=None)
@example(parts=32, rows=[(1 << 31, 0, False), (0, 1 << 31, True)])
@given(
    parts=st.integers(1, 32),
    rows=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.booleans()),
                  min_size=1, max_size=20),
)  # fmt: skip
def test_changes_give_each_row_the_reason_of_its_own_parts(
    parts: int, rows: list[tuple[int, int, bool]]
) -> None:
    """Reasons are worked out once per combination of parts: each row still gets its own,
    up to a rule of 32 parts (the last one included)."""
    mask = (1 << parts) - 1
    rows = [(b & mask, a & mask, e) for b, a, e in rows]
    named = tuple(_Part(f"p{j}") for j in range(parts))
    table = _changes(
        "s", pa.array([f"c{i}" for i in range(len(rows))]), np.arange(len(rows)),
        np.array([e for _, _, e in rows]), np.array([b for b, _, _ in rows], np.uint32),
        np.array([a for _, a, _ in rows], np.uint32),
        np.full(len(rows), np.datetime64("2026-01-01T00:00:00", "us")), named, "batch 1", False,
    )  # fmt: skip
    wanted = [_reason(named, b, a, e, False) for b, a, e in rows]
    assert table.column("reason").to_pylist() == wanted
    assert table.column("change").to_pylist() == ["entered" if e else "exited" for *_, e in rows]
