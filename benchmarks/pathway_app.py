"""The Pathway side of the `freshness` benchmark, run in its own venv.

Reads one JSON object on stdin: {"bootstrap", "topic", "group", "sqlite",
"autocommit_duration_ms"}. Reads the topic with `pw.io.kafka.read` (JSON values), counts
events and sums amounts per customer (`groupby().reduce()`), and writes the changed rows
of each closed time step into a SQLite table `counts(customer_id PRIMARY KEY, events,
amount)` in one transaction: `pw.io.subscribe` collects the step's changes and
`on_time_end` commits them, which is the "sink at the end of each time step" Pathway's
output connectors implement. `autocommit_duration_ms` (10 ms, as Pathway's docs advise
for latency) bounds how long an input batch stays open. Runs until SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from typing import Any

import pathway as pw


class Event(pw.Schema):
    customer_id: int
    amount: float


class SqliteSink:
    """Rows changed in the current time step, written at its end in one transaction."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS counts (customer_id INTEGER PRIMARY KEY,"
            " events INTEGER, amount REAL)"
        )
        self.rows: dict[int, tuple[int, int, float] | None] = {}

    def on_change(self, key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        customer = int(row["customer_id"])
        if is_addition:
            self.rows[customer] = (customer, int(row["events"]), float(row["amount"]))
        else:
            self.rows.setdefault(customer, None)  # retraction; an addition in the step wins

    def on_time_end(self, time: int) -> None:
        if not self.rows:
            return
        upserts = [row for row in self.rows.values() if row is not None]
        deletes = [(c,) for c, row in self.rows.items() if row is None]
        self.rows = {}
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?, ?)", upserts)
        self.db.executemany("DELETE FROM counts WHERE customer_id = ?", deletes)
        self.db.execute("COMMIT")


def main() -> None:
    config = json.loads(sys.stdin.read())
    events = pw.io.kafka.read(
        {
            "bootstrap.servers": config["bootstrap"],
            "group.id": config["group"],
            "auto.offset.reset": "earliest",
            "session.timeout.ms": "6000",
        },
        topic=config["topic"],
        format="json",
        schema=Event,
        autocommit_duration_ms=config["autocommit_duration_ms"],
    )
    counts = events.groupby(pw.this.customer_id).reduce(
        pw.this.customer_id,
        events=pw.reducers.count(),
        amount=pw.reducers.sum(pw.this.amount),
    )
    sink = SqliteSink(config["sqlite"])
    pw.io.subscribe(counts, on_change=sink.on_change, on_time_end=sink.on_time_end)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"started": True}), flush=True)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)


if __name__ == "__main__":
    main()
