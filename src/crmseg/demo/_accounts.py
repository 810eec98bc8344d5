"""Subscriptions, support tickets, reviews and extra identity edges."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import _lists as L
from ._base import Clock, Floats, choice, spans
from ._orders import Orders
from ._people import People
from ._strings import hexed, numbered, pick

STATUSES = ("trialing", "active", "past_due", "paused", "canceled")
TRIAL_DAYS = 14
MONTH = 365.25 / 12
PRICES = (0.0, 19.0, 49.0)  # trial, basic, pro
HOUR = 1 / 24


def make_subscriptions(
    rng: np.random.Generator, clock: Clock, people: People
) -> tuple[pa.Table, Floats]:
    """One subscription per plan customer; sets the customer's current plan.

    Returns the table and, per customer, when their subscription ended (inf if still running,
    -inf without one), which bounds their product usage events.
    """
    span = clock.span
    who = np.flatnonzero(people.plan >= 0)
    m = len(who)
    started = np.minimum(people.signup[who] + rng.exponential(3.0, m), span - 1 / 86_400)
    age = span - started
    status = np.where(age < TRIAL_DAYS, 0, 1 + choice(rng, (0.58, 0.08, 0.06, 0.28), m))
    plan = people.plan[who]
    mrr = np.array(PRICES)[plan] * np.where(rng.random(m) < 0.3, 0.85, 1.0)
    mrr = np.round(np.where((status == 0) | (status == 3) | (status == 4), 0.0, mrr), 2)
    canceled = status == 4
    canceled_at = np.where(canceled, started + rng.random(m) * age, np.nan)
    # Scheduled dates lie after as_of by nature: the next monthly renewal or payment retry.
    renew = started + MONTH * np.ceil(age / MONTH + 1e-9)
    next_billing = np.select(
        [status == 0, status == 1, status == 2],
        [started + TRIAL_DAYS, renew, span + rng.integers(1, 4, m)],
        np.nan,
    )
    failed = np.select(
        [status == 2, (status == 1) & (rng.random(m) < 0.08), canceled & (rng.random(m) < 0.25)],
        [rng.integers(1, 5, m), rng.integers(1, 3, m), rng.integers(1, 4, m)],
        0,
    )
    people.plan[who] = np.where(status == 0, 0, np.where(canceled, -1, plan))
    plan_end = np.full(people.n, -np.inf)
    plan_end[who] = np.where(canceled, canceled_at, span)
    table = pa.table(
        {
            "subscription_id": numbered("S", np.arange(1, m + 1), 7),
            "customer_id": people.ids.take(pa.array(who)),
            "status": pick(STATUSES, status),
            "plan": pick(("trial", "basic", "pro"), np.where(status == 0, 0, plan)),
            "mrr": mrr,
            "started_at": clock.ts(started),
            "canceled_at": clock.ts(canceled_at),
            "next_billing_at": clock.ts(next_billing),
            "failed_payments": failed.astype(np.int64),
        }
    )
    return table, plan_end


def make_tickets(rng: np.random.Generator, clock: Clock, people: People) -> pa.Table:
    """About 10% of customers open 1-3 tickets; most are closed within days, some rated."""
    span, n = clock.span, people.n
    count = np.where(rng.random(n) < 0.1, 1 + rng.binomial(2, 0.25, n), 0)
    owner, _ = spans(count)
    m = len(owner)
    opened = people.signup[owner] + rng.random(m) * (span - people.signup[owner])
    closed = opened + HOUR * rng.uniform(1, 6, m) + rng.exponential(1.2, m)
    still_open = (closed >= span) | (rng.random(m) < 0.03)
    closed = np.where(still_open, np.nan, closed)
    kind = choice(rng, L.TICKET_KIND_WEIGHTS, m)
    unhappy = np.isin(kind, (L.TICKET_KINDS.index("complaint"), L.TICKET_KINDS.index("delivery")))
    score = np.where(
        unhappy,
        1 + choice(rng, (0.3, 0.2, 0.2, 0.15, 0.15), m),
        1 + choice(rng, (0.06, 0.06, 0.12, 0.3, 0.46), m),
    ).astype(np.float64)
    csat = np.where(~still_open & (rng.random(m) < 0.65), score, np.nan)
    refundable = np.isin(
        kind, [L.TICKET_KINDS.index(k) for k in ("delivery", "return", "complaint")]
    )
    refund = np.where(
        refundable & (rng.random(m) < 0.4), np.round(rng.uniform(5, 80, m), 2), np.nan
    )
    order = np.argsort(opened, kind="stable")
    return pa.table(
        {
            "ticket_id": numbered("T", np.arange(1, m + 1), 7),
            "customer_id": people.ids.take(pa.array(owner[order])),
            "opened_at": clock.ts(opened[order]),
            "closed_at": clock.ts(closed[order]),
            "kind": pick(L.TICKET_KINDS, kind[order]),
            "csat": pa.array(csat[order], mask=np.isnan(csat[order])),
            "refund_amount": pa.array(refund[order], mask=np.isnan(refund[order])),
        }
    )


def make_reviews(rng: np.random.Generator, clock: Clock, orders: Orders) -> pa.Table:
    """About 12% of orders are reviewed 1-20 days later: orders with a return mostly get 1-2
    stars, the others mostly 4-5; a third of the reviews have a comment."""
    returned = np.asarray(orders.table.column("returned_amount").to_numpy()) > 0
    at = orders.t + 1 + rng.exponential(5.0, len(orders.t))
    picked = np.flatnonzero(
        (orders.cust >= 0) & (rng.random(len(orders.t)) < 0.12) & (at < clock.span)
    )
    m = len(picked)
    score = np.where(
        returned[picked],
        1 + choice(rng, (0.45, 0.3, 0.15, 0.07, 0.03), m),
        1 + choice(rng, (0.03, 0.04, 0.13, 0.35, 0.45), m),
    ).astype(np.float64)
    said = rng.random(m) < 0.33
    comment = np.where(said, score.astype(np.int64) - 1, -1)
    order = np.argsort(at[picked], kind="stable")
    rows = picked[order]
    texts = [L.REVIEW_COMMENTS[c] if c >= 0 else None for c in comment[order]]
    return pa.table(
        {
            "review_id": numbered("R", np.arange(1, m + 1), 7),
            "customer_id": orders.customer_ids.take(pa.array(rows)),
            "order_id": orders.ids.take(pa.array(rows)),
            "score": pa.array(score[order]),
            "created_at": clock.ts(at[rows]),
            "comment": pa.array(texts, pa.string()),
        }
    )


def make_identifiers(rng: np.random.Generator, people: People) -> pa.Table:
    """Device ids for app users (shared by planted duplicates) and loyalty card numbers."""
    n = people.n
    devices = np.where(people.app_user & (rng.random(n) < 0.9), 1 + (rng.random(n) < 0.3), 0)
    owner, _ = spans(devices)
    # A duplicate that shares a device gets one row per record with the same new device id.
    dup = np.flatnonzero((people.dup_kind == 2) | ((people.dup_kind >= 0) & (rng.random(n) < 0.2)))
    first_record = np.empty(int(people.person.max()) + 1, dtype=np.int64)
    firsts = np.flatnonzero(people.dup_kind < 0)
    first_record[people.person[firsts]] = firsts
    shared_owner = np.concatenate([dup, first_record[people.person[dup]]])
    shared_key = np.tile(np.arange(len(dup)), 2)
    device_bits = rng.integers(0, 2**63, len(owner) + len(dup), dtype=np.uint64)
    device_owner = np.concatenate([owner, shared_owner])
    device_values = np.concatenate(
        [device_bits[: len(owner)], device_bits[len(owner) :][shared_key]]
    )
    # Loyalty cards are per person, so both records of a member carry the same number.
    card = np.flatnonzero(rng.random(n) < 0.12)
    cust = np.concatenate([device_owner, card])
    kind = np.concatenate([np.zeros(len(device_owner), np.int64), np.ones(len(card), np.int64)])
    value = pa.concat_arrays(
        [
            hexed("dev-", device_values, 16),
            numbered("LC", 1_000_000_000 + people.person[card] * 7 + 3, 10),
        ]
    )
    order = np.lexsort((kind, cust))
    return pa.table(
        {
            "customer_id": people.ids.take(pa.array(cust[order])),
            "id_type": pick(("device_id", "loyalty_card"), kind[order]),
            "id_value": value.take(pa.array(order)),
        }
    )
