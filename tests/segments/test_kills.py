"""SIGKILLs spread over whole `crmseg run` and `crmseg activate` processes, each from the same
starting state: afterwards the state and the warehouse agree (a run is recorded exactly when
its data is committed, an activation with all its rows and its export file), and the next
command finishes the job with the answers an unkilled one gives."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from crmseg import Workspace
from tests.segments.conftest import grow_customers, ran_shop

T1 = datetime(2026, 10, 1)
T2 = datetime(2026, 11, 1)
CAMPAIGN = "skincare_replenishment_email"
EXPORT = Path("exports") / f"{CAMPAIGN}.csv"
RUN_KILLS = 8  # spread over the run; 30 cost 200 s of the suite for the same phases
ACTIVATE_KILLS = 6
CUSTOMERS = 1500  # a run of a few seconds: kills land in every phase of it


def _cli(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crmseg", *args, "-p", str(root), "--as-of", f"{T2:%Y-%m-%d}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _killed_at(root: Path, delay: float, *args: str) -> tuple[bool, float]:
    """(killed?, seconds until it ended) for one process killed ``delay`` s after it starts."""
    start = time.perf_counter()
    proc = _cli(root, *args)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive, time.perf_counter() - start


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shop with a run at T1 and a new customer since: a run at T2 loads, checks quality,
    resolves identity and records, so kills land in every phase."""
    root = tmp_path_factory.mktemp("kills") / "shop"
    ran_shop(root, CUSTOMERS, 11, T1)
    grow_customers(root)
    return root


def _kills(source: Path, tmp_path: Path, n: int, *args: str) -> Iterator[Path]:
    """Copies of ``source``, each with ``crmseg ARGS`` SIGKILLed inside the process: the kills
    are spread over the duration of an unkilled one. A process that ends before its kill
    shortens that duration (the first one measured ran cold) and the kill is tried again."""
    timing = tmp_path / "timing"
    shutil.copytree(source, timing)
    start = time.perf_counter()
    assert _cli(timing, *args).wait() == 0
    duration = time.perf_counter() - start
    killed = 0
    for i in range(2 * n):
        if killed == n:
            break
        root = tmp_path / f"k{i}"
        shutil.copytree(source, root)
        landed, took = _killed_at(root, 0.1 + 0.85 * duration * killed / n, *args)
        if landed:
            killed += 1
            yield root
        else:
            duration = min(duration, took)
        shutil.rmtree(root)
    print(f"\n{killed} of {n} SIGKILLs landed inside `crmseg {args[0]}` ({duration:.1f} s)")
    assert killed == n, killed


def _members(root: Path, at: datetime) -> dict[str, list[str]]:
    with Workspace.open(root) as ws:
        return {s.name: ws.members(s.name, as_of=at) for s in ws.segments}


@pytest.mark.slow
def test_runs_killed_anywhere_stay_consistent(pristine: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    assert _cli(reference, "run").wait() == 0
    expected = _members(reference, T2)
    before = _members(pristine, T1)
    for i, root in enumerate(_kills(pristine, tmp_path, RUN_KILLS, "run")):
        with Workspace.open(root) as ws:
            runs = [r.as_of for r in ws.runs()]
            loaded = ws.backend.scalar(ws.backend.canonical("customers").count())
        assert runs in ([T1], [T1, T2]), (i, runs)
        if runs == [T1, T2]:
            assert loaded == CUSTOMERS + 1, i  # recorded: its data is committed
            assert _members(root, T2) == expected, i
        else:
            assert _members(root, T1) == before, i
        if i % 5 == 0:  # the next run finishes the job
            assert _cli(root, "run").wait() == 0 or runs == [T1, T2], i
            assert _members(root, T2) == expected, i


@pytest.mark.slow
def test_activations_killed_anywhere_stay_consistent(pristine: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    shutil.copytree(pristine, ran)
    assert _cli(ran, "run").wait() == 0
    for i, root in enumerate(_kills(ran, tmp_path, ACTIVATE_KILLS, "activate", CAMPAIGN)):
        with Workspace.open(root) as ws:
            recorded = [a for a in ws.activations(CAMPAIGN) if a["as_of"] == T2]
            staged = dict(ws.state.rows("SELECT staged, final FROM staged_files"))
            if recorded:
                (a,) = recorded
                logged = ws.state.rows(
                    "SELECT count(*) FROM send_log WHERE activation_id = ?", [a["activation_id"]]
                )[0][0]
                assert logged == a["treatment"] + a["holdout"], i
        final = root / EXPORT
        if recorded and not final.exists():  # killed between the commit and the move
            assert str(final) in staged.values() and Path(next(iter(staged))).exists(), i
        # the next activation moves a committed export into place, or activates afresh
        again = subprocess.run(
            [sys.executable, "-m", "crmseg", "activate", CAMPAIGN, "-p", str(root),
             "--as-of", f"{T2:%Y-%m-%d}"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert (again.returncode == 0) != bool(recorded), (i, again.stderr)
        with final.open(newline="") as f:
            rows = list(csv.DictReader(f))
        with Workspace.open(root) as ws:
            (a,) = [a for a in ws.activations(CAMPAIGN) if a["as_of"] == T2]
            assert ws.state.rows("SELECT count(*) FROM staged_files")[0][0] == 0, i
        assert len(rows) == a["treatment"], i


_KILL_BEFORE_MOVING = """
import os, signal, sys
from datetime import datetime
from crmseg.activation import runner
from crmseg import Workspace

runner.before_moving = lambda: os.kill(os.getpid(), signal.SIGKILL)
with Workspace.open(sys.argv[1]) as ws:
    ws.activate(sys.argv[2], as_of=datetime.fromisoformat(sys.argv[3]))
"""


def test_kill_between_the_activation_commit_and_the_file_move(
    pristine: Path, tmp_path: Path
) -> None:
    root = tmp_path / "shop"
    shutil.copytree(pristine, root)
    assert _cli(root, "run").wait() == 0
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_BEFORE_MOVING, str(root), CAMPAIGN, T2.isoformat()],
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    final = root / EXPORT
    with Workspace.open(root) as ws:
        (a,) = [a for a in ws.activations(CAMPAIGN) if a["as_of"] == T2]  # committed...
        staged = ws.state.rows("SELECT staged, final FROM staged_files")
    assert not final.exists()  # ...but its file was never moved
    assert [f for _, f in staged] == [str(final)] and Path(staged[0][0]).exists()
    again = subprocess.run(
        [sys.executable, "-m", "crmseg", "activate", CAMPAIGN, "-p", str(root),
         "--as-of", f"{T2:%Y-%m-%d}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 1 and "already activated" in again.stderr  # not twice...
    with final.open(newline="") as f:  # ...and the committed file is in place
        assert len(list(csv.DictReader(f))) == a["treatment"]
    with Workspace.open(root) as ws:
        assert ws.state.rows("SELECT count(*) FROM staged_files")[0][0] == 0
