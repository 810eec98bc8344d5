"""A run killed at any moment leaves the previous data, its fingerprints and the history
intact; the next run finishes the job and clears what the killed one left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from crmseg.sources.sync import stored
from tests.segments.conftest import grow_customers, ran_shop

T1 = datetime(2026, 10, 1)
T2 = datetime(2026, 11, 1)


def _run(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crmseg", "run", "-p", str(root), "--as-of", f"{T2:%Y-%m-%d}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_killed_run_keeps_previous_state(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    before = ran_shop(root, 20000, 7, T1)
    names = list(before)
    with Workspace.open(root) as ws:
        records = stored(ws.backend)
    grow_customers(root)
    outcomes = []
    for delay in (0.3, 0.8, 1.3, 2.0, 3.0, 4.5):
        proc = _run(root)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            outcomes.append("killed")
        else:
            outcomes.append("finished")
        proc.wait()
        if outcomes[-1] == "finished":
            break
        with Workspace.open(root) as ws:
            runs = ws.runs()
            assert [r.as_of for r in runs] == [T1], delay
            for n in names:
                assert ws.members(n, as_of=T1) == before[n], (delay, n)
            assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 20000
            assert stored(ws.backend) == records, delay
    assert "killed" in outcomes
    proc = _run(root)
    assert proc.wait() == 0
    with Workspace.open(root) as ws:
        assert [r.as_of for r in ws.runs()][-1] == T2
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 20001
        kept = {r["snapshot"] for r in stored(ws.backend).values() if r.get("snapshot")}
        snapshots = Path(ws.backend.snapshots or "")
    assert {str(p) for p in snapshots.iterdir()} == kept  # what killed runs left is gone


_KILL_BETWEEN_COMMITS = """
import os, signal, sys
from datetime import datetime
from crmseg.segments import runs
from crmseg import Workspace

runs.between_commits = lambda: os.kill(os.getpid(), signal.SIGKILL)
with Workspace.open(sys.argv[1]) as ws:
    ws.run(as_of=datetime.fromisoformat(sys.argv[2]))
"""


def test_kill_between_the_two_commits_records_no_run(tmp_path: Path) -> None:
    """The warehouse commits first: a kill before the state's commit leaves new data and no
    run over it; the next run judges that data afresh instead of reusing the old report."""
    root = tmp_path / "shop"
    before = ran_shop(root, 3000, 3, T1)
    names = list(before)
    with Workspace.open(root) as ws:
        fits = ws.state.rows("SELECT count(*) FROM model_fits")[0][0]
    grow_customers(root)
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_BETWEEN_COMMITS, str(root), T2.isoformat()],
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with Workspace.open(root) as ws:
        assert [r.as_of for r in ws.runs()] == [T1]  # no run recorded over the new data...
        assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 3001  # committed
        for n in names:
            assert ws.members(n, as_of=T1) == before[n], n
        assert ws.state.rows("SELECT count(*) FROM model_fits")[0][0] == fits
        result = ws.run(as_of=T2)
    assert result.details["sources"]["customers"] == "unchanged"  # loaded by the killed run
    assert result.details["quality"] == "checked"  # ...but never judged: judged now


def test_a_failed_run_writes_no_state(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    init_project(root, demo=True, customers=3000, seed=3)
    with Workspace.open(root) as ws:
        with pytest.raises(Exception, match="injected failure"):
            ws.run(as_of=T1, _fail_after=2)
        for table in ("model_runs", "model_fits", "runs"):
            if ws.state.has_table(table):
                assert ws.state.rows(f"SELECT count(*) FROM {table}")[0][0] == 0, table
        assert ws.runs() == []
        snapshots = Path(ws.backend.snapshots or "")
        assert not snapshots.is_dir() or list(snapshots.iterdir()) == []  # copies removed
        # a retry in the same process fits again and records fits that exist
        result = ws.run(as_of=T1)
        fits = {r[0] for r in ws.state.rows("SELECT fit_id FROM model_fits")}
        used = {m["fit"] for m in result.details["models"].values()}
        assert used and used <= fits
