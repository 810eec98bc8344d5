"""Data-quality checks: the demo shop's planted dirty rows, severities that stop a run, and
findings stored per run (with tracking drift between runs)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import ibis
import pyarrow as pa
import pytest

from crmseg.backends.duckdb import DuckDBBackend
from crmseg.config import Config
from crmseg.demo.generator import dirty_counts, generate
from crmseg.errors import QualityError
from crmseg.quality.checks import check_quality
from crmseg.sources.pii import mask
from crmseg.workspace import Workspace

from ..conftest import MakeProject, run_cli

AS_OF = datetime(2026, 11, 1)


def _config(**quality: object) -> Config:
    return Config.model_validate(
        {"name": "t", "sources": {"customers": {"path": "x.csv"}}, "quality": quality}
    )


def _affected(report: object, check: str, where: str) -> int:
    found = [f for f in report.findings if f.check == check and f.where == where]  # type: ignore[attr-defined]
    assert found, (check, where)
    return int(found[0].affected)


def test_demo_dirty_rows_are_found_with_examples() -> None:
    n = 5000
    data = generate(n, 3, AS_OF)
    backend = DuckDBBackend()
    try:
        tables = {k: ibis.memtable(v) for k, v in data.items() if k != "truth_people"}
        report = check_quality(backend, _config(), tables, AS_OF)
    finally:
        backend.close()
    dirty = dirty_counts(n)
    assert _affected(report, "invalid_emails", "customers.email") == dirty["invalid_emails"]
    assert _affected(report, "missing_values", "customers.country") == dirty["missing_country"]
    assert _affected(report, "future_timestamps", "orders.ordered_at") == dirty["future_orders"]
    assert _affected(report, "negative_amounts", "orders.amount") == dirty["negative_amounts"]
    assert _affected(report, "unknown_customers", "orders.customer_id") == dirty["orphan_orders"]
    assert _affected(report, "duplicate_customer_ids", "customers.customer_id") == 0
    assert _affected(report, "unknown_consent_values", "consent.status") == 0
    assert not report.errors
    invalid = next(f for f in report.findings if f.check == "invalid_emails")
    broken = [e["email"].endswith("@") or "@" not in e["email"] for e in invalid.examples]
    assert len(broken) == 5 and all(broken)
    # examples are stored and printed: personal data is masked, its shape kept
    emails = dict(zip(data["customers"]["customer_id"].to_pylist(),
                      data["customers"]["email"].to_pylist(), strict=True))  # fmt: skip
    for e in invalid.examples:
        raw = emails[e["customer_id"]]
        assert e["email"] != raw and e["email"] == mask(raw)
        assert set(e["email"][1:]) <= {"*", "@", ".", " ", "_", "-", "+"}
    future = next(f for f in report.findings if f.check == "future_timestamps" and f.affected)
    assert all(e["ordered_at"] > "2026-11-01" for e in future.examples)


def test_small_tables_checks_and_severity() -> None:
    customers = pa.table(
        {
            "customer_id": ["1", "1", "2", "3"],
            "email": ["a@x.example", "a@x.example", "bad", None],
            "phone": ["0151 1234567", None, "call me", None],
            "country": ["DE", "DE", "DE", None],
            "signup_at": pa.array([datetime(2024, 1, 1)] * 3 + [datetime(1970, 1, 1)]),
        }
    )
    consent = pa.table(
        {
            "customer_id": ["1", "2", "3"],
            "channel": ["email", "fax", "email"],
            "status": ["opted_in", "opted_in", "maybe"],
            "updated_at": pa.array(
                [datetime(2020, 1, 1), datetime(2026, 1, 1), datetime(2026, 1, 1)]
            ),
        }
    )
    orders = pa.table(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["1", "9"],
            "ordered_at": pa.array([datetime(2025, 1, 1), datetime(2025, 1, 1)]),
            "amount": [250_000.0, 10.0],
            "currency": ["EUR", "usd"],
        }
    )
    config = _config(
        checks={
            "duplicate_customer_ids": {"severity": "error"},
            "invalid_emails": {"max_rate": 0.5},
        }
    )
    backend = DuckDBBackend()
    try:
        tables = {
            "customers": ibis.memtable(customers),
            "consent": ibis.memtable(consent),
            "orders": ibis.memtable(orders),
        }
        report = check_quality(backend, config, tables, AS_OF)
    finally:
        backend.close()
    got = {(f.check, f.where): f for f in report.findings}
    assert got[("duplicate_customer_ids", "customers.customer_id")].affected == 2
    assert got[("duplicate_customer_ids", "customers.customer_id")].level == "error"
    assert got[("invalid_emails", "customers.email")].affected == 1
    assert got[("invalid_emails", "customers.email")].level == "ok"  # 1 of 3 is under 50%
    assert got[("unparseable_phones", "customers.phone")].affected == 1
    assert got[("implausible_timestamps", "customers.signup_at")].affected == 1
    assert got[("unknown_consent_values", "consent.channel")].affected == 1
    assert got[("unknown_consent_values", "consent.status")].affected == 1
    assert got[("stale_consent", "consent.updated_at")].affected == 1
    assert got[("absurd_amounts", "orders.amount")].affected == 1
    assert got[("currency_mismatch", "orders.currency")].affected == 1
    assert got[("unknown_customers", "orders.customer_id")].affected == 1
    with pytest.raises(QualityError, match=r"^data quality: duplicate_customer_ids customers"):
        report.raise_for_errors()


def test_findings_are_stored_per_run_and_drift_is_found(make_project: MakeProject) -> None:
    events = "customer_id,name,occurred_at\n1,login,2024-05-01 10:00:00\n"
    config = (
        "name: t\nsources:\n  customers: {path: data/customers.csv}\n"
        "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
        "  events: {path: data/events.csv}\n"
    )
    root = make_project(crmseg_yml=config, data__events_csv=events)
    with Workspace.open(root) as ws:
        first = ws.run(as_of=datetime(2024, 12, 31))
        make_project(
            crmseg_yml=config,
            data__events_csv=events + "2,checkout_v2,2024-12-01 10:00:00\n",
        )
        second = ws.run(as_of=datetime(2025, 1, 31))
        trend = ws.quality_trend()
    runs = {r["run_id"] for r in trend}
    assert runs == {first.run_id, second.run_id}
    drift = [r for r in trend if r["check"] == "tracking_drift"]
    assert [(r["run_id"], r["affected"]) for r in drift] == [(second.run_id, 1)]
    missing = [r for r in trend if r["check"] == "missing_values" and r["column"] == "country"]
    assert [r["affected"] for r in missing] == [1, 1]  # customer 4 has no country


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_error_finding_stops_the_run_and_writes_nothing(make_project: MakeProject) -> None:
    root = make_project()
    first = run_cli("run", "--project", str(root), "--as-of", "2024-12-31")
    assert first.returncode == 0, first.stderr
    state = root / ".crmseg" / "state.duckdb"
    warehouse = root / ".crmseg" / "warehouse.duckdb"
    before = (state.read_bytes(), warehouse.read_bytes())
    config = (root / "crmseg.yml").read_text()
    make_project(
        crmseg_yml=config + "quality:\n  checks:\n    negative_amounts: {severity: error}\n",
        data__orders_csv=(
            "order_id,customer_id,created,total,category\n"
            "10,1,2024-05-01 12:00:00,120.0,skincare\n11,2,2024-06-01 12:00:00,-80.5,makeup\n"
        ),
    )
    out = run_cli("run", "--project", str(root), "--as-of", "2025-01-31")
    assert out.returncode != 0
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert "negative_amounts orders.amount: 1 of 2 (50.00%) are negative" in lines[0]
    assert "nothing was written" in lines[0]
    assert "Traceback" not in out.stderr
    assert (state.read_bytes(), warehouse.read_bytes()) == before
    # `crmseg quality` shows the same finding (and exits non-zero), writing nothing either.
    check = run_cli("quality", "--project", str(root), "--as-of", "2025-01-31", "-f", "json")
    assert check.returncode == 1
    findings = json.loads(check.stdout)["findings"]
    assert any(f["check"] == "negative_amounts" and f["level"] == "error" for f in findings)
    assert (state.read_bytes(), warehouse.read_bytes()) == before


def test_unknown_check_name_is_a_located_config_error(make_project: MakeProject) -> None:
    root = make_project()
    text = (
        root / "crmseg.yml"
    ).read_text() + "quality:\n  checks:\n    spelling: {severity: warn}\n"
    (root / "crmseg.yml").write_text(text)
    out = run_cli("validate", "--project", str(root))
    assert out.returncode != 0
    assert "crmseg.yml:" in out.stderr and "unknown quality check 'spelling'" in out.stderr


def test_identity_cli_reports_merges(make_project: MakeProject, tmp_path: Path) -> None:
    customers = (
        "customer_id,email,country,signup_at\n1,a@x.example,DE,2024-01-01 10:00:00\n"
        "2,A@X.example ,DE,2024-02-01 10:00:00\n3,c@x.example,DE,2024-02-01 10:00:00\n"
    )
    root = make_project(
        data__customers_csv=customers, data__orders_csv="order_id,customer_id,created,total\n"
    )
    assert run_cli("run", "--project", str(root), "--as-of", "2024-12-31").returncode == 0
    out = run_cli("identity", "--project", str(root))
    assert out.returncode == 0, out.stderr
    assert "3 customer records -> 2 people: 2 records merged into 1 people" in out.stdout
    profile = run_cli("profile", "2", "--project", str(root), "-f", "json")
    assert [r["customer_id"] for r in json.loads(profile.stdout)["records"]] == ["1", "2"]


_BIG_SPENDERS = """\
segments:
  - name: value.big
    description: Spent 100 or more.
    owner: crm-team
    rule: sum(orders.amount) >= 100
  - name: value.top
    description: The highest order value is 200 or more.
    owner: crm-team
    rule: max(orders.amount) >= 200
