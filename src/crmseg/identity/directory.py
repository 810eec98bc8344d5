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
    """Record ids are read when it is built; emails, phones and identifier values the first
    time an item names someone that way (a stream that names people by id never holds
    them)."""

    def __init__(
        self,
        config: IdentityConfig,
        phones: PhoneBook,
        backend: Backend | None = None,
        loaded: Mapping[str, ir.Table] | None = None,
    ) -> None:
        self.config = config
        self.phones = phones
        self.backend = backend
        self.loaded = dict(loaded or {})
        self.records: dict[str, str] = {}  # record id -> person key
        self.emails: dict[str, str] = {}
        self.numbers: dict[str, str] = {}  # E.164 -> person key
        self.others: dict[str, str] = {}  # identifier values (anonymous and device ids)
        self._read: set[str] = set()  # the kinds read so far

    @classmethod
    def build(
        cls,
        backend: Backend,
        loaded: Mapping[str, ir.Table],
        config: IdentityConfig,
        phones: PhoneBook,
    ) -> Directory:
        """From the warehouse's tables (``crmseg.*`` as loaded, streamed people included)."""
        found = cls(config, phones, backend, loaded)
        idmap = loaded.get("identity_map")
        if idmap is not None:
            pairs = backend.execute(idmap.select("customer_id", "customer_key"))
            found.records.update(_pairs(pairs, "customer_id", "customer_key"))
        for table in found._people():
            ids = backend.execute(table.select(table.customer_id.cast("string")))
            for cid in ids.column(0).to_pylist():
                if cid is not None:
                    found.records.setdefault(cid, cid)
        return found

    def _people(self) -> list[ir.Table]:
        return [
            t for n in ("customers", "stream_customers") if (t := self.loaded.get(n)) is not None
        ]

    def _ensure(self, kind: str) -> None:
        """Read the values of ``kind`` (email, phone, anonymous_id) the first time."""
        if kind in self._read or self.backend is None:
            return
        self._read.add(kind)
        if kind == "email":
            self._read_emails(self.backend)
        elif kind == "phone":
            self._read_phones(self.backend)
        elif kind == "anonymous_id":
            ident = self.loaded.get("identifiers")
            if ident is not None:
                rows = self.backend.execute(ident.select("customer_id", "id_value"))
                for cid, value in _columns(rows, "customer_id", "id_value"):
                    self.others.setdefault(value, self.records.get(cid, cid))

    def _read_emails(self, backend: Backend) -> None:
        import ibis

        from crmseg.sources.normalize import email_key

        for table in self._people():
            if "email" not in table.columns:
                continue
            key = email_key(table.email.cast("string"), self.config.email_plus_addressing,
                            self.config.email_ignore_dots)  # fmt: skip
            rows = backend.execute(
                table.select(cid=table.customer_id.cast("string"), email=key).filter(
                    ibis._.email.notnull()
                )
            )
            for cid, email in _columns(rows, "cid", "email"):
                self.emails.setdefault(email, self.records.get(cid, cid))

    def _read_phones(self, backend: Backend) -> None:
        for table in self._people():
            if "phone" not in table.columns:
                continue
            country = ["country"] if "country" in table.columns else []
            cols = ["customer_id", "phone", *country]
            rows = backend.execute(
                table.select(*[table[c].cast("string") for c in cols]).filter(table.phone.notnull())
            )
            countries = rows.column("country").combine_chunks() if country else None
            e164, _ = self.phones.arrays(rows.column("phone").combine_chunks(), countries)
            ids = rows.column("customer_id").to_pylist()
            for cid, number in zip(ids, e164.to_pylist(), strict=True):
                if number is not None:
                    self.numbers.setdefault(number, self.records.get(cid, cid))

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
        self._ensure(kind)
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
        self._ensure(kind)
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
