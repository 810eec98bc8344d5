"""A real crmseg serve process over a small activation shop, for the API and dashboard tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crmseg.server.keys import KeyStore
from crmseg.workspace import Workspace

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@dataclass
class Api:
    base: str
    keys: dict[str, str]  # role -> key text
    root: Path
    proc: subprocess.Popen[bytes] | None = None  # the server process

    def call(
        self,
        method: str,
        path: str,
        role: str | None = None,
        key: str | None = None,
        body: str | None = None,
    ) -> tuple[int, Any, str]:
        """(status, JSON body or None, content type)."""
        headers = {}
        text = key or (self.keys[role] if role else None)
        if text:
            headers["Authorization"] = f"Bearer {text}"
        data = body.encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body, status, kind = resp.read(), resp.status, resp.headers["content-type"]
        except urllib.error.HTTPError as exc:
            body, status, kind = exc.read(), exc.code, exc.headers["content-type"]
        if kind.startswith("application/json"):
            return status, json.loads(body), kind
        return status, body.decode(), kind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served(root: Path, as_of: datetime) -> Iterator[Api]:
    """Run the project at ``root`` once, make a key per role, and serve it: a real ``crmseg
    serve`` process on a free loopback port, stopped when the caller is done."""
    with Workspace.open(root) as ws:
        ws.run(as_of=as_of)
        store = KeyStore(ws.state)
        keys = {
            role: store.create(role, f"test {role}")[1] for role in ("viewer", "editor", "admin")
        }
    port = _free_port()
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        # the scheduler would run the 2024 project at today's instant: tests/server/
        # test_scheduler.py covers it
        [
            sys.executable,
            "-m",
            "crmseg",
            "serve",
            "-p",
            str(root),
            "--port",
            str(port),
            "--no-schedule",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _, err = proc.communicate(timeout=5)
                    pytest.fail(f"server did not start: {err.decode()[-2000:]}")
                time.sleep(0.2)
        yield Api(base, keys, root, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_shop(root: Path, customers: int, orders: str | None = None) -> Path:
    """The activation tests' shop (customers, orders, consent, messages, two segments and
    the campaign ``welcome``) on disk."""
    from ..activation.conftest import (
        CONFIG,
        MESSAGES,
        ORDERS,
        SEGMENTS,
        campaign_yml,
        consent_csv,
        customers_csv,
    )

    for rel, text in {
        "crmseg.yml": CONFIG,
        "data/customers.csv": customers_csv(customers),
        "data/orders.csv": orders or ORDERS,
        "data/consent.csv": consent_csv(customers),
        "data/messages.csv": MESSAGES,
        "segments/core.yml": SEGMENTS,
        "campaigns/main.yml": campaign_yml(),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = write_shop(tmp_path_factory.mktemp("served") / "shop", 12)
    yield from served(root, datetime(2024, 8, 1))
