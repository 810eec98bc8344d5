"""Events, messages and consent: what customers do online and what they agreed to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from crmseg.sources.model import MESSAGE_KINDS

from . import _lists as L
from ._base import Bools, Clock, Floats, Ints, spans, time_order
from ._orders import Orders
from ._people import People
from ._strings import hexed, join, numbered, pick

EVENT_DAYS = 60  # web and app tracking history kept for commerce events
LOGIN_DAYS = 60
HOUR = 1 / 24
MINUTE = HOUR / 60
SECOND = MINUTE / 60
EVENT_NAMES = (
    "page_view",
    "product_viewed",
    "added_to_cart",
    "checkout_started",
    "order_completed",
    "trial_started",
    "project_created",
    "teammate_invited",
    "integration_connected",
    "login",
)
CONSENT_CHANNELS = ("email", "sms", "push")


@dataclass
class _Rows:
    """Columns collected piece by piece, concatenated once at the end."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **cols: np.ndarray) -> None:
        for name, values in cols.items():
            self.parts.setdefault(name, []).append(values)

    def get(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name])


def _event(rows: _Rows, name: str, cust: Ints, t: Floats, prop: Ints) -> None:
    """Events of one name; ``prop`` indexes the shared list of property JSON strings."""
    rows.add(cust=cust, t=t, name=np.full(len(cust), EVENT_NAMES.index(name)), prop=prop)


def make_events(
    rng: np.random.Generator, clock: Clock, people: People, orders: Orders, plan_end: Floats
) -> pa.Table:
    span, n = clock.span, people.n
    start = span - EVENT_DAYS
    names = [p for cat in L.CATEGORIES for p in L.PRODUCTS[cat]]
    per_cat = len(names) // len(L.CATEGORIES)
    # Property JSON strings: products, category pages, then plans and integrations.
    props = [
        f'{{"product": "{p}", "category": "{c}"}}' for c in L.CATEGORIES for p in L.PRODUCTS[c]
    ]
    page0 = len(props)
    props += [f'{{"path": "/c/{c}"}}' for c in L.CATEGORIES] + ['{"path": "/"}']
    plan0 = len(props)
    props += ['{"plan": "trial"}']
    integ0 = len(props)
    props += [f'{{"integration": "{x}"}}' for x in L.INTEGRATIONS] + ["{}"]
    empty = len(props) - 1
    rows = _Rows()

    # Funnel of every web/app order in the tracked window; the order event names its order.
    web = np.flatnonzero(
        (orders.cust >= 0) & (orders.t >= start) & (orders.t <= span) & (orders.channel < 2)
    )
    c, t = orders.cust[web], orders.t[web]
    product = orders.category[web] * per_cat + rng.integers(0, per_cat, len(web))
    viewed = rng.random(len(web)) < 0.15
    _event(
        rows,
        "product_viewed",
        c[viewed],
        t[viewed] - rng.uniform(8, 40, viewed.sum()) * MINUTE,
        product[viewed],
    )
    _event(rows, "added_to_cart", c, t - rng.uniform(9, 25, len(web)) * MINUTE, product)
    _event(
        rows,
        "checkout_started",
        c,
        t - rng.uniform(1, 8, len(web)) * MINUTE,
        np.full(len(web), empty),
    )
    done = _Rows()
    _event(done, "order_completed", c, t, web)

    # Abandoned carts: viewed and added, sometimes started checkout, never ordered.
    since = np.maximum(people.signup, start)
    carts = rng.poisson(np.where(since < span, 0.5, 0.0))
    owner, _ = spans(carts)
    ct = since[owner] + rng.random(len(owner)) * (span - since[owner])
    cat = np.where(
        rng.random(len(owner)) < 0.7,
        people.fav_category[owner],
        rng.integers(0, len(L.CATEGORIES), len(owner)),
    )
    cp = cat * per_cat + rng.integers(0, per_cat, len(owner))
    _event(rows, "product_viewed", owner, ct - rng.uniform(1, 10, len(owner)) * MINUTE, cp)
    _event(rows, "added_to_cart", owner, ct, cp)
    checkout = rng.random(len(owner)) < 0.3
    _event(
        rows,
        "checkout_started",
        owner[checkout],
        ct[checkout] + rng.uniform(1, 5, checkout.sum()) * MINUTE,
        np.full(checkout.sum(), empty),
    )

    # Browsing.
    views = rng.poisson(np.where(since < span, 0.4, 0.0))
    owner, _ = spans(views)
    pages = page0 + rng.integers(0, len(L.CATEGORIES) + 1, len(owner))
    _event(
        rows,
        "page_view",
        owner,
        since[owner] + rng.random(len(owner)) * (span - since[owner]),
        pages,
    )

    # Product usage for plan customers (SaaS side of the business).
    saas = np.flatnonzero(plan_end > people.signup)
    s0, end = people.signup[saas], plan_end[saas]
    _event(rows, "trial_started", saas, s0 + 10 * MINUTE, np.full(len(saas), plan0))
    for name, share, prop0, nprop in (
        ("project_created", 0.7, empty, 1),
        ("teammate_invited", 0.4, empty, 1),
        ("integration_connected", 0.35, integ0, len(L.INTEGRATIONS)),
    ):
        did = rng.random(len(saas)) < share
        at = s0[did] + rng.exponential(4.0, did.sum())
        ok = at < end[did]
        _event(rows, name, saas[did][ok], at[ok], prop0 + rng.integers(0, nprop, ok.sum()))
    lo = np.maximum(s0, span - LOGIN_DAYS)
    active = np.maximum(end - lo, 0.0)
    logins = rng.poisson(rng.gamma(1.2, 0.12, len(saas)) * active)
    owner, _ = spans(logins)
    _event(
        rows,
        "login",
        saas[owner],
        lo[owner] + rng.random(len(owner)) * active[owner],
        np.full(len(owner), empty),
    )

    # Rows: tracked events, then order events (their JSON names the order), then anonymous.
    cust = np.concatenate([rows.get("cust"), done.get("cust")])
    t = np.concatenate([rows.get("t"), done.get("t")])
    t = np.clip(t, people.signup[cust], span - 1 / 86_400)
    kind = np.concatenate([rows.get("name"), done.get("name")])
    n_anon = int(0.3 * n)
    anon_t = span - rng.random(n_anon) * EVENT_DAYS
    properties = pa.concat_arrays(
        [
            pick(props, rows.get("prop")),
            join('{"order_id": "', orders.ids.take(pa.array(done.get("prop"))), '"}'),
            pick(props, page0 + rng.integers(0, len(L.CATEGORIES) + 1, n_anon)),
        ]
    )
    anon_ids = hexed("anon-", rng.integers(0, 2**63, n_anon, dtype=np.uint64), 16)
    all_t = np.concatenate([t, anon_t])
    take = pa.array(time_order(all_t))
    return pa.table(
        {
            "customer_id": pa.concat_arrays(
                [people.ids.take(pa.array(cust)), pa.nulls(n_anon, pa.string())]
            ).take(take),
            "anonymous_id": pa.concat_arrays([pa.nulls(len(cust), pa.string()), anon_ids]).take(
                take
            ),
            "name": pick(EVENT_NAMES, np.concatenate([kind, np.zeros(n_anon, np.int64)])).take(
                take
            ),
            "occurred_at": clock.ts(all_t).take(take),
            "properties": properties.take(take),
        }
    )


