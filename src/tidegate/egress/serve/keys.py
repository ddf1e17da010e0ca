"""API keys: `tg_<id>_<secret>`, stored as a SHA-256 of the secret, never in clear.

The secret has 256 bits of entropy, so a fast hash is enough (no password stretching
needed) and verification stays off the latency budget.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from tidegate.errors import AuthenticationError
from tidegate.meta.base import ApiKeyRow, MetadataStore

PREFIX = "tg"


@dataclass(frozen=True)
class Principal:
    name: str
    roles: tuple[str, ...]
    key_id: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    store: MetadataStore, principal: str, roles: list[str], ttl_seconds: float | None = None
) -> tuple[str, ApiKeyRow]:
    """Create a key; the full token is returned once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    row = ApiKeyRow(
        key_id=key_id,
        secret_hash=_digest(secret),
        principal=principal,
        roles=tuple(roles),
        created_at=now,
        expires_at=now + ttl_seconds if ttl_seconds else None,
        revoked_at=None,
    )
    store.add_api_key(row)
    return f"{PREFIX}_{key_id}_{secret}", row


def authenticate(store: MetadataStore, token: str | None) -> Principal:
    if not token:
        raise AuthenticationError("an API key is required (Authorization: Bearer <key>)")
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthenticationError("malformed API key")
    row = store.api_key(parts[1])
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(parts[2])):
        raise AuthenticationError("unknown API key")
    if row.revoked_at is not None:
        raise AuthenticationError("this API key was revoked")
    if row.expires_at is not None and row.expires_at <= time.time():
        raise AuthenticationError("this API key has expired")
    return Principal(name=row.principal, roles=row.roles, key_id=row.key_id)
