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

ENV_HASH_KEY = "TIDEGATE__SECRETS__HASH_KEY"


def load_master_key(state_dir: Path) -> bytes:
    from_env = os.environ.get(ENV_HASH_KEY)
    if from_env:
        return from_env.encode("utf-8")
    path = state_dir / "secrets.json"
    if path.exists():
        return bytes.fromhex(json.loads(path.read_text())["hash_key"])
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"hash_key": key.hex()}, handle)
    return key
