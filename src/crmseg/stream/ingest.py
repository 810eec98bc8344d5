"""Checking a stream batch: a JSON array of items, each an event, an order or a consent change.

An item names its person by ``customer_id`` (a record id of the user's system), ``email``,
``phone`` or ``anonymous_id`` (the first given wins, in that order) and says what happened::

    {"type": "event", "customer_id": "42", "name": "added_to_cart",
     "occurred_at": "2026-12-07T10:00:00Z", "properties": {"sku": "A-1"}}
    {"type": "order", "email": "ann@example.com", "order_id": "o-9", "amount": 59.0,
     "category": "skincare", "ordered_at": "2026-12-07T10:02:00+01:00"}
    {"type": "consent", "phone": "+49 151 2345678", "channel": "email", "status": "opted_out"}

``type`` defaults to ``event``. Instants are ISO 8601: an offset (or ``Z``) is honoured, a
naive instant is wall time in the project's timezone, and a missing one is the moment the batch
arrived. Fields outside the canonical table's columns are refused, like unknown keys in YAML.
Every problem of every item is collected, and the batch is taken all or nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from crmseg.errors import EventError
from crmseg.sources.model import CHANNELS, CONSENT_STATUSES

WHO = ("customer_id", "email", "phone", "anonymous_id")  # in the order they are tried
KINDS = {"event": "events", "order": "orders", "consent": "consent"}

# Per kind: field -> (type, required); the time field defaults to the batch's arrival.
FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "events": {"name": ("string", True), "occurred_at": ("timestamp", False),
               "properties": ("json", False)},
    "orders": {"order_id": ("string", True), "ordered_at": ("timestamp", False),
               "amount": ("float", True), "discount": ("float", False),
               "margin": ("float", False), "returned_amount": ("float", False),
               "currency": ("string", False), "channel": ("string", False),
               "category": ("string", False)},
    "consent": {"channel": ("string", False), "status": ("string", True),
                "purpose": ("string", False), "basis": ("string", False),
                "updated_at": ("timestamp", False)},
}  # fmt: skip
TIME = {"events": "occurred_at", "orders": "ordered_at", "consent": "updated_at"}


@dataclass
class Rows:
    """One canonical table's new rows: columns of Python values, and for each row the item it
    came from and how that item names its person."""

    columns: dict[str, list[Any]]
    items: list[int] = field(default_factory=list)
    who: list[tuple[str, str]] = field(default_factory=list)  # (id kind, value)
    anonymous: list[str | None] = field(default_factory=list)


@dataclass
class Batch:
    """A checked batch: rows per canonical table, and the number of items."""

    tables: dict[str, Rows]
    size: int
    received_at: datetime
    source: str = "batch"  # what errors call the items: batch[i], or line[n]
    first: int = 0  # the number of the first item (lines count from 1)

    def who(self) -> list[tuple[str, str]]:
        return [w for rows in self.tables.values() for w in rows.who]


def parse(
    items: Any, timezone: str = "UTC", received_at: datetime | None = None, source: str = "batch"
) -> Batch:
    """Check ``items`` (decoded JSON); an :class:`EventError` names every bad item and field."""
    now = received_at or datetime.now(UTC).replace(tzinfo=None)
    if not isinstance(items, list):
        raise EventError([(0, "", f"expected a JSON array of items, got {_kind(items)}")], source)
    zone = ZoneInfo(timezone)
    plain = _plain_events(items, zone, now)
    if plain is not None:
        return Batch({"events": plain}, len(items), now, source)
    tables = {
        name: Rows({c: [] for c in ("customer_id", *(["anonymous_id"] if name == "events" else []),
                                    *fields)})
        for name, fields in FIELDS.items()
    }  # fmt: skip
    problems: list[tuple[int, str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append((i, "", f"expected an object, got {_kind(item)}"))
            continue
        kind = item.get("type", "event")
        table = KINDS.get(kind) if isinstance(kind, str) else None
        if table is None:
            problems.append((i, "type", f"expected one of event, order, consent, got {kind!r}"))
            continue
        fields = FIELDS[table]
        before = len(problems)
        for key in item:
            if key != "type" and key not in fields and key not in WHO:
                allowed = ", ".join(["type", *WHO, *fields])
                problems.append((i, key, f"unknown field (expected one of {allowed})"))
        who = next(((k, item[k]) for k in WHO if item.get(k) not in (None, "")), None)
        if who is None:
            problems.append((i, "customer_id", "no customer_id, email, phone or anonymous_id"))
        elif not isinstance(who[1], str | int) or isinstance(who[1], bool):
            problems.append((i, who[0], f"expected a string, got {_kind(who[1])}"))
        values: dict[str, Any] = {}
        for name, (dtype, required) in fields.items():
            raw = item.get(name)
            if raw is None:
                if required:
                    problems.append((i, name, "required"))
                values[name] = now if name == TIME[table] else None
                continue
            value, what = _value(raw, dtype, zone)
            if what:
                problems.append((i, name, what))
            values[name] = value
        if table == "consent":
            _consent(i, values, problems)
        if len(problems) > before or who is None:
            continue
        rows = tables[table]
        anonymous = item.get("anonymous_id")
        if anonymous is not None and not isinstance(anonymous, str):
            problems.append((i, "anonymous_id", f"expected a string, got {_kind(anonymous)}"))
            continue
        rows.items.append(i)
        rows.who.append((who[0], str(who[1])))
        rows.anonymous.append(anonymous)
        rows.columns["customer_id"].append(None)  # the person's record id, found on storing
        if table == "events":
            rows.columns["anonymous_id"].append(anonymous)
        for name in fields:
            rows.columns[name].append(values[name])
    if problems:
        raise EventError(problems, source)
    return Batch({n: r for n, r in tables.items() if r.items}, len(items), now, source)


_PLAIN = frozenset(("customer_id", "name", "occurred_at", "properties"))


def _plain_events(items: list[Any], zone: ZoneInfo, now: datetime) -> Rows | None:
    """The common batch, checked a column at a time: only events, each naming its person by
    a customer_id string, with a name and optionally an instant and properties. Anything
    else (or anything wrong) returns None, and the item by item check names the problems."""
    try:
        fields = set().union(*(i.keys() for i in items))
        ids = [i["customer_id"] for i in items]
        names = [i["name"] for i in items]
    except (AttributeError, KeyError, TypeError):
        return None
    if not fields <= _PLAIN or not items:
        return None
    if not all(type(x) is str and x for x in ids) or not all(type(x) is str for x in names):
        return None
    n = len(items)
    times: list[Any] = [now] * n
    if "occurred_at" in fields:
        try:
            for j, item in enumerate(items):
                raw = item.get("occurred_at")
                if raw is not None:
                    when = datetime.fromisoformat(raw)
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=zone)
                    times[j] = when.astimezone(UTC).replace(tzinfo=None)
        except (TypeError, ValueError):
            return None
    props: list[Any] = [None] * n
    if "properties" in fields:
        raw_props = [i.get("properties") for i in items]
        if not all(x is None or type(x) is dict for x in raw_props):
            return None
        props = [None if x is None else json.dumps(x, sort_keys=True) for x in raw_props]
    nothing: list[Any] = [None] * n
    return Rows(
        {"customer_id": list(nothing), "anonymous_id": list(nothing), "name": names,
         "occurred_at": times, "properties": props},
        list(range(n)),
        [("customer_id", x) for x in ids],
        list(nothing),
    )  # fmt: skip


def parse_lines(
    lines: Sequence[str], first_line: int, timezone: str, received_at: datetime | None = None
) -> Batch:
    """JSON lines (``crmseg stream``): each line one item; errors name the line number."""
    items: list[Any] = []
    problems: list[tuple[int, str, str]] = []
    for n, line in enumerate(lines):
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append((n, "", f"not JSON ({exc.msg} at column {exc.colno})"))
            items.append({})
    if problems:
        raise EventError(_by_line(problems, first_line), "line")
    try:
        batch = parse(items, timezone, received_at, "line")
    except EventError as exc:
        raise EventError(_by_line(exc.problems, first_line), "line") from None
    batch.first = first_line
    return batch


def _by_line(problems: list[tuple[int, str, str]], first: int) -> list[tuple[int, str, str]]:
    return [(first + i, f, what) for i, f, what in problems]


def _value(raw: Any, dtype: str, zone: ZoneInfo) -> tuple[Any, str]:
    """(value, problem or "")."""
    if dtype == "string":
        return (raw, "") if isinstance(raw, str) else (None, f"expected a string, got {_kind(raw)}")
    if dtype == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None, f"expected a number, got {_kind(raw)}"
        return float(raw), ""
    if dtype == "json":
        if not isinstance(raw, dict):
            return None, f"expected an object, got {_kind(raw)}"
        return json.dumps(raw, sort_keys=True), ""
    if not isinstance(raw, str):
        return None, f"expected an ISO 8601 instant, got {_kind(raw)}"
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        return None, f"expected an ISO 8601 instant, got {raw!r}"
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC).replace(tzinfo=None), ""


def _consent(i: int, values: dict[str, Any], problems: list[tuple[int, str, str]]) -> None:
    status, channel, purpose = values["status"], values["channel"], values["purpose"]
    if status is not None and status not in CONSENT_STATUSES:
        problems.append((i, "status", f"expected opted_in or opted_out, got {status!r}"))
    if channel is None and purpose is None:
        problems.append((i, "channel", "required (or a purpose)"))
    elif channel is not None and channel not in CHANNELS:
        problems.append((i, "channel", f"expected one of {', '.join(CHANNELS)}, got {channel!r}"))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip
