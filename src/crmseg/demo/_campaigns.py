"""Past campaigns with recorded holdouts, so measurement has something true to find.

Two email campaigns were sent before ``as_of`` (by crmseg, in the story): their send log with
treatment and holdout arms goes to ``history/send_log.parquet`` and is recorded into the
project's state database by ``crmseg init --demo``. The planted truth:

* ``winback_voucher_<yyyy_mm>``: lapsed buyers; treatment raises the chance of ordering within
  ``WINDOW_DAYS`` days by ``LIFT`` (absolute), with a 15% voucher on the extra orders;
* ``brand_story_<yyyy_mm>``: recent buyers; no effect at all.

The arms are drawn at random (as activation's hash would), the extra orders are added to the
orders table. Only first records of people are targeted, so an audience key is the person's
surviving customer id after identity resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ._activity import Consent
from ._base import Clock, Floats, Ints
from ._orders import Orders, new_orders
from ._people import People

WINDOW_DAYS = 14
LIFT = 0.04
HOLDOUT = 0.3  # large enough that the win-back's lift is measurable on the 5,000-customer demo
VOUCHER = 0.15


@dataclass(frozen=True)
class PastCampaign:
    prefix: str
    description: str
    days_before: float  # send instant, days before as_of
    audience: str  # lapsed | recent
    lift: float


PAST = (
    PastCampaign(
        "winback_voucher",
        "Win-back email with a 15% voucher for buyers without an order in 30 days.",
        109.625,
        "lapsed",
        LIFT,
    ),
    PastCampaign(
        "brand_story",
        "Brand story newsletter for buyers of the last 365 days (no offer).",
        54.625,
        "recent",
        0.0,
    ),
)


def _name(clock: Clock, c: PastCampaign) -> str:
    sent = np.datetime64(clock.origin, "s") + np.timedelta64(
        int((clock.span - c.days_before) * 86_400), "s"
    )
    return f"{c.prefix}_{str(sent.astype('datetime64[M]')).replace('-', '_')}"


def _orders_between(orders: Orders, n: int, lo: float, hi: float) -> Ints:
    keep = (orders.cust >= 0) & (orders.t > lo) & (orders.t <= hi)
    return np.bincount(orders.cust[keep], minlength=n)


def plant_campaigns(
    rng: np.random.Generator, clock: Clock, people: People, orders: Orders, consent: Consent
) -> tuple[Orders, pa.Table, list[dict[str, Any]]]:
    """(the planted extra orders, send log, one record per campaign)."""
    n = people.n
    rows: list[tuple[Ints, Ints, int]] = []  # (customers, arm 0/1, campaign index)
    extra_c: list[Ints] = []
    extra_t: list[Floats] = []
    extra_a: list[Floats] = []
    records: list[dict[str, Any]] = []
    spent = np.bincount(
        orders.cust[orders.cust >= 0], np.abs(orders.amount[orders.cust >= 0]), minlength=n
    )
    counted = np.bincount(orders.cust[orders.cust >= 0], minlength=n)
    typical = spent / np.maximum(counted, 1)
    for i, c in enumerate(PAST):
        send = clock.span - c.days_before
        before = _orders_between(orders, n, -np.inf, send)
        if c.audience == "lapsed":
            target = (before > 0) & (_orders_between(orders, n, send - 30, send) == 0)
        else:
            target = _orders_between(orders, n, send - 365, send) > 0
        first = people.dup_kind < 0
        reachable = consent.allows(0, np.full(n, send)) & (people.signup < send)
        who = np.flatnonzero(target & first & reachable)
        held = rng.random(len(who)) < HOLDOUT
        rows.append((who, held.astype(np.int64), i))
        window = _orders_between(orders, n, send, send + WINDOW_DAYS)[who] > 0
        baseline = float(window.mean()) if len(who) else 0.0
        if c.lift > 0 and len(who):
            # Lift the treated non-buyers so that the expected rate rises by exactly c.lift.
            q = min(c.lift / max(1 - baseline, 1e-9), 1.0)
            gets = who[~held & ~window & (rng.random(len(who)) < q)]
            extra_c.append(gets)
            extra_t.append(send + rng.uniform(0.05, WINDOW_DAYS - 0.05, len(gets)))
            spend = np.maximum(typical[gets] * rng.gamma(6.0, 1 / 6, len(gets)), 5.0)
            extra_a.append(np.round(spend, 2).astype(np.float64))
        records.append(
            {
                "campaign": _name(clock, c),
                "description": c.description,
                "channel": "email",
                "sent_at": clock.ts(np.array([send]))[0].as_py(),
                "funnel": [
                    {"step": "in audience", "count": int((target & first).sum())},
                    {"step": "with email consent", "count": len(who)},
                ],
                "holdout_share": HOLDOUT,
                "window_days": WINDOW_DAYS,
                "planted_conversion_lift": c.lift,
                "baseline_conversion": baseline,
            }
        )
    planted = new_orders(
        clock,
        people,
        np.concatenate(extra_c) if extra_c else np.zeros(0, np.int64),
        np.concatenate(extra_t) if extra_t else np.zeros(0),
        np.concatenate(extra_a) if extra_a else np.zeros(0),
        VOUCHER,
        len(orders.t) + 1,
    )
    cust = np.concatenate([r[0] for r in rows])
    arm = np.concatenate([r[1] for r in rows])
    camp = np.concatenate([np.full(len(r[0]), r[2]) for r in rows])
    days = np.array([clock.span - c.days_before for c in PAST])
    log = pa.table(
        {
            "campaign": pa.array([r["campaign"] for r in records]).take(pa.array(camp)),
            "customer_id": people.ids.take(pa.array(cust)),
            "arm": pa.array(["treatment", "holdout"]).take(pa.array(arm)),
            "channel": pa.array(["email"] * len(cust), pa.string()),
            "sent_at": clock.ts(days[camp]),
        }
    )
    return planted, log, records
