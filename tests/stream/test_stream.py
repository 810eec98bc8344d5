"""``crmseg stream`` as a user runs it: JSON lines through a real CLI process on a project on
disk. Entries and exits come out with their instants, reasons and causes, go into the
membership history, and agree with what a batch run computes on the same data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from crmseg.workspace import Workspace

from ..conftest import MakeProject, run_cli

CONFIG = """\
name: rt-shop
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv}
  events: {path: data/events.csv}
"""
CUSTOMERS = """\
customer_id,email,country,signup_at
1,anna@example.com,DE,2024-01-01 10:00:00
2,ben@example.com,AT,2024-02-01 10:00:00
3,cleo@example.com,FR,2024-03-01 10:00:00
"""
ORDERS = "order_id,customer_id,ordered_at,amount\n10,1,2024-05-01 12:00:00,120.0\n"
EVENTS = "customer_id,name,occurred_at\n1,login,2024-07-31 23:30:00\n"
SEGMENTS = """\
segments:
  - name: behavior.active_now
    description: Two logins in the last hour.
    owner: growth
    refresh: realtime
    rule: count(events where name = 'login' within 1h) >= 2
  - name: behavior.cart_abandoned
    description: Added to cart, no order within 1h, in Germany.
    owner: growth
    refresh: realtime
    rule: did('added_to_cart') then not did('order_completed') within 1h and country = 'DE'
  - name: value.buyers
    description: Ordered once.
    owner: growth
    refresh: realtime
    rule: count(orders) >= 1
  - name: demographic.dach
    description: Not real time.
    owner: growth
    rule: country in ('DE', 'AT')
