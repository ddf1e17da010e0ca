"""`ingest`: events/s from a producer to the product, via HTTP and via Kafka, beside the
raw limits (a DuckDB append of the same Arrow batches, a bare confluent-kafka consume loop).

The project (`benchmarks/streaming.py`): one stream source `events` and the
incremental product `customer_counts` (events and amount per customer). N events over
10,000 customers.

* http, `tidegate: HTTP → applied`: `tidegate run` in its own process (untimed start);
  from the first `POST /v1/events/events` (JSON arrays of 1,000 events, over 4
  persistent `http.client` connections in threads, as several producers would post)
  until the worker committed the last offset: every event checked, logged, in
  `raw.events`, the product recomputed for its customers, the online store and the
  change stream written. `accept_events_per_s` is the POST phase alone.
* http, `HTTP floor: same client, bare ASGI` (reference): the same client and bodies
  against a uvicorn app (tidegate's server settings) that reads each body and answers
  at once: the client's and the HTTP stack's own ceiling, so a tidegate number near it
  says the door is not the limit.
* http, `raw DuckDB append (Arrow)` (reference): the same events as Arrow batches of
  5,000 (built untimed), `INSERT INTO` a table keyed by event id, batch by batch.
* kafka, `tidegate: Kafka → applied`: N events produced to a fresh topic beforehand
  (untimed); the stream worker (`run_worker`, in process) from its first micro-batch
  (the group join is not timed) to its last one.
* kafka, `bare confluent-kafka consume` (reference): a consumer of a fresh group,
  `consume(5000)` in a loop, from the first message to the N-th, no decoding.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, Contender, Metric, Sample, register
from benchmarks.streaming import (
    KAFKA_BOOTSTRAP,
    SOURCE,
    TidegateRun,
    build,
    kafka_delete,
    kafka_produce,
    kafka_topic,
    make_events,
    write_project,
)

HTTP = "tidegate: HTTP → applied"
FLOOR = "HTTP floor: same client, bare ASGI"
DUCKDB = "raw DuckDB append (Arrow)"
KAFKA = "tidegate: Kafka → applied"
BARE = "bare confluent-kafka consume"
CUSTOMERS = 10_000
HTTP_BATCH = 1_000
HTTP_CONNECTIONS = 4
#: the floor's server: tidegate's uvicorn settings, an app that reads the body and answers
FLOOR_APP = """
import sys, uvicorn
ANSWER = b'{"accepted":1000,"rejected":[],"unknown_fields":{"events":0,"fields":{}}}'
async def app(scope, receive, send):
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ANSWER})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
"""
ARROW_BATCH = 5_000


@register
class IngestBenchmark(Benchmark):
    name = "ingest"
    title = "events/s into a product: HTTP and Kafka, beside DuckDB append and a bare consumer"
    metric = Metric("events/s", higher_is_better=True)
    rounds_full = 3
    rounds_quick = 1
    warmup_full = 0
    warmup_quick = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = 50_000 if self.quick else 200_000
        self.runs = 0
        self.data: list[dict[str, Any]] = []
        self.topics: list[str] = []

    def sizes(self) -> dict[str, Any]:
        return {"events": self.events, "customers": CUSTOMERS}

    def contenders(self) -> list[Contender]:
        return [
            Contender(
                HTTP,
                "tidegate",
                "http",
                description=f"tidegate run, {HTTP_CONNECTIONS} connections, 1k/POST",
            ),
            Contender(FLOOR, "limit", "http", reference=True, description="client's ceiling"),
            Contender(DUCKDB, "limit", "http", reference=True, description="5k-row batches"),
            Contender(KAFKA, "tidegate", "kafka", description="run_worker, ≤50k/micro-batch"),
            Contender(BARE, "limit", "kafka", reference=True, description="no decoding"),
        ]

    def environment(self) -> dict[str, Any]:
        import confluent_kafka

        return {"kafka": KAFKA_BOOTSTRAP, "confluent_kafka": confluent_kafka.version()[0]}

    def prepare(self) -> None:
        self.data = make_events(1, self.events, CUSTOMERS)

    def _fresh(self, log: dict[str, Any], topic: str | None = None) -> tuple[Path, str]:
        self.runs += 1
        root = write_project(self.workdir / f"run{self.runs}", log, topic)
        ingest, _ = build(root)
        return root, ingest

    def run(self, contender: Contender) -> Sample:
        if contender.name == HTTP:
            return self._http()
        if contender.name == FLOOR:
            return self._floor()
        if contender.name == DUCKDB:
            return self._duckdb()
        if contender.name == KAFKA:
            return self._kafka()
        return self._bare()

    # ---------------------------------------------------------------- http

    def _bodies(self) -> list[bytes]:
        import orjson

        return [
            orjson.dumps(self.data[i : i + HTTP_BATCH])
            for i in range(0, len(self.data), HTTP_BATCH)
        ]

    def _http(self) -> Sample:
        from tidegate.log.sqlite import SqliteEventLog
        from tidegate.runtime.worker import DEFAULT_GROUP

        root, token = self._fresh({"type": "sqlite"})
        bodies = self._bodies()
        server = TidegateRun(root, self.workdir / f"run{self.runs}.log")
        log = SqliteEventLog(root / ".tidegate" / "log.db")
        try:
            server.wait_up()
            started = time.perf_counter()
            post_all(server.port, bodies, {"Authorization": f"Bearer {token}"})
            accepted = time.perf_counter() - started
            deadline = time.monotonic() + 600
            while sum(log.committed(DEFAULT_GROUP, SOURCE).values()) < self.events:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not apply every event in 600s")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            log.close()
            server.stop()
        return Sample(
            self.events / elapsed,
            {"accept_events_per_s": self.events / accepted, "seconds": elapsed},
        )

    def _floor(self) -> Sample:
        import subprocess
        import sys

        import httpx

        from benchmarks.harness import wait_until
        from benchmarks.streaming import free_port

        bodies = self._bodies()
        port = free_port()
        process = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)])

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError("the floor's server exited")
            try:
                return httpx.post(f"http://127.0.0.1:{port}/", content=b"[]").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            if not wait_until(up, 30, 0.05):
                raise RuntimeError("the floor's server did not answer within 30s")
            started = time.perf_counter()
            post_all(port, bodies, {})
            elapsed = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
        return Sample(self.events / elapsed, {"seconds": elapsed})

    # ---------------------------------------------------------------- duckdb

    def _duckdb(self) -> Sample:
        import duckdb

        from tidegate.ingest.raw import arrow_rows
        from tidegate.ingest.validate import EventSchema
        from tidegate.project import load_project

        root, _ = self._fresh({"type": "sqlite"})
        config = load_project(root).sources[SOURCE].config
        schema = EventSchema(config)  # type: ignore[arg-type]
        rows = [schema.row(event) for event in self.data]
        batches = [
            arrow_rows(config, rows[i : i + ARROW_BATCH])  # type: ignore[arg-type]
            for i in range(0, len(rows), ARROW_BATCH)
        ]
        db = duckdb.connect(str(self.workdir / f"raw{self.runs}.duckdb"))
        try:
            db.execute(
                "CREATE TABLE events (event_id BIGINT PRIMARY KEY, customer_id BIGINT,"
                " amount DOUBLE, occurred_at TIMESTAMPTZ)"
            )
            started = time.perf_counter()
            for batch in batches:
                db.register("batch", batch)
                db.execute("INSERT INTO events SELECT * FROM batch")
                db.unregister("batch")
            elapsed = time.perf_counter() - started
        finally:
            db.close()
        return Sample(self.events / elapsed, {"seconds": elapsed})

    # ---------------------------------------------------------------- kafka

    def _kafka(self) -> Sample:
        from tidegate.platform import Platform
        from tidegate.runtime.worker import run_worker

        topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        self.topics.append(topic)
        kafka_topic(topic)
        kafka_produce(topic, self.data)
        root, _ = self._fresh({"type": "kafka", "bootstrap": KAFKA_BOOTSTRAP}, topic)
        self.topics.append("__changes.customer_counts")
        stop = threading.Event()
        seen = {"records": 0, "first": 0.0, "last": 0.0}

        def on_batch(report: Any) -> None:
            now = time.perf_counter()
            if not seen["first"]:
                seen["first"] = now - report.seconds
            seen["records"] += report.records
            seen["last"] = now
            if seen["records"] >= self.events:
                stop.set()

        with Platform.open(root) as platform:
            thread = threading.Thread(
                target=run_worker,
                args=(platform,),
                kwargs={
                    "group": f"bench-{uuid.uuid4().hex[:8]}",
                    "stop": stop,
                    "on_batch": on_batch,
                    "schedule": False,
                },
            )
            thread.start()
            thread.join(timeout=900)
            stop.set()
            thread.join(timeout=60)
        if seen["records"] < self.events:
            raise RuntimeError(f"the worker applied {seen['records']} of {self.events} events")
        elapsed = seen["last"] - seen["first"]
        return Sample(self.events / elapsed, {"seconds": elapsed})

    def _bare(self) -> Sample:
        from confluent_kafka import Consumer

        topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
        self.topics.append(topic)
        kafka_topic(topic)
        kafka_produce(topic, self.data)
        consumer = Consumer(
            {
                "bootstrap.servers": KAFKA_BOOTSTRAP,
                "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        count, first = 0, 0.0
        deadline = time.monotonic() + 300
        try:
            while count < self.events and time.monotonic() < deadline:
                messages = consumer.consume(num_messages=5000, timeout=0.5)
                if messages and not first:
                    first = time.perf_counter()
                count += sum(1 for m in messages if m.error() is None)
            elapsed = time.perf_counter() - first
        finally:
            consumer.close()
        if count < self.events:
            raise RuntimeError(f"consumed {count} of {self.events}")
        return Sample(self.events / elapsed, {"seconds": elapsed})

    def teardown(self) -> None:
        if self.topics:
            with contextlib.suppress(Exception):  # best effort: the broker may be gone
                kafka_delete(sorted(set(self.topics)))


def post_all(port: int, bodies: list[bytes], headers: dict[str, str]) -> None:
    """POST the bodies to `/v1/events/events` over `HTTP_CONNECTIONS` persistent
    `http.client` connections in threads (the client must not be what is measured);
    raise on any answer other than 200 with no event rejected."""
    import http.client

    import orjson

    sent = {**headers, "Content-Type": "application/json"}
    failures: list[BaseException] = []

    def post(chunk: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for body in chunk:
                connection.request("POST", f"/v1/events/{SOURCE}", body=body, headers=sent)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST answered {response.status}: {answer[:300]!r}")
                rejected = orjson.loads(answer)["rejected"]
                if rejected:
                    raise RuntimeError(f"events rejected: {rejected[:3]}")
        except BaseException as err:  # reported by the caller's thread
            failures.append(err)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=post, args=(bodies[i::HTTP_CONNECTIONS],))
        for i in range(HTTP_CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
