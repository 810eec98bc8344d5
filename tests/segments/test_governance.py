"""Catalog, lint, history, profile, diff, checks, overlap and user unit tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from crmseg import Workspace
from crmseg.errors import ConfigError

from ..conftest import MakeProject, run_cli

AS_OF = datetime(2024, 12, 31)

LINTY = """\
segments:
  - name: demographic.dach
    description: Customers in Germany or Austria.
    owner: crm-team
    rule: country in ('DE', 'AT')
  - name: value.buyers
    description: Customers with at least one order.
    owner: crm-team
    rule: count(orders) >= 1
    checks: {min_size: 5, max_share: 0.9, max_overlap_with: {demographic.dach: 0.5}}
  - name: Mystery
    rule: country = 'FR'
  - name: vip.big
    description: Big spenders.
    owner: x
    rule: sum(orders.amount) > 100 and in_segment('value.buyers')
"""


def test_lint_findings_are_located(make_project: MakeProject) -> None:
    with Workspace.open(make_project(segments__core_yml=LINTY)) as ws:
        findings = [str(f) for f in ws.lint()]
    assert findings == [
        "segments/core.yml:11: warning: Mystery: name should be layer.name in lower_snake_case",
        "segments/core.yml:11: warning: Mystery: missing description",
        "segments/core.yml:11: warning: Mystery: missing owner",
        "segments/core.yml:13: error: vip.big: unknown layer 'vip' (declared: lifecycle, value,"
        " behavior, risk, preference, demographic, suppress, custom)",
    ]


def test_validate_strict_fails_on_warnings(make_project: MakeProject) -> None:
    # an unknown layer is an error; the rest of LINTY are warnings
    root = make_project(segments__core_yml=LINTY.replace("name: vip.big", "name: value.big"))
    relaxed = run_cli("validate", "-p", str(root))
    assert relaxed.returncode == 0, relaxed.stderr
    assert "warning: segments/core.yml:11" in relaxed.stderr
    strict = run_cli("validate", "--strict", "-p", str(root))
    assert strict.returncode == 1
    assert "3 lint warning(s) with --strict" in strict.stderr
    unknown = run_cli("validate", "-p", str(make_project("other", segments__core_yml=LINTY)))
    assert unknown.returncode == 1 and "unknown layer 'vip'" in unknown.stderr


def test_duplicate_names_are_an_error(make_project: MakeProject) -> None:
    root = make_project(
        segments__more_yml="segments:\n  - name: value.buyers\n    rule: country = 'DE'\n"
    )
    with pytest.raises(ConfigError, match=r"duplicate segment name 'value.buyers'") as info:
        Workspace.open(root).segments  # noqa: B018
    assert info.value.location.file == "segments/more.yml"
    assert info.value.location.line == 2


def test_catalog_history_profile_and_checks(make_project: MakeProject) -> None:
    root = make_project(
        segments__core_yml=LINTY,
        campaigns__promo_yml="campaigns:\n  - name: promo\n    segment: value.buyers\n",
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 5, 2))
        ws.run(as_of=AS_OF)
        entries = {e["name"]: e for e in ws.catalog()}
        buyers = entries["value.buyers"]
        assert buyers["size"] == 3
        assert buyers["last_change"] == datetime(2024, 5, 2)
        assert set(buyers["used_by"]) == {"campaign promo", "segment vip.big"}
        assert buyers["english"].startswith("customers")
        history = ws.history("value.buyers")
        assert [(h["size"], h["entered"], h["exited"]) for h in history] == [(1, 1, 0), (3, 2, 0)]
        profile = ws.profile("1")
        assert "value.buyers" in profile["current"]
        assert profile["segments"]["value.buyers"]["first_entered"] == datetime(2024, 5, 2)
        results = {r.check: r for r in ws.check() if r.segment == "value.buyers"}
        assert not results["min_size"].ok  # 3 < 5
        assert results["max_share"].ok  # 3 / 4 <= 0.9
        assert not results["max_overlap_with.demographic.dach"].ok  # 2 of 3 are in DACH
        overlap = ws.overlap(["value.buyers", "demographic.dach"])
        assert overlap["matrix"][("value.buyers", "demographic.dach")] == (2, pytest.approx(2 / 3))
    out = run_cli("check", "-p", str(root))
    assert out.returncode == 1
    assert "value.buyers: size 3 is below min_size 5" in out.stderr
    md = run_cli("catalog", "-p", str(root), "-f", "md")
    assert "### `value.buyers`" in md.stdout and "used by: " in md.stdout


def test_changed_definition_is_visible_in_history_and_diff(make_project: MakeProject) -> None:
    root = make_project()
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
    core = root / "segments" / "core.yml"
    core.write_text(core.read_text().replace("count(orders) >= 1", "count(orders) >= 2"))
    with Workspace.open(root) as ws:
        changes = ws.diff(as_of=AS_OF)
        assert [(c["segment"], c["added"], c["removed"], c["unchanged"]) for c in changes] == [
            ("value.buyers", 0, 2, 1)
        ]
        assert changes[0]["examples_removed"] == ["2", "4"]
        assert len(ws.runs()) == 1  # diff writes nothing
        ws.run(as_of=AS_OF + timedelta(days=1))
        history = ws.history("value.buyers")
        assert [h["definition_changed"] for h in history] == [False, True]
        assert ws.diff() == []


def test_backfill_is_point_in_time(make_project: MakeProject) -> None:
    root = make_project()
    out = run_cli(
        "backfill", "--from", "2024-05-01", "--to", "2024-07-31", "--every", "4w", "-p", str(root)
    )
    assert out.returncode == 0, out.stderr
    with Workspace.open(root) as ws:
        sizes = [(h["as_of"].date().isoformat(), h["size"]) for h in ws.history("value.buyers")]
    # Orders: customer 1 on 05-01 12:00, customer 2 on 05-15, customer 4 on 07-01.
    assert sizes == [("2024-05-01", 0), ("2024-05-29", 2), ("2024-06-26", 2), ("2024-07-24", 3)]


def test_user_unit_tests_pass_and_fail(make_project: MakeProject) -> None:
    passing = """\
