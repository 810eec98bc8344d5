"""Ad-platform normalisation and hashing."""

from __future__ import annotations

import hashlib

import pytest

from crmseg.activation.destinations import adlists
from crmseg.activation.destinations.adlists import (
    _simple_e164,
    hash_email,
    hash_phone,
    normalize_email,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_email_is_trimmed_lowercased_then_hashed() -> None:
    assert normalize_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert hash_email("  Jane.Doe@Example.COM ") == _sha("jane.doe@example.com")
    assert hash_email("not an email") is None
    assert hash_email(None) is None


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+49 151 1234 5678", "DE", "+4915112345678"),
        ("0151 12345678", "DE", "+4915112345678"),
        ("0049 151 12345678", "DE", "+4915112345678"),
        ("(650) 555-1234", "US", "+16505551234"),
        ("0664 1234567", "AT", "+436641234567"),
        ("12", "DE", None),
    ],
)
def test_simple_e164(raw: str, region: str, e164: str | None) -> None:
    assert _simple_e164(raw, region) == e164


def test_platform_phone_formats() -> None:
    # google and tiktok hash E.164 with '+', meta hashes the digits only
    assert hash_phone("0151 12345678", "DE", "google") == _sha("+4915112345678")
    assert hash_phone("0151 12345678", "DE", "tiktok") == _sha("+4915112345678")
    assert hash_phone("0151 12345678", "DE", "meta") == _sha("4915112345678")
    assert hash_phone("", "DE") is None


def test_layouts_name_the_documented_headers() -> None:
    assert adlists.LAYOUTS["google"] == {"email": "Email", "phone": "Phone"}
    assert adlists.LAYOUTS["meta"] == {"email": "email", "phone": "phone"}
    assert adlists.LAYOUTS["tiktok"]["email"] == "Email_SHA256"
