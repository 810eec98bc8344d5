"""Which canonical columns hold personal data, and the mask shown instead of their values
where a person's data is not the point (quality examples)."""

from __future__ import annotations

from typing import Any

# Customer columns that identify a person: an export must name each one under `pii`.
PII_FIELDS = frozenset(
    {"email", "phone", "first_name", "last_name", "birth_date", "city", "region", "company"}
)
# (table, column) pairs holding personal data.
PII_COLUMNS = frozenset(
    {("customers", c) for c in PII_FIELDS} | {("identifiers", "id_value")}
)  # fmt: skip


def mask(value: Any) -> Any:
    """Letters and digits after the first character become ``*``; the shape stays (an ``@``
    without a domain, a phone's spacing), which is what a data-quality example needs."""
    if value is None:
        return None
    text = str(value)
    return text[:1] + "".join("*" if ch.isalnum() else ch for ch in text[1:])
