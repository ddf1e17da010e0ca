"""1,000 generated malformed events: each dead-lettered with a reason, the rest goes on."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from tidegate.ingest.deadletters import DeadLetterStore
from tidegate.ingest.intake import open_intake
from tidegate.log.base import Message
from tidegate.platform import Platform
from tidegate.runtime.worker import process_batch

KINDS = {
    "malformed JSON": lambda i: b'{"event_id": "x' + str(i).encode(),
    "is not an integer": lambda i: json.dumps(
        {"event_id": f"bad{i}", "customer_id": "seven", "url": "/"}
    ).encode(),
    "missing event id column": lambda i: json.dumps({"customer_id": 1, "url": "/"}).encode(),
    "more than max_event_bytes": lambda i: json.dumps(
        {"event_id": f"big{i}", "customer_id": 1, "url": "/" + "x" * 3000}
    ).encode(),
    "must be a JSON object": lambda i: json.dumps([i]).encode(),
    "is not an ISO 8601 timestamp": lambda i: json.dumps(
        {"event_id": f"t{i}", "customer_id": 1, "occurred_at": "not a time"}
    ).encode(),
    "empty event": lambda i: None,
}


def test_a_thousand_malformed_events_are_all_dead_lettered(built_stream_project: Path) -> None:
    rng = random.Random(3)
    kinds = list(KINDS)
    messages, expected = [], Counter[str]()
    good = 0
    for i in range(3_000):
        if i % 3 == 0:
            kind = rng.choice(kinds)
            expected[kind] += 1
            messages.append(Message(b"k", KINDS[kind](i)))
        else:
            good += 1
            body = {"event_id": f"ok{i}", "customer_id": rng.randint(1, 50), "url": "/p"}
            messages.append(Message(str(body["customer_id"]).encode(), json.dumps(body).encode()))
    assert sum(expected.values()) == 1_000
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        intake.log.append("clicks", messages)
        consumer = intake.log.consumer("g", ["clicks"])
        reports = []
        while records := consumer.poll(700, 0.2):  # several micro-batches
            reports.append(process_batch(platform, records))
            consumer.commit()
        consumer.close()
        intake.close()
        assert sum(r.dead for r in reports) == 1_000
        assert sum(r.applied for r in reports) == good
        with platform.warehouse.cursor() as db:
            assert db.execute('SELECT count(*) FROM raw."clicks"').fetchall() == [(good,)]
            total = db.execute('SELECT sum(click_count) FROM products."customer_orders"').fetchall()
        assert total == [(good,)]
    store = DeadLetterStore(built_stream_project / ".tidegate" / "metadata.db")
    letters = store.list(limit=5_000)
    store.close()
    assert len(letters) == 1_000
    found = Counter[str]()
    for letter in letters:
        matches = [k for k in kinds if k in letter.reason]
        assert len(matches) == 1, letter.reason
        found[matches[0]] += 1
        assert letter.source == "clicks"
        assert letter.offset is not None
    assert found == expected