"""
# customer 3 has one NaN order, 4 one infinite order: neither spent 100 (or anything)
_NON_FINITE = (
    "order_id,customer_id,created,total,category\n"
    "10,1,2024-05-01 12:00:00,120.0,skincare\n11,2,2024-06-01 12:00:00,30.0,makeup\n"
    "12,3,2024-05-15 12:00:00,nan,skincare\n13,4,2024-07-01 12:00:00,inf,haircare\n"
    "14,2,2024-07-02 12:00:00,-inf,haircare\n"
)


def test_non_finite_amounts_stop_the_run_by_default(make_project: MakeProject) -> None:
    root = make_project(data__orders_csv=_NON_FINITE, segments__core_yml=_BIG_SPENDERS)
    out = run_cli("run", "--project", str(root), "--as-of", "2024-12-31")
    assert out.returncode != 0
    lines = _error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert "non_finite_amounts orders.amount: 3 of 5" in lines[0], lines[0]
    assert "NaN or infinite" in lines[0] and "Traceback" not in out.stderr
    with Workspace.open(root) as ws:
        assert ws.last_run() is None  # nothing was recorded
    checked = run_cli("validate", "--project", str(root))
    assert checked.returncode != 0
    assert "data/orders.csv: non_finite_amounts orders.amount: 3 values are NaN" in checked.stderr


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_non_finite_numbers_are_missing_never_compared(
    make_project: MakeProject, file_format: str
) -> None:
    config = (
        "name: t\nsources:\n  customers: {path: data/customers.csv}\n"
        f"  orders: {{path: data/orders.{file_format}, "
        "columns: {ordered_at: created, amount: total}}\n"
        "quality:\n  checks:\n    non_finite_amounts: {severity: warn}\n"
    )
    root = make_project(crmseg_yml=config, segments__core_yml=_BIG_SPENDERS)
    if file_format == "parquet":
        import pyarrow.parquet as pq

        rows = [line.split(",") for line in _NON_FINITE.splitlines()[1:]]
        columns = dict(
            zip(_NON_FINITE.splitlines()[0].split(","), zip(*rows, strict=True), strict=True)
        )
        table = pa.table({k: list(v) for k, v in columns.items()})
        table = table.set_column(3, "total", table["total"].cast(pa.float64()))  # nan, inf
        assert pc_count_non_finite(table["total"]) == 3
        pq.write_table(table, root / "data" / "orders.parquet")
        (root / "data" / "orders.csv").unlink()
    else:
        (root / "data" / "orders.csv").write_text(_NON_FINITE)
    with Workspace.open(root) as ws:
        result = ws.run(as_of=datetime(2024, 12, 31))
        big = set(ws.members("value.big"))
        top = set(ws.members("value.top"))
        report = ws.quality(as_of=datetime(2024, 12, 31))
    assert big == {"1"} and top == set()  # NaN and inf neither pass >= nor win max()
    assert result.sizes["value.big"] == 1
    found = [f for f in report.findings if f.check == "non_finite_amounts"]
    assert [(f.where, f.affected, f.total, f.level) for f in found] == [
        ("orders.amount", 3, 5, "warn")
    ]


def test_turning_checks_on_counts_non_finite_numbers_of_unchanged_sources(
    make_project: MakeProject,
) -> None:
    """A load with the checks off does not count NaN and infinities; turning the checks on
    reloads the unchanged source, so the counts are there."""

    def config(on: str) -> str:
        return (
            "name: t\nsources:\n  customers: {path: data/customers.csv}\n"
            "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
            f"quality:\n  enabled: {on}\n  checks:\n    non_finite_amounts: {{severity: warn}}\n"
        )

    root = make_project(
        crmseg_yml=config("false"), data__orders_csv=_NON_FINITE, segments__core_yml=_BIG_SPENDERS
    )
    at = datetime(2024, 12, 31)
    with Workspace.open(root) as ws:
        ws.run(as_of=at)
        assert ws.last_run().details["quality"] == "off"  # type: ignore[union-attr]
    (root / "crmseg.yml").write_text(config("true"))
    with Workspace.open(root) as ws:
        result = ws.run(as_of=at)
        report = ws.quality(as_of=at)
    assert result.details["sources"]["orders"] == "loaded"
    found = [(f.where, f.affected) for f in report.findings if f.check == "non_finite_amounts"]
    assert found == [("orders.amount", 3)]


def pc_count_non_finite(values: pa.ChunkedArray) -> int:
    return sum(1 for v in values.to_pylist() if v is not None and not math.isfinite(v))


def test_examples_stored_before_masking_are_masked_by_the_migration(tmp_path: Path) -> None:
    from crmseg.backends.state import DuckDBState
    from crmseg.quality.checks import Finding, QualityReport
    from crmseg.quality.store import QualityStore

    state = DuckDBState(tmp_path / "state.duckdb")
    raw = {"customer_id": "7", "email": "anna@example", "signup_at": "2024-01-01"}
    finding = Finding("invalid_emails", "customers", "email", 1, 4, "warn", 0.0, "bad", [raw])
    QualityStore(state).save(1, AS_OF, QualityReport(AS_OF, [finding]))
    state.execute("ALTER TABLE quality_findings DROP COLUMN seq")  # as schema 2 had it
    state.execute("UPDATE meta SET value = '2' WHERE key = 'schema.quality'")
    report = QualityStore(state).latest()  # opening the store migrates
    assert report is not None
    (example,) = report.findings[0].examples
    assert example == {"customer_id": "7", "email": "***", "signup_at": "2024-01-01"}
    assert "anna" not in str(state.rows("SELECT examples FROM quality_findings"))