"""
ITEMS = [
    {"customer_id": "1", "name": "login", "occurred_at": "2024-08-01T00:10:00"},
    {"customer_id": "2", "name": "added_to_cart", "occurred_at": "2024-08-01T00:20:00"},
    {"customer_id": "1", "name": "added_to_cart", "occurred_at": "2024-08-01T00:21:00"},
    {"type": "order", "email": " Ben@Example.com", "order_id": "o2", "amount": 10,
     "ordered_at": "2024-08-01T00:30:00"},
    {"customer_id": "9", "name": "login", "occurred_at": "2024-08-01T00:40:00"},
    {"customer_id": "9", "name": "login", "occurred_at": "2024-08-01T00:41:00"},
    {"customer_id": "3", "name": "login", "occurred_at": "2024-08-01T03:00:00"},
]  # fmt: skip


def _shop(make_project: MakeProject, **more: str) -> Path:
    root = make_project(
        **{
            "crmseg.yml": CONFIG + more.pop("config", ""),
            "data/customers.csv": CUSTOMERS,
            "data/orders.csv": ORDERS,
            "data/events.csv": EVENTS,
            "segments/core.yml": SEGMENTS,
        }
    )
    assert run_cli("run", "-p", str(root), "--as-of", "2024-08-01").returncode == 0
    (root / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    return root


def test_a_replayed_stream_enters_and_exits_on_time(make_project: MakeProject) -> None:
    root = _shop(make_project)
    done = run_cli("stream", "items.jsonl", "-p", str(root), "--replay", "--batch", "2",
                   cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    changes = [json.loads(line) for line in done.stdout.splitlines()]
    got = [(c["segment"], c["customer_id"], c["change"], c["at"]) for c in changes]
    assert got == [
        ("behavior.active_now", "1", "entered", "2024-08-01 00:20:00"),
        ("value.buyers", "2", "entered", "2024-08-01 00:30:00"),  # found by email
        ("behavior.active_now", "1", "exited", "2024-08-01 00:30:00.000001"),  # 23:30 left
        ("behavior.active_now", "9", "entered", "2024-08-01 00:41:00"),  # a new person
        ("behavior.cart_abandoned", "1", "entered", "2024-08-01 01:21:00"),  # no order in 1h
        ("behavior.active_now", "9", "exited", "2024-08-01 01:40:00.000001"),
    ]
    assert changes[1]["cause"] == "batch 2 (2 items)"
    assert changes[2]["cause"] == "sweep (time passed)"
    assert changes[4]["reason"].startswith("turned true: did('added_to_cart') then not")
    assert "7 items in 4 batches: 4 entered, 2 exited, 1 new people" in done.stderr
    with Workspace.open(root) as ws:
        # the history answers for any instant, and a batch computation agrees with it
        for at, expected in [
            (datetime(2024, 8, 1, 0, 25), ["1"]),
            (datetime(2024, 8, 1, 0, 35), []),
            (datetime(2024, 8, 1, 1, 30), ["9"]),
        ]:
            assert ws.members("behavior.active_now", at) == expected
            assert ws._compute_members("behavior.active_now", at) == expected
        assert ws.members("value.buyers") == ["1", "2"]
        assert ws.members("behavior.cart_abandoned") == ["1"]
        # a batch run later reads the streamed rows too, and agrees with the stream
        result = ws.run(as_of=datetime(2024, 8, 1, 3, 0))
        assert result.sizes["value.buyers"] == 2 and result.entered["value.buyers"] == 0
        assert result.sizes["behavior.cart_abandoned"] == 1
        assert result.customers == 4  # customer 9, created by the stream
        profile = ws.profile("9")
        assert [i["entered_at"] for i in profile["segments"]["behavior.active_now"]["intervals"]]


def test_unknown_people_are_refused_when_so_configured(make_project: MakeProject) -> None:
    root = _shop(make_project, config="stream: {unknown_people: reject}\n")
    done = run_cli("stream", "items.jsonl", "-p", str(root), "--replay", "--batch", "4",
                   cwd=root)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: line: 2 bad items, nothing stored: [5].customer_id: nobody known has "
        "customer_id '9'; [6].customer_id: nobody known has customer_id '9'"
    )
    # the first batch (lines 1-4) was stored and applied; the refused one left no trace
    with Workspace.open(root) as ws:
        assert ws.members("value.buyers") == ["1", "2"]
        assert "9" not in ws.members("behavior.active_now", datetime(2024, 8, 1, 1, 0))
        events = ws.backend.canonical("stream_events")
        assert ws.backend.execute(events.count().as_table()).column(0)[0].as_py() == 3


def test_a_bad_line_stops_the_stream_and_says_where(make_project: MakeProject) -> None:
    root = _shop(make_project)
    (root / "bad.jsonl").write_text(
        '{"customer_id": "1", "name": "login"}\n\n{"customer_id": "1", "occurred_at": 5}\n'
    )
    done = run_cli("stream", "bad.jsonl", "-p", str(root), cwd=root)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: line: 1 bad item, nothing stored: [3].name: required; [3].occurred_at: "
        "expected an ISO 8601 instant, got a number"
    )


def test_forget_erases_streamed_rows_and_changes(make_project: MakeProject) -> None:
    from tests.privacy.test_forget import _traces

    root = _shop(make_project)
    done = run_cli("stream", "items.jsonl", "-p", str(root), "--replay", "--batch", "2",
                   cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Workspace.open(root) as ws:
        ids = ws.backend.execute(ws.backend.canonical("stream_events")).column("customer_id")
        assert "1" in ids.to_pylist()
        assert any(c["customer_id"] == "1" for c in ws.processor().log.of("1"))
        ws.forget(["anna@example.com"])
        assert "1" not in ws.members("behavior.cart_abandoned", datetime(2024, 8, 1, 1, 30))
        assert ws.members("behavior.active_now", datetime(2024, 8, 1, 1, 30)) == ["9"]
    assert _traces(root, ["anna@example.com"]) == []
    with Workspace.open(root) as ws:  # the stream knows everyone else still
        events = ws.backend.execute(ws.backend.canonical("stream_events")).to_pylist()
        assert {e["customer_id"] for e in events} == {"2", "3", "9"}
        assert ws.processor().log.of("1") == []
        assert ws.processor().log.of("9")
