"""API keys: `tg_<id>_<secret>`, stored as a SHA-256 of the secret, never in clear.

The secret has 256 bits of entropy, so a fast hash is enough (no password stretching
needed) and verification stays off the latency budget.

Lifecycle: `create` (optionally with a lifetime), `revoke` (at once), and `rotate`:
a new key with the same principal and roles, while the old one keeps working for a
grace period (default one hour, so running apps can pick up the new secret) and is
then revoked by itself. `--grace 0` revokes the old key at once: use it (or `revoke`)
when a secret has leaked. A revocation time in the future is how the grace period is
stored, so `keys list` shows when the old key stops working.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from tidegate.errors import AuthenticationError, NotFoundError
from tidegate.meta.base import ApiKeyRow, MetadataStore

PREFIX = "tg"
DEFAULT_ROTATION_GRACE = 3600.0


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


def rotate_key(
    store: MetadataStore,
    key_id: str,
    grace_seconds: float = DEFAULT_ROTATION_GRACE,
    ttl_seconds: float | None = None,
) -> tuple[str, ApiKeyRow, float]:
    """A new key for the same principal and roles; the old one stops after `grace_seconds`.

    Returns (new token, new row, when the old key stops working).
    """
    if grace_seconds < 0:
        raise ValueError("the grace period cannot be negative")
    old = store.api_key(key_id)
    now = time.time()
    if old is None or (old.revoked_at is not None and old.revoked_at <= now):
        raise NotFoundError(f"no active key {key_id!r}")
    token, row = create_key(store, old.principal, list(old.roles), ttl_seconds)
    stops = now + grace_seconds
    if old.expires_at is not None:
        stops = min(stops, old.expires_at)
    if old.revoked_at is None:
        store.revoke_api_key(key_id, stops)
    else:  # already rotated once: it keeps the earlier of the two end times
        stops = min(stops, old.revoked_at)
    return token, row, stops


def key_state(row: ApiKeyRow, now: float) -> str:
    """`active`, `expired`, `revoked`, or `retiring` (revocation scheduled after a rotation)."""
    if row.revoked_at is not None and row.revoked_at <= now:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if row.revoked_at is not None:
        return "retiring"
    return "active"


def split_token(token: str) -> tuple[str, str]:
    """(key id, secret) of a `tg_<id>_<secret>` token; 401 when it is not one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise AuthenticationError("malformed API key")
    return parts[1], parts[2]


def check_row(row: ApiKeyRow | None, secret: str, now: float) -> Principal:
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
        raise AuthenticationError("unknown API key")
    state = key_state(row, now)
    if state == "revoked":
        raise AuthenticationError("this API key was revoked")
    if state == "expired":
        raise AuthenticationError("this API key has expired")
    return Principal(name=row.principal, roles=row.roles, key_id=row.key_id)


def authenticate(store: MetadataStore, token: str | None) -> Principal:
    if not token:
        raise AuthenticationError("an API key is required (Authorization: Bearer <key>)")
    key_id, secret = split_token(token)
    return check_row(store.api_key(key_id), secret, time.time())
