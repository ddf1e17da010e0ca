"""CloudEvents 1.0 (structured JSON mode) for synced rows.

The event id is derived from (sync, key, row content), so a row resent after a crash
carries the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tidegate.timestamps import now_timestamp

SPEC_VERSION = "1.0"


def row_event(sync: str, source: str, mode: str, key: str, row: dict[str, Any]) -> bytes:
    data = json.dumps(row, sort_keys=True, default=str, separators=(",", ":"))
    event_id = hashlib.sha256(f"{sync}\n{key}\n{data}".encode()).hexdigest()[:32]
    event = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source,
        "type": f"dev.tidegate.sync.row.{'inserted' if mode == 'insert' else 'upserted'}",
        "subject": key,
        "time": now_timestamp(),
        "datacontenttype": "application/json",
        "data": json.loads(data),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def event_data(value: bytes) -> dict[str, Any]:
    event = json.loads(value)
    data: dict[str, Any] = event["data"]
    return data
