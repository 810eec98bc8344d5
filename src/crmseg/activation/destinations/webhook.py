"""POST JSON batches to a URL: one idempotency key per batch, retries with exponential backoff,
and a dead-letter file for batches that keep failing.

A batch is retried on connection errors, timeouts, 408, 429 and 5xx; any other 4xx means the
receiver rejected the content, so retrying cannot help and the batch is dead-lettered at once.
Redirects are never followed: urllib would repeat a POST as a GET to the new location (the body
dropped, the headers with their credentials sent to whatever host the receiver names), and the
batch would count as delivered. A 3xx is a failure that names the new location, dead-lettered
at once, as is every other answer outside 2xx.
Delivery stops at the first batch that fails: later batches may touch the same customers, and
delivering them out of order would leave the receiver in the wrong state. Undelivered batches
stay in the outbox (``sync_batches``) and are retried, with the same key and body, next time.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crmseg.activation.store import Batch

_RETRYABLE = {408, 429}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every 3xx into an ``HTTPError`` instead of following it."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# urllib's default handlers, with redirects refused.
_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass
class WebhookResult:
    delivered: list[str] = field(default_factory=list)  # batch ids
    failed: list[str] = field(default_factory=list)
    requests: int = 0
    error: str | None = None


def post_batches(
    url: str,
    batches: Sequence[Batch],
    *,
    max_attempts: int = 5,
    backoff_seconds: float = 0.5,
    timeout_seconds: float = 10.0,
    headers: Mapping[str, str] | None = None,
    dead_letter: Path | None = None,
    on_delivered: Callable[[Batch, int], None] | None = None,
    on_failed: Callable[[Batch, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WebhookResult:
    result = WebhookResult()
    for batch in batches:
        attempts, error = _post_one(
            url, batch, max_attempts, backoff_seconds, timeout_seconds, headers or {}, sleep
        )
        result.requests += attempts
        if error is None:
            result.delivered.append(batch.batch_id)
            if on_delivered:
                on_delivered(batch, attempts)
            continue
        result.failed.append(batch.batch_id)
        result.error = error
        if dead_letter is not None:
            _dead_letter(dead_letter, batch, attempts, error)
        if on_failed:
            on_failed(batch, attempts)
        break
    return result


def _post_one(
    url: str,
    batch: Batch,
    max_attempts: int,
    backoff: float,
    timeout: float,
    headers: Mapping[str, str],
    sleep: Callable[[float], None],
) -> tuple[int, str | None]:
    body = json.dumps(batch.payload, default=str).encode("utf-8")
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                **headers,
                "Content-Type": "application/json",
                "Idempotency-Key": batch.batch_id,
            },
        )
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                response.read()
                status = response.status
            if not 200 <= status < 300:
                return attempt, f"HTTP {status} from {url}: expected a 2xx answer"
            return attempt, None
        except urllib.error.HTTPError as exc:
            exc.close()  # release the connection
            if 300 <= exc.code < 400:
                where = exc.headers.get("Location") if exc.headers else None
                moved = f" to {where}" if where else ""
                return attempt, (
                    f"HTTP {exc.code} from {url}: a redirect{moved}, not followed "
                    "(set the destination's url to where the receiver now is)"
                )
            error = f"HTTP {exc.code} from {url}"
            if exc.code < 500 and exc.code not in _RETRYABLE:
                return attempt, error
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"cannot reach {url}: {reason}"
        if attempt < max_attempts:
            sleep(backoff * 2 ** (attempt - 1))
    return max_attempts, error


def _dead_letter(path: Path, batch: Batch, attempts: int, error: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "destination": batch.destination,
        "batch_id": batch.batch_id,
        "op": batch.op,
        "attempts": attempts,
        "error": error,
        "payload": batch.payload,
    }
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, default=str) + "\n")
