"""The event log: an embedded SQLite backend and Apache Kafka, one contract."""

from tidegate.log.base import (
    Consumer,
    EventLog,
    LogCapabilities,
    Message,
    Record,
    TopicPartition,
    TopicSpec,
    open_event_log,
)

__all__ = [
    "Consumer",
    "EventLog",
    "LogCapabilities",
    "Message",
    "Record",
    "TopicPartition",
    "TopicSpec",
    "open_event_log",
]
