"""Change control on a real project: propose with impact, approve into the YAML file, audit."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from crmseg.errors import ConfigError, ConflictError, ForbiddenError, RuleErrors
from crmseg.workspace import Workspace

from ..conftest import SEGMENTS, MakeProject

# value.buyers today: count(orders) >= 1 -> 1, 2, 4. Proposed: two or more orders -> 1.
CHANGED = """\
segments:
  - name: value.buyers
    description: Customers with two orders or more.
    owner: crm-team
    rule: count(orders) >= 2
"""

NEW = """\
segments:
  - name: value.big
    description: Spent 100 or more.
    owner: crm-team
    rule: sum(orders.amount) >= 100
"""


def _ws(make_project: MakeProject) -> Workspace:
    files = {"segments__core_yml": "# the team's segments\n" + SEGMENTS + "# end\n"}
    ws = Workspace.open(make_project(**files))
    ws.run(as_of=datetime(2024, 8, 1))
    return ws


def test_a_change_is_proposed_with_its_impact_and_written_only_when_approved(
    make_project: MakeProject,
) -> None:
    with _ws(make_project) as ws:
        core = ws.root / "segments" / "core.yml"
        before = core.read_text()
        change = ws.propose(CHANGED, by="alice")
        assert change.status == "pending" and change.kind == "changed"
        assert change.impact | {"as_of": None} == {
            "as_of": None, "before": 3, "after": 1, "added": 0, "removed": 2,
            "examples_added": [], "examples_removed": ["2", "4"],
        }  # fmt: skip
        assert core.read_text() == before  # nothing written yet
        assert ws.members("value.buyers") == ["1", "2", "4"]
        with pytest.raises(ForbiddenError, match="not its author"):
            ws.decide(change.change_id, True, by="alice")
        done = ws.decide(change.change_id, True, by="bob")
        assert (done.status, done.decided_by, done.file) == ("approved", "bob", "segments/core.yml")
        text = core.read_text()
        assert "rule: count(orders) >= 2" in text and "rule: count(orders) >= 1" not in text
        # the rest of the file, comments included, is as it was
        assert text.startswith("# the team's segments\n") and text.endswith("# end\n")
        assert "demographic.dach" in text
        ws.run(as_of=datetime(2024, 8, 2))
        assert ws.members("value.buyers") == ["1"]  # the next run uses it
        with pytest.raises(ConflictError, match="already approved"):
            ws.decide(change.change_id, False, by="bob")
        audit = ws.audit()
        assert [(a["actor"], a["action"]) for a in audit] == [
            ("bob", "approve"),
            ("alice", "propose"),
        ]
        assert audit[0]["before_hash"] == change.before_hash
        assert audit[0]["after_hash"] == change.after_hash


def test_new_segments_rejections_and_stale_proposals(make_project: MakeProject) -> None:
    with _ws(make_project) as ws:
        new = ws.propose(NEW, by="alice")
        assert (new.kind, new.impact["after"], new.impact["examples_added"]) == (
            "new",
            2,
            ["1", "2"],
        )
        ws.decide(new.change_id, True, by="admin-key", admin=False)
        assert (ws.root / "segments" / "approved.yml").read_text().startswith("segments:\n  - name")
        assert ws.segment("value.big").spec.rule == "sum(orders.amount) >= 100"
        first = ws.propose(CHANGED, by="alice")
        second = ws.propose(CHANGED.replace(">= 2", ">= 3"), by="carol")
        ws.decide(second.change_id, False, by="bob")
        assert ws.change(second.change_id).status == "rejected"
        ws.decide(first.change_id, True, by="bob")
        stale = ws.propose(CHANGED.replace(">= 2", ">= 5"), by="alice")
        core = ws.root / "segments" / "core.yml"
        core.write_text(core.read_text().replace(">= 2", ">= 4"))  # edited by hand meanwhile
        fresh = Workspace.open(ws.root)
        ws.close()
    with fresh as ws, pytest.raises(ConflictError, match="changed since change"):
        ws.decide(stale.change_id, True, by="bob")


def test_bad_proposals_are_located_in_the_proposal(make_project: MakeProject) -> None:
    with _ws(make_project) as ws:
        with pytest.raises(
            RuleErrors, match=r"^proposal:5:17: unknown table .orderz.; did you mean .orders.\?"
        ):
            ws.propose(CHANGED.replace("count(orders)", "count(orderz)"), by="alice")
        with pytest.raises(ConfigError, match=r"^proposal:5:5: duplicate key 'owner'"):
            ws.propose(
                CHANGED.replace("    owner: crm-team\n", "    owner: a\n    owner: b\n"), "x"
            )
        with pytest.raises(ConfigError, match=r"^proposal:1:1: expected a segments file"):
            ws.propose("name: value.x\nrule: count(orders) >= 1\n", by="alice")
        with pytest.raises(ConfigError, match=r"proposal:2:3 \[segments\]: .*exactly one segment"):
            ws.propose(CHANGED + NEW.removeprefix("segments:\n"), by="alice")
        assert ws.changes() == []  # nothing stored


def test_approved_file_that_will_not_load_is_rolled_back(make_project: MakeProject) -> None:
    with _ws(make_project) as ws:
        change = ws.propose(CHANGED, by="alice")
        core: Path = ws.root / "segments" / "core.yml"
        before = core.read_text()
        # another file now defines the same name: the written project would not load
        (ws.root / "segments" / "more.yml").write_text(
            "segments:\n  - {name: value.buyers, owner: x, rule: count(orders) >= 9}\n"
        )
        with pytest.raises(ConfigError, match="duplicate segment name"):
            ws.decide(change.change_id, True, by="bob")
        (ws.root / "segments" / "more.yml").unlink()
        assert core.read_text() == before
        assert ws.change(change.change_id).status == "pending"


def test_an_approval_killed_after_the_write_is_recorded_when_approved_again(
    make_project: MakeProject,
) -> None:
    import subprocess
    import sys

    with _ws(make_project) as ws:
        change = ws.propose(CHANGED, by="alice")
        root = ws.root
    code = (
        "import os, sys\n"
        "from crmseg.segments import changes\n"
        "from crmseg.workspace import Workspace\n"
        "changes.after_write = lambda: os._exit(9)\n"
        "ws = Workspace.open(sys.argv[1])\n"
        "ws.decide(int(sys.argv[2]), True, by='bob')\n"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(root), str(change.change_id)])
    assert killed.returncode == 9
    written = (root / "segments" / "core.yml").read_text()
    assert "count(orders) >= 2" in written
    with Workspace.open(root) as ws:
        assert ws.change(change.change_id).status == "pending"  # the kill came first
        done = ws.decide(change.change_id, True, by="bob")
        assert done.status == "approved" and done.file == "segments/core.yml"
        assert (root / "segments" / "core.yml").read_text() == written  # not written twice
