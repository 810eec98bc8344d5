from __future__ import annotations

import itertools
import os
from datetime import datetime, timedelta
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg.backends.state import DuckDBState, StateStore
from crmseg.errors import StateError
from crmseg.segments import store as history_store
from crmseg.segments.store import History, SegmentResult, _differences
from tests.conftest import OpenState
from tests.postgres import Server

T0 = datetime(2026, 1, 1)


def _result(segment: str, ids: list[str]) -> SegmentResult:
    return SegmentResult(segment, "h1", "rule", pa.array(ids, pa.string()))


def _run(store: History, at: datetime, members: dict[str, list[str]], **kw: object) -> int:
    record = store.record_run(
        at, at, at, 10, {"customers": 10}, [_result(s, m) for s, m in members.items()], "t", **kw
    )
    return record.run_id


def test_intervals_follow_membership_over_runs(open_state: OpenState) -> None:
    store = History(open_state())
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
    rows = store.state.con.execute(
        "SELECT entered_at, exited_at FROM memberships WHERE customer_id = '1' ORDER BY 1"
    ).fetchall()
    assert rows == [(T0, T0 + timedelta(days=1)), (T0 + timedelta(days=2), None)]


def test_rerun_with_same_members_changes_nothing(open_state: OpenState) -> None:
    store = History(open_state())
    _run(store, T0, {"a.x": ["1", "2"]})
    before = store.state.rows("SELECT * FROM memberships ORDER BY 1, 2, 3, 4, 5, 6")
    _run(store, T0 + timedelta(days=1), {"a.x": ["1", "2"]})
    _run(store, T0 + timedelta(days=1), {"a.x": ["1", "2"]})
    assert store.state.rows("SELECT * FROM memberships ORDER BY 1, 2, 3, 4, 5, 6") == before


def test_injected_failure_leaves_previous_state(open_state: OpenState) -> None:
    store = History(open_state())
    _run(store, T0, {"a.x": ["1"], "a.y": ["2"]})
    with pytest.raises(StateError, match="injected"):
        _run(store, T0 + timedelta(days=1), {"a.x": ["3"], "a.y": ["4"]}, fail_after=1)
    store.state.close()
    reopened = History(open_state())
    assert [r.run_id for r in reopened.runs()] == [1]
    assert reopened.members("a.x", T0 + timedelta(days=2)) == ["1"]
    assert reopened.members("a.y", T0 + timedelta(days=2)) == ["2"]


def test_run_at_picks_the_latest_run_not_after(open_state: OpenState) -> None:
    store = History(open_state())
    _run(store, T0, {"a.x": ["1"]})
    _run(store, T0 + timedelta(days=7), {"a.x": ["1"]})
    run = store.run_at(T0 + timedelta(days=3))
    assert run is not None and run.run_id == 1
    assert store.run_at(T0 - timedelta(days=1)) is None


# --- history in any run order (backfills) ---------------------------------------------------


CUSTOMERS = [str(i) for i in range(6)]
SEGMENTS = ("a.x", "a.y")
members_of = st.frozensets(st.sampled_from(CUSTOMERS))
# A run selects one or both segments (``--select``), each with its own members.
snapshots = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.dictionaries(st.sampled_from(SEGMENTS), members_of, min_size=1),
    ),
    min_size=1,
    max_size=8,
)


# Differences come from bitmaps or, for key spaces too big for them, from a join: both agree.
@pytest.mark.parametrize("cells", [history_store.BITMAP_CELLS, 0], ids=["bitmap", "join"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=snapshots)
def test_intervals_equal_the_snapshots_in_as_of_order(
    cells: int, runs: list[tuple[int, dict[str, frozenset[str]]]]
) -> None:
    with mock.patch.object(history_store, "BITMAP_CELLS", cells):
        _check_intervals(runs)


# The same on a Postgres state (the splice's statements translated), fewer examples: each
# opens a schema of its own on the server.
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(runs=snapshots)
@pytest.mark.postgres
def test_intervals_equal_the_snapshots_on_postgres(
    postgres: Server, state_database: str, runs: list[tuple[int, dict[str, frozenset[str]]]]
) -> None:
    from crmseg.backends.pgstate import PostgresState
    from crmseg.config import StateConfig

    schema = f"h{next(_EXAMPLES)}_{os.getpid()}"
    config = StateConfig.model_validate(
        {"kind": "postgres", "host": postgres.host, "port": postgres.port,
         "user": postgres.user, "database": state_database, "schema": schema}
    )  # fmt: skip
    state = PostgresState(config)
    try:
        _check_intervals(runs, state)
    finally:
        state.execute(f"DROP SCHEMA {schema} CASCADE")
        state.close()


_EXAMPLES = itertools.count()


def _check_intervals(
    runs: list[tuple[int, dict[str, frozenset[str]]]], state: StateStore | None = None
) -> None:
    store = History(state or DuckDBState())
    truth: dict[str, dict[int, frozenset[str]]] = {s: {} for s in SEGMENTS}
    latest: dict[tuple[str, int], int] = {}
    for day, chosen in runs:
        run_id = _run(store, T0 + timedelta(days=day), {s: sorted(m) for s, m in chosen.items()})
        for seg, members in chosen.items():
            truth[seg][day] = members  # a later run at the same instant replaces it
            latest[(seg, day)] = run_id
    for seg in SEGMENTS:
        days = sorted(truth[seg])
        for probe in range(-1, 8):
            at = T0 + timedelta(days=probe, hours=probe % 2 * 5)
            before = [d for d in days if T0 + timedelta(days=d) <= at]
            expected = sorted(truth[seg][before[-1]]) if before else []
            assert store.members(seg, at) == expected, (runs, seg, probe)
        rows = store.state.rows(
            "SELECT customer_id, entered_at, exited_at FROM memberships WHERE segment = ? "
            "ORDER BY 1, 2",
            [seg],
        )
        for (c1, _e1, x1), (c2, e2, _x2) in itertools.pairwise(rows):
            if c1 == c2:  # canonical: no overlap, no touching intervals
                assert x1 is not None and x1 < e2, rows
        for _c, e, x in rows:
            assert x is None or e < x
        # entered/exited of the newest run at each instant match consecutive snapshots.
        prev: frozenset[str] = frozenset()
        for day in days:
            stats = store.segments_in_run(latest[(seg, day)])[seg]
            assert (stats["size"], stats["entered"], stats["exited"]) == (
                len(truth[seg][day]),
                len(truth[seg][day] - prev),
                len(prev - truth[seg][day]),
            ), (runs, seg, day)
            prev = truth[seg][day]


def _pairs(rows: list[tuple[int, int]]) -> pa.Table:
    return pa.table(
        {
            "sid": pa.array([r[0] for r in rows], pa.int32()),
            "pid": pa.array([r[1] for r in rows], pa.int32()),
        }
    )


def test_differences_by_bitmap_are_the_set_differences() -> None:
    old = _pairs([(1, 5), (1, 7), (2, 5), (3, 1)])
    cur = _pairs([(1, 7), (2, 5), (2, 9), (4, 2)])
    split = _differences(old, cur)
    assert split is not None
    leaving, joining = (sorted(zip(*t.to_pydict().values(), strict=True)) for t in split)
    assert leaving == [(1, 5), (3, 1)]
    assert joining == [(2, 9), (4, 2)]
    with mock.patch.object(history_store, "BITMAP_CELLS", 10):  # 5 x 10 cells: too many
        assert _differences(old, cur) is None
