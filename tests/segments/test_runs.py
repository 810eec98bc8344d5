"""Runs redo only what changed: unchanged sources are not loaded again, a changed one reloads
alone, quality and identity are reused when nothing they read changed, a failed load leaves
everything as it was, and a state file of an older crmseg keeps its history."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crmseg import Workspace
from crmseg.errors import SourceError
from crmseg.sources.sync import stored

from ..conftest import MakeProject

AS_OF = datetime(2024, 12, 31)
PARQUET_CONFIG = """\
name: parquet-shop
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.parquet}
"""


def _orders(root: Path, extra: int = 0) -> None:
    rows = 4 + extra
    pq.write_table(
        pa.table(
            {
                "order_id": [str(i) for i in range(rows)],
                "customer_id": ["1", "1", "2", "4", *(["3"] * extra)],
                "ordered_at": pa.array(
                    [datetime(2024, 5, 1 + i) for i in range(rows)], pa.timestamp("us")
                ),
                "amount": [10.0 * (i + 1) for i in range(rows)],
            }
        ),
        root / "data" / "orders.parquet",
    )


@pytest.fixture
def shop(make_project: MakeProject) -> Path:
    root = make_project(crmseg_yml=PARQUET_CONFIG)
    _orders(root)
    return root


def test_a_rerun_on_unchanged_inputs_loads_nothing(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        first = ws.run(as_of=AS_OF)
        second = ws.run(as_of=datetime(2025, 1, 1))
    assert first.details["sources"] == {"customers": "loaded", "orders": "loaded"}
    assert first.details["identity"] == "resolved" and first.details["quality"] == "checked"
    assert second.details["sources"] == {"customers": "unchanged", "orders": "unchanged"}
    assert second.details["identity"] == "reused" and second.details["quality"] == "reused"
    assert second.sizes == first.sizes and second.sources == first.sources
    with Workspace.open(shop) as ws:
        recorded = [r.details["sources"] for r in ws.runs()]
    assert recorded[-1] == second.details["sources"]  # visible in the run record


def test_a_copied_project_reads_its_own_snapshots(shop: Path, tmp_path: Path) -> None:
    """Snapshot paths are absolute: a copy of the folder first read the original's files,
    and deleting the original broke it. Its first run loads its sources into its own."""
    import shutil

    with Workspace.open(shop) as ws:
        first = ws.run(as_of=AS_OF)
    copy = tmp_path / "moved"
    shutil.copytree(shop, copy)
    with Workspace.open(copy) as ws:  # the original is still there, and not read
        again = ws.run(as_of=AS_OF)
        assert again.details["sources"]["orders"] == "loaded"
        assert again.sizes == first.sizes
        for record in stored(ws.backend).values():
            if record.get("snapshot"):
                assert Path(record["snapshot"]).resolve().is_relative_to(copy.resolve())
    shutil.rmtree(shop)
    with Workspace.open(copy) as ws:
        then = ws.run(as_of=datetime(2025, 1, 1))
    assert then.details["sources"] == {"customers": "unchanged", "orders": "unchanged"}
    assert then.sizes == first.sizes


def test_a_changed_source_reloads_alone(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        ws.run(as_of=AS_OF)
        _orders(shop, extra=2)  # customer 3 orders now
        result = ws.run(as_of=AS_OF)
    assert result.details["sources"] == {"customers": "unchanged", "orders": "loaded"}
    assert result.details["identity"] == "reused"  # customers did not change
    assert result.details["quality"] == "checked"
    assert result.sources["orders"] == 6 and result.sizes["value.buyers"] == 4


def test_a_touched_file_with_the_same_bytes_is_not_reloaded(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        ws.run(as_of=AS_OF)
        path = shop / "data" / "customers.csv"
        later = time.time() + 60
        os.utime(path, (later, later))
        result = ws.run(as_of=AS_OF)
        assert result.details["sources"]["customers"] == "unchanged"
        record = stored(ws.backend)["customers"]
    assert record["fingerprint"]["files"][0][2] == os.stat(path).st_mtime_ns


def test_a_changed_mapping_reloads(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        ws.run(as_of=AS_OF)
    config = shop / "crmseg.yml"
    config.write_text(
        config.read_text().replace("orders.parquet}", "orders.parquet, timezone: Europe/Berlin}")
    )
    with Workspace.open(shop) as ws:
        result = ws.run(as_of=AS_OF)
    assert result.details["sources"]["orders"] == "loaded"


def test_parquet_sources_are_snapshots(shop: Path) -> None:
    """The warehouse reads a copy: overwriting the file changes nothing until the next run."""
    with Workspace.open(shop) as ws:
        ws.run(as_of=AS_OF)
        _orders(shop, extra=3)
        tables = ws._loaded_tables()
        assert ws.backend.scalar(tables["orders"].count()) == 4
        ws.run(as_of=AS_OF)
        assert ws.backend.scalar(ws._loaded_tables()["orders"].count()) == 7
        snapshots = Path(ws.backend.snapshots or "")
    assert len(list(snapshots.iterdir())) == 1  # the replaced snapshot is gone


def test_a_failed_load_leaves_data_fingerprints_and_snapshots(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        ws.run(as_of=AS_OF)
        before = stored(ws.backend)
        snapshots = sorted(Path(ws.backend.snapshots or "").iterdir())
    (shop / "data" / "customers.csv").write_text("customer_id,signup_at\n1,not a date\n")
    _orders(shop, extra=1)
    with Workspace.open(shop) as ws, pytest.raises(SourceError, match="not a date"):
        ws.run(as_of=AS_OF)
    with Workspace.open(shop) as ws:
        assert stored(ws.backend) == before
        assert ws.backend.scalar(ws._loaded_tables()["orders"].count()) == 4
        assert sorted(Path(ws.backend.snapshots or "").iterdir()) == snapshots
        assert len(ws.runs()) == 1


def test_campaign_rules_follow_the_project_lifecycle_thresholds(make_project: MakeProject) -> None:
    """A campaign suppression rule on lifecycle stages uses crmseg.yml's thresholds, like a
    segment does (it compiled with the default library before)."""
    config = (
        "name: t\nlifecycle: {at_risk_days: 500, churned_days: 1000}\n"
        "sources:\n  customers: {path: data/customers.csv}\n"
        "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
        "  consent: {path: data/consent.csv}\n"
    )
    consent = "customer_id,channel,status,updated_at\n" + "".join(
        f"{i},email,opted_in,2024-01-01 00:00:00\n" for i in (1, 2, 3, 4)
    )
    campaign = (
        "campaigns:\n  - name: keep_warm\n    segment: value.buyers\n    channel: email\n"
        "    holdout: 0\n    suppress:\n      rules:\n"
        "        at_risk: \"lifecycle.stage in ('at_risk', 'churned')\"\n"
    )
    root = make_project(crmseg_yml=config, data__consent_csv=consent, campaigns__c_yml=campaign)
    at = datetime(2024, 12, 31)  # the last orders are 183-244 days old
    with Workspace.open(root) as ws:
        ws.run(as_of=at)
        stage = ws._trait_values(["lifecycle.stage"], at).to_pylist()
        audience = ws.activate("keep_warm", dry_run=True, as_of=at).audience
    assert {r["lifecycle.stage"] for r in stage if r["customer_id"] != "3"} <= {
        "active",
        "repeat",
        "new",
        "loyal",
    }
    # With the default thresholds (a few multiples of a ~30-day cycle) all three buyers would
    # be at risk or churned and suppressed; with 500 days none is.
    assert sorted(k for k, _ in audience.treatment) == ["1", "2", "4"]


OLD_STATE = [
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
    "CREATE TABLE runs (run_id INTEGER PRIMARY KEY, as_of TIMESTAMP NOT NULL, "
    "started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP NOT NULL, customers BIGINT NOT NULL, "
    "sources VARCHAR NOT NULL, version VARCHAR NOT NULL)",
    "CREATE TABLE run_segments (run_id INTEGER NOT NULL, segment VARCHAR NOT NULL, "
    "definition_hash VARCHAR NOT NULL, definition VARCHAR NOT NULL, size BIGINT NOT NULL, "
    "entered BIGINT NOT NULL, exited BIGINT NOT NULL, PRIMARY KEY (run_id, segment))",
    "CREATE TABLE memberships (segment VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, "
    "entered_at TIMESTAMP NOT NULL, exited_at TIMESTAMP, definition_hash VARCHAR NOT NULL, "
    "entered_run INTEGER NOT NULL, exited_run INTEGER)",
    "INSERT INTO runs VALUES (1, '2024-06-01', '2024-06-01', '2024-06-01', 4, '{}', '0.0.9')",
    "INSERT INTO run_segments VALUES (1, 'value.buyers', 'h0', "
    '\'{"rule": "count(orders) >= 1"}\', 2, 2, 0)',
    "INSERT INTO memberships VALUES ('value.buyers', '1', '2024-06-01', NULL, 'h0', 1, NULL), "
    "('value.buyers', '2', '2024-06-01', NULL, 'h0', 1, NULL)",
]


def test_a_state_file_of_an_older_crmseg_keeps_its_history(make_project: MakeProject) -> None:
    import duckdb

    root = make_project()
    path = root / ".crmseg" / "state.duckdb"
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    for statement in OLD_STATE:
        con.execute(statement)
    con.close()
    with Workspace.open(root) as ws:
        assert ws.members("value.buyers", as_of=datetime(2024, 7, 1)) == ["1", "2"]
        result = ws.run(as_of=AS_OF)
        assert result.entered["value.buyers"] == 1  # customer 4 joins; 1 and 2 stay
        history = ws.history("value.buyers")
        assert [h["size"] for h in history] == [2, 3]
        assert ws.profile("1")["segments"]["value.buyers"]["intervals"][0]["entered_run"] == 1
