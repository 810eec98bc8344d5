"""Orders (BG/NBD purchasing, Gamma-Gamma spend, seasonality) and their order lines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import _lists as L
from ._base import Bools, Clock, Floats, Ints, choice, group_cumsum, spans, time_order
from ._people import People, dirty_counts
from ._strings import numbered, pick

# BG/NBD: purchase rate per day ~ Gamma(R, 1/ALPHA); dropout after a purchase ~ Beta(A, B).
R, ALPHA = 0.9, 9.0
A, B = 0.6, 8.0
# Gamma-Gamma: order value ~ Gamma(P, theta), theta = 1/nu, nu ~ Gamma(Q, 1/GAMMA).
P, Q, GAMMA = 6.0, 3.5, 24.0
BUYER_SHARE = 0.8
REPLENISH_SHARE = 0.35  # of skincare lovers, who rebuy every 45-60 days
ITEM_DAYS = 180  # order lines exist only for recent orders (keeps the table moderate)

MONTH_FACTOR = np.array([0.85, 0.82, 0.95, 1.0, 1.0, 0.92, 0.9, 0.9, 1.0, 1.05, 1.35, 1.5])


@dataclass
class Orders:
    """Order rows sorted by time; ``cust`` is -1 for orphans (unknown customer ids)."""

    cust: Ints
    t: Floats
    amount: Floats
    category: Ints
    channel: Ints
    ids: pa.Array
    customer_ids: pa.Array
    table: pa.Table


def _black_friday(dates: np.ndarray) -> Bools:
    """Black Friday to Cyber Monday (the day after the 4th Thursday of November + 3)."""
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    out = np.zeros(len(dates), dtype=bool)
    for year in np.unique(years):
        nov1 = np.datetime64(f"{year}-11-01")
        weekday = (nov1.astype(np.int64) + 3) % 7  # 0 = Monday
        thanksgiving = nov1 + np.timedelta64(int((3 - weekday) % 7 + 21), "D")
        out |= (dates > thanksgiving) & (dates <= thanksgiving + np.timedelta64(4, "D"))
    return out


def _seasonal_clock(clock: Clock) -> tuple[Floats, Floats, Bools]:
    """Knots (days, cumulative intensity) that map busy-season calendar time to flat time."""
    dates = clock.dates()
    month = dates.astype("datetime64[M]").astype(np.int64) % 12
    bf = _black_friday(dates)
    rate = MONTH_FACTOR[month] * np.where(bf, 2.4, 1.0)
    rate = rate / rate.mean()
    knots = np.arange(len(dates) + 1, dtype=np.float64)
    return knots, np.concatenate(([0.0], np.cumsum(rate))), bf


def _repeat_times(
    rng: np.random.Generator,
    start: Floats,
    stop: float,
    lam: Floats,
    repeats: Ints,
    knots: Floats,
    cum: Floats,
) -> tuple[Ints, Floats]:
    """Repeat purchases of a seasonal Poisson process, stopped by the dropout count.

    Given N events in (start, stop], their flat-time positions are uniform order statistics;
    the first k of them are exponential cumsums scaled by the total including a Gamma rest.
    """
    a, b = np.interp(start, knots, cum), np.interp(stop, knots, cum)
    n_events = rng.poisson(lam * (b - a))
    k = np.minimum(repeats, n_events)
    owner, _ = spans(k)
    s = group_cumsum(rng.exponential(1.0, int(k.sum())), k)
    rest = rng.standard_gamma((n_events - k + 1).astype(np.float64))
    last = np.zeros(len(k))
    has = k > 0
    last[has] = s[np.cumsum(k)[has] - 1]
    u = a[owner] + (b - a)[owner] * s / (last + rest)[owner]
    return owner, np.minimum(np.interp(u, cum, knots), stop - 1e-6)


def _replenish_times(
    rng: np.random.Generator, start: Floats, stop: float, cycle: Floats, repeats: Ints
) -> tuple[Ints, Floats]:
    """Regular rebuys every ``cycle`` days (with a little jitter) until dropout or as_of."""
    k = np.minimum(repeats, ((stop - start) / cycle).astype(np.int64))
    owner, _ = spans(k)
    gaps = cycle[owner] * (1 + 0.06 * rng.standard_normal(len(owner)))
    t = start[owner] + group_cumsum(gaps, k)
    keep = t < stop
    return owner[keep], t[keep]


def make_orders(rng: np.random.Generator, clock: Clock, people: People) -> Orders:
    n, span = people.n, clock.span
    knots, cum, bf = _seasonal_clock(clock)

    # Half of the first orders happen right at signup (guest checkout turned account).
    delay = np.where(rng.random(n) < 0.5, rng.random(n) * 0.02, rng.exponential(12.0, n))
    first = people.signup + delay
    buyer = (rng.random(n) < BUYER_SHARE) & (first < span)
    lam = rng.gamma(R, 1 / ALPHA, n)
    repeats = rng.geometric(rng.beta(A, B, n)) - 1
    skin = people.fav_category == L.CATEGORIES.index("skincare")
    refill = buyer & skin & (rng.random(n) < REPLENISH_SHARE)
    cycle = rng.uniform(45.0, 60.0, n)
    loyal_repeats = rng.geometric(rng.beta(1.0, 14.0, n)) - 1

    plain = np.flatnonzero(buyer & ~refill)
    o1, t1 = _repeat_times(rng, first[plain], span, lam[plain], repeats[plain], knots, cum)
    refills = np.flatnonzero(refill)
    o2, t2 = _replenish_times(rng, first[refills], span, cycle[refills], loyal_repeats[refills])
    buyers = np.flatnonzero(buyer)
    cust = np.concatenate([buyers, plain[o1], refills[o2]])
    t = np.concatenate([first[buyers], t1, t2])
    is_refill = np.concatenate([np.zeros(len(buyers) + len(o1), bool), np.ones(len(o2), bool)])
    is_refill[: len(buyers)] = refill[buyers]

    # Planted dirty orders: some after as_of, some of unknown customers.
    dirty = dirty_counts(n)
    n_future, n_orphan = dirty["future_orders"], dirty["orphan_orders"]
    cust = np.concatenate([cust, rng.integers(0, n, n_future), np.full(n_orphan, -1)])
    t = np.concatenate(
        [t, span + rng.uniform(0.5, 30.0, n_future), rng.uniform(span - 700, span, n_orphan)]
    )
    is_refill = np.concatenate([is_refill, np.zeros(n_future + n_orphan, bool)])
    order = time_order(t)
    cust, t, is_refill = cust[order], t[order], is_refill[order]
    m = len(t)
    known = cust >= 0
    c = np.where(known, cust, 0)

    # Gamma-Gamma spend: each customer has a typical basket, orders vary around it.
    theta = 1.0 / rng.gamma(Q, 1 / GAMMA, n)
    amount = np.round(np.maximum(rng.gamma(P, theta[c]), 3.0), 2).astype(np.float64)

    affinity = rng.beta(4.0, 2.0, n)
    loves_fav = rng.random(m) < np.where(is_refill, 0.92, affinity[c])
    category = np.where(loves_fav, people.fav_category[c], choice(rng, L.CATEGORY_WEIGHTS, m))

    day = np.minimum(t, span).astype(np.int64)
    reliant = rng.random(n) < 0.18
    p_discount = np.where(reliant, 0.7, 0.1)[c] + np.where(bf[day], 0.45, 0.0)
    rate = rng.choice(np.array([0.1, 0.15, 0.2, 0.25, 0.3]), m)
    discount = np.where(rng.random(m) < p_discount, np.round(amount * rate, 2), 0.0)

    returner = rng.beta(0.7, 9.0, n)
    returned = rng.random(m) < returner[c]
    share = np.where(rng.random(m) < 0.6, 1.0, rng.uniform(0.2, 0.8, m))
    returned_amount = np.where(returned, np.round(amount * share, 2), 0.0)
    margin = np.round(
        (amount - discount - returned_amount) * np.array(L.CATEGORY_MARGINS)[category], 2
    )

    # Dirty: negative amounts on old orders (no order lines) where there are enough of them.
    old = np.flatnonzero(known & (t < span - ITEM_DAYS))
    pool = old if len(old) >= dirty["negative_amounts"] else np.flatnonzero(known & (t < span))
    neg = rng.choice(pool, min(dirty["negative_amounts"], len(pool)), replace=False)
    amount[neg], margin[neg] = -amount[neg], -margin[neg]
    discount[neg] = returned_amount[neg] = 0.0

    stays = rng.random(m) < 0.8
    channel = np.where(stays, people.order_channel[c], choice(rng, L.ORDER_CHANNEL_WEIGHTS, m))
    currencies = sorted({x[5] for x in L.COUNTRIES})
    by_country = np.array([currencies.index(x[5]) for x in L.COUNTRIES] + [currencies.index("EUR")])
    currency = by_country[np.where(known, people.country[c], -1)]

    # Customer ids are "C" + record number; orphans get numbers no customer has.
    number = np.where(known, cust + 1, n + 100 + np.cumsum(~known))
    ids = numbered("O", np.arange(1, m + 1), 9)
    customer_ids = numbered("C", number, 7)
    table = pa.table(
        {
            "order_id": ids,
            "customer_id": customer_ids,
            "ordered_at": clock.ts(t),
            "amount": amount,
            "discount": discount,
            "margin": margin,
            "returned_amount": returned_amount,
            "currency": pick(currencies, currency),
            "channel": pick(L.ORDER_CHANNELS, channel),
            "category": pick(L.CATEGORIES, category),
        }
    )
    return Orders(cust, t, amount, category, channel, ids, customer_ids, table)


def make_order_items(rng: np.random.Generator, clock: Clock, orders: Orders) -> pa.Table:
    """1-3 lines per order of the last ``ITEM_DAYS`` days whose prices add up to the amount."""
    span = clock.span
    rows = np.flatnonzero((orders.cust >= 0) & (orders.t >= span - ITEM_DAYS) & (orders.t <= span))
    k = 1 + rng.binomial(2, 0.3, len(rows))
    owner, rank = spans(k)
    o = rows[owner]
    size = len(o)
    same = (rank == 0) | (rng.random(size) < 0.75)
    category = np.where(same, orders.category[o], choice(rng, L.CATEGORY_WEIGHTS, size))
    per_cat = len(L.PRODUCTS[L.CATEGORIES[0]])
    product = category * per_cat + rng.integers(0, per_cat, size)
    quantity = 1 + choice(rng, (0.85, 0.12, 0.03), size)
    weight = rng.gamma(4.0, 1.0, size)  # lines of one order cost roughly alike
    weight_sum = np.bincount(owner, weight, len(rows))[owner]
    price = np.round(orders.amount[o] * weight / weight_sum / quantity, 2)
    names = [p for cat in L.CATEGORIES for p in L.PRODUCTS[cat]]
    take = pa.array(o)
    return pa.table(
        {
            "order_id": orders.ids.take(take),
            "customer_id": orders.customer_ids.take(take),
            "ordered_at": clock.ts(orders.t[o]),
            "product": pick(names, product),
            "category": pick(L.CATEGORIES, category),
            "quantity": quantity,
            "price": price,
        }
    )


def new_orders(
    clock: Clock,
    people: People,
    cust: Ints,
    t: Floats,
    amount: Floats,
    discount_rate: float,
    first_number: int,
) -> Orders:
    """Extra orders of known customers (not time-sorted), numbered from ``first_number``."""
    k = len(cust)
    category = people.fav_category[cust]
    channel = people.order_channel[cust]
    discount = np.round(amount * discount_rate, 2)
    margin = np.round((amount - discount) * np.array(L.CATEGORY_MARGINS)[category], 2)
    currencies = sorted({x[5] for x in L.COUNTRIES})
    by_country = np.array([currencies.index(x[5]) for x in L.COUNTRIES] + [currencies.index("EUR")])
    ids = numbered("O", np.arange(first_number, first_number + k), 9)
    customer_ids = numbered("C", cust + 1, 7)
    table = pa.table(
        {
            "order_id": ids,
            "customer_id": customer_ids,
            "ordered_at": clock.ts(t),
            "amount": amount,
            "discount": discount,
            "margin": margin,
            "returned_amount": np.zeros(k),
            "currency": pick(currencies, by_country[people.country[cust]]),
            "channel": pick(L.ORDER_CHANNELS, channel),
            "category": pick(L.CATEGORIES, category),
        }
    )
    return Orders(cust, t, amount, category, channel, ids, customer_ids, table)


def merge_orders(a: Orders, b: Orders) -> Orders:
    """Both sets of orders in time order; ids stay as they are, so order lines stay valid."""
    t = np.concatenate([a.t, b.t])
    order = time_order(t)
    take = pa.array(order)
    return Orders(
        np.concatenate([a.cust, b.cust])[order],
        t[order],
        np.concatenate([a.amount, b.amount])[order],
        np.concatenate([a.category, b.category])[order],
        np.concatenate([a.channel, b.channel])[order],
        pa.concat_arrays([a.ids, b.ids]).take(take),
        pa.concat_arrays([a.customer_ids, b.customer_ids]).take(take),
        pa.concat_tables([a.table, b.table]).take(take),
    )
