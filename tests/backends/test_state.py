from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg.backends.state import SegmentResult, StateStore
from crmseg.errors import StateError

T0 = datetime(2026, 1, 1)


def _result(segment: str, ids: list[str]) -> SegmentResult:
    return SegmentResult(segment, "h1", "rule", pa.array(ids, pa.string()))


def _run(store: StateStore, at: datetime, members: dict[str, list[str]], **kw: object) -> int:
    record = store.record_run(
        at, at, at, 10, {"customers": 10}, [_result(s, m) for s, m in members.items()], "t", **kw
    )
    return record.run_id


def test_intervals_follow_membership_over_runs(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.duckdb")
    _run(store, T0, {"a.x": ["1", "2"]})
    _run(store, T0 + timedelta(days=1), {"a.x": ["2", "3"]})
    _run(store, T0 + timedelta(days=2), {"a.x": ["1", "2", "3"]})
    assert store.members("a.x", T0) == ["1", "2"]
    assert store.members("a.x", T0 + timedelta(hours=30)) == ["2", "3"]
    assert store.members("a.x", T0 + timedelta(days=5)) == ["1", "2", "3"]
    assert store.members("a.x", T0 - timedelta(days=1)) == []
    stats = store.segments_in_run(2)["a.x"]
    assert (stats["size"], stats["entered"], stats["exited"]) == (2, 1, 1)
    # Customer 1 has two intervals: entered, exited, re-entered.
    rows = store.con.execute(
        "SELECT entered_at, exited_at FROM memberships WHERE customer_id = '1' ORDER BY 1"
    ).fetchall()
    assert rows == [(T0, T0 + timedelta(days=1)), (T0 + timedelta(days=2), None)]


def test_rerun_with_same_members_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.duckdb")
    _run(store, T0, {"a.x": ["1", "2"]})
    before = store.con.execute("SELECT * FROM memberships ORDER BY ALL").fetchall()
    _run(store, T0 + timedelta(days=1), {"a.x": ["1", "2"]})
    _run(store, T0 + timedelta(days=1), {"a.x": ["1", "2"]})
    assert store.con.execute("SELECT * FROM memberships ORDER BY ALL").fetchall() == before


def test_injected_failure_leaves_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    store = StateStore(path)
    _run(store, T0, {"a.x": ["1"], "a.y": ["2"]})
    with pytest.raises(StateError, match="injected"):
        _run(store, T0 + timedelta(days=1), {"a.x": ["3"], "a.y": ["4"]}, fail_after=1)
    store.close()
    reopened = StateStore(path)
    assert [r.run_id for r in reopened.runs()] == [1]
    assert reopened.members("a.x", T0 + timedelta(days=2)) == ["1"]
    assert reopened.members("a.y", T0 + timedelta(days=2)) == ["2"]


def test_run_at_picks_the_latest_run_not_after(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.duckdb")
    _run(store, T0, {"a.x": ["1"]})
    _run(store, T0 + timedelta(days=7), {"a.x": ["1"]})
    run = store.run_at(T0 + timedelta(days=3))
    assert run is not None and run.run_id == 1
    assert store.run_at(T0 - timedelta(days=1)) is None


# --- history in any run order (backfills) ---------------------------------------------------


CUSTOMERS = [str(i) for i in range(6)]
snapshots = st.lists(
    st.tuples(st.integers(0, 6), st.frozensets(st.sampled_from(CUSTOMERS))),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=snapshots)
def test_intervals_equal_the_snapshots_in_as_of_order(
    runs: list[tuple[int, frozenset[str]]],
) -> None:
    store = StateStore()
    truth: dict[int, frozenset[str]] = {}
    for day, members in runs:
        _run(store, T0 + timedelta(days=day), {"a.x": sorted(members)})
        truth[day] = members  # a later run at the same instant replaces it
    days = sorted(truth)
    for probe in range(-1, 8):
        at = T0 + timedelta(days=probe, hours=probe % 2 * 5)
        before = [d for d in days if T0 + timedelta(days=d) <= at]
        expected = sorted(truth[before[-1]]) if before else []
        assert store.members("a.x", at) == expected, (runs, probe)
    rows = store.con.execute(
        "SELECT customer_id, entered_at, exited_at FROM memberships ORDER BY 1, 2"
    ).fetchall()
    for (c1, _e1, x1), (c2, e2, _x2) in itertools.pairwise(rows):
        if c1 == c2:  # canonical: no overlap, no touching intervals
            assert x1 is not None and x1 < e2, rows
    for _c, e, x in rows:
        assert x is None or e < x
    # entered/exited of the newest run at each instant match consecutive snapshots.
    latest = {
        as_of: run_id
        for run_id, as_of in store.con.execute(
            "SELECT run_id, as_of FROM runs ORDER BY run_id"
        ).fetchall()
    }
    prev: frozenset[str] = frozenset()
    for day in days:
        stats = store.segments_in_run(latest[T0 + timedelta(days=day)])["a.x"]
        assert (stats["entered"], stats["exited"]) == (
            len(truth[day] - prev),
            len(prev - truth[day]),
        ), (runs, day)
        prev = truth[day]
