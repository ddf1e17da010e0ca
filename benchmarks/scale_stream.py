"""The stream half of `scale`: events/s through 1 and 2 `tidegate worker` processes in one
Kafka consumer group.

The project is the ingest benchmark's (`streaming.py`: stream source `events`, incremental
product `customer_counts`) on Kafka, in a namespace and on a topic of its own
(`scale-<pid>-<hex>`), the topic with `PARTITIONS` partitions so that two workers have
something to split. Each run:

1. starts N `tidegate worker --no-schedule` processes of one group (distinct
   `TIDEGATE_WORKER_ID`s, as two workers on one host need);
2. warms up: produces `WARM` events and waits until the group has committed them (so the
   JVM-free but import-heavy start of a worker, ~2-5 s, is not charged to throughput);
3. timed: produces `events` events keyed by customer and waits until the group's
   committed offsets reach the topic's end: produce -> applied -> committed;
4. stops the workers (standbys first), and checks that the product counts every event
   ever produced (nothing lost, nothing doubled).

Progress is read from Kafka (the group's committed offsets), never from the warehouse,
which the active worker holds. On the embedded DuckDB store one process writes the
warehouse, so the second worker is a hot standby (`standby:` in its log): two workers
are expected to be no faster than one, and the run records how many were standbys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Sample, wait_until
from benchmarks.streaming import (
    KAFKA_BOOTSTRAP,
    PRODUCT,
    TIDEGATE,
    build,
    kafka_delete,
    kafka_produce,
    kafka_topic,
    make_events,
    write_project,
)

PARTITIONS = 4
WARM = 1_000
CUSTOMERS = 10_000
GROUP = "scale-workers"
WORKER_ID_ENV = "TIDEGATE_WORKER_ID"


class StreamRig:
    """One Kafka-backed project, reused by every stream run of the benchmark."""

    def __init__(self, workdir: Path) -> None:
        tag = f"scale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.namespace = tag
        self.topic = f"{tag}-events"
        self.root = workdir / "stream-project"
        self.logs = workdir / "stream-logs"
        self.group = f"{self.namespace}.{GROUP}"  # as the worker namespaces it
        self.produced = 0
        self.runs = 0

    def prepare(self) -> None:
        kafka_topic(self.topic, PARTITIONS)
        log = {"type": "kafka", "bootstrap": KAFKA_BOOTSTRAP, "namespace": self.namespace}
        write_project(self.root, log, topic=self.topic)
        build(self.root)
        self.logs.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, Any]:
        return {
            "kafka": KAFKA_BOOTSTRAP,
            "topic": self.topic,
            "partitions": PARTITIONS,
            "namespace": self.namespace,
            "store": "duckdb (embedded: one writer process)",
        }

    # ---------------------------------------------------------------- Kafka bookkeeping

    def lag(self) -> int:
        """Events produced but not yet committed by the group."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": KAFKA_BOOTSTRAP,
                "group.id": self.group,
                "enable.auto.commit": False,
            }
        )
        try:
            parts = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            committed = consumer.committed(parts, timeout=10)
            lag = 0
            for part in committed:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, part.partition), timeout=10
                )
                lag += high - max(part.offset, 0)  # -1001: nothing committed yet
            return lag
        finally:
            consumer.close()

    def _produce(self, count: int) -> None:
        kafka_produce(self.topic, make_events(self.produced, count, CUSTOMERS, seed=7))
        self.produced += count

    def _drained(self, workers: list[subprocess.Popen[bytes]], timeout: float) -> None:
        def done() -> bool:
            for process in workers:
                if process.poll() is not None and process.returncode != 0:
                    raise RuntimeError(
                        f"a worker exited with {process.returncode}; see {self.logs}"
                    )
            return self.lag() == 0

        if not wait_until(done, timeout, 0.05):
            raise RuntimeError(f"the group did not catch up within {timeout:.0f}s ({self.logs})")

    # ---------------------------------------------------------------- one run

    def run(self, workers: int, events: int) -> Sample:
        self.runs += 1
        logs = [self.logs / f"run{self.runs}-worker{i}.log" for i in range(workers)]
        processes = [self._start(i, log) for i, log in enumerate(logs)]
        try:
            self._produce(WARM)
            self._drained(processes, timeout=180)
            started = time.perf_counter()
            self._produce(events)
            produced = time.perf_counter() - started
            self._drained(processes, timeout=600)
            seconds = time.perf_counter() - started
        finally:
            for process in reversed(processes):  # standbys first: none takes over
                self._stop(process)
        standbys = sum("standby:" in log.read_text(errors="replace") for log in logs)
        counted = self._counted()
        if counted != self.produced:
            raise RuntimeError(f"the product counts {counted} events, {self.produced} produced")
        rate = events / seconds
        return Sample(
            seconds,
            {
                "events_per_s": rate,
                "events_per_worker_per_s": rate / workers,
                "produce_s": produced,
            },
            info={"workers": workers, "standbys": standbys, "events": events},
        )

    def _start(self, index: int, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, WORKER_ID_ENV: f"{self.namespace}-w{index}"}
        with log.open("ab") as out:
            process = subprocess.Popen(
                [TIDEGATE, "worker", "-p", str(self.root), "--group", GROUP, "--no-schedule"],
                cwd=ROOT.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if index == 0:  # the first holds the warehouse before the next one asks
            time.sleep(0.5)
        return process

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def _counted(self) -> int:
        from tidegate.platform import Platform

        with Platform.open(self.root) as platform, platform.warehouse.cursor() as db:
            row = db.execute(f'SELECT coalesce(sum(events), 0) FROM products."{PRODUCT}"')
            return int(row.fetchone()[0])

    def close(self) -> None:
        from confluent_kafka.admin import AdminClient

        kafka_delete([self.topic, f"{self.namespace}.__changes.{PRODUCT}"])
        admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})
        for future in admin.delete_consumer_groups([self.group], request_timeout=10).values():
            with contextlib.suppress(Exception):  # an absent group is fine at teardown
                future.result()
