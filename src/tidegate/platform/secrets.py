"""The master key behind keyed hashing, kept apart from config and never logged.

Read from `TIDEGATE__SECRETS__HASH_KEY` when set (deployments inject it); otherwise a
random key is created once in `.tidegate/secrets.json` (mode 0600) so pseudonyms stay
stable across runs of the same project.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from tidegate.private import private_dir

ENV_HASH_KEY = "TIDEGATE__SECRETS__HASH_KEY"


def load_master_key(state_dir: Path) -> bytes:
    from_env = os.environ.get(ENV_HASH_KEY)
    if from_env:
        return from_env.encode("utf-8")
    path = state_dir / "secrets.json"
    if path.exists():
        return bytes.fromhex(json.loads(path.read_text())["hash_key"])
    private_dir(state_dir)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"hash_key": key.hex()}, handle)
    return key


ENV_AUDIT_KEY = "TIDEGATE__SECRETS__AUDIT_KEY"
AUDIT_KEY_FILE = "audit-key.json"


def load_audit_key(state_dir: Path) -> bytes:
    """The key of the audit chain's HMAC (audit/log.py), never stored in the metadata DB.

    Its own key, not the hash key: pseudonyms may be shared with someone who verifies
    them, the audit key never is. Read from `TIDEGATE__SECRETS__AUDIT_KEY` when set
    (deployments keep it in a secret store, away from the metadata database); otherwise
    created once in `.tidegate/audit-key.json` (mode 0600). Whoever can write the
    metadata database but not read this key cannot write a record `audit verify`
    accepts."""
    from_env = os.environ.get(ENV_AUDIT_KEY)
    if from_env:
        return from_env.encode("utf-8")
    path = state_dir / AUDIT_KEY_FILE
    if path.exists():
        return bytes.fromhex(json.loads(path.read_text())["audit_key"])
    private_dir(state_dir)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process is creating it: use theirs
        return _read_when_written(path)
    with os.fdopen(fd, "w") as handle:
        json.dump({"audit_key": key.hex()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def _read_when_written(path: Path) -> bytes:
    import time

    for _ in range(100):
        try:
            return bytes.fromhex(json.loads(path.read_text())["audit_key"])
        except (ValueError, KeyError):
            time.sleep(0.02)
    return bytes.fromhex(json.loads(path.read_text())["audit_key"])
