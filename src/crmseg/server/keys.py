"""API keys in the state database: only a key's hash is kept, with its role.

A key reads ``crmseg_<id>_<secret>``: the id finds the row, the secret is checked against its
SHA-256 in constant time. Roles are ordered: a viewer reads with personal data masked, an editor
also runs and activates, an admin also manages keys and forgets people.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from crmseg.errors import ApiKeyError

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
_KEY = re.compile(r"crmseg_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})")

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS api_keys (
        key_id VARCHAR PRIMARY KEY,
        secret_hash VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        revoked_at TIMESTAMP
    )"""
    ],
]


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    role: Role
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, role: Role) -> bool:
        """Whether this key's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Keys in the state database, with the live ones also held in memory: checking a key
    (every request) then needs no query, so it never waits for the connection a run holds."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("keys", MIGRATIONS)
        self._live: dict[str, tuple[str, ApiKey]] = {}
        self.reload()

    def reload(self) -> None:
        rows = self.state.dicts(
            "SELECT key_id, secret_hash, role, name, created_at, revoked_at FROM api_keys "
            "WHERE revoked_at IS NULL"
        )
        self._live = {r["key_id"]: (r.pop("secret_hash"), ApiKey(**r)) for r in rows}

    def create(self, role: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key of ``role``: the record and the key text, shown once and never stored."""
        if role not in ROLES:
            raise ApiKeyError(f"unknown role {role!r} (expected one of: {', '.join(ROLES)})")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.state.transaction():
            self.state.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                [key_id, _hash(secret), role, name, now],
            )
        self.reload()
        return ApiKey(key_id, role, name, now), f"crmseg_{key_id}_{secret}"  # type: ignore[arg-type]

    def list(self) -> list[ApiKey]:
        rows = self.state.dicts(
            "SELECT key_id, role, name, created_at, revoked_at FROM api_keys ORDER BY created_at"
        )
        return [ApiKey(**r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        found = [k for k in self.list() if k.key_id == key_id]
        if not found:
            raise ApiKeyError(f"no API key {key_id!r} (crmseg keys list shows them)")
        if found[0].revoked_at is None:
            now = datetime.now(UTC).replace(tzinfo=None)
            with self.state.transaction():
                self.state.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [now, key_id]
                )
            self.reload()
        return next(k for k in self.list() if k.key_id == key_id)

    def check(self, text: str) -> ApiKey | None:
        """The live key ``text`` is, or None (malformed, unknown, wrong secret, revoked)."""
        m = _KEY.fullmatch(text.strip())
        live = self._live.get(m.group(1)) if m else None
        if m is None or live is None:
            return None
        secret_hash, key = live
        return key if hmac.compare_digest(secret_hash, _hash(m.group(2))) else None
