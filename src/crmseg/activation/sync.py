"""Incremental sync: per destination, send only the adds and removes since the last
successful sync.

The synced set lives in ``sync_state``; a diff is cut into batches that go to the outbox
(``sync_batches``) in the activation's transaction, and each delivered batch moves the synced
set forward in its own small transaction. A diff is always taken against what is synced *plus*
what is still pending, so a failed sync is retried from the same batches and never doubled;
a repeated sync with no change produces no batch at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crmseg.activation.store import ActivationStore, Batch


@dataclass(frozen=True)
class Diff:
    adds: list[str]
    removes: list[str]

    @property
    def empty(self) -> bool:
        return not self.adds and not self.removes


def expected(store: ActivationStore, destination: str) -> set[str]:
    """What the receiver will hold once every pending batch is delivered."""
    keys = store.synced(destination)
    for batch in store.pending(destination):
        if batch.op == "add":
            keys |= set(batch.keys)
        else:
            keys -= set(batch.keys)
    return keys


def diff(store: ActivationStore, destination: str, target: Iterable[str]) -> Diff:
    want = set(target)
    have = expected(store, destination)
    return Diff(sorted(want - have), sorted(have - want))


def batch_id(destination: str, activation_id: int, seq: int) -> str:
    """The idempotency key: the same batch keeps it across every retry."""
    return hashlib.sha256(f"{destination}\0{activation_id}\0{seq}".encode()).hexdigest()[:32]


def make_batches(
    destination: str,
    activation_id: int,
    d: Diff,
    size: int,
    body: Callable[[str, str, list[str]], Any],
) -> list[Batch]:
    """Removes first, then adds, ``size`` customers per batch; ``body(op, id, keys)`` is the
    payload sent (and stored, so a retry sends the very same bytes)."""
    out: list[Batch] = []
    for op, keys in (("remove", d.removes), ("add", d.adds)):
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            bid = batch_id(destination, activation_id, len(out))
            out.append(Batch(destination, bid, len(out), op, chunk, body(op, bid, chunk)))
    return out


def replace_synced(store: ActivationStore, destination: str, keys: Sequence[str], at: Any) -> None:
    """Set the synced set outright (file destinations, written in the activation's
    transaction)."""
    store.replace_synced(destination, keys, at)
