"""Which canonical columns hold personal data, and the one mask shown instead of their values
where a person's data is not the point (quality examples, ``--mask`` on profile and
explain)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Customer columns that identify a person: an export must name each one under `pii`.
PII_FIELDS = frozenset(
    {"email", "phone", "first_name", "last_name", "birth_date", "city", "region", "company"}
)
# (table, column) pairs holding personal data; a review's free text may name its writer.
PII_COLUMNS = frozenset(
    {("customers", c) for c in PII_FIELDS} | {("identifiers", "id_value"), ("reviews", "comment")}
)  # fmt: skip


def mask(value: Any) -> Any:
    """Letters and digits after the first character become ``*``; the shape stays (an ``@``
    without a domain, a phone's spacing), which is what a data-quality example needs."""
    if value is None:
        return None
    text = str(value)
    return text[:1] + "".join("*" if ch.isalnum() else ch for ch in text[1:])


def mask_fields(record: Mapping[str, Any], also: Sequence[str] = ()) -> dict[str, Any]:
    """``record`` with the values of personal fields (:data:`PII_FIELDS`, and ``also``)
    masked; other fields as they are."""
    personal = PII_FIELDS | set(also)
    return {k: mask(v) if k in personal else v for k, v in record.items()}


def digest(value: str) -> str:
    """The SHA-256 a forgotten value is kept and listed under (deletion lists, suppression):
    callers pass it normalised (a lowercase email, an E.164 phone, a customer id)."""
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()
