"""A run's grouped scans carried from instant to instant give exactly the wide table a full
evaluation gives: every trait and segment, at every instant, forwards and backwards; other
data, an unreadable file or a rule that reads the instant itself mean a full scan."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from crmseg.segments.steps import StepCache

T0 = datetime(2026, 9, 1)
EXTRA = """
  - name: test.recent_cheap_orders
    rule: count(orders where amount < 40 and days_since(ordered_at) <= 20) >= 1
  - name: test.old_big_orders
    rule: count(orders where amount >= 100 within 45d) >= 1 and last_gap(orders.ordered_at) > 10
"""


def _whole_numbers(root: Path) -> None:
    """Amounts in whole units: sums of floats then come out the same in any order, so the
    two evaluations can be held to exact equality (an engine adds a group's values in the
    order its threads meet them, which moves the last bit and can reorder ties)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for path in (root / "data").glob("*.parquet"):
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if pa.types.is_floating(field.type):
                table = table.set_column(i, field, pc.round(table.column(i)))
        pq.write_table(table, path)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("steps") / "shop"
    init_project(root, demo=True, customers=600, seed=5)
    _whole_numbers(root)
    config = root / "crmseg.yml"
    text = config.read_text()
    assert "\nmodels:\n" in text  # the demo's own block (its propensity categories)
    # one fit serves every later instant: faster
    config.write_text(text.replace("\nmodels:\n", "\nmodels:\n  refit: 3650d\n"))
    segments = root / "segments"
    (segments / "zz_test.yml").write_text("segments:" + EXTRA)
    with Workspace.open(root) as ws:
        ws.run(as_of=T0)
    return root


def _wide(ws: Workspace, at: datetime, steps: StepCache | None) -> pa.Table:
    tables = ws._loaded_tables()
    plan = ws.compiled.plan(tables)
    wide = plan.wide(tables, at, ws._sql_segments(), steps=steps)
    return ws.backend.execute(wide).sort_by("customer_id")


def _same(carried: pa.Table, full: pa.Table, at: datetime) -> None:
    assert carried.column_names == full.column_names
    assert carried.num_rows == full.num_rows
    for name in full.column_names:
        a, b = carried.column(name).to_pylist(), full.column(name).to_pylist()
        wrong = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if wrong:
            raise AssertionError(
                f"{name} at {at:%Y-%m-%d}: {len(wrong)} customers differ, e.g. {wrong[:3]}"
            )


def _walk(ws: Workspace, folder: Path, days: list[int]) -> list[dict[str, dict[str, object]]]:
    """Evaluate at T0 + each day offset, carrying the scans; compare each to a full one."""
    reports = []
    for d in days:
        at = T0 + timedelta(days=d)
        cache = StepCache(ws.backend, folder, "data")
        _same(_wide(ws, at, cache), _wide(ws, at, None), at)
        reports.append(cache.report)
    return reports


def test_carried_scans_equal_a_full_evaluation(shop: Path, tmp_path: Path) -> None:
    with Workspace.open(shop) as ws:
        reports = _walk(ws, tmp_path, [0, 1, 3, 3, 40, -150, 2])
    first, *rest = reports
    assert {r["how"] for r in first.values()} == {"computed"}
    assert "orders" in first and "orders.windows" in first and "consent" in first
    assert "orders.rfm" in first and "events.sequences" in first
    updated = [r for rep in rest for r in rep.values() if r["how"] == "updated"]
    assert any(r["touched"] > 0 for r in updated)  # customers really were recomputed
    assert reports[3]["orders"]["touched"] == 0  # the same instant again: nothing crossed
    assert reports[5]["orders"]["how"] == "computed"  # back in time: a full scan
    assert reports[6]["orders"]["since"] == (T0 - timedelta(days=150)).isoformat()
    assert all(r["orders.instant"]["how"] == "computed" for r in reports)  # reads the instant


