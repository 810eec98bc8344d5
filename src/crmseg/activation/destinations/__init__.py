"""Where audiences go: files (CSV, Parquet, JSON Lines), hashed ad-platform lists, webhooks."""

from crmseg.activation.destinations.adlists import hash_email, hash_phone, normalize_phone
from crmseg.activation.destinations.files import write_records
from crmseg.activation.destinations.webhook import WebhookResult, post_batches

__all__ = [
    "WebhookResult",
    "hash_email",
    "hash_phone",
    "normalize_phone",
    "post_batches",
    "write_records",
]
