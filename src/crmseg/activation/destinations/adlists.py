"""Customer lists for ad platforms: normalised, then SHA-256 hashed identifiers.

Layouts (CSV headers) follow each platform's customer-list documentation:

- google (Customer Match): ``Email``, ``Phone``; lowercase/trimmed email, E.164 phone with ``+``.
- meta (custom audiences): ``email``, ``phone``; phone as digits with country code, no ``+``.
- tiktok (customer file): ``Email_SHA256``, ``Phone_SHA256``; E.164 phone with ``+``.

Phone numbers are normalised with the ``phonenumbers`` package when it is installed; otherwise
a simple normaliser is used: keep digits, ``00`` becomes ``+``, a number without a country code
gets ``default_region``'s calling code (national trunk ``0`` dropped). The simple normaliser knows
the calling codes in ``CALLING_CODES`` and does not validate number lengths.
"""

from __future__ import annotations

import hashlib
import re

LAYOUTS: dict[str, dict[str, str]] = {
    "google": {"email": "Email", "phone": "Phone"},
    "meta": {"email": "email", "phone": "phone"},
    "tiktok": {"email": "Email_SHA256", "phone": "Phone_SHA256"},
}

CALLING_CODES = {
    "AT": "43", "AU": "61", "BE": "32", "BR": "55", "CA": "1", "CH": "41", "CN": "86",
    "CZ": "420", "DE": "49", "DK": "45", "ES": "34", "FI": "358", "FR": "33", "GB": "44",
    "IE": "353", "IN": "91", "IT": "39", "JP": "81", "MX": "52", "NL": "31", "NO": "47",
    "NZ": "64", "PL": "48", "PT": "351", "SE": "46", "US": "1",
}  # fmt: skip


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_email(email: str | None) -> str | None:
    if email is None:
        return None
    value = email.strip().lower()
    return value if "@" in value else None


def normalize_phone(phone: str | None, region: str = "DE") -> str | None:
    """E.164 (``+4915112345678``) or None when the input cannot be a phone number."""
    if phone is None or not phone.strip():
        return None
    try:
        import phonenumbers
    except ImportError:
        return _simple_e164(phone, region)
    try:
        parsed = phonenumbers.parse(phone, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def _simple_e164(phone: str, region: str) -> str | None:
    text = phone.strip()
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    else:
        code = CALLING_CODES.get(region.upper())
        if code is None:
            return None
        # national format: the trunk prefix 0 is not part of the international number
        digits = code + (digits[1:] if digits.startswith("0") and code != "1" else digits)
    return f"+{digits}" if 8 <= len(digits) <= 15 else None


def hash_email(email: str | None) -> str | None:
    value = normalize_email(email)
    return sha256(value) if value else None


def hash_phone(phone: str | None, region: str = "DE", platform: str = "google") -> str | None:
    value = normalize_phone(phone, region)
    if value is None:
        return None
    return sha256(value.lstrip("+") if platform == "meta" else value)
