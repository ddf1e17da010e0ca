"""The event log contract, shared by the embedded (SQLite) and the Kafka backends.

The model is Kafka's, kept small:

* a **topic** has a fixed number of **partitions**; a record goes to the partition its
  key hashes to, so records with one key keep their order;
* every record in a partition has an **offset** (0, 1, 2, … never reused, even after
  retention removed old records);
* a **consumer** joins a **group**; the group's live members split the partitions of
  the topics they subscribe to, and a member that closes or stops heart-beating
  (polling) for longer than its session timeout has its partitions taken over;
* the group's **committed offsets** (the next offset to read, per partition) are what
  a new owner of a partition starts from, so records polled but not committed are
  delivered again: at-least-once delivery;
* `read` replays a partition from any offset still retained, outside any group.

Backends register by name (`EventLog.registry`); `open_event_log` picks one from the
project's `backends.log` config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

#: the change stream of a product is the topic `__changes.<product>` (products/changes.py)
CHANGES_PREFIX = "__changes."


def namespaced(namespace: str, name: str) -> str:
    """`name` inside `namespace` (`<namespace>.<name>`; `name` itself without one): how
    several projects or environments share one Kafka cluster without sharing tidegate's own
    topics (the change streams) or consumer groups."""
    return f"{namespace}.{name}" if namespace else name


#: (topic, partition)
TopicPartition = tuple[str, int]
Headers = tuple[tuple[str, bytes], ...]


class Record(NamedTuple):
    """What a consumer reads. A NamedTuple for the reason `Message` is one: a consumer
    builds one per record (50,000 a micro-batch), and a frozen dataclass's `__init__`
    costs several times a tuple's."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: float = 0.0  # seconds since the epoch, when the log accepted it

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Message(NamedTuple):
    """What a producer appends: the log assigns partition, offset and timestamp.

    A NamedTuple, not a frozen dataclass: the HTTP door builds one per event, and a
    tuple is built several times faster (fields, immutability and equality alike)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True)
class LogCapabilities:
    """What a backend can do, as data: code branches on these, never on the backend name."""

    #: `enforce_retention` does the work itself (the broker enforces it for Kafka)
    client_side_retention: bool = False
    #: several processes can consume one group at the same time
    multi_process_groups: bool = True
    max_message_bytes: int = 1 << 20
    #: `erase_records` removes single records (a Kafka topic is append-only: it cannot)
    erases_records: bool = False


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_seconds: float | None = None
    retention_bytes: int | None = None  # per partition
    extra: dict[str, Any] = field(default_factory=dict)


class Consumer(ABC):
    """One member of a consumer group. Not thread-safe: one thread polls and commits."""

    @abstractmethod
    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Up to `max_records` records from the partitions this member owns, waiting at most
        `timeout` seconds for the first one. Polling is also the heartbeat."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit `offsets` (the next offset to read, per partition), or everything polled so
        far when None. Raises CommitFailedError for partitions this member no longer owns."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns now."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group; its partitions go to the other members."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventLog(ABC):
    registry: ClassVar[dict[str, type[EventLog]]] = {}
    kind: ClassVar[str] = ""
    capabilities: ClassVar[LogCapabilities] = LogCapabilities()
    #: prefix of tidegate's own topics and consumer groups on a shared log (`namespaced`);
    #: empty for a log the project has to itself (the embedded one)
    namespace: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            EventLog.registry[cls.kind] = cls

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, root: Any) -> EventLog: ...

    @abstractmethod
    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic if it does not exist (an existing topic is left as it is)."""

    @abstractmethod
    def partitions(self, topic: str) -> int: ...

    def has_topic(self, topic: str) -> bool:
        """Whether the topic exists (a topic never written to may not)."""
        from tidegate.errors import LogError

        try:
            self.partitions(topic)
        except LogError:
            return False
        return True

    @abstractmethod
    def append(self, topic: str, messages: Sequence[Message]) -> list[TopicPartition]:
        """Append durably (the call returns once the log holds them); return where each went,
        as (topic, partition) in input order. Creates the topic with defaults if missing."""

    def prepare_append(self, topics: Iterable[str]) -> None:
        """Get ready to append to `topics` before the first record has to go out. A
        backend whose first append to a new topic is slow (Kafka: creating it, then the
        broker readying the partition for an idempotent producer) does that work here,
        at start-up, rather than in the first micro-batch's latency; by default nothing
        (`append` creates a missing topic cheaply)."""
        del topics

    def send(self, topic: str, messages: Sequence[Message]) -> None:
        """Append without waiting for the log to hold them: `flush()` waits for every
        message sent so, and raises if any could not be written. By default `append`
        itself (the embedded log writes synchronously)."""
        self.append(topic, messages)

    def flush(self) -> None:  # noqa: B027  (nothing to wait for by default)
        """Wait until everything `send` handed over is held by the log; raise
        ServiceUnavailableError if some of it could not be (it is then lost: send again)."""

    @abstractmethod
    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        session_timeout: float = 10.0,
        instance_id: str | None = None,
    ) -> Consumer:
        """Join `group`, subscribed to `topics`; with no committed offset a partition is read
        from its earliest retained record. `instance_id`: a stable name of this worker
        (static membership): a member restarted under the same name takes its partitions
        back at once instead of after the session timeout."""

    @abstractmethod
    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        """Replay: records of one partition from `offset` (or the earliest retained one)."""

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next record will get."""

    @abstractmethod
    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the group's committed offset (partitions without one are absent)."""

    def enforce_retention(self) -> int:
        """Drop records past each topic's retention; return how many (0 when the broker does
        this itself)."""
        return 0

    def erase_records(self, topic: str, match: Callable[[Record], bool]) -> int:
        """Remove, from the file or broker itself, every record of `topic` that `match`
        accepts (an erasure); returns how many. Offsets of the others do not move. Only
        backends whose `capabilities.erases_records` is true can."""
        from tidegate.errors import LogError

        raise LogError(f"the {self.kind} event log cannot erase single records")

    def retention(self, topic: str) -> dict[str, str]:
        """How long the backend keeps records of `topic` (settings by name), for what an
        erasure reports as retained; empty when unknown."""
        return {}

    @abstractmethod
    def delete_topic(self, topic: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_event_log(config: Any, root: Any) -> EventLog:
    """The backend named by `config.type` (`sqlite` or `kafka`)."""
    from tidegate.log import kafka, sqlite  # noqa: F401  (registers the backends)

    cls = EventLog.registry.get(config.type)
    if cls is None:
        from tidegate.errors import LogError

        known = ", ".join(sorted(EventLog.registry))
        raise LogError(f"unknown event log type {config.type!r} (known: {known})")
    return cls.from_config(config, root)
