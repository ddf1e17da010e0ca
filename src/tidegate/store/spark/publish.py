"""Publishing a Spark-built version to the online store from the executors, in parallel.

Pulling every row into the driver and writing from one Python process makes the
driver the bottleneck of a build on a cluster (its CPU, its network link, its memory).
Here each partition of the version's Parquet writes its own rows: Spark runs
`PartitionPublisher` on the executors (`mapPartitionsWithIndex`); each task opens its
own writer from the store's `WriterSpec` (plain data, pickled with the task), writes
with `write_batch` in batches of PUBLISH_BATCH rows and answers one pair (partition,
rows written). The driver only sums those. (The RDD API, not `mapInArrow`: that one
needs pandas on every machine, a dependency tidegate does not otherwise have. Spark
Connect has no RDD API, so an `sc://` session publishes through the driver.)

Activating the version stays one step of the driver, after every task succeeded; a
failed task fails the Spark job, hence the build, and the previous version keeps
serving (the builder discards what the other tasks wrote).

Executors write only where the store allows it (`WriterSpec.shared`, and for a
`same_host` store such as a SQLite file, only when the executors run on this host:
local mode). Otherwise the version streams through the driver, one partition at a
time (`toLocalIterator`), into one writer: slower, but right. On a cluster the store's
address is used as configured, from every executor: a Redis `url` must name a host
they reach (not 127.0.0.1); a task that cannot connect fails the build, loudly.

Values are encoded exactly as the DuckDB store's publish encodes them: rows go
through `row_converter` (spark/values.py), which makes Spark's naive local
timestamps the UTC instants DuckDB gives for TIMESTAMPTZ.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidegate.store.online.base import WriterSpec
from tidegate.store.online.codec import encode_row
from tidegate.store.spark.values import row_converter
from tidegate.store.warehouse import PUBLISH_BATCH, OnlinePublish

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def executors_can_write(spec: WriterSpec, master: str) -> bool:
    """Whether Spark's executors may write into the store `spec` describes: it must
    take many writers at once, and a host-bound store (a SQLite file) only from local
    mode, where the executors are processes of this machine. Never over Spark Connect
    (no RDD API)."""
    if master.startswith("sc://"):
        return False
    return spec.shared and (not spec.same_host or master.startswith("local"))


@dataclass(frozen=True)
class PartitionPublisher:
    """The task run on each partition (picklable: plain fields and Spark's schema;
    executors import tidegate, which is why the session points them at this
    interpreter). Answers one (partition, rows written) pair."""

    spec: WriterSpec
    product: str
    version: int
    key_column: str
    schema: Any  # pyspark StructType

    def __call__(self, partition: int, rows: Iterable[Any]) -> Iterator[tuple[int, int]]:
        from tidegate.store.online import open_writer

        convert = row_converter(self.schema)
        written = 0
        store = open_writer(self.spec)
        try:
            batch: list[tuple[str, str]] = []
            for row in rows:
                values = convert(row)
                batch.append((str(values[self.key_column]), encode_row(values)))
                if len(batch) >= PUBLISH_BATCH:
                    written += store.write_batch(self.product, self.version, batch)
                    batch = []
            if batch:
                written += store.write_batch(self.product, self.version, batch)
        finally:
            store.close()
        yield partition, written


def publish_from_executors(
    frame: DataFrame,
    spec: WriterSpec,
    product: str,
    version: int,
    key_column: str,
    parallelism: int,
) -> OnlinePublish:
    """Every partition of `frame` writes its rows. A version read as fewer partitions
    than `parallelism` (Spark packs small Parquet files into one) is spread over that
    many tasks first, so a small product still uses every executor core; a large one
    already has a partition per file split and is not shuffled."""
    started = time.perf_counter()
    if frame.rdd.getNumPartitions() < parallelism:  # plans only: no job runs here
        frame = frame.repartition(parallelism)  # Spark's own shuffle, not of Python rows
    publisher = PartitionPublisher(spec, product, version, key_column, frame.schema)
    results = frame.rdd.mapPartitionsWithIndex(publisher).collect()
    rows = sum(written for _, written in results)
    partitions = sum(1 for _, written in results if written > 0)
    return OnlinePublish(rows, partitions, time.perf_counter() - started, "executors")


def publish_from_driver(
    frame: DataFrame, spec: WriterSpec, product: str, version: int, key_column: str
) -> OnlinePublish:
    """The fallback: partition after partition through the driver (`toLocalIterator`
    holds one at a time), into one writer, in batches of PUBLISH_BATCH rows."""
    from tidegate.store.online import open_writer

    started = time.perf_counter()
    convert = row_converter(frame.schema)
    written = 0
    store = open_writer(spec)
    try:
        batch: list[tuple[str, str]] = []
        for row in frame.toLocalIterator(prefetchPartitions=True):
            values = convert(row)
            batch.append((str(values[key_column]), encode_row(values)))
            if len(batch) >= PUBLISH_BATCH:
                written += store.write_batch(product, version, batch)
                batch = []
        if batch:
            written += store.write_batch(product, version, batch)
    finally:
        store.close()
    return OnlinePublish(written, 1, time.perf_counter() - started, "driver")
