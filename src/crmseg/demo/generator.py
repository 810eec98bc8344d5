"""The demo shop: a deterministic, vectorised generator of a mixed beauty e-commerce and
subscription business in crmseg's canonical data model.

What it plants, so later stages have something to find:

* purchasing as in BG/NBD (heterogeneous rates, dropout after purchases), spend as in
  Gamma-Gamma, category affinity, skincare replenishment every 45-60 days for some buyers,
  discount-reliant customers, returns, a Q4 and Black Friday peak;
* about 2% duplicate people (email case/whitespace variants, phones in other formats, shared
  device ids); ``truth/people.parquet`` maps every customer_id to its real person_id;
* dirty rows in exact numbers (:func:`dirty_counts`): invalid emails, customers without a
  country, orders after ``as_of``, orders with negative amounts, orders of unknown customers;
* two past email campaigns with recorded treatment and holdout arms (``history/``): a win-back
  whose treatment truly converts ``LIFT`` more within ``WINDOW_DAYS`` days (the extra orders are
  in ``orders``) and a newsletter with no effect; ``truth/campaigns.json`` says so.

Everything is at or before ``as_of`` except the planted future orders and
``subscriptions.next_billing_at``, which is a scheduled date. ``order_items`` covers only
orders of the last 180 days and commerce events only the last 60 days (tracking history), to
keep volumes moderate. Events have a null ``customer_id`` for anonymous visitors (they carry an
``anonymous_id``), as the canonical model allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _lists as L
from ._accounts import make_identifiers, make_reviews, make_subscriptions, make_tickets
from ._activity import consent_table, make_consent, make_events, make_messages
from ._base import Clock
from ._campaigns import plant_campaigns
from ._orders import Orders, make_order_items, make_orders, merge_orders
from ._people import DUP_KINDS, MAX_CUSTOMERS, PLANS, People, dirty_counts, make_people
from ._strings import join, numbered, pick

__all__ = ["DEFAULT_AS_OF", "HISTORY", "dirty_counts", "generate", "write_data"]

Progress = Callable[[str, float], None]

# Fixed, so a seed always gives the same files.
DEFAULT_AS_OF = datetime(2026, 11, 1)
TIERS_AT = (150.0, 400.0, 1000.0)
# Non-canonical outputs: name in generate()'s result -> file under the project.
HISTORY = {
    "truth_people": "truth/people.parquet",
    "history_send_log": "history/send_log.parquet",
    "history_campaigns": "history/campaigns.parquet",
}  # spend of the last 365 days for silver, gold, platinum


def _customers(rng: np.random.Generator, clock: Clock, people: People, orders: Orders) -> pa.Table:
    n = people.n
    known = (orders.cust >= 0) & (orders.t >= clock.span - 365) & (orders.t <= clock.span)
    spend = np.bincount(orders.cust[known], orders.amount[known], n)
    bought = np.bincount(orders.cust[orders.cust >= 0], minlength=n) > 0
    tier = np.where(bought, np.searchsorted(TIERS_AT, spend, side="right"), -1)

    cities = [city for c in L.COUNTRIES for city in c[6]]
    has_country = people.country >= 0
    country = pa.array([c[0] for c in L.COUNTRIES]).take(
        pa.array(people.country, mask=~has_country)
    )
    city = pa.array(people.city, mask=~has_country)
    company = people.company >= 0
    word = people.company % len(L.COMPANY_WORDS)
    suffix = people.company // len(L.COMPANY_WORDS) % len(L.COMPANY_SUFFIXES)
    company_name = join(pick(L.COMPANY_WORDS, word), " ", pick(L.COMPANY_SUFFIXES, suffix))
    birth = np.datetime64(clock.origin.date(), "D") + np.floor(people.birth_days).astype(np.int64)
    return pa.table(
        {
            "customer_id": people.ids,
            "email": people.email,
            "phone": people.phone,
            "first_name": pick(L.FEMALE_NAMES + L.MALE_NAMES, people.first),
            "last_name": pick(L.LAST_NAMES, people.last),
            "country": country,
            "region": pa.array([r for c in L.COUNTRIES for r, _ in c[6]]).take(city),
            "city": pa.array([x for _, x in cities]).take(city),
            "signup_at": clock.ts(people.signup),
            "birth_date": pa.array(birth, pa.date32()),
            "gender": pick(("female", "male", "diverse"), people.gender),
            "company": _masked(company_name, company),
            "industry": _masked(pick(L.INDUSTRIES, people.company % len(L.INDUSTRIES)), company),
            "company_size": pa.array(
                np.round(np.exp(rng.normal(2.5, 1.3, n))).astype(np.int64) + 1, mask=~company
            ),
            "plan": _masked(pick(PLANS, np.maximum(people.plan, 0)), people.plan >= 0),
            "loyalty_tier": _masked(pick(L.LOYALTY_TIERS, np.maximum(tier, 0)), tier >= 0),
            "acquisition_channel": pick(L.ACQUISITION_CHANNELS, people.acquisition),
        }
    )


def _masked(values: pa.Array, keep: np.ndarray) -> pa.Array:
    """``values`` with nulls where ``keep`` is false."""
    return pc.if_else(pa.array(keep), values, pa.scalar(None, values.type))


def _truth(people: People) -> pa.Table:
    # People are numbered in the order their first record signed up.
    firsts = np.flatnonzero(people.dup_kind < 0)
    number = np.empty(len(firsts), dtype=np.int64)
    number[people.person[firsts]] = np.arange(1, len(firsts) + 1)
    return pa.table(
        {
            "customer_id": people.ids,
            "person_id": numbered("P", number[people.person], 7),
            "duplicate_kind": _masked(
                pick(DUP_KINDS, np.maximum(people.dup_kind, 0)), people.dup_kind >= 0
            ),
        }
    )


def _campaign_table(records: list[dict[str, Any]]) -> pa.Table:
    cols = {k: [r[k] for r in records] for k in records[0]}
    cols["funnel"] = [json.dumps(f) for f in cols["funnel"]]
    return pa.table(cols)


def generate(
    n_customers: int, seed: int, as_of: datetime, progress: Progress | None = None
) -> dict[str, pa.Table]:
    """All canonical tables of a demo shop with ``n_customers`` customer records.

    The result also holds the non-canonical tables of :data:`HISTORY`: ``truth_people``
    (customer_id -> person_id), and the past campaigns' send log and descriptions (with their
    planted true lift). Same arguments, same data.
    """
    if not 1 <= n_customers <= MAX_CUSTOMERS:
        raise ValueError(f"n_customers must be between 1 and {MAX_CUSTOMERS:,}, got {n_customers}")
    report = progress or (lambda step, fraction: None)
    rng = np.random.Generator(np.random.PCG64(seed))
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(UTC).replace(tzinfo=None)
    clock = Clock.ending(as_of)
    steps = (
        "people",
        "orders",
        "order_items",
        "subscriptions",
        "events",
        "consent",
        "messages",
        "past campaigns",
        "tickets",
        "reviews",
        "identifiers",
        "customers",
    )
    done = iter(range(1, len(steps) + 1))

    def step(name: str) -> None:
        report(name, next(done) / len(steps))

    people = make_people(rng, clock, n_customers)
    step("people")
    orders = make_orders(rng, clock, people)
    step("orders")
    items = make_order_items(rng, clock, orders)
    step("order_items")
    subscriptions, plan_end = make_subscriptions(rng, clock, people)
    step("subscriptions")
    events = make_events(rng, clock, people, orders, plan_end)
    step("events")
    consent = make_consent(rng, clock, people)
    step("consent")
    messages = make_messages(rng, clock, people, consent)
    step("messages")
    # Its own stream, so every table the campaigns do not touch stays as it was.
    campaign_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1])))
    planted, send_log, records = plant_campaigns(campaign_rng, clock, people, orders, consent)
    orders = merge_orders(orders, planted)
    items = pa.concat_tables([items, make_order_items(campaign_rng, clock, planted)])
    items = items.take(pc.sort_indices(items, [("ordered_at", "ascending")]))
    step("past campaigns")
    tickets = make_tickets(rng, clock, people)
    step("tickets")
    # Its own stream too: reviews came last, and every other table stays as it was.
    review_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 2])))
    reviews = make_reviews(review_rng, clock, orders)
    step("reviews")
    identifiers = make_identifiers(rng, people)
    step("identifiers")
    customers = _customers(rng, clock, people, orders)
    step("customers")
    return {
        "customers": customers,
        "orders": orders.table,
        "order_items": items,
        "events": events,
        "messages": messages,
        "consent": consent_table(clock, people, consent),
        "subscriptions": subscriptions,
        "tickets": tickets,
        "reviews": reviews,
        "identifiers": identifiers,
        "truth_people": _truth(people),
        "history_send_log": send_log,
        "history_campaigns": _campaign_table(records),
    }


def write_data(
    out_dir: Path,
    n_customers: int = 5000,
    seed: int = 42,
    as_of: datetime | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write ``data/<table>.parquet`` for every canonical table and the files of
    :data:`HISTORY` (truth and the past campaigns).

    Returns the row count of every canonical table (the truth file has one row per customer).
    """
    report = progress or (lambda step, fraction: None)
    tables = generate(n_customers, seed, as_of or DEFAULT_AS_OF, lambda s, f: report(s, 0.8 * f))
    out_dir = Path(out_dir)
    for folder in ("data", "truth", "history"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)

    def write(name: str, table: pa.Table) -> None:
        path = out_dir / HISTORY.get(name, f"data/{name}.parquet")
        pq.write_table(table, path, compression="zstd")

    # Parquet encoding releases the GIL, so two writers keep both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [(name, pool.submit(write, name, table)) for name, table in tables.items()]
        for i, (name, job) in enumerate(jobs):
            job.result()
            report(f"write {name}", 0.8 + 0.2 * (i + 1) / len(jobs))
    return {name: table.num_rows for name, table in tables.items() if name not in HISTORY}
