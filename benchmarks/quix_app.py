"""The Quix Streams side of the `freshness` benchmark, run in its own venv.

Reads one JSON object on stdin: {"bootstrap", "topic", "group", "sqlite", "state_dir",
"commit_interval"}. Counts events and sums amounts per customer (keyed topic, state in
Quix's default RocksDB store), and sinks each updated count into a SQLite table
`counts(customer_id PRIMARY KEY, events, amount)` through a BatchingSink, flushed at
every checkpoint (`commit_interval`), as the Quix docs describe sinks. Runs until
SIGTERM/SIGINT (Application.run stops gracefully on both).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import Any

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch


class SqliteSink(BatchingSink):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.db: Any = None

    def setup(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS counts (customer_id INTEGER PRIMARY KEY,"
            " events INTEGER, amount REAL)"
        )

    def write(self, batch: SinkBatch) -> None:
        if self.db is None:
            self.setup()
        rows = [(i.value["customer_id"], i.value["events"], i.value["amount"]) for i in batch]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?, ?)", rows)
        self.db.execute("COMMIT")


def count(value: dict[str, Any], state: Any) -> dict[str, Any]:
    events = state.get("events", 0) + 1
    amount = state.get("amount", 0.0) + float(value.get("amount") or 0.0)
    state.set("events", events)
    state.set("amount", amount)
    return {"customer_id": value["customer_id"], "events": events, "amount": amount}


def main() -> None:
    config = json.loads(sys.stdin.read())
    app = Application(
        broker_address=config["bootstrap"],
        consumer_group=config["group"],
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=config["commit_interval"],
        state_dir=config["state_dir"],
    )
    topic = app.topic(config["topic"], value_deserializer="json", key_deserializer="str")
    sdf = app.dataframe(topic)
    sdf = sdf.apply(count, stateful=True)
    sdf.sink(SqliteSink(config["sqlite"]))
    print(json.dumps({"started": True}), flush=True)
    app.run()


if __name__ == "__main__":
    main()
