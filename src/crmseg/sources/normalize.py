"""Normalising contact details before matching: emails in SQL, phones to E.164 in Python.

Quality (syntax and parse checks) and identity (match keys) both use it, so it lives here.

Emails are trimmed and lowercased; optionally ``+tags`` and dots of the local part are dropped
(providers such as Gmail ignore them, most others do not, so both are off by default). Only
syntactically valid emails link records, so junk such as ``n/a`` never merges people.

Phones are normalised once per distinct (raw value, region) pair, never per row: the region is
the customer's country when it is a known region code, else the configured default. A number
that parses is written in E.164; ``possible`` says whether its length is plausible for its
country (quality reports the rest as unparseable). A number of implausible length written
nationally loses its trunk prefix, so it links with its international spelling.

How a value is turned into E.164 (exactly as ``phonenumbers`` does, faster for plain
spellings) is in :mod:`crmseg.sources.phones`.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import ibis.expr.types as ir

# Syntax only: something@domain.tld without spaces or a second @.
EMAIL_PATTERN = r"^[^\s@]+@[^\s@]+\.[^\s@.]{2,}$"
# Below this many distinct values a process pool costs more than it saves.
_PARALLEL_FROM = 100_000


def email_key(raw: ir.StringValue, plus: bool = False, dots: bool = False) -> ir.StringValue:
    """The matching key of an email (null when empty or syntactically invalid)."""
    import ibis

    stripped = trimmed(raw)
    text = stripped.lower()
    if plus or dots:
        local = text.re_extract(r"^([^@]*)@(.*)$", 1)
        domain = text.re_extract(r"^([^@]*)@(.*)$", 2)
        if plus:
            local = local.re_replace(r"\+.*$", "")
        if dots:
            local = local.replace(".", "")
        text = ibis.ifelse(text.re_search(EMAIL_PATTERN), local + "@" + domain, text)
    valid = stripped.re_search(EMAIL_PATTERN)
    return ibis.ifelse(valid, text, ibis.null("string"))


def _parse_chunk(items: list[tuple[str, str]]) -> list[tuple[str | None, bool]]:
    """(E.164 or None, possible) of each (raw phone, region)."""
    from crmseg.sources.phones import normalise_phone

    memo: dict[tuple[str, str], tuple[str | None, bool]] = {}
    return [normalise_phone(raw, region, memo) for raw, region in items]


def blank(value: ir.StringValue) -> ir.BooleanValue:
    """Whether a (non-null) string is empty or only ASCII whitespace, as ``strip() == ""``.

    Trimming with a character set costs DuckDB about six scans of the column, so it only
    runs for values that start with a space or control character (CASE evaluates a branch
    only for its rows): 10M ids are checked in a tenth of the time."""
    import ibis

    return ibis.cases((value.ascii_str() <= 32, value.strip() == ""), else_=False)


def trimmed(value: ir.StringValue) -> ir.StringValue:
    """``value.strip()``, trimming only values that begin or end with ASCII whitespace or a
    control character (the only characters ``strip`` removes): a character-set trim costs
    DuckDB more than the regular expression that checks an email, on every row."""
    import ibis

    edge = (value.ascii_str() <= 32) | (value.right(1).ascii_str() <= 32)
    return ibis.cases((edge, value.strip()), else_=value)


class PhoneBook:
    """Phone normalisation with a cache, shared by quality and identity within one run."""

    def __init__(self, default_region: str) -> None:
        import phonenumbers

        self.default_region = default_region.upper()
        self._regions = frozenset(phonenumbers.SUPPORTED_REGIONS)
        self._cache: dict[tuple[str, str], tuple[str | None, bool]] = {}
        # the last lookup's (pair keys, e164, possible): quality and identity ask for the same
        # distinct (phone, country) pairs in one run, and the second answer is a hash lookup
        self._known: tuple[pa.Array, pa.Array, pa.Array] | None = None

    def region(self, country: str | None) -> str:
        code = (country or "").strip().upper()
        return code if code in self._regions else self.default_region

    def normalise(self, pairs: list[tuple[str, str | None]]) -> list[tuple[str | None, bool]]:
        """(E.164 or None, possible) for each (raw phone, customer country)."""
        keys = [(raw, self.region(country)) for raw, country in pairs]
        todo = list({k for k in keys if k not in self._cache})
        if todo:
            for key, value in zip(todo, _parse_many(todo), strict=True):
                self._cache[key] = value
        return [self._cache[k] for k in keys]

    def arrays(
        self, phones: pa.Array, countries: pa.Array | None = None
    ) -> tuple[pa.Array, pa.Array]:
        """(e164, possible) columns for raw phone and customer country columns: plain
        international spellings on whole columns, the others value by value (cached)."""
        import pyarrow.compute as pc

        from crmseg.sources.phones import international

        phones = pa.array(phones, pa.string()) if not isinstance(phones, pa.Array) else phones
        if isinstance(phones, pa.ChunkedArray):
            phones = phones.combine_chunks()
        if isinstance(countries, pa.ChunkedArray):
            countries = countries.combine_chunks()
        keys = _pair_keys(phones, countries)
        if self._known is not None:
            known_keys, known_e164, known_possible = self._known
            where = pc.index_in(keys, value_set=known_keys)
            if where.null_count == 0:
                return known_e164.take(where), known_possible.take(where)
        e164, possible = international(phones)
        e164, possible = self._national(phones, countries, e164, possible)
        pending = pc.and_(pc.is_null(e164), pc.is_valid(phones))  # for the per-value path
        rest = pc.indices_nonzero(pending).to_numpy()
        if len(rest):
            raw = phones.take(pa.array(rest)).to_pylist()
            cc = (
                countries.take(pa.array(rest)).to_pylist()
                if countries is not None
                else [None] * len(rest)
            )
            found = self.normalise(list(zip(raw, cc, strict=True)))
            e164 = pc.replace_with_mask(e164, pending, pa.array([f[0] for f in found], pa.string()))
            possible = pc.replace_with_mask(
                possible, pending, pa.array([f[1] for f in found], pa.bool_())
            )
        possible = pc.fill_null(possible, False)
        if keys.null_count == 0 and len(pc.unique(keys)) == len(keys):
            self._known = (keys, e164, possible)
        return e164, possible

    def regions(self, countries: pa.Array | None, n: int) -> pa.Array:
        """``region`` of each country, on a column; null for a country that is not ASCII
        (Python's case mapping, which ``region`` uses, differs from Arrow's outside it)."""
        import pyarrow.compute as pc

        if countries is None:
            return pa.array([self.default_region] * n, pa.string())
        code = pc.utf8_upper(pc.utf8_trim_whitespace(countries.cast(pa.string())))
        known = pc.fill_null(pc.is_in(code, value_set=pa.array(sorted(self._regions))), False)
        region = pc.if_else(known, code, pa.scalar(self.default_region))
        ascii_ = pc.fill_null(pc.string_is_ascii(countries.cast(pa.string())), True)
        return pc.if_else(ascii_, region, pa.scalar(None, pa.string()))

    def _national(
        self, phones: pa.Array, countries: pa.Array | None, e164: pa.Array, possible: pa.Array
    ) -> tuple[pa.Array, pa.Array]:
        """``e164``/``possible`` with plain national spellings filled in (see
        :func:`crmseg.sources.phones.national`)."""
        import numpy as np
        import pyarrow.compute as pc

        from crmseg.sources.phones import national

        todo = pc.indices_nonzero(pc.and_(pc.is_null(e164), pc.is_valid(phones)))
        if not len(todo):
            return e164, possible
        cc = countries.take(todo) if countries is not None else None
        found, plausible = national(phones.take(todo), self.regions(cc, len(todo)))
        mask = pc.is_valid(found).to_numpy(zero_copy_only=False)
        if not mask.any():
            return e164, possible
        where = np.zeros(len(phones), dtype=bool)
        where[todo.to_numpy()[mask]] = True
        fill = pa.array(where)
        return (
            pc.replace_with_mask(e164, fill, found.filter(pa.array(mask))),
            pc.replace_with_mask(possible, fill, plausible.filter(pa.array(mask))),
        )

    def table(self, distinct: pa.Table) -> pa.Table:
        """``distinct`` (phone, country) -> the same rows plus e164 and possible."""
        countries = (
            distinct.column("country").combine_chunks()
            if "country" in distinct.column_names
            else None
        )
        e164, possible = self.arrays(distinct.column("phone").combine_chunks(), countries)
        return distinct.append_column("e164", e164).append_column("possible", possible)


def _pair_keys(phones: pa.Array, countries: pa.Array | None) -> pa.Array:
    """One string per (raw phone, country) pair, null for a null phone. Separator bytes inside
    either part are escaped, so distinct pairs always get distinct keys."""
    import pyarrow.compute as pc

    def part(values: pa.Array) -> pa.Array:
        return pc.replace_substring(values.cast(pa.string()), "\x1f", "\x1f\x1e")

    country = (
        pc.fill_null(part(countries), "")
        if countries is not None
        else pa.array([""] * len(phones), pa.string())
    )
    keys: pa.Array = pc.binary_join_element_wise(part(phones), country, "\x1f\x1f")
    return keys


def _parse_many(items: list[tuple[str, str]]) -> list[tuple[str | None, bool]]:
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < _PARALLEL_FROM or workers < 2:
        return _parse_chunk(items)
    size = -(-len(items) // (workers * 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    out: list[tuple[str | None, bool]] = []
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_parse_chunk, chunks):
                out.extend(part)
    except (OSError, RuntimeError):  # no process support (sandboxes): stay serial
        return _parse_chunk(items)
    return out


def distinct_phones(customers: ir.Table) -> ir.Table:
    """Distinct (phone, country) pairs of customers with a phone; country only when needed."""
    import ibis

    phone = trimmed(customers.phone)
    has = customers.phone.notnull() & ~blank(customers.phone)
    if "country" in customers.columns:
        # International numbers do not depend on the region: one row per raw value.
        country: Any = ibis.ifelse(phone.startswith("+"), ibis.null("string"), customers.country)
    else:
        country = ibis.null("string")
    return customers.filter(has).select(phone=customers.phone, country=country).distinct()
