"""A segment's definition history: every definition it ran with, from the run that first used
it, and its working one when no run used it yet, each with a diff against the one before."""

from __future__ import annotations

from datetime import datetime

from crmseg.workspace import Workspace

from ..conftest import SEGMENTS, MakeProject


def test_versions_with_their_diffs(make_project: MakeProject) -> None:
    root = make_project()
    path = root / "segments" / "core.yml"
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        ws.run(as_of=datetime(2024, 8, 2))  # same definition: not a new version
    path.write_text(SEGMENTS.replace("count(orders) >= 1", "count(orders) >= 2"))
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 3))
    path.write_text(SEGMENTS.replace("count(orders) >= 1", "count(orders) >= 3"))
    with Workspace.open(root) as ws:
        versions = ws.definitions("value.buyers")
        assert [(v["run_id"], v["text"]) for v in versions] == [
            (1, "count(orders) >= 1"),
            (3, "count(orders) >= 2"),
            (None, "count(orders) >= 3"),  # the working definition, not run yet
        ]
        assert versions[0]["diff"] == ""
        assert versions[1]["diff"].splitlines()[-2:] == [
            "-count(orders) >= 1",
            "+count(orders) >= 2",
        ]
        assert versions[1]["as_of"] == datetime(2024, 8, 3)
        assert len({v["definition_hash"] for v in versions}) == 3
        assert [v["run_id"] for v in ws.definitions("demographic.dach")] == [1]
