"""Re-exports :mod:`crmseg.sources.normalize`, where the normalisation quality and identity
both use lives (sources is left of both)."""

from crmseg.sources.normalize import EMAIL_PATTERN, PhoneBook, distinct_phones, email_key

__all__ = ["EMAIL_PATTERN", "PhoneBook", "distinct_phones", "email_key"]
