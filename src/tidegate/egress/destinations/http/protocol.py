"""What tidegate sends to an HTTP destination, and how it reads the answer.

Request: `POST url` (or `delete_url`) with `Content-Type: application/json`, an
`Idempotency-Key` header (a digest of the batch, so a resent batch has the same key)
and the auth header, body::

    {"sync": "crm", "operation": "upsert", "key": "customer_id", "rows": [{...}, ...]}
    {"sync": "crm", "operation": "delete", "key": "customer_id", "keys": [1, 2]}

Answer:

| status | meaning |
| --- | --- |
| 2xx | the batch landed, except rows named in `{"errors": [{"index": 3, "message": "..."}]}` |
| 429 | slow down: retried after `Retry-After` seconds (or the backoff) |
| 408, 5xx, timeouts, resets | transient: retried with exponential backoff and jitter |
| other 4xx | the whole batch is refused: terminal, with the body's message |

A row error may name its row by `"key"` instead of `"index"`.

A 2xx answer may also say what it did with the rows that landed, so the run's counts
are the destination's own: `"updated": [...]` the rows it already held, `"missing":
[...]` the rows an `update` did not find (nothing written for them), each entry a row
index or `{"index": 3}` / `{"key": "42"}`. Without them, tidegate counts a row as
updated when it sent that key before, as inserted otherwise.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from typing import Any


def body(sync: str, operation: str, key: str, items: list[Any]) -> bytes:
    field = "keys" if operation == "delete" else "rows"
    payload = {"sync": sync, "operation": operation, "key": key, field: items}
    return json.dumps(payload, default=str, separators=(",", ":")).encode()


def idempotency_key(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:40]


def retry_after(header: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(text: str, status: int) -> str:
    """The destination's own words: `error.message`, `message`, `error`, or the raw body."""
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text.strip()[:500] or 'no body'}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and "message" in error:
            return f"HTTP {status}: {error['message']}"
        for name in ("message", "error", "detail"):
            if isinstance(data.get(name), str):
                return f"HTTP {status}: {data[name]}"
    return f"HTTP {status}: {text.strip()[:500]}"


def _indexes(items: Any, keys: list[str]) -> set[int] | None:
    if not isinstance(items, list):
        return None
    index_of = {k: i for i, k in enumerate(keys)}
    found: set[int] = set()
    for item in items:
        index = item if isinstance(item, int) and not isinstance(item, bool) else None
        if isinstance(item, dict):
            index = item.get("index") if isinstance(item.get("index"), int) else None
            if index is None and "key" in item:
                index = index_of.get(str(item["key"]))
        if index is not None and 0 <= index < len(keys):
            found.add(index)
    return found


def outcome(text: str, keys: list[str]) -> tuple[set[int], set[int]] | None:
    """(updated, missing) row indexes from a 2xx body, or None when it does not say."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    updated = _indexes(data.get("updated"), keys)
    missing = _indexes(data.get("missing"), keys)
    if updated is None and missing is None:
        return None
    return updated or set(), missing or set()


def row_errors(text: str, keys: list[str]) -> dict[int, str]:
    """Per-row errors from a 2xx body, by row index in the batch."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return {}
    index_of = {k: i for i, k in enumerate(keys)}
    found: dict[int, str] = {}
    for item in errors:
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        if not isinstance(index, int) and "key" in item:
            index = index_of.get(str(item["key"]))
        if isinstance(index, int) and 0 <= index < len(keys):
            found[index] = str(item.get("message") or item.get("error") or "rejected")
    return found