@dataclass
class Consent:
    """Per customer and consent channel: the signup status and one later flip (if any)."""

    has_row: Bools  # (channels, n)
    opted_in: Bools  # status at signup
    basis: Ints  # 0 consent, 1 contract
    flip_at: Floats  # inf when the status never changes
    unsub_at: Floats  # first unsubscribe or complaint through a message, inf if none

    def allows(self, ch: int, at: Floats) -> Bools:
        # A change within the same second as the send counts: stored times are whole seconds.
        soon = at + SECOND
        flipped = self.flip_at[ch] <= soon
        ok: Bools = self.has_row[ch] & (self.opted_in[ch] ^ flipped) & (self.unsub_at[ch] > soon)
        return ok


def make_consent(rng: np.random.Generator, clock: Clock, people: People) -> Consent:
    n, k = people.n, len(CONSENT_CHANNELS)
    has_phone = np.asarray(people.phone.is_valid())
    has_row = np.stack([np.ones(n, bool), has_phone, people.app_user])
    share_in = np.array([0.7, 0.35, 0.55])[:, None]
    opted_in = rng.random((k, n)) < share_in
    # Existing customers may get email on a contract basis (soft opt-in); the rest consented.
    basis = ((rng.random((k, n)) < 0.25) & opted_in & (np.arange(k) == 0)[:, None]).astype(np.int64)
    flips = rng.random((k, n)) < np.where(opted_in, 0.1, 0.06)
    when = people.signup + rng.random((k, n)) * (clock.span - people.signup)
    flip_at = np.where(flips, when, np.inf)
    return Consent(has_row, opted_in, basis, flip_at, np.full((k, n), np.inf))


def _months_before(as_of: datetime, count: int) -> list[np.datetime64]:
    this = np.datetime64(as_of.strftime("%Y-%m"), "M")
    return [this - np.timedelta64(i, "M") for i in range(count, 0, -1)]


