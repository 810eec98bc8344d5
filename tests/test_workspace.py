"""The Python API (the facade the CLI and server share) on a small real project."""

from __future__ import annotations

from datetime import datetime

import pytest

from crmseg import Workspace
from crmseg.errors import RuleErrors, SegmentError, StateError

from .conftest import MakeProject

AS_OF = datetime(2024, 12, 31)


def test_run_members_preview_explain(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws:
        result = ws.run(as_of=AS_OF)
        assert result.customers == 4
        assert result.sizes == {"demographic.dach": 2, "value.buyers": 3}
        assert result.sources == {"customers": 4, "orders": 4}
        assert ws.members("value.buyers") == ["1", "2", "4"]
        preview = ws.preview("value.buyers", as_of=AS_OF, sql=True)
        assert (preview.size, preview.customers, preview.sample) == (3, 4, ["1", "2", "4"])
        assert preview.english.startswith("customers")
        assert preview.sql is not None and "SELECT" in preview.sql
        explanation = ws.explain("value.buyers", "3", as_of=AS_OF)
        assert explanation.verdict is False


def test_members_as_of_answers_from_history(make_project: MakeProject) -> None:
    root = make_project()
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 5, 2))  # only order 10 (customer 1) is visible
        ws.run(as_of=AS_OF)
        assert ws.members("value.buyers", as_of=datetime(2024, 5, 10)) == ["1"]
        assert ws.members("value.buyers", as_of=datetime(2025, 6, 1)) == ["1", "2", "4"]
        # Changing the data does not change what history says about the past.
        (root / "data" / "orders.csv").write_text(
            "order_id,customer_id,created,total\n99,3,2024-01-01 00:00:00,5\n"
        )
        assert ws.members("value.buyers", as_of=datetime(2024, 5, 10)) == ["1"]


def test_members_without_a_run_before_as_of_are_computed(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws:
        ws.run(as_of=AS_OF)
        assert ws.members("value.buyers", as_of=datetime(2024, 5, 20)) == ["1", "2"]


def test_customers_who_signed_up_later_do_not_exist_yet(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws:
        result = ws.run(as_of=datetime(2024, 2, 15))
        assert result.customers == 2


def test_failed_run_leaves_previous_state(make_project: MakeProject) -> None:
    root = make_project()
    with Workspace.open(root) as ws:
        first = ws.run(as_of=AS_OF)
        with pytest.raises(StateError, match="injected"):
            ws.run(as_of=datetime(2025, 1, 31), _fail_after=1)
    with Workspace.open(root) as ws:
        assert [r.run_id for r in ws.runs()] == [first.run_id]
        assert ws.members("demographic.dach") == ["1", "2"]


def test_rule_errors_stop_the_run_before_loading(make_project: MakeProject) -> None:
    root = make_project(
        segments__core_yml=(
            "segments:\n  - name: demographic.x\n    description: d\n    owner: o\n"
            "    rule: country > 3\n"
        )
    )
    with Workspace.open(root) as ws:
        with pytest.raises(RuleErrors) as info:
            ws.run(as_of=AS_OF)
        err = info.value.errors[0]
        assert (err.location.file, err.location.line) == ("segments/core.yml", 5)
        assert ws.backend.canonical_tables() == []


def test_validate_collects_problems_without_writing(make_project: MakeProject) -> None:
    root = make_project(data__orders_csv="order_id,customer_id,created,total\n1,1,x,2\n")
    with Workspace.open(root) as ws:
        report = ws.validate()
        assert not report.ok
        assert any("orders.ordered_at" in p for p in report.problems)
        assert ws.backend.canonical_tables() == []


def test_unknown_segment(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws, pytest.raises(SegmentError, match="did you mean"):
        ws.members("value.buyer")


def test_sql_segment_escape_hatch(make_project: MakeProject) -> None:
    root = make_project(
        segments__sql_yml=(
            "segments:\n  - name: custom.big_orders\n    description: d\n    owner: o\n"
            "    sql: select customer_id from crmseg.orders where amount > 100\n"
        )
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)  # first load: SQL segments are checked after the tables exist
        assert ws.members("custom.big_orders") == ["1", "2"]


def test_failed_run_keeps_the_previous_data(make_project: MakeProject) -> None:
    root = make_project()
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
    (root / "data" / "orders.csv").write_text(
        "order_id,customer_id,created,total\n99,3,2024-01-01 00:00:00,5\n"
    )
    with Workspace.open(root) as ws:
        with pytest.raises(StateError, match="injected"):
            ws.run(as_of=datetime(2025, 1, 31), _fail_after=0)
        assert ws.backend.scalar(ws.backend.canonical("orders").count()) == 4
        assert ws.preview("value.buyers", as_of=AS_OF).size == 3


def test_members_after_a_run_that_did_not_select_the_segment(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws:
        ws.run(as_of=datetime(2024, 5, 2))  # only customer 1 has ordered
        ws.run(as_of=AS_OF, select=["demographic.dach"])
        assert ws.members("value.buyers") == ["1"]
        assert ws.members("value.buyers", as_of=AS_OF) == ["1"]  # history, not recomputed


def test_history_shows_the_newest_run_per_instant(make_project: MakeProject) -> None:
    with Workspace.open(make_project()) as ws:
        ws.run(as_of=AS_OF)
        ws.run(as_of=AS_OF)
        assert [h["run_id"] for h in ws.history("value.buyers")] == [2]


def test_sql_segment_errors_name_the_segment(make_project: MakeProject) -> None:
    root = make_project(
        segments__sql_yml=(
            "segments:\n  - name: custom.broken\n    description: d\n    owner: o\n"
            "    sql: selec customer_id from crmseg.orders\n"
        )
    )
    with Workspace.open(root) as ws:
        with pytest.raises(SegmentError, match=r"segments/sql.yml:2: segment custom.broken"):
            ws.run(as_of=AS_OF)
        assert ws.runs() == []


def test_sql_segments_count_resolved_people(make_project: MakeProject) -> None:
    root = make_project(
        data__customers_csv=(
            "customer_id,email,country,signup_at\n"
            "1,a@x.de,DE,2023-01-01 00:00:00\n"
            "9,A@X.de ,DE,2024-06-01 00:00:00\n"
        ),
        segments__sql_yml=(
            "segments:\n  - name: custom.nines\n    description: d\n    owner: o\n"
            "    sql: select '9' as customer_id\n"
        ),
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        assert ws.members("custom.nines") == ["1"]  # record 9 is person 1


def test_explain_resolves_any_record_id_and_rejects_unknown_ids(make_project: MakeProject) -> None:
    root = make_project(
        data__customers_csv=(
            "customer_id,email,country,signup_at\n"
            "1,a@x.de,DE,2023-01-01 00:00:00\n"
            "9,A@X.de ,DE,2024-06-01 00:00:00\n"
        ),
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        assert ws.explain("demographic.dach", "9", as_of=AS_OF).verdict is True
        with pytest.raises(SegmentError, match="no customer with id 'nope'"):
            ws.explain("demographic.dach", "nope", as_of=AS_OF)
