"""Webhook delivery against a real HTTP server on 127.0.0.1 that fails some requests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crmseg.workspace import Workspace
from tests.activation.conftest import AS_OF, ShopFactory, campaign_yml


@dataclass
class Receiver:
    """An idempotent receiver: a batch key is applied once, however often it arrives.

    ``plan`` decides each request's fate by its number (1-based): "ok", "fail" (500 before
    applying) or "lost" (applied, then 503: the sender cannot know it arrived).
    """

    plan: Any = lambda n: "ok"
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, key: str, body: bytes) -> int:
        with self.lock:
            self.requests.append((key, body))
            fate = "fail" if self.down else self.plan(len(self.requests))
            if fate == "fail":
                return 500
            if key not in self.applied:
                payload = json.loads(body)
                self.applied[key] = payload
                ids = [r["customer_key"] for r in payload["records"]]
                if payload["op"] == "add":
                    self.members |= set(ids)
                else:
                    self.members -= set(ids)
            return 503 if fate == "lost" else 200


class _Quiet(BaseHTTPRequestHandler):
    """A handler that logs nothing and answers with a status and headers, no body."""

    def answer(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A real HTTP server on a free loopback port (yielded) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(_Quiet):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.answer(state.handle(self.headers["Idempotency-Key"], body))

    with _serving(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/audience"


def _project(shop: ShopFactory, url: str, n: int = 400, attempts: int = 4) -> Path:
    dest = (
        f"    destination: {{type: webhook, url: '{url}', batch_size: 7, "
        f"max_attempts: {attempts}, backoff_seconds: 0.001, "
        "fields: [customer_key, variant, email], pii: [email], "
        "dead_letter: 'dead/{campaign}.jsonl'}\n"
    )
    extra = "    splits: [{name: a, weight: 1}, {name: b, weight: 1}]\n"
    return shop(n=n, campaigns=campaign_yml(destination=dest, extra=extra))


def test_no_duplicate_and_no_lost_delivery_under_failures(
    shop: ShopFactory, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    # every 3rd request fails before it is applied, every 5th is applied but its answer lost
    state.plan = lambda n: "fail" if n % 3 == 0 else "lost" if n % 5 == 0 else "ok"
    root = _project(shop, url)
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        result = ws.activate("welcome")
        report = result.destinations[0]
        treated = {k for k, _ in result.audience.treatment}
        assert report.error is None and report.failed == 0
        assert report.batches == report.delivered == -(-len(treated) // 7)
        assert report.requests > report.batches  # retries happened
        # every customer arrived exactly once, in exactly one batch
        per_batch = [[r["customer_key"] for r in p["records"]] for p in state.applied.values()]
        flat = [k for batch in per_batch for k in batch]
        assert len(flat) == len(set(flat)) and set(flat) == treated == state.members
        # a retried batch is the same bytes under the same key
        bodies: dict[str, set[bytes]] = {}
        for key, body in state.requests:
            bodies.setdefault(key, set()).add(body)
        assert all(len(b) == 1 for b in bodies.values())
        assert any(sum(k == key for k, _ in state.requests) > 1 for key in bodies)
        # holdout customers are recorded, never sent
        assert not set(result.audience.holdout) & state.members
        # a repeated sync with no change sends nothing
        before = len(state.requests)
        again = ws.activate("welcome", as_of=AS_OF + timedelta(days=3))
        changed = {k for k, _ in again.audience.treatment} ^ treated
        assert again.destinations[0].batches == -(-len(changed) // 7)
        assert state.members == {k for k, _ in again.audience.treatment}
        if not changed:
            assert len(state.requests) == before


def test_failed_sync_is_dead_lettered_and_retried_from_the_same_diff(
    shop: ShopFactory, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.plan = lambda n: "ok" if n <= 2 else "fail"  # two batches pass, then the server dies
    root = _project(shop, url, attempts=2)
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        result = ws.activate("welcome")
        report = result.destinations[0]
        treated = {k for k, _ in result.audience.treatment}
        assert report.delivered == 2 and report.failed == 1 and report.error
        dead = [json.loads(x) for x in (root / "dead/welcome.jsonl").read_text().splitlines()]
        assert len(dead) == 1 and dead[0]["attempts"] == 2
        failed_key = dead[0]["batch_id"]
        synced = ws.state.con.execute("SELECT count(*) FROM sync_state").fetchall()[0][0]
        assert synced == len(state.members) == 14  # only what was acknowledged

        # the receiver recovers; the next activation first retries the very same batches
        state.plan = lambda n: "ok"
        first_retry = len(state.requests)
        ws.activate("welcome", as_of=AS_OF + timedelta(days=3))
        assert state.requests[first_retry][0] == failed_key
        assert state.members == treated | _new_joiners(ws, treated)
        pending = ws.state.con.execute(
            "SELECT count(*) FROM sync_batches WHERE status = 'pending'"
        ).fetchall()[0][0]
        assert pending == 0


def _new_joiners(ws: Workspace, treated: set[str]) -> set[str]:
    rows = ws.state.con.execute(
        "SELECT customer_key FROM send_log WHERE arm = 'treatment' AND sent_at > ?", [AS_OF]
    ).fetchall()
    return {r[0] for r in rows} - treated


@pytest.fixture
def elsewhere() -> Iterator[tuple[list[tuple[str, dict[str, str]]], str]]:
    """Another host's server: records every request it receives (method, headers)."""
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(_Quiet):
        def _record(self) -> None:
            seen.append((self.command, dict(self.headers)))
            self.answer(200)

        do_GET = do_POST = _record

    with _serving(Handler) as port:
        yield seen, f"http://localhost:{port}/stolen"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_sends_nothing_to_its_target(
    shop: ShopFactory,
    elsewhere: tuple[list[tuple[str, dict[str, str]]], str],
    status: int,
) -> None:
    seen, target = elsewhere
    asked: list[str] = []

    class Mover(_Quiet):
        def do_POST(self) -> None:
            asked.append(self.headers["Idempotency-Key"])
            self.answer(status, Location=target)

    with _serving(Mover) as port:
        dest = (
            f"    destination: {{type: webhook, url: 'http://127.0.0.1:{port}/audience', "
            "batch_size: 50, max_attempts: 3, backoff_seconds: 0.001, "
            "headers: {Authorization: 'Bearer s3cret'}, dead_letter: 'dead/{campaign}.jsonl'}\n"
        )
        root = shop(n=60, campaigns=campaign_yml(destination=dest))
        with Workspace.open(root) as ws:
            ws.run(as_of=AS_OF)
            report = ws.activate("welcome").destinations[0]
            pending = ws.state.con.execute(
                "SELECT count(*) FROM sync_batches WHERE status = 'pending'"
            ).fetchall()[0][0]
            synced = ws.state.con.execute("SELECT count(*) FROM sync_state").fetchall()[0][0]
    assert seen == []  # nothing, and so no credentials, reached the redirect's target
    assert report.delivered == 0 and report.failed == 1
    assert report.error and f"HTTP {status}" in report.error and target in report.error
    assert len(asked) == 1  # a redirect will not go away by retrying: dead-lettered at once
    dead = (root / "dead/welcome.jsonl").read_text().splitlines()
    assert len(dead) == 1 and json.loads(dead[0])["attempts"] == 1
    assert pending >= 1 and synced == 0  # kept in the outbox, nobody counted as synced


def test_delivered_batches_keep_no_personal_data(
    shop: ShopFactory, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.plan = lambda n: "ok" if n <= 2 else "fail"  # two batches pass, then the server dies
    root = _project(shop, url, attempts=1)
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        ws.activate("welcome")
        rows = ws.state.rows("SELECT status, payload FROM sync_batches ORDER BY seq")
    delivered = [p for s, p in rows if s == "delivered"]
    pending = [p for s, p in rows if s == "pending"]
    assert len(delivered) == 2 and pending
    assert all(p == "null" for p in delivered)  # dropped once delivered
    assert all("@example.com" in p.lower() for p in pending)  # kept: they will be sent again
