"""Delivering the change log to webhooks (``stream.webhooks``), with activation's webhook
client: JSON batches, an idempotency key per batch, retries with backoff, no redirects.

Each webhook keeps its own cursor in the state; it moves only past delivered batches, so a
receiver that is down gets the same batches (same keys, same bodies) once it is back, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.config import StreamWebhook
    from crmseg.stream.changes import ChangeLog


@dataclass
class Delivered:
    webhook: str
    changes: int = 0
    batches: int = 0
    error: str | None = None


def deliver(
    log: ChangeLog,
    hooks: list[StreamWebhook],
    locked: Callable[[], AbstractContextManager[Any]],
    post: Callable[..., Any] | None = None,
) -> list[Delivered]:
    """Send every webhook what it has not received; ``locked()`` guards the state (the
    requests themselves run outside it)."""
    from crmseg.activation.destinations.webhook import post_batches
    from crmseg.activation.store import Batch

    send = post or post_batches
    out = []
    for hook in hooks:
        done = Delivered(hook.name)
        reader = f"webhook:{hook.name}"
        for _ in range(100):  # at most 100 batches a call: the caller comes back for more
            with locked():
                cursor = log.cursor(reader)
                rows = [
                    r
                    for r in log.after(cursor, None, hook.batch_size * 4)
                    if not hook.segments or r["segment"] in hook.segments
                ][: hook.batch_size]
                top = rows[-1]["change_id"] if rows else _top(log, cursor, hook.batch_size * 4)
            if not rows:
                if top > cursor:  # only other segments' changes: skip past them
                    with locked():
                        log.advance(reader, top)
                    continue
                break
            payload = {"webhook": hook.name, "changes": [_json(r) for r in rows]}
            key = f"{hook.name}:{rows[0]['change_id']}-{rows[-1]['change_id']}"
            batch = Batch(hook.name, key, rows[0]["change_id"], "changes", [], payload)
            result = send(hook.url, [batch], max_attempts=hook.max_attempts,
                          timeout_seconds=hook.timeout_seconds)  # fmt: skip
            if result.error is not None:
                done.error = result.error
                break
            with locked():
                log.advance(reader, rows[-1]["change_id"])
            done.changes += len(rows)
            done.batches += 1
        out.append(done)
    return out


def _top(log: ChangeLog, cursor: int, limit: int) -> int:
    rows = log.after(cursor, None, limit)
    return int(rows[-1]["change_id"]) if rows else cursor


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat(sep=" ") if hasattr(v, "isoformat") else v) for k, v in row.items()}
