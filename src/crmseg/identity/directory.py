"""Who a streamed item names: its record id, email, phone or identifier, looked up in memory.

Built once from the loaded data (identity's map when it ran), with emails and phones matched
the way identity matches them (trimmed, lowercased, optional plus/dot rules; phones in
E.164), and grown by the people the stream creates, so an item costs a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.backends.base import Backend
    from crmseg.config import IdentityConfig
    from crmseg.sources.normalize import PhoneBook

_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@.]{2,}$")


class Directory:
    def __init__(self, config: IdentityConfig, phones: PhoneBook) -> None:
        self.config = config
        self.phones = phones
        self.records: dict[str, str] = {}  # record id -> person key
        self.emails: dict[str, str] = {}
        self.numbers: dict[str, str] = {}  # E.164 -> person key
        self.others: dict[str, str] = {}  # identifier values (anonymous and device ids)

    @classmethod
    def build(
        cls,
        backend: Backend,
        loaded: Mapping[str, ir.Table],
        config: IdentityConfig,
        phones: PhoneBook,
    ) -> Directory:
        """From the warehouse's tables (``crmseg.*`` as loaded, streamed people included)."""
        import ibis

        from crmseg.sources.normalize import email_key

        found = cls(config, phones)
        people = [t for n in ("customers", "stream_customers") if (t := loaded.get(n)) is not None]
        idmap = loaded.get("identity_map")
        if idmap is not None:
            pairs = backend.execute(idmap.select("customer_id", "customer_key"))
            found.records.update(_pairs(pairs, "customer_id", "customer_key"))
        for table in people:
            ids = backend.execute(table.select(table.customer_id.cast("string")))
            for cid in ids.column(0).to_pylist():
                if cid is not None:
                    found.records.setdefault(cid, cid)
            if "email" in table.columns:
                key = email_key(
                    table.email.cast("string"),
                    config.email_plus_addressing,
                    config.email_ignore_dots,
                )
                rows = backend.execute(
                    table.select(cid=table.customer_id.cast("string"), email=key).filter(
                        ibis._.email.notnull()
                    )
                )
                for cid, email in _columns(rows, "cid", "email"):
                    found.emails.setdefault(email, found.records.get(cid, cid))
            if "phone" in table.columns:
                country = ["country"] if "country" in table.columns else []
                cols = ["customer_id", "phone", *country]
                rows = backend.execute(
                    table.select(*[table[c].cast("string") for c in cols]).filter(
                        table.phone.notnull()
                    )
                )
                countries = rows.column("country").combine_chunks() if country else None
                e164, _ = phones.arrays(rows.column("phone").combine_chunks(), countries)
                ids = rows.column("customer_id").to_pylist()
                for cid, number in zip(ids, e164.to_pylist(), strict=True):
                    if number is not None:
                        found.numbers.setdefault(number, found.records.get(cid, cid))
        ident = loaded.get("identifiers")
        if ident is not None:
            rows = backend.execute(ident.select("customer_id", "id_value"))
            for cid, value in _columns(rows, "customer_id", "id_value"):
                found.others.setdefault(str(value), found.records.get(str(cid), str(cid)))
        return found

    def email(self, raw: str) -> str | None:
        """The matching key of an email, as identity makes it (None when invalid)."""
        text = raw.strip()
        if not _EMAIL.match(text):
            return None
        text = text.lower()
        local, _, domain = text.partition("@")
        if self.config.email_plus_addressing:
            local = local.split("+", 1)[0]
        if self.config.email_ignore_dots:
            local = local.replace(".", "")
        return f"{local}@{domain}"

    def number(self, raw: str) -> str | None:
        return self.phones.normalise([(raw, None)])[0][0]

    def find(self, kind: str, value: str) -> str | None:
        """The person key ``value`` names (``kind``: customer_id, email, phone or
        anonymous_id), or None for someone unknown."""
        if kind == "customer_id":
            return self.records.get(value)
        if kind == "email":
            key = self.email(value)
            return self.emails.get(key) if key else None
        if kind == "phone":
            number = self.number(value)
            return self.numbers.get(number) if number else None
        return self.others.get(value)

    def new_id(self, kind: str, value: str) -> str:
        """The record id of a person the stream creates: the given id, else one derived
        from the contact (the same contact always gives the same id, and no personal data)."""
        if kind == "customer_id":
            return value
        norm = (self.email(value) if kind == "email" else
                self.number(value) if kind == "phone" else value) or value  # fmt: skip
        return "new-" + hashlib.sha256(f"{kind}:{norm}".encode()).hexdigest()[:16]

    def add(self, record_id: str, kind: str, value: str) -> None:
        """A person the stream created, found by the same value from now on."""
        self.records[record_id] = record_id
        if kind == "email" and (key := self.email(value)):
            self.emails[key] = record_id
        elif kind == "phone" and (number := self.number(value)):
            self.numbers[number] = record_id
        elif kind == "anonymous_id":
            self.others[value] = record_id


def _columns(table: pa.Table, a: str, b: str) -> list[tuple[str, str]]:
    """The (a, b) rows of ``table`` with neither null, as strings."""
    pairs = zip(table.column(a).to_pylist(), table.column(b).to_pylist(), strict=True)
    return [(str(x), str(y)) for x, y in pairs if x is not None and y is not None]


def _pairs(table: pa.Table, a: str, b: str) -> dict[str, str]:
    return dict(_columns(table, a, b))
