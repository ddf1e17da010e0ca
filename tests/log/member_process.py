"""A consumer-group member in its own process, for the conformance suite's kill -9 test.

Usage: python member_process.py KIND TARGET GROUP TOPIC SESSION_SECONDS [INSTANCE_ID]

Joins GROUP, prints `ready <partitions>` once it owns partitions, then keeps polling
(and never commits) until it is killed.
"""

from __future__ import annotations

import sys

from tidegate.log.base import EventLog


def open_log(kind: str, target: str) -> EventLog:
    if kind == "sqlite":
        from tidegate.log.sqlite import SqliteEventLog

        return SqliteEventLog(target)
    from tidegate.log.kafka import KafkaEventLog

    return KafkaEventLog(target)


def main() -> None:
    kind, target, group, topic, session = sys.argv[1:6]
    instance = sys.argv[6] if len(sys.argv) > 6 else None
    event_log = open_log(kind, target)
    consumer = event_log.consumer(
        group, [topic], session_timeout=float(session), instance_id=instance
    )
    announced = False
    while True:
        records = consumer.poll(100, 0.2)
        owned = consumer.assignment()
        if owned and not announced:
            print("ready", sorted(p for _, p in owned), flush=True)
            announced = True
        if records:
            print("got", len(records), flush=True)


if __name__ == "__main__":
    main()
