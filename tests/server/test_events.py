"""Real time through a real ``crmseg serve`` process: events posted over loopback enter people
by themselves, time ends their membership by itself, a long poll and a webhook receive every
change with its reason, bad batches and bursts are refused whole, and an acknowledged batch
survives a SIGKILL."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crmseg.workspace import Workspace

from .conftest import Api, served

CUSTOMERS = """\
customer_id,email,country,signup_at
1,anna@example.com,DE,2024-01-01 10:00:00
2,ben@example.com,AT,2024-02-01 10:00:00
3,cleo@example.com,FR,2024-03-01 10:00:00
"""
SEGMENTS = """\
segments:
  - name: behavior.carting
    description: Put something in the cart in the last 3 seconds.
    owner: growth
    refresh: realtime
    rule: did('added_to_cart' within 3s)
  - name: value.buyers
    description: Ordered once.
    owner: growth
    refresh: realtime
    rule: count(orders) >= 1
"""


class Receiver(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.got.append((self.headers["Idempotency-Key"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/changes"
    finally:
        server.shutdown()


def _shop(root: Path, extra: str = "") -> Path:
    files = {
        "crmseg.yml": "name: live\ntimezone: UTC\nsources:\n"
        "  customers: {path: data/customers.csv}\n" + extra,
        "data/customers.csv": CUSTOMERS,
        "segments/live.yml": SEGMENTS,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, hook: str) -> Iterator[Api]:
    extra = (
        f"stream:\n  max_pending: 5\n  webhooks:\n    - name: crm\n      url: {hook}\n"
        "      segments: [behavior.carting]\n"
    )
    root = _shop(tmp_path_factory.mktemp("live") / "shop", extra)
    yield from served(root, datetime(2024, 8, 1))


def _post(api: Api, items: list[dict[str, Any]], role: str = "editor") -> tuple[int, Any]:
    status, body, _ = api.call("POST", "/events", role, body=json.dumps(items))
    return status, body


def _changes(api: Api, name: str, cursor: int, wait: float) -> dict[str, Any]:
    status, body, _ = api.call("GET", f"/segments/{name}/changes?cursor={cursor}&wait={wait}",
                               "viewer")  # fmt: skip
    assert status == 200, body
    return dict(body)


def test_an_event_enters_within_a_second_and_time_ends_it(live: Api) -> None:
    start = _changes(live, "behavior.carting", 0, 0)["next"]
    sent = datetime.now(UTC).replace(tzinfo=None)
    status, stored = _post(
        live, [{"customer_id": "1", "name": "added_to_cart", "occurred_at": sent.isoformat()}]
    )
    assert status == 200 and stored["items"] == 1 and stored["people"] == 1
    # how fast is benchmarks/bench_realtime.py's business; here: it comes, by itself
    entered = _changes(live, "behavior.carting", start, 10)
    assert [(c["customer_id"], c["change"]) for c in entered["changes"]] == [("1", "entered")]
    first = entered["changes"][0]
    assert first["cause"] == f"batch {stored['batch']} (1 items)"
    _, members, _ = live.call("GET", "/segments/behavior.carting/members", "viewer")
    assert members["members"] == ["1"]
    # nobody posts anything: the sweep ends the membership 3 seconds after the event
    exited = _changes(live, "behavior.carting", entered["next"], 10)
    assert [(c["customer_id"], c["change"]) for c in exited["changes"]] == [("1", "exited")]
    last = exited["changes"][0]
    # exact: out a microsecond after the event's last included instant
    assert datetime.fromisoformat(last["changed_at"]) == sent + timedelta(seconds=3, microseconds=1)
    assert last["cause"] == "sweep (time passed)"
    _, members, _ = live.call("GET", "/segments/behavior.carting/members", "viewer")
    assert members["members"] == []
    # the webhook got both, in order, keyed by their change ids
    deadline = time.monotonic() + 20
    while len([c for _, b in Receiver.got for c in b["changes"]]) < 2:
        assert time.monotonic() < deadline, Receiver.got
        time.sleep(0.1)
    delivered = [(c["customer_id"], c["change"]) for _, b in Receiver.got for c in b["changes"]]
    assert delivered[:2] == [("1", "entered"), ("1", "exited")]
    assert Receiver.got[0][0] == f"crm:{first['change_id']}-{first['change_id']}"


def test_orders_by_email_and_new_people(live: Api) -> None:
    cursor = _changes(live, "value.buyers", 0, 0)["next"]
    status, stored = _post(
        live,
        [
            {"type": "order", "email": " BEN@example.com", "order_id": "o1", "amount": 9.5},
            {"type": "order", "customer_id": "77", "order_id": "o2", "amount": 3},
        ],
    )
    assert status == 200 and stored["created"] == ["77"]
    got = _changes(live, "value.buyers", cursor, 10)["changes"]
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        got += _changes(live, "value.buyers", got[-1]["change_id"] if got else cursor, 5)["changes"]
    assert sorted((c["customer_id"], c["change"]) for c in got) == [
        ("2", "entered"),
        ("77", "entered"),
    ]
    _, status_, _ = live.call("GET", "/events/status", "viewer")
    assert status_["running"] and status_["error"] is None and status_["backlog"] == 0


def test_bad_batches_and_bursts_are_refused_whole(live: Api) -> None:
    _, before, _ = live.call("GET", "/events/status", "viewer")
    status, body = _post(live, [{"customer_id": "1", "name": "ok"}, {"customer_id": "2"},
                                {"name": "x", "occurred_at": "soon"}])  # fmt: skip
    assert status == 400 and body["error"]["code"] == "event"
    assert body["error"]["location"] == "batch[1].name"
    message = body["error"]["message"]
    assert "2 bad items, nothing stored" in message and "[2].occurred_at" in message
    status, body = _post(live, [{"customer_id": "1", "name": "x"}] * 6)  # max_pending: 5
    assert status == 429 and body["error"]["code"] == "backpressure"
    status, body, _ = live.call("POST", "/events", "editor", body="{nope")
    assert status == 400 and body["error"]["message"].startswith("batch: 1 bad item")
    assert _post(live, [{"customer_id": "1", "name": "x"}], "viewer")[0] == 403
    _, after, _ = live.call("GET", "/events/status", "viewer")
    assert after["applied"] == before["applied"]  # none of them reached the processor
    assert _post(live, [{"customer_id": "3", "name": "fine"}])[0] == 200


def test_retry_after_on_a_burst(live: Api) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        live.base + "/events",
        json.dumps([{"customer_id": "1", "name": "x"}] * 9).encode(),
        {"Authorization": f"Bearer {live.keys['editor']}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    assert caught.value.code == 429 and caught.value.headers["Retry-After"] == "1"


def test_an_acknowledged_batch_survives_a_kill(tmp_path: Path) -> None:
    root = _shop(tmp_path / "shop")
    for api in served(root, datetime(2024, 8, 1)):
        assert api.proc is not None
        status, _ = _post(api, [{"customer_id": "3", "name": "added_to_cart"},
                                     {"type": "order", "customer_id": "3", "order_id": "k1",
                                      "amount": 1}])  # fmt: skip
        assert status == 200
        os.kill(api.proc.pid, signal.SIGKILL)  # right after the acknowledgement
        api.proc.wait(timeout=30)
    with Workspace.open(root) as ws:
        orders = ws.backend.execute(ws.backend.canonical("stream_orders")).to_pylist()
        assert [(o["customer_id"], o["order_id"]) for o in orders] == [("3", "k1")]
        processor = ws.processor()
        processor.start()  # a restart evaluates what was stored
        assert "3" in processor.members_of("value.buyers")
        assert ws.members("value.buyers") == ["3"]
