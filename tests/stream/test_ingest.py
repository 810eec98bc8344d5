"""Checking stream batches: every bad item is named by index and field, the batch is taken
all or nothing, instants follow the project's timezone."""

from __future__ import annotations

from datetime import datetime

import pytest

from crmseg.errors import EventError
from crmseg.stream.ingest import parse, parse_lines

NOW = datetime(2024, 8, 1, 12, 0)


def test_items_become_rows_of_their_tables() -> None:
    batch = parse(
        [
            {"customer_id": 7, "name": "login", "occurred_at": "2024-08-01T10:00:00+02:00",
             "properties": {"b": 1, "a": "x"}},
            {"type": "order", "email": "ann@example.com", "order_id": "o1", "amount": 12},
            {"type": "consent", "phone": "+49 151 1234567", "channel": "sms",
             "status": "opted_out", "updated_at": "2024-08-01 09:00:00"},
        ],
        "Europe/Berlin",
        NOW,
    )  # fmt: skip
    events, orders, consent = (batch.tables[n] for n in ("events", "orders", "consent"))
    assert events.who == [("customer_id", "7")]
    assert events.columns["occurred_at"] == [datetime(2024, 8, 1, 8, 0)]  # offset honoured
    assert events.columns["properties"] == ['{"a": "x", "b": 1}']
    assert orders.columns["amount"] == [12.0] and orders.columns["ordered_at"] == [NOW]
    assert orders.who == [("email", "ann@example.com")]
    # naive: wall time in the project's zone (Berlin, summer: UTC+2)
    assert consent.columns["updated_at"] == [datetime(2024, 8, 1, 7, 0)]
    assert batch.size == 3


def test_every_bad_item_is_named_and_nothing_is_taken() -> None:
    items = [
        {"customer_id": "1", "name": "login"},
        {"name": "login"},
        {"customer_id": "2", "name": 5, "occurred_at": "yesterday"},
        {"type": "order", "customer_id": "3", "amount": "12", "colour": "red"},
        {"type": "consent", "customer_id": "4", "channel": "fax", "status": "maybe"},
        {"type": "refund", "customer_id": "5"},
        "login",
    ]
    with pytest.raises(EventError) as caught:
        parse(items, "UTC", NOW)
    found = {(i, f) for i, f, _ in caught.value.problems}
    assert found == {
        (1, "customer_id"),
        (2, "name"),
        (2, "occurred_at"),
        (3, "amount"),
        (3, "order_id"),
        (3, "colour"),
        (4, "channel"),
        (4, "status"),
        (5, "type"),
        (6, ""),
    }
    text = str(caught.value)
    assert text.startswith("batch: 6 bad items, nothing stored: [1].customer_id: no customer_id")
    assert "[2].occurred_at: expected an ISO 8601 instant, got 'yesterday'" in text
    assert caught.value.location == "batch[1].customer_id"
    with pytest.raises(EventError, match="expected a JSON array of items, got an object"):
        parse({"customer_id": "1"}, "UTC", NOW)


def test_lines_are_named_by_number() -> None:
    lines = ['{"customer_id": "1", "name": "a"}', "{not json", '{"customer_id": "2"}']
    with pytest.raises(EventError) as caught:
        parse_lines(lines, 40, "UTC", NOW)
    assert [(i, f) for i, f, _ in caught.value.problems] == [(41, "")]
    with pytest.raises(EventError) as caught:
        parse_lines([lines[0], lines[2]], 40, "UTC", NOW)
    assert str(caught.value).startswith("line: 1 bad item, nothing stored: [41].name: required")
