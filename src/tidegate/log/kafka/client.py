"""The event log on Apache Kafka (confluent-kafka / librdkafka).

Kafka already is this contract: topics with partitions, keyed partitioning, consumer
groups with committed offsets. What this module adds is the small surface of the
contract: appends wait for the broker's acknowledgement (`acks=all`, idempotent
producer), consumers never auto-commit, and commits are synchronous so a commit that
returns is durable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tidegate.errors import CommitFailedError, LogError, ServiceUnavailableError
from tidegate.extras import require
from tidegate.log.base import (
    Consumer,
    EventLog,
    LogCapabilities,
    Message,
    Record,
    TopicPartition,
    TopicSpec,
    namespaced,
)

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 3
TIMEOUT = 30.0
#: the longest a fetch waits on the broker for records (librdkafka default: 500 ms)
FETCH_WAIT_MS = 10
#: librdkafka error names that mean "this member lost the partitions": redelivery follows
_REBALANCED = {
    "ILLEGAL_GENERATION",
    "UNKNOWN_MEMBER_ID",
    "REBALANCE_IN_PROGRESS",
    "_ASSIGNMENT_LOST",
}


class KafkaEventLog(EventLog):
    kind = "kafka"
    capabilities = LogCapabilities(client_side_retention=False, multi_process_groups=True)

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        retention_seconds: float | None = None,
        client: Mapping[str, Any] | None = None,
        namespace: str = "",
    ) -> None:
        require("kafka", "confluent_kafka")  # names the extra when it is missing
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.default_partitions = partitions
        self.retention_seconds = retention_seconds
        self.client = dict(client or {})
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._admin: Any = None
        self._producer: Any = None
        self._sender: Any = None  # `send`'s producer: delivery reports for failures only
        self._meta: Any = None
        self._send_errors: list[str] = []  # failed deliveries of `send`, until `flush`

    @classmethod
    def from_config(cls, config: Any, root: Any) -> KafkaEventLog:
        from tidegate.project.models import parse_duration

        retention = config.retention
        return cls(
            config.bootstrap,
            partitions=config.partitions,
            retention_seconds=parse_duration(retention).total_seconds() if retention else None,
            client=config.client,
            namespace=config.namespace,
        )

    def _config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.client, **extra}

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        with self._lock:
            if self._admin is None:
                self._admin = AdminClient(self._config())
            return self._admin

    def _metadata_consumer(self) -> Any:
        from confluent_kafka import Consumer as RawConsumer

        with self._lock:
            if self._meta is None:
                self._meta = RawConsumer(
                    self._config(**{"group.id": f"tidegate-meta-{uuid.uuid4().hex[:8]}"})
                )
            return self._meta

    # ---------------------------------------------------------------- topics

    def create_topic(self, spec: TopicSpec) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import admin as kafka_admin

        config = {k: str(v) for k, v in spec.extra.items()}
        if spec.retention_seconds is not None:
            config["retention.ms"] = str(int(spec.retention_seconds * 1000))
        if spec.retention_bytes is not None:
            config["retention.bytes"] = str(spec.retention_bytes)
        new_topic = kafka_admin.NewTopic  # type: ignore[attr-defined]
        topic = new_topic(
            spec.name, num_partitions=spec.partitions, replication_factor=1, config=config
        )
        future = self.admin().create_topics([topic])[spec.name]
        try:
            future.result(TIMEOUT)
        except KafkaException as err:
            if err.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise _unavailable(f"cannot create topic {spec.name!r}", err) from None
        self._known.add(spec.name)

    def _ensure(self, topic: str) -> None:
        if topic not in self._known:
            self.create_topic(TopicSpec(topic, self.default_partitions, self.retention_seconds))

    def partitions(self, topic: str) -> int:
        found = self._topic_metadata(topic)
        if found is None or found.error is not None:
            raise LogError(f"no topic {topic!r} on Kafka at {self.bootstrap}")
        return len(found.partitions)

    def has_topic(self, topic: str) -> bool:
        found = self._topic_metadata(topic)
        return found is not None and found.error is None

    def _topic_metadata(self, topic: str) -> Any:
        """The topic's metadata, or None. A metadata request naming a topic makes a broker
        with `auto.create.topics.enable` create it with the broker's defaults, so a topic
        this client did not create or see is looked up in the full listing instead: asking
        whether a change stream exists (an erasure does) must not create it."""
        if topic in self._known:
            return self.admin().list_topics(topic, timeout=TIMEOUT).topics.get(topic)
        found = self.admin().list_topics(timeout=TIMEOUT).topics.get(topic)
        if found is not None and found.error is None:
            self._known.add(topic)
        return found

    def delete_topic(self, topic: str) -> None:
        from confluent_kafka import KafkaException

        try:
            self.admin().delete_topics([topic])[topic].result(TIMEOUT)
        except KafkaException as err:
            if err.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise _unavailable(f"cannot delete topic {topic!r}", err) from None
        self._known.discard(topic)

    def retention(self, topic: str) -> dict[str, str]:
        """The topic's retention settings as the broker holds them (records stay until
        the segment holding them is past `retention.ms` or `retention.bytes`, and a
        segment is closed only after `segment.ms` or `segment.bytes`)."""
        return topic_settings(self.admin(), topic, RETENTION_SETTINGS)

    # ---------------------------------------------------------------- produce

    def _producer_client(self) -> Any:
        from confluent_kafka import Producer

        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    self._config(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
                )
            return self._producer

    def _sender_client(self) -> Any:
        """The producer of `send` (the change stream: not waited for). librdkafka reports
        only its failed deliveries (`delivery.report.only.error`), through the producer's
        own callback: a micro-batch's 10,000 keys then cost no 10,000 Python callbacks
        on the worker's thread (measured: a flush of 10,000 sends took 17-21 ms of CPU
        with a report per message, 6-10 ms with failures only). `append` keeps its own
        producer, whose per-message reports say where each record landed."""
        from confluent_kafka import Producer

        with self._lock:
            if self._sender is None:
                self._sender = Producer(
                    self._config(
                        **{
                            "enable.idempotence": True,
                            "acks": "all",
                            "linger.ms": 5,
                            "delivery.report.only.error": True,
                            "on_delivery": self._sent,
                        }
                    )
                )
            return self._sender

    def prepare_append(self, topics: Iterable[str]) -> None:
        """Create the missing topics and connect the producer to their leaders now: the
        first flush to a topic created a moment earlier waits 0.5 to 1 s (measured on a
        local broker) while the same flush a few seconds later takes milliseconds."""
        names = sorted(set(topics))
        for topic in names:
            self._ensure(topic)
        if names:
            for producer in (self._producer_client(), self._sender_client()):
                for topic in names:
                    producer.list_topics(topic, timeout=TIMEOUT)

    def send(self, topic: str, messages: Sequence[Message]) -> None:
        """Hand the messages to the producer and return: librdkafka's threads send them
        and collect the acknowledgements while the caller goes on (the stream worker
        sends a batch's change stream, then polls and decodes the next batch)."""
        if not messages:
            return
        self._ensure(topic)
        producer = self._sender_client()
        if any(m.headers for m in messages):  # produce_batch cannot carry headers
            left = list(messages)
        else:  # one call for the batch (partitioned by key as `produce` does): ~2x faster
            batch = [{"key": m.key, "value": m.value} for m in messages]
            queued = producer.produce_batch(topic, batch)
            left = (
                [m for m, b in zip(messages, batch, strict=True) if "_error" in b]
                if queued < len(batch)
                else []
            )
        for message in left:  # one by one, waiting while the local queue is full
            _produce(producer, topic, message, None)
        producer.poll(0)  # serve the callbacks of what was acknowledged meanwhile

    def _sent(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._send_errors.append(f"{msg.topic()}: {err}")

    def flush(self) -> None:
        producer = self._sender
        if producer is None:
            return
        remaining = producer.flush(TIMEOUT)
        errors, self._send_errors = self._send_errors, []
        if remaining or errors:
            raise ServiceUnavailableError(
                f"Kafka at {self.bootstrap} did not acknowledge {remaining + len(errors)} "
                "records sent" + (f": {errors[0]}" if errors else " in time")
            )

    def append(self, topic: str, messages: Sequence[Message]) -> list[TopicPartition]:
        if not messages:
            return []
        self._ensure(topic)
        producer = self._producer_client()
        placed: list[int] = [-1] * len(messages)
        errors: list[str] = []

        def delivered(index: int) -> Any:
            def callback(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    placed[index] = msg.partition()

            return callback

        for index, message in enumerate(messages):
            _produce(producer, topic, message, delivered(index))
        remaining = producer.flush(TIMEOUT)
        if remaining or errors:
            raise ServiceUnavailableError(
                f"Kafka at {self.bootstrap} did not acknowledge {remaining + len(errors)} of "
                f"{len(messages)} records for {topic!r}"
                + (f": {errors[0]}" if errors else " in time")
            )
        return [(topic, partition) for partition in placed]

    # ---------------------------------------------------------------- consume

    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        session_timeout: float = 10.0,
        instance_id: str | None = None,
    ) -> Consumer:
        names = sorted(set(topics))
        for name in names:
            self._ensure(name)
        group = namespaced(self.namespace, group)
        return KafkaConsumer(self, group, names, session_timeout, instance_id)

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        from confluent_kafka import Consumer as RawConsumer
        from confluent_kafka import TopicPartition as KafkaTP

        high = self.end_offsets(topic).get(partition, 0)
        raw = RawConsumer(
            self._config(
                **{
                    "group.id": f"tidegate-replay-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        found: list[Record] = []
        try:
            raw.assign([KafkaTP(topic, partition, offset)])
            idle = 0
            while len(found) < max_records and (not found or found[-1].offset + 1 < high):
                messages = raw.consume(num_messages=max_records - len(found), timeout=1.0)
                if not messages:
                    idle += 1
                    if idle > 10 or offset >= high:
                        break
                    continue
                found.extend(_records([m for m in messages if m.error() is None]))
        finally:
            raw.close()
        return found

    def end_offsets(self, topic: str) -> dict[int, int]:
        from confluent_kafka import TopicPartition as KafkaTP

        meta = self._metadata_consumer()
        offsets = {}
        for partition in range(self.partitions(topic)):
            _, high = meta.get_watermark_offsets(KafkaTP(topic, partition), timeout=TIMEOUT)
            offsets[partition] = int(high)
        return offsets

    def committed(self, group: str, topic: str) -> dict[int, int]:
        from confluent_kafka import Consumer as RawConsumer
        from confluent_kafka import TopicPartition as KafkaTP

        group = namespaced(self.namespace, group)
        raw = RawConsumer(self._config(**{"group.id": group, "enable.auto.commit": False}))
        try:
            wanted = [KafkaTP(topic, p) for p in range(self.partitions(topic))]
            result = _committed(raw, wanted, group)
        finally:
            raw.close()
        return {tp.partition: int(tp.offset) for tp in result if tp.offset >= 0}

    def close(self) -> None:
        with self._lock:
            for producer in (self._producer, self._sender):
                if producer is not None:
                    producer.flush(TIMEOUT)
            self._producer = self._sender = None
            if self._meta is not None:
                self._meta.close()
                self._meta = None


#: what decides how long a record stays in a topic (delete and compact policies)
RETENTION_SETTINGS = (
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.ms",
    "segment.bytes",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
)


def topic_settings(admin: Any, topic: str, names: Sequence[str]) -> dict[str, str]:
    """Settings of `topic` by name (broker defaults included), or {} when the broker
    cannot say (the caller reports what it knows)."""
    from confluent_kafka import KafkaException
    from confluent_kafka import admin as kafka_admin

    resource_type = kafka_admin.ResourceType  # type: ignore[attr-defined]
    resource = kafka_admin.ConfigResource(resource_type.TOPIC, topic)  # type: ignore[attr-defined]
    try:
        entries = admin.describe_configs([resource])[resource].result(TIMEOUT)
    except KafkaException:
        return {}
    return {n: str(entries[n].value) for n in names if n in entries}


def _produce(producer: Any, topic: str, message: Message, on_delivery: Any) -> None:
    """Queue one message, waiting (serving callbacks) while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(
                topic,
                key=message.key,
                value=message.value,
                headers=list(message.headers) or None,
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(0.05)


def _committed(raw: Any, wanted: list[Any], group: str) -> Any:
    """The group's committed offsets, asked again while the broker answers that its
    coordinator moved or is loading (a broker restarting, a coordinator failing over):
    Kafka's own clients retry those; past TIMEOUT, a ServiceUnavailableError."""
    from confluent_kafka import KafkaError, KafkaException

    transient = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return raw.committed(wanted, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as err:
            error = err.args[0] if err.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in transient or time.monotonic() >= deadline:
                raise _unavailable(f"committed offsets of group {group!r}", err) from err
        time.sleep(0.2)


def _records(messages: list[Any]) -> list[Record]:
    """Records of the messages, built in one comprehension with `tuple.__new__` (a
    NamedTuple's own `__new__` is a Python function): a micro-batch converts 50,000 of
    them on the worker's thread, and this was most of the time it spent outside a
    batch (about 2.5 µs a record)."""
    new = tuple.__new__
    return [
        new(
            Record,
            (
                m.topic(),
                m.partition(),
                m.offset(),
                m.key(),
                m.value(),
                tuple((str(k), bytes(v or b"")) for k, v in h) if (h := m.headers()) else (),
                ts / 1000.0 if (ts := m.timestamp()[1]) > 0 else 0.0,
            ),
        )
        for m in messages
    ]


def _unavailable(what: str, err: Any) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"{what}: {err}")


class KafkaConsumer(Consumer):
    def __init__(
        self,
        owner: KafkaEventLog,
        group: str,
        topics: list[str],
        session_timeout: float,
        instance_id: str | None = None,
    ) -> None:
        """With `instance_id`, static group membership (KIP-345, `group.instance.id`): a
        worker restarted under the same id gets its partitions back without a rebalance
        and without waiting for the session timeout; it also leaves no gap when it stops
        and comes back within the timeout."""
        require("kafka", "confluent_kafka")  # names the extra when it is missing
        from confluent_kafka import Consumer as RawConsumer

        session_ms = max(6000, int(session_timeout * 1000))
        static = {"group.instance.id": instance_id} if instance_id else {}
        self.group = group
        self._positions: dict[TopicPartition, int] = {}
        self._owned: set[TopicPartition] = set()
        self._settings = owner._config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(1000, session_ms // 3),
                "partition.assignment.strategy": "roundrobin",
                # a topic created after the subscription (a new source, a first event)
                # is seen within seconds, not at librdkafka's default 5-minute refresh
                "topic.metadata.refresh.interval.ms": 3000,
                # the broker answers a fetch as soon as one byte is there, and an empty one
                # after 10 ms instead of 500: new records are not held by a waiting fetch
                "fetch.min.bytes": 1,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                **static,
            }
        )
        self._topics = list(topics)
        self._raw = RawConsumer(self._settings)
        self._raw.subscribe(self._topics, on_assign=self._assigned, on_revoke=self._revoked)
        self._closed = False

    def _renew(self, why: Any) -> None:
        """Replace a consumer librdkafka declared fatally failed (e.g. a static member
        fenced after a broker restart: its own rejoin took the instance id over). A fatal
        consumer never recovers by itself; a new one under the same group (and instance
        id) rejoins and resumes from the committed offsets, so uncommitted records are
        delivered again, as after any rebalance."""
        from confluent_kafka import Consumer as RawConsumer
        from confluent_kafka import KafkaException

        log.warning(
            "Kafka consumer of group %s failed fatally (%s); starting a new one", self.group, why
        )
        old, self._raw = self._raw, RawConsumer(self._settings)
        try:
            old.close()
        except (KafkaException, RuntimeError) as err:  # a fatal handle may refuse to close
            log.debug("closing the failed consumer: %s", err)
        self._owned.clear()
        self._positions.clear()
        self._raw.subscribe(self._topics, on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self._owned |= {(tp.topic, tp.partition) for tp in partitions}

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._owned.discard(key)
            self._positions.pop(key, None)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        if self._closed:
            raise LogError("poll on a closed consumer")
        # `consume(n, timeout)` waits until n messages or the timeout, whichever comes
        # first: under a steady stream that is always the timeout, added to every record's
        # latency. So take what librdkafka already fetched without waiting, and block only
        # while nothing is there, for the first message.
        messages = self._raw.consume(num_messages=max_records, timeout=0)
        if not messages and timeout > 0:
            first = self._raw.poll(timeout)
            if first is not None:
                messages = [first]
                if max_records > 1:
                    messages += self._raw.consume(num_messages=max_records - 1, timeout=0)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
                continue
            if error.fatal():
                self._renew(error)
                return []
            if error.name() != "_PARTITION_EOF":
                log.warning("Kafka consumer of group %s: %s", self.group, error)
        found = _records(good)
        self._positions.update({(r[0], r[1]): r[2] + 1 for r in found})  # the last wins
        return found

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as KafkaTP

        wanted = dict(self._positions if offsets is None else offsets)
        if not wanted:
            return
        try:
            self._raw.commit(
                offsets=[KafkaTP(t, p, int(o)) for (t, p), o in sorted(wanted.items())],
                asynchronous=False,
            )
        except KafkaException as err:
            name = err.args[0].name()
            if err.args[0].fatal() or name == "_FATAL":
                self._renew(err.args[0])
                raise CommitFailedError(
                    f"group {self.group!r}: the consumer failed fatally ({name}) and was "
                    "replaced; the records will be delivered again"
                ) from None
            if name in _REBALANCED:
                raise CommitFailedError(
                    f"group {self.group!r} rebalanced ({name}); the records will be delivered "
                    "again to the partitions' new owner"
                ) from None
            raise _unavailable(f"commit for group {self.group!r} failed", err) from None

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._raw.assignment()}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._raw.close()