def test_a_table_scanned_in_chunks_gives_the_same_columns(
    shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table's aggregates in several scans (distinct counts in one of their own), carried
    from instant to instant, equal one scan of them all; every carried step over the table
    (chunks, window aggregates, the RFM summary) shares one look for customers whose rows
    crossed a bound, and one read of their rows."""
    from crmseg.rules import plan as plan_module

    with Workspace.open(shop) as ws:
        whole = {d: _wide(ws, T0 + timedelta(days=d), None) for d in (0, 5)}
        monkeypatch.setattr(plan_module, "WIDEST", 3)
        looked: list[str] = []  # steps that scanned for crossed rows
        queries = [0]
        execute = ws.backend.execute

        def counted(expr):  # type: ignore[no-untyped-def]
            queries[0] += 1
            return execute(expr)

        monkeypatch.setattr(ws.backend, "execute", counted)

        class Counting(StepCache):
            def _touched(self, step, since, until, windows):  # type: ignore[no-untyped-def]
                before = queries[0]
                out = super()._touched(step, since, until, windows)
                if queries[0] > before:
                    looked.append(step.name)
                return out

        reports = []
        for d in (0, 5):
            at = T0 + timedelta(days=d)
            cache = Counting(ws.backend, tmp_path, "data")
            _same(_wide(ws, at, cache), whole[d], at)
            _same(_wide(ws, at, None), whole[d], at)
            reports.append(cache.report)
    chunks = [n for n in reports[0] if n == "orders" or n.startswith("orders.")]
    assert {"orders", "orders.2", "orders.3", "orders.distinct"} <= set(chunks), chunks
    carried = [n for n in chunks if n not in ("orders.windows", "orders.rfm")]
    carried = [n for n in carried if not n.startswith("orders.instant")]
    assert all(reports[1][n]["how"] == "updated" for n in carried), reports[1]
    assert len({reports[1][n]["touched"] for n in carried}) == 1
    # one look for the whole table; the window aggregates and the RFM summary, with fewer
    # look-backs, find their (fewer) customers among the rows it read
    assert len([n for n in looked if n == "orders" or n.startswith("orders.")]) == 1, looked
    for narrower in ("orders.windows", "orders.rfm"):
        assert reports[1][narrower]["how"] == "updated"
        assert reports[1][narrower]["touched"] <= reports[1]["orders"]["touched"]


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(min_value=0, max_value=90), min_size=2, max_size=3))
def test_any_order_of_instants_gives_the_full_answer(
    shop: Path, tmp_path_factory: pytest.TempPathFactory, days: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("walk")
    with Workspace.open(shop) as ws:
        _walk(ws, folder, days)


def test_a_rule_reading_the_instant_is_never_carried(shop: Path, tmp_path: Path) -> None:
    with Workspace.open(shop) as ws:
        tables = ws._loaded_tables()
        plan = ws.compiled.plan(tables)
        seen: dict[str, bool] = {}

        class Spy(StepCache):
            def __call__(self, step, as_of):  # type: ignore[no-untyped-def]
                seen[step.name] = step.incremental
                return super().__call__(step, as_of)

        spy = Spy(ws.backend, tmp_path, "data")
        ws.backend.execute(plan.wide(tables, T0, select=["test.recent_cheap_orders"], steps=spy))
        assert seen == {"orders.instant": False}
        seen.clear()
        ws.backend.execute(plan.wide(tables, T0, select=["test.old_big_orders"], steps=spy))
        assert seen == {"orders": True, "orders.windows": True}
    assert len(list(tmp_path.glob("*.arrow"))) == 2  # only the carried scans are kept


def test_other_data_or_an_unreadable_file_means_a_full_scan(shop: Path, tmp_path: Path) -> None:
    with Workspace.open(shop) as ws:
        _walk(ws, tmp_path, [10])
        other = StepCache(ws.backend, tmp_path, "other data")
        at = T0 + timedelta(days=11)
        _same(_wide(ws, at, other), _wide(ws, at, None), at)
        assert {r["how"] for r in other.report.values()} == {"computed"}
        for f in tmp_path.glob("*.arrow"):
            f.write_bytes(f.read_bytes()[:100])  # torn
        torn = StepCache(ws.backend, tmp_path, "other data")
        at += timedelta(days=1)
        _same(_wide(ws, at, torn), _wide(ws, at, None), at)
        assert {r["how"] for r in torn.report.values()} == {"computed"}


def test_runs_carry_scans_and_record_what_they_did(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        run = ws.run(as_of=T0 + timedelta(days=1))
        recorded = ws.runs()[-1].details["steps"]
    assert run.details["steps"] == recorded
    assert recorded["orders"]["how"] == "updated"  # from the fixture's run at T0
    assert recorded["orders"]["since"] == T0.isoformat()
    assert (shop / ".crmseg" / "steps").is_dir()


def test_a_changed_source_scans_everything_again(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root = tmp_path / "shop"
    init_project(root, demo=True, customers=300, seed=2)
    with Workspace.open(root) as ws:
        ws.run(as_of=T0)
        path = root / "data" / "orders.parquet"
        orders = pq.read_table(path)
        pq.write_table(orders.slice(0, orders.num_rows - 5), path)
        run = ws.run(as_of=T0 + timedelta(days=1))
    assert run.details["sources"]["orders"] == "loaded"
    assert run.details["steps"]["orders"]["how"] == "computed"