tests:
  - name: buyers
    as_of: 2024-12-31
    customers: [{customer_id: a, country: DE}, {customer_id: b, country: FR}]
    orders: [{order_id: o1, customer_id: a, ordered_at: 2024-01-01, amount: 5}]
    expect: {value.buyers: [a], demographic.dach: [a]}
"""
    failing = passing.replace("{value.buyers: [a]", "{value.buyers: [b]")
    root = make_project(tests__unit_yml=passing)
    ok = run_cli("test", "-p", str(root))
    assert ok.returncode == 0, ok.stderr
    assert "1 passed, 0 failed" in ok.stdout
    (root / "tests" / "unit.yml").write_text(failing)
    bad = run_cli("test", "-p", str(root))
    assert bad.returncode == 1
    assert "value.buyers: expected but missing ['b']; unexpected ['a']" in bad.stderr


def test_json_outputs_parse(make_project: MakeProject) -> None:
    root = make_project()
    run_cli("run", "-p", str(root), "--as-of", "2024-12-31")
    for args in (
        ("catalog", "-f", "json"),
        ("history", "value.buyers", "-f", "json"),
        ("profile", "1", "-f", "json"),
        ("overlap", "-f", "json"),
    ):
        out = run_cli(*args, "-p", str(root))
        assert out.returncode == 0, out.stderr
        json.loads(out.stdout)


def test_demo_project_unit_tests_pass(tmp_path: Path) -> None:
    from crmseg.demo.scaffold import init_project

    init_project(tmp_path / "shop", demo=True, customers=200)
    with Workspace.open(tmp_path / "shop") as ws:
        outcomes = ws.test()
    assert outcomes and all(o.ok for o in outcomes), [
        (o.name, o.failures, o.error) for o in outcomes
    ]


def test_errors_in_block_rules_point_into_the_file(make_project: MakeProject) -> None:
    root = make_project(
        segments__core_yml=(
            "segments:\n"
            "  - name: demographic.x\n"
            "    description: d\n"
            "    owner: o\n"
            "    rule: >-\n"
            "      country = 'DE'\n"
            "      and contry = 'AT'\n"
        )
    )
    out = run_cli("validate", "-p", str(root))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert (
        lines[0] == "error: segments/core.yml:7:11: unknown name 'contry'; did you mean 'country'?"
    )
    # The excerpt shows the file's line with the caret under the name.
    assert lines[1].endswith("and contry = 'AT'")
    assert lines[2].index("^") == lines[1].index("contry")


def test_unit_test_fixture_errors_and_offsets(make_project: MakeProject) -> None:
    bad = """\
tests:
  - name: broken timestamp
    as_of: 2024-12-31
    customers: [{customer_id: a, signup_at: notadate}]
    expect: {value.buyers: []}
"""
    root = make_project(tests__unit_yml=bad)
    out = run_cli("test", "-p", str(root))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    assert (
        "tests/unit.yml:2" in out.stderr and "customers.signup_at: expected timestamp" in out.stderr
    )
    offset = """\
tests:
  - name: an order at 23:30 -02:00 is on the next day in UTC
    as_of: 2026-06-01T00:00:00
    customers: [{customer_id: a}]
    orders:
      - {order_id: o1, customer_id: a, ordered_at: 2026-05-31T23:30:00-02:00, amount: 5}
    expect: {value.buyers: []}
"""
    (root / "tests" / "unit.yml").write_text(offset)
    ok = run_cli("test", "-p", str(root))
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_unit_tests_take_rows_of_every_canonical_table() -> None:
    from crmseg.segments.unittests import UnitTest
    from crmseg.sources.model import TABLES

    assert set(TABLES) <= set(UnitTest.model_fields)
