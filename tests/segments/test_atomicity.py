"""A run killed at any moment leaves the previous state intact and readable."""

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

T1 = datetime(2026, 10, 1)


@pytest.mark.slow
def test_killed_run_keeps_previous_state(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    init_project(root, demo=True, customers=20000, seed=7)
    with Workspace.open(root) as ws:
        ws.run(as_of=T1)
        names = [s.name for s in ws.segments]
        before = {n: ws.members(n, as_of=T1) for n in names}
    outcomes = []
    for delay in (0.5, 1.0, 1.5, 2.0, 3.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmseg", "run", "-p", str(root), "--as-of", "2026-11-01"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            outcomes.append("killed")
        else:
            outcomes.append("finished")
        proc.wait()
        with Workspace.open(root) as ws:
            runs = ws.runs()
            assert runs[0].as_of == T1
            assert all(r.as_of in (T1, datetime(2026, 11, 1)) for r in runs)
            for n in names:
                assert ws.members(n, as_of=T1) == before[n], (delay, n)
            assert ws.backend.scalar(ws.backend.canonical("customers").count()) == 20000
    assert "killed" in outcomes
