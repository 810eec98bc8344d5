"""The real command line, in subprocesses, on small projects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import MakeProject, run_cli


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_init_writes_a_skeleton_that_validates(tmp_path: Path) -> None:
    root = tmp_path / "crm"
    out = run_cli("init", str(root))
    assert out.returncode == 0, out.stderr
    assert (root / "crmseg.yml").exists() and (root / "segments").is_dir()
    check = run_cli("validate", "--project", str(root))
    assert check.returncode == 0, check.stderr
    assert "ok" in check.stdout


def test_init_refuses_an_existing_project(make_project: MakeProject) -> None:
    root = make_project()
    before = (root / "crmseg.yml").read_text()
    out = run_cli("init", str(root))
    assert out.returncode != 0
    assert "already exists" in out.stderr
    assert (root / "crmseg.yml").read_text() == before


def test_run_then_members_from_history(make_project: MakeProject) -> None:
    root = make_project()
    out = run_cli("run", "--project", str(root), "--as-of", "2024-12-31")
    assert out.returncode == 0, out.stderr
    assert "demographic.dach" in out.stdout
    members = run_cli("members", "demographic.dach", "--project", str(root), "--format", "json")
    assert members.returncode == 0, members.stderr
    assert json.loads(members.stdout)["members"] == ["1", "2"]
    csv = run_cli("members", "value.buyers", "-p", str(root), "-f", "csv")
    assert csv.stdout.splitlines() == ["customer_id", "1", "2", "4"]


BAD_INPUTS = {
    "unknown key": (
        {"crmseg_yml": "name: t\ncolour: red\nsources:\n  customers: {path: data/customers.csv}\n"},
        "crmseg.yml:2:1 [colour]: unknown key",
    ),
    "missing required column": (
        {"data__orders_csv": "order_id,customer_id,total\n1,1,3.0\n"},
        "column mapping orders.ordered_at -> 'created' (set at crmseg.yml:6:57): no column "
        "'created'",
    ),
    "wrong type": (
        {"data__orders_csv": "order_id,customer_id,created,total\n1,1,2024-01-01,lots\n"},
        "column 'total' (orders.amount): expected float, found 1 value that is not (e.g. 'lots')",
    ),
    "unreadable file": (
        {"data__customers_csv": None},
        "data/customers.csv: file not found",
    ),
    "mapping to a missing column": (
        {
            "crmseg_yml": (
                "name: t\nsources:\n  customers: {path: data/customers.csv, "
                "columns: {email: e_mail}}\n"
            )
        },
        "column mapping customers.email -> 'e_mail' (set at crmseg.yml:3:58): no column 'e_mail'",
    ),
    "rule syntax": (
        {
            "segments__core_yml": (
                "segments:\n  - name: demographic.x\n    description: d\n    owner: o\n"
                "    rule: country in ('DE',\n"
            )
        },
        "segments/core.yml:5:",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_located_line_and_keeps_state(
    make_project: MakeProject, case: str
) -> None:
    root = make_project()
    first = run_cli("run", "--project", str(root), "--as-of", "2024-12-31")
    assert first.returncode == 0, first.stderr
    state = root / ".crmseg" / "state.duckdb"
    warehouse = root / ".crmseg" / "warehouse.duckdb"
    before = (state.read_bytes(), warehouse.read_bytes())

    files, expected = BAD_INPUTS[case]
    make_project(**files)
    for path in (root / "data" / "customers.csv",):
        if files.get("data__customers_csv", "") is None:
            path.unlink()
    out = run_cli("run", "--project", str(root), "--as-of", "2025-01-31")
    assert out.returncode != 0
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert (state.read_bytes(), warehouse.read_bytes()) == before
    # With the input fixed, history still answers as before.
    make_project()
    members = run_cli("members", "demographic.dach", "--project", str(root), "-f", "json")
    assert json.loads(members.stdout)["members"] == ["1", "2"]


def test_bad_as_of_is_a_clear_error(make_project: MakeProject) -> None:
    out = run_cli("run", "--project", str(make_project()), "--as-of", "yesterday")
    assert out.returncode != 0
    assert _error_lines(out.stderr) == [
        "error: --as-of: expected a date like 2026-01-31 or 2026-01-31T12:00:00, got 'yesterday'"
    ]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = run_cli("--debug", "validate", "--project", str(tmp_path))
    assert out.returncode != 0
    assert "Traceback" in out.stderr


def test_unknown_segment_suggests_a_name(make_project: MakeProject) -> None:
    root = make_project()
    run_cli("run", "--project", str(root), "--as-of", "2024-12-31")
    out = run_cli("members", "demographic.dac", "--project", str(root))
    assert out.returncode != 0
    assert "did you mean 'demographic.dach'" in out.stderr


def test_version() -> None:
    from crmseg import __version__

    out = run_cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __version__


def test_run_activate_sends_due_campaigns(tmp_path: Path) -> None:
    from crmseg.demo.scaffold import init_project

    root = tmp_path / "shop"
    init_project(root, demo=True, customers=1000)
    out = run_cli("run", "-p", str(root), "--as-of", "2026-11-01", "--activate")
    assert out.returncode == 0, out.stderr
    assert "in segment ->" in out.stdout and "treatment /" in out.stdout
    assert (root / "exports" / "vip_early_access.csv").exists()


def test_demo_command_runs_and_writes_the_report(tmp_path: Path) -> None:
    shop = tmp_path / "demo-shop"
    out = run_cli("demo", "--dir", str(shop), "--customers", "600")
    assert out.returncode == 0, out.stderr
    assert "value.vip" in out.stdout and "report:" in out.stdout
    assert (shop / "report.html").stat().st_size > 100_000
    with_history = run_cli("history", "value.vip", "-p", str(shop), "-f", "json")
    assert len(json.loads(with_history.stdout)) == 7  # six months of backfill + the run


def test_validate_writes_nothing(make_project: MakeProject) -> None:
    root = make_project()
    out = run_cli("validate", "-p", str(root))
    assert out.returncode == 0, out.stderr
    assert not (root / ".crmseg").exists()


def test_validate_checks_campaign_files(make_project: MakeProject) -> None:
    root = make_project(
        campaigns__promo_yml=(
            "campaigns:\n  - name: promo\n    segment: value.buyers\n    channel: email\n"
            "    colour: red\n"
        )
    )
    out = run_cli("validate", "-p", str(root))
    assert out.returncode == 1
    assert _error_lines(out.stderr)[0].startswith("error: campaigns/promo.yml:5:")


def test_read_only_commands_create_no_files(make_project: MakeProject) -> None:
    root = make_project()
    for args in (
        ("catalog",),
        ("history", "value.buyers"),
        ("profile", "1"),
        ("check",),
        ("diff",),
        ("members", "value.buyers"),  # fails: nothing loaded yet
    ):
        run_cli(*args, "-p", str(root))
    assert not (root / ".crmseg").exists()
    ran = run_cli("run", "-p", str(root), "--as-of", "2024-12-31")
    assert ran.returncode == 0, ran.stderr


def test_api_run_after_a_read_only_call_persists(make_project: MakeProject) -> None:
    from datetime import datetime

    from crmseg import Workspace

    root = make_project()
    with Workspace.open(root) as ws:
        ws.catalog()
        ws.run(as_of=datetime(2024, 12, 31))
    with Workspace.open(root) as ws:
        assert ws.members("value.buyers") == ["1", "2", "4"]


BERLIN_CONFIG = """\
name: berlin-shop
timezone: Europe/Berlin
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}
"""
# wall times in Berlin (the source has no timezone of its own): 1's order is before
# midnight of 06-01 there, 2's after it, yet both are before midnight UTC
BERLIN_ORDERS = """\
order_id,customer_id,created,total,category
1,1,2024-05-31 23:30:00,10,skincare
2,2,2024-06-01 00:30:00,10,skincare
"""


def test_as_of_is_midnight_in_the_project_timezone(make_project: MakeProject) -> None:
    root = make_project("berlin", crmseg_yml=BERLIN_CONFIG, data__orders_csv=BERLIN_ORDERS)
    out = run_cli("run", "--as-of", "2024-06-01", "--project", str(root))
    assert out.returncode == 0, out.stderr
    assert "as of 2024-06-01 00:00:00 Europe/Berlin (2024-05-31 22:00 UTC)" in out.stdout
    members = run_cli("members", "value.buyers", "-f", "csv", "--project", str(root))
    assert members.stdout.split() == ["customer_id", "1"]
    # an explicit offset is honoured: midnight UTC is 02:00 in Berlin
    utc = run_cli("run", "--as-of", "2024-06-01T00:00:00Z", "--project", str(root))
    assert "as of 2024-06-01 02:00:00 Europe/Berlin (2024-06-01 00:00 UTC)" in utc.stdout
    members = run_cli("members", "value.buyers", "-f", "csv", "--project", str(root))
    assert members.stdout.split() == ["customer_id", "1", "2"]


def test_backfill_every_month_steps_calendar_months(make_project: MakeProject) -> None:
    root = make_project("berlin", crmseg_yml=BERLIN_CONFIG)
    out = run_cli(
        "backfill", "--from", "2024-01-31", "--to", "2024-05-31", "--every", "1mo",
        "--project", str(root),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    runs = json.loads(run_cli("runs", "-f", "json", "--project", str(root)).stdout)
    # local midnights (CET, then CEST from 03-31), as naive UTC
    assert [r["as_of"][:16].replace("T", " ") for r in runs] == [
        "2024-01-30 23:00",
        "2024-02-28 23:00",
        "2024-03-30 23:00",
        "2024-04-29 22:00",
        "2024-05-30 22:00",
    ]
    bad = run_cli("backfill", "--from", "2024-01-31", "--to", "2024-05-31", "--every", "1 month",
                  "--project", str(root))  # fmt: skip
    assert bad.returncode != 0
    assert "--every: expected a duration like 1d, 1w or 1mo, got '1 month'" in bad.stderr


def test_instants_print_in_the_project_timezone(make_project: MakeProject) -> None:
    """Local midnights in Berlin are 22:00 or 23:00 UTC the day before: every text output
    shows the Berlin dates, and full instants with their zone."""
    root = make_project("berlin", crmseg_yml=BERLIN_CONFIG)
    p = ("--project", str(root))
    out = run_cli("backfill", "--from", "2024-03-31", "--to", "2024-05-31", "--every", "1mo", *p)
    assert out.returncode == 0, out.stderr
    head = out.stdout.splitlines()[2]
    assert head.split("┃")[2:5] == [" 2024-03-31 ", " 2024-04-30 ", " 2024-05-31 "], out.stdout
    assert "backfill: 3 runs (in Europe/Berlin)" in out.stdout
    runs = run_cli("runs", *p).stdout
    assert "2024-05-31 00:00" in runs and "2024-05-30" not in runs, runs
    at = "as of 2024-05-31 00:00:00 Europe/Berlin (2024-05-30 22:00 UTC)"
    assert at in run_cli("explain", "value.buyers", "1", *p).stdout.splitlines()[0]
    profile = run_cli("profile", "1", *p).stdout
    assert at in profile
    assert "demographic.dach: first entered 2024-03-31; 2024-03-31 -> now" in profile, profile
    assert "value.buyers: first entered 2024-05-31; 2024-05-31 -> now" in profile
    assert "signed up 2024-01-01 10:00" in profile  # as written in the file, Berlin time
    early = run_cli("export", "--out", str(root / "m.csv"), "--as-of", "2024-01-01", *p)
    assert early.returncode == 1
    assert "before 2024-01-01 00:00:00 Europe/Berlin (2023-12-31 23:00 UTC)" in early.stderr
    # JSON keeps naive UTC
    last = json.loads(run_cli("runs", "-f", "json", *p).stdout)[-1]
    assert last["as_of"].startswith("2024-05-30 22:00")


def test_profile_of_an_unknown_customer_is_an_error(make_project: MakeProject) -> None:
    root = make_project()
    assert run_cli("run", "--as-of", "2024-12-31", "--project", str(root)).returncode == 0
    for fmt in ("text", "json"):
        out = run_cli("profile", "zzz", "-f", fmt, "--project", str(root))
        assert out.returncode == 1
        assert _error_lines(out.stderr) == [
            "error: unknown customer 'zzz': no loaded record and no membership has this id "
            "(any of a person's record ids works; 'crmseg members SEGMENT' lists ids)"
        ], out.stderr
        assert out.stdout == ""
    known = run_cli("profile", "1", "--project", str(root))
    assert known.returncode == 0 and "value.buyers" in known.stdout
