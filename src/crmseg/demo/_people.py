"""Customer records: people, their duplicates, contact details and the dirty records."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _lists as L
from ._base import Bools, Clock, Floats, Ints, choice
from ._strings import join, numbered, pick

DUPLICATE_SHARE = 0.02
PLAN_SHARE = 0.15
COMPANIES = len(L.COMPANY_WORDS) * len(L.COMPANY_SUFFIXES)
MAX_CUSTOMERS = 9_000_000  # 7-digit ids, and every person needs their own phone number
PLANS = ("trial", "basic", "pro")
# How a planted duplicate record still links to its person.
DUP_KINDS = ("email_variant", "phone_format", "shared_device")
DUP_KIND_WEIGHTS = (0.6, 0.25, 0.15)


def dirty_counts(n_customers: int) -> dict[str, int]:
    """How many dirty rows of each kind a dataset of ``n_customers`` has (by design).

    invalid emails max(4, n//1000), customers without country max(4, n//1250), orders after
    as_of max(3, n//2000), negative order amounts max(3, n//1500), orders of unknown customer
    ids max(3, n//2500); each capped at n//10. For 5,000 customers: 5, 4, 3, 3, 3.
    """
    n = n_customers
    counts = {
        "invalid_emails": max(4, n // 1000),
        "missing_country": max(4, n // 1250),
        "future_orders": max(3, n // 2000),
        "negative_amounts": max(3, n // 1500),
        "orphan_orders": max(3, n // 2500),
    }
    # Tiny datasets (tests) keep at least 80% of their rows clean.
    return {kind: min(k, n // 10) for kind, k in counts.items()}


@dataclass
class People:
    """One entry per customer record, ordered by signup (so index i is ``C{i+1:07d}``)."""

    n: int
    ids: pa.Array
    person: Ints  # index of the real person
    dup_kind: Ints  # -1 for the first record of a person, else index into DUP_KINDS
    signup: Floats
    country: Ints  # -1 where missing (dirty)
    gender: Ints
    first: Ints  # index into FEMALE_NAMES + MALE_NAMES
    last: Ints
    city: Ints  # index into the flat city list
    birth_days: Floats  # days since origin (negative)
    email: pa.Array
    phone: pa.Array
    plan: Ints  # -1 none, else index into PLANS
    company: Ints  # -1 none
    acquisition: Ints
    order_channel: Ints  # preferred order channel
    fav_category: Ints
    app_user: Bools


def _ascii(name: str) -> str:
    """Email-safe lowercase spelling of a name (umlauts spelled out, accents dropped)."""
    name = name.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.replace(" ", "")


def _rank_within(keys: Ints) -> Ints:
    """0 for the first row of each key value, 1 for the second, ... (in row order)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    new = np.ones(len(keys), dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = np.maximum.accumulate(np.where(new, np.arange(len(keys)), 0))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - starts
    return rank


def _signups(rng: np.random.Generator, clock: Clock, size: int) -> Floats:
    """Signup days with growth: the newest year has about 2.5x the signups of the first."""
    g = np.log(2.5) / 365
    u = rng.random(size)
    days: Floats = np.log1p(u * np.expm1(g * clock.span)) / g
    return np.minimum(days, clock.span - 1 / 86_400)


def _emails(
    rng: np.random.Generator, first: Ints, last: Ints, country: Ints, share_with: Ints
) -> pa.Array:
    """Lowercase emails, unique except where ``share_with`` >= 0 (copies that record's email)."""
    n = len(first)
    style = choice(rng, (0.5, 0.2, 0.15, 0.15), n)
    domain = choice(rng, L.EMAIL_DOMAIN_WEIGHTS, n)
    # German-speaking providers are for people in DE, AT and CH.
    local = np.isin(np.array(L.EMAIL_DOMAINS)[domain], L.DACH_DOMAINS)
    dach = np.isin(country, [i for i, c in enumerate(L.COUNTRIES) if c[0] in ("DE", "AT", "CH")])
    worldwide = [i for i, d in enumerate(L.EMAIL_DOMAINS) if d not in L.DACH_DOMAINS]
    domain = np.where(local & ~dach, rng.choice(worldwide, n), domain)
    own = share_with < 0
    copy_from = np.where(own, np.arange(n), share_with)
    style, domain = style[copy_from], domain[copy_from]
    firsts = [_ascii(x) for x in L.FEMALE_NAMES + L.MALE_NAMES]
    lasts = [_ascii(x) for x in L.LAST_NAMES]
    # Numbers make addresses unique; "initial + last name" clashes across first names.
    initial = np.array([ord(x[0]) for x in firsts])
    who = np.where(style == 1, initial[first], 1000 + first)
    key = ((who * len(L.LAST_NAMES) + last) * 4 + style) * len(L.EMAIL_DOMAINS) + domain
    rank = np.zeros(n, dtype=np.int64)
    rank[own] = _rank_within(key[own])
    rank = rank[copy_from]
    f, la = pick(firsts, first), pick(lasts, last)
    address = pc.choose(
        pa.array(style.astype(np.int8)),
        join(f, ".", la),
        join(pc.utf8_slice_codeunits(f, 0, 1), la),
        join(f, "_", la),
        join(f, la),
    )
    suffix = pick(["", *(str(i + 1) for i in range(1, int(rank.max(initial=0)) + 1))], rank)
    return join(address, suffix, "@", pick(L.EMAIL_DOMAINS, domain))


def _phones(
    rng: np.random.Generator, country: Ints, number: Ints, fmt: Ints, mobile: Ints
) -> pa.Array:
    """Mobile numbers of one person written in one of four common national formats."""
    cc = pick([c[2] for c in L.COUNTRIES], country)
    trunk = pick([c[3] for c in L.COUNTRIES], country)
    prefixes = [p for c in L.COUNTRIES for p in c[4]]
    offsets = np.cumsum([0] + [len(c[4]) for c in L.COUNTRIES])[:-1]
    nprefix = np.array([len(c[4]) for c in L.COUNTRIES])
    prefix = pick(prefixes, offsets[country] + mobile % nprefix[country])
    sub = numbered("", number, 7)
    head, tail = pc.utf8_slice_codeunits(sub, 0, 3), pc.utf8_slice_codeunits(sub, 3, 7)
    return pc.choose(
        pa.array(fmt.astype(np.int8)),
        join("+", cc, " ", prefix, " ", sub),
        join(trunk, prefix, "-", sub),
        join("(", trunk, prefix, ") ", head, " ", tail),
        join("+", cc, prefix, sub),
    )


def make_people(rng: np.random.Generator, clock: Clock, n: int) -> People:
    n_dup = round(n * DUPLICATE_SHARE)
    n_people = n - n_dup
    nf = len(L.FEMALE_NAMES)

    # Person-level attributes.
    gender = choice(rng, (0.68, 0.3, 0.02), n_people)
    male = (gender == 1) | ((gender == 2) & (rng.random(n_people) < 0.5))
    first = np.where(
        male, nf + rng.integers(0, len(L.MALE_NAMES), n_people), rng.integers(0, nf, n_people)
    )
    last = rng.integers(0, len(L.LAST_NAMES), n_people)
    country = choice(rng, tuple(c[1] for c in L.COUNTRIES), n_people)
    ncity = np.array([len(c[6]) for c in L.COUNTRIES])
    city_offset = np.cumsum(ncity) - ncity
    city = city_offset[country] + (rng.random(n_people) * ncity[country]).astype(np.int64)
    age = 18 + np.minimum(rng.gamma(2.6, 8.5, n_people), 67)
    birth = clock.span - age * 365.25
    number = rng.choice(9_000_000, n_people, replace=False) + 1_000_000
    mobile = rng.integers(0, 12, n_people)
    has_phone = rng.random(n_people) < 0.62

    # Records: every person once, then the duplicates of randomly chosen people.
    dup_of = rng.choice(n_people, n_dup, replace=False)
    has_phone[dup_of] = True
    person = np.concatenate([np.arange(n_people), dup_of])
    dup_kind = np.concatenate([np.full(n_people, -1), choice(rng, DUP_KIND_WEIGHTS, n_dup)])
    first_signup = _signups(rng, clock, n_people)
    later = first_signup[dup_of] + rng.random(n_dup) * (clock.span - first_signup[dup_of])
    signup = np.minimum(np.concatenate([first_signup, later]), clock.span - 1 / 86_400)

    # Customer ids follow signup order, like an auto-increment key.
    order = np.argsort(signup, kind="stable")
    person, dup_kind, signup = person[order], dup_kind[order], signup[order]
    first_record = np.empty(n_people, dtype=np.int64)
    first_record[person[dup_kind < 0]] = np.flatnonzero(dup_kind < 0)

    # Email variants share the person's email (changed later); other duplicates get their own.
    share = np.where(dup_kind == 0, first_record[person], -1)
    email = _emails(rng, first[person], last[person], country[person], share)
    variant = choice(rng, (0.4, 0.35, 0.25), n)
    messy = pc.choose(
        pa.array(variant.astype(np.int8)),
        join(" ", pc.utf8_title(email), " "),
        pc.utf8_upper(email),
        join(pc.utf8_capitalize(email), " "),
    )
    email = pc.if_else(pa.array(dup_kind == 0), messy, email)

    fmt = rng.integers(0, 4, n)
    primary_fmt = fmt[first_record[person]]
    fmt = np.where(dup_kind >= 0, (primary_fmt + rng.integers(1, 4, n)) % 4, fmt)
    phone = _phones(rng, country[person], number[person], fmt, mobile[person])
    no_phone = ~has_phone[person] | (dup_kind == 2) | ((dup_kind == 0) & (rng.random(n) < 0.3))
    phone = pc.if_else(pa.array(no_phone), pa.scalar(None, pa.string()), phone)

    # Dirty records only among people without duplicates, so the truth stays clean.
    dirty = dirty_counts(n)
    has_dup = np.zeros(n_people, dtype=bool)
    has_dup[dup_of] = True
    clean = np.flatnonzero(~has_dup[person])
    picked = rng.choice(clean, dirty["invalid_emails"] + dirty["missing_country"], replace=False)
    bad_email, no_country = (
        picked[: dirty["invalid_emails"]],
        picked[dirty["invalid_emails"] :],
    )
    invalid = np.zeros(n, dtype=bool)
    invalid[bad_email] = True
    broken = pc.choose(
        pa.array((np.arange(n) % 2).astype(np.int8)),
        pc.replace_substring_regex(email, r"@.*$", "@"),
        pc.replace_substring(email, "@", "."),
    )
    email = pc.if_else(pa.array(invalid), broken, email)
    rec_country = country[person].copy()
    rec_country[no_country] = -1

    plan = np.where(rng.random(n) < PLAN_SHARE, 1 + (rng.random(n) < 0.35), -1)
    company = np.where((plan >= 0) & (rng.random(n) < 0.6), rng.integers(0, COMPANIES, n), -1)
    fav = choice(rng, L.CATEGORY_WEIGHTS, n_people)[person]
    channel = choice(rng, L.ORDER_CHANNEL_WEIGHTS, n)
    return People(
        n=n,
        ids=numbered("C", np.arange(1, n + 1), 7),
        person=person,
        dup_kind=dup_kind,
        signup=signup,
        country=rec_country,
        gender=gender[person],
        first=first[person],
        last=last[person],
        city=city[person],
        birth_days=birth[person],
        email=email,
        phone=phone,
        plan=plan,
        company=company,
        acquisition=choice(rng, L.ACQUISITION_WEIGHTS, n),
        order_channel=channel,
        fav_category=fav,
        app_user=(channel == 1) | (rng.random(n) < 0.2),
    )