def make_messages(
    rng: np.random.Generator, clock: Clock, people: People, consent: Consent
) -> pa.Table:
    """Campaign sends over the last six months to customers with consent at send time.

    Unsubscribes and complaints update ``consent.unsub_at`` so later campaigns skip them.
    """
    n = people.n
    open_rate = np.stack([rng.beta(1.3, 3.0, n), np.zeros(n), rng.beta(1.0, 12.0, n)])
    origin = np.datetime64(clock.origin, "s")
    campaigns: list[tuple[float, int, str, float]] = []  # (day, channel, id, reach)
    for i, month in enumerate(_months_before(clock.as_of, 6)):
        tag = str(month).replace("-", "_")
        first = (month.astype("datetime64[s]") - origin).astype(np.int64) / 86_400
        campaigns.append((first + 4 + 9 * HOUR, 0, f"newsletter_{tag}", 0.5))
        if i % 2 == 0:
            campaigns.append((first + 19 + 17 * HOUR, 1, f"sms_flash_sale_{tag}", 1.0))
        else:
            campaigns.append((first + 11 + 12 * HOUR, 2, f"push_new_in_{tag}", 1.0))
    # rates: bounce, click given open (sms: given delivery), unsubscribe, complaint
    rates = {0: (0.015, 0.12, 0.003, 0.001), 1: (0.02, 0.04, 0.006, 0.0), 2: (0.03, 0.2, 0.0, 0.0)}
    names = [c[2] for c in campaigns]
    rows = _Rows()
    sent_so_far = 0
    for j, (day, ch, _, reach) in enumerate(campaigns):
        # A send goes out over two hours; consent is checked at each message's own moment.
        at = day + rng.random(n) * 2 * HOUR
        who = np.flatnonzero(
            consent.allows(ch, at) & (people.signup < at) & (rng.random(n) < reach)
        )
        m = len(who)
        msg = sent_so_far + np.arange(m)
        sent_so_far += m
        bounce, click, unsub, complaint = rates[ch]
        t_sent = at[who]
        delivered = rng.random(m) >= bounce
        opened = delivered & (rng.random(m) < open_rate[ch, who])
        t_open = t_sent + rng.exponential(6 * HOUR, m) + MINUTE
        clicked = (opened if ch != 1 else delivered) & (rng.random(m) < click)
        left = delivered & (rng.random(m) < unsub)
        complained = delivered & ~left & (rng.random(m) < complaint)
        t_left = t_sent + rng.exponential(HOUR, m) + 2 * MINUTE
        out = left | complained
        consent.unsub_at[ch, who[out]] = np.minimum(consent.unsub_at[ch, who[out]], t_left[out])
        replied = opened & (rng.random(m) < (0.01 if ch == 0 else 0.0))
        delay = rng.uniform(1, 90, m) / 86_400
        for kind, mask, when in (
            ("sent", np.ones(m, bool), t_sent),
            ("delivered", delivered, t_sent + delay),
            ("bounce", ~delivered, t_sent + delay),
            ("open", opened, t_open),
            ("click", clicked, np.where(ch == 1, t_sent, t_open) + rng.uniform(0.2, 5, m) * MINUTE),
            ("reply", replied, t_open + rng.exponential(2 * HOUR, m)),
            ("unsubscribe", left, t_left),
            ("complaint", complained, t_left),
        ):
            rows.add(
                cust=who[mask],
                t=np.minimum(when[mask], clock.span - SECOND),
                kind=np.full(int(mask.sum()), MESSAGE_KINDS.index(kind)),
                campaign=np.full(int(mask.sum()), j),
                msg=msg[mask],
            )
    cust, campaign = rows.get("cust"), rows.get("campaign")
    channel = np.array([c[1] for c in campaigns])[campaign]
    return pa.table(
        {
            "customer_id": people.ids.take(pa.array(cust)),
            "channel": pick(CONSENT_CHANNELS, channel),
            "campaign_id": pick(names, campaign),
            "message_id": numbered("M", rows.get("msg") + 1, 9),
            "occurred_at": clock.ts(rows.get("t")),
            "kind": pick(MESSAGE_KINDS, rows.get("kind")),
        }
    )


def consent_table(clock: Clock, people: People, consent: Consent) -> pa.Table:
    """Signup rows, later flips, and opt-outs caused by unsubscribes, in time order."""
    k, n = consent.has_row.shape
    ch = np.repeat(np.arange(k), n).reshape(k, n)
    cust = np.tile(np.arange(n), k).reshape(k, n)
    signup = np.broadcast_to(people.signup, (k, n))
    first = consent.has_row
    flip = first & np.isfinite(consent.flip_at)
    unsub = first & np.isfinite(consent.unsub_at)
    status = np.concatenate(
        [
            ~consent.opted_in[first],
            consent.opted_in[flip],  # a flip inverts the signup status
            np.ones(int(unsub.sum()), bool),
        ]
    )
    t = np.concatenate([signup[first], consent.flip_at[flip], consent.unsub_at[unsub]])
    basis = np.concatenate(
        [consent.basis[first], np.zeros(int(flip.sum() + unsub.sum()), np.int64)]
    )
    c = np.concatenate([cust[first], cust[flip], cust[unsub]])
    channel = np.concatenate([ch[first], ch[flip], ch[unsub]])
    order = np.lexsort((channel, c, t))
    return pa.table(
        {
            "customer_id": people.ids.take(pa.array(c[order])),
            "channel": pick(CONSENT_CHANNELS, channel[order]),
            "status": pick(("opted_in", "opted_out"), status[order].astype(np.int64)),
            # every demo row is channel consent; purposes are for shops that record them
            "purpose": pa.nulls(len(order), pa.string()),
            "basis": pick(("consent", "contract"), basis[order]),
            "updated_at": clock.ts(t[order]),
        }
    )
