"""Kafka destination: keyed change events (CloudEvents JSON), deletes as tombstones.

The producer is idempotent (`enable.idempotence`, `acks=all`), so the broker drops
duplicates of a retried send within a session; the topic is created compacted when
missing, so the latest event per key (or its tombstone) is what the topic holds.
A Kafka topic is append-only: an insert is one more event (`unique_keys` is false),
and `update` (which needs to know what exists) is not offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    RowErrors,
    register,
    setting,
)
from tidegate.egress.destinations.kafka.events import event_data, row_event
from tidegate.errors import (
    ServiceUnavailableError,
    TerminalDestinationError,
    TransientDestinationError,
)
from tidegate.extras import require

FLUSH_SECONDS = 60.0


def _key_text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@register
class KafkaDestination(Destination):
    kind: ClassVar[str] = "kafka"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True,
        supports_delete=True,
        max_batch_rows=10_000,
        modes=("insert", "upsert"),
        unique_keys=False,
        delete_keeps_history=True,
    )

    def __init__(
        self, bootstrap: str, topic: str, partitions: int = 3, source: str | None = None
    ) -> None:
        require("kafka", "confluent_kafka")  # names the extra when it is missing
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.source = source
        self.key = ""
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": int(FLUSH_SECONDS * 1000),
            }
        )

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> KafkaDestination:
        bootstrap = setting(config.bootstrap, config.bootstrap_env, "Kafka destination")
        return cls(bootstrap, config.topic, config.partitions, config.source)

    def open(self, columns: dict[str, str], key: str) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        self.key = key
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            existing = admin.list_topics(timeout=15).topics
        except KafkaException as err:
            raise ServiceUnavailableError(
                f"cannot reach Kafka at {self.bootstrap}: {err}"
            ) from None
        if self.topic in existing:
            return
        futures = admin.create_topics(
            [
                NewTopic(
                    self.topic,
                    num_partitions=self.partitions,
                    replication_factor=1,
                    config={"cleanup.policy": "compact"},
                )
            ]
        )
        try:
            futures[self.topic].result(30)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise TransientDestinationError(
                    f"Kafka: cannot create {self.topic}: {err}"
                ) from None

    def _event_source(self) -> str:
        return self.source or f"tidegate/sync/{self.sync_name or 'unnamed'}"

    def _send(self, messages: list[tuple[str, bytes | None]]) -> None:
        """Produce and wait for every delivery report; typed errors per message."""
        from confluent_kafka import KafkaException

        failed: dict[int, Any] = {}

        def report(index: int) -> Any:
            def callback(err: Any, _msg: Any) -> None:
                if err is not None:
                    failed[index] = err

            return callback

        try:
            for index, (key, value) in enumerate(messages):
                while True:
                    try:
                        self._producer.produce(
                            self.topic, key=key.encode(), value=value, on_delivery=report(index)
                        )
                        break
                    except BufferError:
                        self._producer.poll(0.1)
            remaining = self._producer.flush(FLUSH_SECONDS)
        except KafkaException as err:
            raise TransientDestinationError(f"Kafka: {err}") from None
        if remaining:
            raise TransientDestinationError(
                f"Kafka: {remaining} messages not acknowledged within {FLUSH_SECONDS:.0f}s"
            )
        if not failed:
            return
        if any(err.retriable() or err.fatal() for err in failed.values()):
            first = next(iter(failed.values()))
            raise TransientDestinationError(f"Kafka: {first.str()}")
        raise RowErrors({i: f"Kafka: {err.str()}" for i, err in failed.items()})

    def write(self, batch: Any, mode: str) -> int:
        if mode not in self.capabilities.modes:
            raise TerminalDestinationError(
                f"Kafka destination: mode {mode!r} is not supported (a topic cannot tell which "
                f"keys exist); use one of {', '.join(self.capabilities.modes)}"
            )
        source = self._event_source()
        messages: list[tuple[str, bytes | None]] = []
        for row in batch.to_pylist():
            key = _key_text(row[self.key])
            messages.append((key, row_event(self.sync_name, source, mode, key, row)))
        self._send(messages)
        return len(messages)

    def delete(self, keys: list[Any]) -> int:
        self._send([(_key_text(k), None) for k in keys])
        return len(keys)

    def read_all(self) -> list[dict[str, Any]]:
        """Consume the topic from the beginning and fold it: latest event per key wins,
        a tombstone removes the key."""
        import uuid

        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"tidegate-read-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            meta = consumer.list_topics(self.topic, timeout=15).topics[self.topic]
            ends: dict[int, int] = {}
            for partition in meta.partitions:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=15
                )
                if high > 0:
                    ends[partition] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(ends)])
            held: dict[str, dict[str, Any]] = {}
            done: set[int] = set()
            while len(done) < len(ends):
                message = consumer.poll(5.0)
                if message is None:
                    raise TransientDestinationError(f"Kafka: reading {self.topic} timed out")
                if message.error():
                    continue
                raw_key, value = message.key(), message.value()
                partition, offset = message.partition() or 0, message.offset() or 0
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                if value is None:
                    held.pop(key, None)
                else:
                    held[key] = event_data(value)
                if offset + 1 >= ends[partition]:
                    done.add(partition)
            return list(held.values())
        finally:
            consumer.close()

    def close(self) -> None:
        self._producer.flush(FLUSH_SECONDS)

    def describe(self) -> str:
        return f"kafka:{self.topic}"

    def retention(self) -> dict[str, str]:
        """A compacted topic keeps the old record beside its tombstone until the log
        cleaner compacts the segment holding both: not before that segment is closed
        (`segment.ms`/`segment.bytes`) and the record is `min.compaction.lag.ms` old;
        the tombstone itself stays `delete.retention.ms` after that."""
        from confluent_kafka.admin import AdminClient

        from tidegate.log.kafka.client import RETENTION_SETTINGS, topic_settings

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return topic_settings(admin, self.topic, RETENTION_SETTINGS)
