"""Poll and decode the next micro-batch while the worker applies this one.

A micro-batch spends its time in two kinds of work: Python that holds the GIL (taking
records from the log, decoding and checking JSON: `ingest/compiled.py`) and DuckDB, which
releases it while it appends, recomputes and compares. Done one after the other, one
core idles through each. So a thread beside the worker owns the consumer: it polls and
decodes continuously, gathering what arrives into one pending batch, while the worker
applies the batch before it. When the worker is ready it takes everything gathered so
far at once (`take`): a record waits no longer than it would without the thread, and
the decoding it needs is mostly done.

Nothing about delivery changes. The thread is the consumer's only user (polls,
heartbeats, commits and the close: `log.base.Consumer` is not thread-safe), and it
commits only the offsets the worker hands it after applying (`commit`). Records
gathered but not taken when the worker stops were never applied nor committed: the
log delivers them again to whoever reads next, and the applied-offset table skips
what was applied.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tidegate.errors import CommitFailedError, ServiceUnavailableError
from tidegate.ingest.compiled import DecodedBatch
from tidegate.log.base import Consumer, Record, TopicPartition

log = logging.getLogger(__name__)

#: how long the thread waits for more records while a batch is already gathered: short,
#: so the gathered batch keeps growing while the worker is busy
GATHER_WAIT = 0.005

Decoder = Callable[[Sequence[Record]], dict[str, DecodedBatch]]


@dataclass
class Polled:
    """Records taken at once, in log order, and, per topic, the decoded values of that
    topic's records (in the order they appear in `records`) where the decoder took it;
    a topic missing from `decoded` is decoded by the worker itself."""

    records: list[Record] = field(default_factory=list)
    decoded: dict[str, DecodedBatch] = field(default_factory=dict)


class Prefetcher:
    """The consumer's thread: polls, decodes, commits and closes it."""

    def __init__(
        self,
        open_consumer: Callable[[], Consumer],
        decode: Decoder,
        *,
        max_records: int,
        poll_timeout: float,
    ) -> None:
        self._open = open_consumer
        self._decode = decode
        self._max = max_records
        self._timeout = poll_timeout
        self._ready = threading.Condition()
        self._pending: list[Polled] = []
        self._count = 0
        self._to_commit: dict[TopicPartition, int] = {}
        self._error: BaseException | None = None
        self._closing = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tidegate-prefetch", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    # ------------------------------------------------------------ the worker's side

    def take(self, timeout: float) -> Polled:
        """Everything gathered since the last take (waiting up to `timeout` seconds
        while nothing is): records in log order and their decoded values."""
        with self._ready:
            if not self._pending and self._error is None:
                self._ready.wait(timeout)
            self._raise_error()
            chunks, self._pending, self._count = self._pending, [], 0
            self._ready.notify_all()
        return merge(chunks)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Hand applied offsets to the thread, which commits them before it next polls
        (a commit it cannot make now is tried again with the next ones)."""
        with self._ready:
            for tp, offset in offsets.items():
                self._to_commit[tp] = max(offset, self._to_commit.get(tp, 0))

    def close(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit `offsets` with whatever is still waiting, leave the group, end the
        thread. Gathered records not taken are dropped: never applied nor committed,
        they are delivered again to the next reader."""
        self.commit(offsets)
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            consumer = self._open()
        except BaseException as err:  # raised to the worker by __init__
            self._open_error = err
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop(consumer)
        finally:
            self._commit(consumer, final=True)
            consumer.close()

    def _loop(self, consumer: Consumer) -> None:
        while True:
            with self._ready:
                while not self._closing and self._count >= self._max:
                    self._ready.wait(0.05)  # gathered enough: wait for the worker
                if self._closing:
                    return
                room = self._max - self._count
                waiting = bool(self._pending)
            self._commit(consumer)
            try:
                records = consumer.poll(room, GATHER_WAIT if waiting else self._timeout)
                decoded = self._decode(records) if records else {}
            except BaseException as err:  # the worker raises it from `take`
                with self._ready:
                    self._error = err
                    self._ready.notify_all()
                    while self._error is not None and not self._closing:
                        self._ready.wait(0.05)  # until the worker has seen it
                continue
            if records:
                with self._ready:
                    self._pending.append(Polled(records, decoded))
                    self._count += len(records)
                    self._ready.notify_all()

    def _commit(self, consumer: Consumer, final: bool = False) -> None:
        with self._ready:
            offsets, self._to_commit = self._to_commit, {}
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except CommitFailedError as err:  # partitions gone to another member: theirs now
            log.warning("%s", err.message)
        except ServiceUnavailableError as err:
            if final:  # delivered again after a restart, and skipped as applied
                log.warning("final offset commit failed: %s", err.message)
                return
            log.warning("offset commit failed (%s); it is retried with the next", err.message)
            self.commit(offsets)


def merge(chunks: Sequence[Polled]) -> Polled:
    """Chunks polled one after the other as one: records concatenated, and each topic's
    decoded batches joined with their positions shifted past the earlier chunks' records
    of that topic. A topic any chunk did not decode is left to the worker entirely."""
    if len(chunks) == 1:
        return chunks[0]
    merged = Polled()
    parts: dict[str, list[DecodedBatch]] = {}
    seen: dict[str, int] = {}  # topic -> its records in the chunks before
    undecoded: set[str] = set()
    for chunk in chunks:
        counts: dict[str, int] = {}
        for record in chunk.records:
            counts[record.topic] = counts.get(record.topic, 0) + 1
        for topic, count in counts.items():
            batch = chunk.decoded.get(topic)
            if batch is None:
                undecoded.add(topic)
            elif topic not in undecoded:
                parts.setdefault(topic, []).append(_shifted(batch, seen.get(topic, 0)))
            seen[topic] = seen.get(topic, 0) + count
        merged.records += chunk.records
    for topic, batches in parts.items():
        if topic not in undecoded:
            merged.decoded[topic] = _joined(batches)
    return merged


def _shifted(batch: DecodedBatch, by: int) -> DecodedBatch:
    if not by:
        return batch
    return DecodedBatch(batch.table, [p + by for p in batch.taken], [p + by for p in batch.rest])


def _joined(batches: Sequence[DecodedBatch]) -> DecodedBatch:
    import pyarrow as pa

    tables = [b.table for b in batches if b.table is not None and b.table.num_rows]
    taken = [p for b in batches for p in b.taken]
    rest = [p for b in batches for p in b.rest]
    if not tables:
        return DecodedBatch(None, taken, rest)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return DecodedBatch(table, taken, rest)
