"""The scheduler: due segments run by their refresh, failures retry with backoff and show as
stale, runs never overlap; and a real server that refreshes a project by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta

import pytest

from crmseg.server.app import Server
from crmseg.server.keys import KeyStore
from crmseg.server.scheduler import Scheduler
from crmseg.workspace import Workspace

from ..conftest import CONFIG, SEGMENTS, MakeProject

pytest.importorskip("fastapi")

T0 = datetime(2024, 8, 1)
HOURLY = (
    SEGMENTS
    + """\
  - name: value.recent
    description: Ordered in the last 30 days.
    owner: crm-team
    refresh: hourly
    rule: count(orders within 30d) >= 1
"""
)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _fresh(server: Server, now: datetime) -> dict[str, tuple[bool, bool]]:
    return {f.segment: (f.due, f.stale) for f in server.ws.freshness(now)}


def test_due_segments_run_failures_back_off_and_turn_stale(make_project: MakeProject) -> None:
    root = make_project(segments__core_yml=HOURLY)
    with Workspace.open(root) as ws:
        ws.run(as_of=T0)
    server = Server(root)
    clock = Clock(T0 + timedelta(minutes=30))
    scheduler = Scheduler(server, clock)
    try:
        assert scheduler.tick() == {"skipped": "nothing due"}
        clock.at = T0 + timedelta(hours=2)
        assert _fresh(server, clock.at)["value.recent"] == (True, True)  # 1 h late > grace 30m
        done = scheduler.tick()
        assert done["ok"] and done["segments"] == ["value.recent"]  # only what is due
        run = server.ws.runs()[-1]
        assert (run.run_id, run.as_of) == (done["run_id"], T0 + timedelta(hours=2))
        assert _fresh(server, clock.at) == {
            "demographic.dach": (False, False),
            "value.buyers": (False, False),
            "value.recent": (False, False),
        }
        # a day later the data breaks: the run fails, is recorded, and waits to retry
        data = root / "data" / "orders.csv"
        good = data.read_text()
        data.write_text(good.replace("total", "totl"))
        clock.at = T0 + timedelta(days=1, minutes=1)
        failed = scheduler.tick()
        assert not failed["ok"] and "no column 'total'" in failed["error"]
        assert failed["failures"] == 1
        assert failed["retry_at"] == clock.at + timedelta(minutes=1)
        assert scheduler.tick()["skipped"].startswith("retrying at")
        clock.at += timedelta(minutes=1)
        again = scheduler.tick()
        assert (again["ok"], again["failures"]) == (False, 2)
        assert again["retry_at"] == clock.at + timedelta(minutes=2)  # backoff doubles
        clock.at = T0 + timedelta(days=1, minutes=40)  # past due + grace, never fresh-looking
        reasons = {f.segment: f for f in server.ws.freshness(clock.at)}
        assert reasons["value.buyers"].stale
        assert "the last scheduled run failed" in reasons["value.buyers"].reason
        data.write_text(good)
        healed = scheduler.tick()
        assert healed["ok"] and healed["failures"] == 0
        assert not any(f.stale for f in server.ws.freshness(clock.at))
        # runs never overlap: while one holds the run lock, the scheduler waits its turn
        with server.running:
            assert scheduler.tick() == {"skipped": "a run is going"}
    finally:
        server.close()


def test_a_served_project_refreshes_by_itself(make_project: MakeProject) -> None:
    config = CONFIG + "schedule: {check_seconds: 1, grace_minutes: 5}\n"
    root = make_project(crmseg_yml=config)
    with Workspace.open(root) as ws:  # never run: every segment is due at once
        key = KeyStore(ws.state).create("viewer")[1]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmseg", "serve", "-p", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )

    def get(path: str) -> object:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": key})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                schedule = get("/schedule")
                assert isinstance(schedule, dict)
                if schedule["attempts"]:
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.communicate()[1].decode()[-2000:])
            assert time.monotonic() < deadline, "the scheduler never ran"
            time.sleep(0.3)
        assert schedule["running"] and schedule["attempts"][0]["ok"]
        segments = get("/segments")
        assert isinstance(segments, list)
        assert {s["name"]: s["freshness"]["stale"] for s in segments} == {
            "demographic.dach": False,
            "value.buyers": False,
        }
        assert segments[0]["data_watermark"].startswith("2024-07-01")  # the newest order
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
