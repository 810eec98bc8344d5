"""A `crmseg serve` process killed (SIGKILL) loses nothing it acknowledged: an approved change
stays approved and written, and a run killed while it goes leaves the previous state whole,
so the next run gives what an unkilled one gives."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

from crmseg.workspace import Workspace

from .conftest import served, write_shop

PROPOSAL = """\
segments:
  - name: custom.low_ids
    description: Ids below 4.
    owner: crm-team
    rule: customer_id in ('1', '2', '3')
"""


def test_a_killed_server_loses_no_approval_and_no_run(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop", 3000)
    for api in served(root, datetime(2024, 8, 1)):
        assert api.proc is not None
        _, change, _ = api.call("POST", "/changes", "editor", body=PROPOSAL)
        assert api.call("POST", f"/changes/{change['change_id']}/approve", "admin")[0] == 200
        before = (root / "segments" / "core.yml").read_text()
        threading.Thread(
            target=api.call,
            args=("POST", "/runs?as_of=2024-08-02T00:00:00", "editor"),
            daemon=True,
        ).start()
        deadline = time.monotonic() + 60
        while not api.call("GET", "/runs/current", "viewer")[1]["running"]:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.005)
        os.kill(api.proc.pid, signal.SIGKILL)
        api.proc.wait(timeout=30)
    assert (root / "segments" / "core.yml").read_text() == before
    with Workspace.open(root) as ws:
        assert [r.run_id for r in ws.runs()] == [1], "the killed run left a record"
        assert ws.change(change["change_id"]).status == "approved"
        assert ws.segment("custom.low_ids").spec.rule == "customer_id in ('1', '2', '3')"
        ws.run(as_of=datetime(2024, 8, 2))
        assert ws.members("custom.low_ids") == ["1", "2", "3"]
        assert len(ws.members("custom.everyone")) == 3000
