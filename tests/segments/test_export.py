"""`crmseg export`: every membership at one instant in one file, from the recorded history."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from crmseg.errors import SegmentError
from crmseg.workspace import Workspace
from tests.conftest import MakeProject, run_cli

JUNE, JULY = datetime(2024, 6, 1), datetime(2024, 7, 15)


@pytest.fixture
def shop(make_project: MakeProject) -> Path:
    """The test shop run twice: customer 4's first order (07-01) makes them a buyer in July."""
    root = make_project()
    with Workspace.open(root) as ws:
        ws.run(as_of=JUNE)
        ws.run(as_of=JULY)
    return root


def _rows(path: Path) -> list[tuple[str, str, datetime]]:
    t = pq.read_table(path) if path.suffix == ".parquet" else pcsv.read_csv(path)
    return [(r["segment"], str(r["customer_id"]), r["entered_at"]) for r in t.to_pylist()]


def test_export_holds_every_membership_with_its_entry(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        done = ws.export(shop / "out" / "all.parquet")
        assert done.as_of == JULY and done.rows == 5
        rows = _rows(done.path)
        assert rows == [
            ("demographic.dach", "1", JUNE),
            ("demographic.dach", "2", JUNE),
            ("value.buyers", "1", JUNE),
            ("value.buyers", "2", JUNE),
            ("value.buyers", "4", JULY),
        ]
        # the same as asking each segment
        for s in ws.segments:
            assert [c for seg, c, _ in rows if seg == s.name] == ws.members(s.name)
        earlier = ws.export(shop / "june.csv", ["value.buyers"], as_of=datetime(2024, 6, 20))
        assert [(s, c) for s, c, _ in _rows(earlier.path)] == [
            ("value.buyers", "1"),
            ("value.buyers", "2"),
        ]


def test_bad_exports_are_refused_and_leave_earlier_files(shop: Path) -> None:
    out = shop / "all.csv"
    out.write_text("kept\n")
    with Workspace.open(shop) as ws:
        with pytest.raises(SegmentError, match=r"expected a file ending in \.parquet or \.csv"):
            ws.export(shop / "all.xlsx")
        with pytest.raises(SegmentError, match=r"no segment named 'value\.buyer'"):
            ws.export(out, ["value.buyer"])
        with pytest.raises(SegmentError, match="has no run at or before 2024-01-01"):
            ws.export(out, as_of=datetime(2024, 1, 1))
    assert out.read_text() == "kept\n"
    assert not (shop / "all.xlsx").exists()


def test_the_cli_exports_in_one_call(shop: Path) -> None:
    out = shop / "members.csv"
    done = run_cli(
        "export", "--out", str(out), "-s", "value.buyers,demographic.dach", "-p", str(shop)
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 5 memberships of 2 segments as of 2024-07-15 00:00:00 UTC" in done.stdout
    assert len(_rows(out)) == 5
    bad = run_cli("export", "--out", str(shop / "x.json"), "-p", str(shop))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"error: --out {str(shop / 'x.json')!r}: expected a file ending in .parquet or .csv, "
        "got .json"
    ]
