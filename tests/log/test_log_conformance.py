"""One contract, two backends: the embedded SQLite log and a real Kafka broker.

Each test uses topics and groups of its own. The Kafka parameter needs the broker
started by scripts/services.sh and fails (never skips) without it.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidegate.log.base import Consumer, EventLog, Message, Record, TopicSpec

MEMBER = Path(__file__).with_name("member_process.py")
DEADLINE = 90.0  # generous: only a broken backend ever gets near it


@dataclass
class Backend:
    kind: str
    target: str  # SQLite path or Kafka bootstrap
    log: EventLog
    session: float  # a session timeout this backend accepts
    topics: list[str] = field(default_factory=list)

    def topic(self, partitions: int = 3) -> str:
        name = f"conf-{uuid.uuid4().hex[:10]}"
        self.log.create_topic(TopicSpec(name, partitions))
        self.topics.append(name)
        return name

    def open_log(self) -> EventLog:
        if self.kind == "sqlite":
            from tidegate.log.sqlite import SqliteEventLog

            return SqliteEventLog(self.target)
        from tidegate.log.kafka import KafkaEventLog

        return KafkaEventLog(self.target)


@pytest.fixture(
    params=["sqlite", pytest.param("kafka", marks=pytest.mark.services)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        from tidegate.log.sqlite import SqliteEventLog

        path = str(tmp_path / "log.db")
        found = Backend("sqlite", path, SqliteEventLog(path), session=1.0)
    else:
        from tidegate.log.kafka import KafkaEventLog

        bootstrap = request.getfixturevalue("kafka_bootstrap")
        found = Backend("kafka", bootstrap, KafkaEventLog(bootstrap), session=6.0)
    yield found
    for topic in found.topics:
        found.log.delete_topic(topic)
    found.log.close()


def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def drain(
    consumers: list[Consumer], until: Callable[[], bool], sink: Callable[[int, Record], None]
) -> None:
    """Poll every consumer in turn (each poll is also its heartbeat) until `until()`."""
    deadline = time.monotonic() + DEADLINE
    while not until():
        assert time.monotonic() < deadline, "the log did not deliver in time"
        for index, consumer in enumerate(consumers):
            for record in consumer.poll(200, 0.2):
                sink(index, record)


def keyed(count: int, keys: int, prefix: str = "e") -> list[Message]:
    return [Message(f"k{i % keys}".encode(), f"{prefix}{i}".encode()) for i in range(count)]


def test_per_key_order_holds_across_partitions(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    messages = keyed(90, keys=7)
    placed = []
    for start in range(0, 90, 30):  # several appends: order holds across batches too
        placed += backend.log.append(topic, messages[start : start + 30])
    received: list[Record] = []
    with backend.log.consumer(group(), [topic], session_timeout=backend.session) as consumer:
        drain([consumer], lambda: len(received) >= 90, lambda _, r: received.append(r))
    assert len(received) == 90
    by_value = {r.value: r for r in received}
    for message, (_, partition) in zip(messages, placed, strict=True):
        assert by_value[message.value].partition == partition
        assert by_value[message.value].key == message.key
    for key in {m.key for m in messages}:
        got = [r.value for r in received if r.key == key]
        assert got == [m.value for m in messages if m.key == key]
        assert len({r.partition for r in received if r.key == key}) == 1


def test_sent_messages_land_as_appended_ones_once_flushed(backend: Backend) -> None:
    """`send` (the worker's change stream: not waited for) then `flush`: the same records,
    in the same partitions and per-key order, as `append` gives."""
    topic = backend.topic(partitions=3)
    messages = keyed(60, keys=7)
    placed = backend.log.append(topic, messages)
    sent = [Message(m.key, b"sent-" + (m.value or b"")) for m in messages]
    backend.log.send(topic, sent[:30])
    backend.log.send(topic, sent[30:])
    backend.log.flush()
    received: list[Record] = []
    with backend.log.consumer(group(), [topic], session_timeout=backend.session) as consumer:
        drain([consumer], lambda: len(received) >= 120, lambda _, r: received.append(r))
    by_value = {r.value: r for r in received}
    for message, (_, partition) in zip(sent, placed, strict=True):
        assert by_value[message.value].partition == partition
    for key in {m.key for m in messages}:
        got = [r.value for r in received if r.key == key and r.value.startswith(b"sent-")]
        assert got == [m.value for m in sent if m.key == key]


def test_sent_messages_keep_their_headers(backend: Backend) -> None:
    """A send with headers (the one-by-one path on Kafka) lands like any other."""
    topic = backend.topic(partitions=2)
    sent = [Message(b"k", b"v%d" % i, (("trace", b"t%d" % i),)) for i in range(3)]
    backend.log.send(topic, sent)
    backend.log.flush()
    received: list[Record] = []
    with backend.log.consumer(group(), [topic], session_timeout=backend.session) as consumer:
        drain([consumer], lambda: len(received) >= 3, lambda _, r: received.append(r))
    assert [(r.value, r.header("trace")) for r in received] == [
        (b"v0", b"t0"),
        (b"v1", b"t1"),
        (b"v2", b"t2"),
    ]


def test_flush_reports_what_the_log_could_not_take(tmp_path: Path) -> None:
    """A send the broker never acknowledges fails the flush (the worker then sends its
    keys again), instead of passing for delivered."""
    from tidegate.errors import ServiceUnavailableError
    from tidegate.log.kafka import KafkaEventLog

    log = KafkaEventLog("127.0.0.1:1", client={"message.timeout.ms": 500})
    log._known.add("nowhere")  # no broker to create it on: straight to the producer
    try:
        log.send("nowhere", keyed(3, keys=1))
        with pytest.raises(ServiceUnavailableError, match="did not acknowledge 3"):
            log.flush()
        log.flush()  # reported once: nothing sent since
    finally:
        log._producer = log._sender = None  # undelivered records would make close wait
        log.close()


def test_replay_from_an_offset(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    placed = backend.log.append(topic, keyed(20, keys=1))
    partition = placed[0][1]
    assert {p for _, p in placed} == {partition}
    assert backend.log.end_offsets(topic)[partition] == 20
    replay = backend.log.read(topic, partition, 5, max_records=100)
    assert [r.offset for r in replay] == list(range(5, 20))
    assert [r.value for r in replay] == [f"e{i}".encode() for i in range(5, 20)]
    assert [r.offset for r in backend.log.read(topic, partition, 0, max_records=3)] == [0, 1, 2]


def test_poll_returns_what_is_there_without_waiting_for_max_records(backend: Backend) -> None:
    """A stream worker polls for up to thousands of records; when fewer are there, the
    poll must hand them over at once, not hold them until its timeout (the old Kafka
    `consume(n, timeout)` did, adding the timeout to every event's latency)."""
    topic = backend.topic(partitions=1)
    with backend.log.consumer(group(), [topic], session_timeout=backend.session) as consumer:
        deadline = time.monotonic() + DEADLINE
        while not consumer.assignment():  # joined: the partition is ours
            assert time.monotonic() < deadline, "never got the partition"
            assert consumer.poll(10, 0.2) == []
        backend.log.append(topic, keyed(5, keys=1))
        found: list[Record] = []
        started = time.monotonic()
        while not found:
            found = consumer.poll(5_000, 30.0)
        assert time.monotonic() - started < 15.0  # far less than the 30 s timeout
        assert [r.value for r in found] == [f"e{i}".encode() for i in range(len(found))]


def test_headers_and_tombstones_travel(backend: Backend) -> None:
    topic = backend.topic(partitions=1)
    backend.log.append(
        topic,
        [Message(b"a", b"x", (("source", b"orders"), ("bin", b"\x00\xff"))), Message(b"a", None)],
    )
    records = backend.log.read(topic, 0, 0)
    assert records[0].header("source") == b"orders"
    assert records[0].header("bin") == b"\x00\xff"
    assert records[1].value is None
    assert records[0].timestamp > 0


def test_uncommitted_records_are_delivered_again(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    backend.log.append(topic, keyed(60, keys=6))
    name = group()
    first: list[Record] = []
    consumer = backend.log.consumer(name, [topic], session_timeout=backend.session)
    drain([consumer], lambda: len(first) >= 60, lambda _, r: first.append(r))
    # Commit only the first ten records of each partition, then go away.
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for record in first:
        by_partition[record.partition].append(record)
    consumer.commit({(topic, p): records[10].offset for p, records in by_partition.items()})
    consumer.close()
    assert backend.log.committed(name, topic) == dict.fromkeys(by_partition, 10)

    expected = {r.value for records in by_partition.values() for r in records[10:]}
    again: list[Record] = []
    consumer = backend.log.consumer(name, [topic], session_timeout=backend.session)
    drain([consumer], lambda: len(again) >= len(expected), lambda _, r: again.append(r))
    assert {r.value for r in again} == expected
    assert len(again) == len(expected)
    consumer.commit()
    consumer.close()
    assert backend.log.committed(name, topic) == {
        p: records[-1].offset + 1 for p, records in by_partition.items()
    }
    with backend.log.consumer(name, [topic], session_timeout=backend.session) as last:
        leftovers: list[Record] = []
        for _ in range(3):  # nothing uncommitted is left to deliver
            leftovers += last.poll(100, 0.5)
        assert leftovers == []


def test_two_members_split_the_partitions_and_one_takes_over_on_close(
    backend: Backend,
) -> None:
    topic = backend.topic(partitions=4)
    name = group()
    a = backend.log.consumer(name, [topic], session_timeout=backend.session)
    b = backend.log.consumer(name, [topic], session_timeout=backend.session)
    seen: dict[int, list[Record]] = {0: [], 1: []}

    def split() -> bool:
        owned_a, owned_b = a.assignment(), b.assignment()
        return bool(owned_a) and bool(owned_b) and len(owned_a | owned_b) == 4

    drain([a, b], split, lambda i, r: seen[i].append(r))
    assert not a.assignment() & b.assignment()
    backend.log.append(topic, keyed(80, keys=16))
    drain([a, b], lambda: len(seen[0]) + len(seen[1]) >= 80, lambda i, r: seen[i].append(r))
    assert len(seen[0]) + len(seen[1]) == 80
    assert seen[0], "both members should have received work"
    assert seen[1], "both members should have received work"
    assert not {r.partition for r in seen[0]} & {r.partition for r in seen[1]}
    a.commit()
    b.commit()
    a.close()

    backend.log.append(topic, keyed(40, keys=16, prefix="late"))
    late: list[Record] = []
    # b may read some of its own partitions' late records before the rebalance that hands
    # it a's partitions, then get them again from its committed offsets: delivery is at
    # least once, so every late record must arrive, possibly twice, none elsewhere
    drain([b], lambda: len({r.value for r in late}) >= 40, lambda _, r: late.append(r))
    assert {r.value for r in late} == {f"late{i}".encode() for i in range(40)}
    assert {p for _, p in b.assignment()} == {0, 1, 2, 3}
    b.close()


def test_a_member_that_dies_has_its_partitions_taken_over(backend: Backend) -> None:
    topic = backend.topic(partitions=4)
    name = group()
    survivor = backend.log.consumer(name, [topic], session_timeout=backend.session)
    child = subprocess.Popen(
        [
            sys.executable,
            str(MEMBER),
            backend.kind,
            backend.target,
            name,
            topic,
            str(backend.session),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    received: list[Record] = []
    stack = contextlib.ExitStack()
    try:
        assert child.stdout is not None
        # Keep heart-beating while the child joins; the group splits between us.
        deadline = time.monotonic() + DEADLINE
        selector = selectors.DefaultSelector()
        selector.register(child.stdout, selectors.EVENT_READ)
        stack.callback(selector.close)
        ready = False
        while not (ready and survivor.assignment() and len(survivor.assignment()) < 4):
            assert time.monotonic() < deadline, "the child never joined the group"
            assert child.poll() is None, "the member process exited"
            received += survivor.poll(100, 0.2)
            if selector.select(timeout=0):
                ready = ready or child.stdout.readline().startswith("ready")
        mine = {p for _, p in survivor.assignment()}
        assert 0 < len(mine) < 4
        backend.log.append(topic, keyed(100, keys=25))
        child.send_signal(signal.SIGKILL)  # no goodbye: only the session timeout tells
        child.wait()
        drain(
            [survivor],
            lambda: len({r.value for r in received}) >= 100,
            lambda _, r: received.append(r),
        )
        taken_over = {p for _, p in survivor.assignment()}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        survivor.close()
        stack.close()
    assert {r.value for r in received} == {f"e{i}".encode() for i in range(100)}
    assert taken_over == {0, 1, 2, 3}
