"""`freshness`: time from producing an event to seeing it, at fixed rates, embedded and
Kafka, beside Quix Streams and Pathway doing the same per-customer aggregation.

Each run produces events at a fixed rate (1k, 10k, 20k/s; quick: 1k and 20k/s, the
rate of the goals) for a fixed time (random customers among 10,000), and every 100 ms
one of the events is a **probe**: the first event of a customer id of its own. A poller
looks for each probe until it is visible; its latency is (first seen) - (just before it
was produced). The table's p50/p95/p99 are over the probes of the counted rounds; the
primary number is each run's p99 in ms.

* `tidegate embedded @ R/s`: `POST /v1/events/events` to `tidegate run` (SQLite log),
  a JSON array every 10 ms; visible when `GET /v1/products/customer_counts/entities/
  {probe}` (support purpose) answers 200.
* `tidegate Kafka @ R/s`: a confluent-kafka producer (linger 5 ms) to the source's
  topic, `tidegate run` with the Kafka log; visible through the same API call.
* `Quix Streams @ R/s` (peer): the same producer and rate, to a topic of its own;
  visible when its row is in the SQLite table the Quix app's sink writes (no API: one
  hop less than tidegate's).

Quix Streams (pinned, in `benchmarks/.venvs/quixstreams`) runs `benchmarks/quix_app.py`:
a stateful `apply` (RocksDB state, the default) counting events and summing amounts per
customer, `processing_guarantee="at-least-once"` (the default), and a `BatchingSink`
into SQLite, flushed at each checkpoint; `commit_interval` is 0.1 s instead of the
default 5 s, the setting Quix documents for trading throughput for latency (at 5 s no
sink write could be fresher than seconds).

Pathway (pinned, in `benchmarks/.venvs/pathway`) runs `benchmarks/pathway_app.py`:
`pw.io.kafka.read` of the same kind of topic (its own, JSON values) with
`autocommit_duration_ms=10` (Pathway's advice for latency), `groupby().reduce()` with
count and sum per customer, and the rows changed in each time step written to SQLite in
one transaction at its end (`pw.io.subscribe`, `on_time_end`). Visible as for Quix. If
the pinned Pathway cannot be installed from the registry, its rows fail with that
reason (nothing is measured in its place).

Every process starts untimed; one warm-up probe must be visible (the consumer group
joined, state opened) before the timed part. A probe still unseen 30 s after the
producer stopped counts as lost (reported in `lost`, not in the percentiles). The
achieved production rate is recorded: below the target, the producer could not keep up.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
    Contender,
    Metric,
    Sample,
    peer_venv,
    register,
    wait_until,
)
from benchmarks.streaming import (
    KAFKA_BOOTSTRAP,
    PRODUCT,
    SOURCE,
    TidegateRun,
    build,
    encode,
    kafka_delete,
    kafka_topic,
    write_project,
)

QUIX = ["quixstreams==3.28.1"]
PATHWAY = ["pathway==0.33.0"]
CUSTOMERS = 10_000
PROBE_BASE = 10_000_000
PROBE_EVERY = 0.1
TICK = 0.01
LOST_AFTER = 30.0


class System(ABC):
    """One contender's processes: start, send events, tell whether a probe is visible."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def send(self, events: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def visible(self, customer: int) -> bool: ...

    def flush(self) -> None:  # noqa: B027  (optional)
        pass

    @abstractmethod
    def stop(self) -> None: ...


class TidegateSystem(System):
    def __init__(self, workdir: Path, kafka: bool) -> None:
        self.topic = f"bench-fresh-{uuid.uuid4().hex[:8]}" if kafka else None
        log: dict[str, Any] = (
            {"type": "kafka", "bootstrap": KAFKA_BOOTSTRAP} if kafka else {"type": "sqlite"}
        )
        self.root = write_project(workdir, log, self.topic)
        self.kafka = kafka
        self.server: TidegateRun | None = None
        self.client: Any = None
        self.reader: Any = None
        self.producer: Any = None
        self.headers: dict[str, str] = {}

    def start(self) -> None:
        import httpx

        if self.topic:
            kafka_topic(self.topic)
        ingest, support = build(self.root)
        # a worker id of its own: the default (host and group) is shared with every other
        # `tidegate run` on this host, and two static members of one id fence each other
        worker_id = {"TIDEGATE_WORKER_ID": f"bench-fresh-{uuid.uuid4().hex[:8]}"}
        self.server = TidegateRun(self.root, self.root / "run.log", env=worker_id)
        self.server.wait_up()
        self.client = httpx.Client(base_url=self.server.base, timeout=30)
        self.reader = httpx.Client(base_url=self.server.base, timeout=30)
        self.headers = {"Authorization": f"Bearer {ingest}", "Content-Type": "application/json"}
        self.read_headers = {"Authorization": f"Bearer {support}", "X-Purpose": "support"}
        if self.kafka:
            from confluent_kafka import Producer

            self.producer = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "linger.ms": 5})

    def send(self, events: list[dict[str, Any]]) -> None:
        if self.producer is not None:
            for event in events:
                self.producer.produce(
                    self.topic, key=str(event["customer_id"]), value=encode(event)
                )
            self.producer.poll(0)
            return
        import orjson

        response = self.client.post(
            f"/v1/events/{SOURCE}", content=orjson.dumps(events), headers=self.headers
        )
        response.raise_for_status()

    def flush(self) -> None:
        if self.producer is not None:
            self.producer.flush(30)

    def visible(self, customer: int) -> bool:
        response = self.reader.get(
            f"/v1/products/{PRODUCT}/entities/{customer}", headers=self.read_headers
        )
        return bool(response.status_code == 200)

    def stop(self) -> None:
        for client in (self.client, self.reader):
            if client is not None:
                client.close()
        if self.server is not None:
            self.server.stop()
        if self.topic:
            kafka_delete([self.topic])


class PeerSystem(System):
    """A peer stream engine (`app`, run by `python` in its venv) reading its own topic
    and sinking per-customer counts into SQLite; visible when the probe's row is there."""

    label = "peer"
    app = ""

    def __init__(self, workdir: Path, python: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.topic = f"bench-{self.label}-{uuid.uuid4().hex[:8]}"
        self.sqlite = workdir / "counts.db"
        self.process: subprocess.Popen[bytes] | None = None
        self.producer: Any = None
        self.db: sqlite3.Connection | None = None

    def config(self) -> dict[str, Any]:
        return {
            "bootstrap": KAFKA_BOOTSTRAP,
            "topic": self.topic,
            "group": f"{self.label}-{uuid.uuid4().hex[:8]}",
            "sqlite": str(self.sqlite),
        }

    def start(self) -> None:
        from confluent_kafka import Producer

        kafka_topic(self.topic)
        log = (self.workdir / f"{self.label}.log").open("wb")
        self.process = subprocess.Popen(
            [str(self.python), str(ROOT / self.app)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.config()).encode())
        self.process.stdin.close()
        self.producer = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "linger.ms": 5})

    def send(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.producer.produce(self.topic, key=str(event["customer_id"]), value=encode(event))
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)

    def visible(self, customer: int) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.workdir / f"{self.label}.log"
            raise RuntimeError(f"the {self.label} app exited; see {log}")
        if self.db is None:
            if not self.sqlite.exists():
                return False
            self.db = sqlite3.connect(str(self.sqlite), timeout=5, check_same_thread=False)
        try:
            row = self.db.execute(
                "SELECT 1 FROM counts WHERE customer_id = ?", (customer,)
            ).fetchone()
        except sqlite3.OperationalError:  # the sink has not created its table yet
            return False
        return row is not None

    def stop(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        kafka_delete([self.topic])


class QuixSystem(PeerSystem):
    label = "quix"
    app = "quix_app.py"

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "state_dir": str(self.workdir / "state"),
            "commit_interval": 0.1,
        }


class PathwaySystem(PeerSystem):
    label = "pathway"
    app = "pathway_app.py"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "autocommit_duration_ms": 10}


def measure(system: System, rate: int, duration: float, probe_start: int) -> Sample:
    """Produce `rate` events/s for `duration` s with a probe every PROBE_EVERY s."""
    import random

    rng = random.Random(rate)
    pending: dict[int, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        while True:
            with lock:
                waiting = list(pending.items())
            if not waiting and done.is_set():
                return
            for customer, sent in waiting:
                if system.visible(customer):
                    seen = time.perf_counter()
                    with lock:
                        pending.pop(customer, None)
                        latencies.append(seen - sent)
            time.sleep(0.002)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            poll()
        except BaseException as err:  # reported below
            errors.append(err)

    poller = threading.Thread(target=guarded, daemon=True)
    poller.start()
    per_tick = max(1, round(rate * TICK))
    sent = 0
    next_probe = probe_start
    started = time.perf_counter()
    next_tick = started
    last_probe = started - PROBE_EVERY
    event_id = probe_start * 1000
    while (now := time.perf_counter()) - started < duration:
        events = []
        for _ in range(per_tick):
            event_id += 1
            events.append(
                {
                    "event_id": event_id,
                    "customer_id": rng.randint(1, CUSTOMERS),
                    "amount": 1.0,
                    "occurred_at": "2026-11-01T00:00:00+00:00",
                }
            )
        probe = None
        if now - last_probe >= PROBE_EVERY:
            probe = next_probe
            next_probe += 1
            last_probe = now
            events[-1]["customer_id"] = probe
        at = time.perf_counter()
        if probe is not None:
            with lock:
                pending[probe] = at
        system.send(events)
        sent += len(events)
        next_tick += TICK
        pause = next_tick - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    produced = time.perf_counter() - started
    system.flush()
    deadline = time.monotonic() + LOST_AFTER
    while time.monotonic() < deadline and not errors:
        with lock:
            if not pending:
                break
        time.sleep(0.05)
    done.set()
    with lock:
        lost = len(pending)
        pending.clear()
    poller.join(timeout=30)
    if errors:
        raise RuntimeError(f"poller failed: {errors[0]}")
    if not latencies:
        raise RuntimeError("no probe became visible")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Sample(
        p99 * 1000,
        {
            "achieved_events_per_s": sent / produced,
            "probes": float(len(latencies)),
            "lost": float(lost),
        },
        latencies=latencies,
    )


@register
class FreshnessBenchmark(Benchmark):
    name = "freshness"
    title = (
        "produce → visible (p99 ms) at fixed rates: tidegate embedded, Kafka; Quix Streams, Pathway"
    )
    metric = Metric("p99_ms")
    rounds_full = 1
    rounds_quick = 1
    warmup_full = 0
    warmup_quick = 0
    profile_in_process = False  # tidegate runs in its own process

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rates = (1_000, 20_000) if self.quick else (1_000, 10_000, 20_000)
        self.duration = 5.0 if self.quick else 15.0
        self.quix_python: Path | None = None
        self.pathway_python: Path | None = None
        self.no_pathway = ""
        self.runs = 0
        self.probe = PROBE_BASE

    def sizes(self) -> dict[str, Any]:
        return {
            "rates": list(self.rates),
            "duration_s": self.duration,
            "customers": CUSTOMERS,
            "probe_every_s": PROBE_EVERY,
        }

    def contenders(self) -> list[Contender]:
        found = []
        for rate in self.rates:
            group = f"{rate // 1000}k/s"
            found += [
                Contender(f"tidegate embedded @ {group}", "tidegate", group, reference=True),
                Contender(f"tidegate Kafka @ {group}", "tidegate", group),
                Contender(f"Quix Streams @ {group}", "peer", group),
                Contender(f"Pathway @ {group}", "peer", group),
            ]
        return found

    def environment(self) -> dict[str, Any]:
        return {
            "kafka": KAFKA_BOOTSTRAP,
            "quixstreams": QUIX[0],
            "pathway": PATHWAY[0] if self.pathway_python else f"not installed: {self.no_pathway}",
        }

    def prepare(self) -> None:
        self.quix_python = peer_venv("quixstreams", QUIX)
        try:
            self.pathway_python = peer_venv("pathway", PATHWAY)
        except (OSError, subprocess.SubprocessError) as err:  # told in its rows, not faked
            self.no_pathway = f"{PATHWAY[0]} could not be installed from the registry ({err})"

    def run(self, contender: Contender) -> Sample:
        rate = int(contender.group.removesuffix("k/s")) * 1000
        self.runs += 1
        workdir = self.workdir / f"run{self.runs}"
        system: System
        if contender.name.startswith("Quix"):
            assert self.quix_python is not None
            system = QuixSystem(workdir, self.quix_python)
        elif contender.name.startswith("Pathway"):
            if self.pathway_python is None:
                raise RuntimeError(self.no_pathway)
            system = PathwaySystem(workdir, self.pathway_python)
        else:
            system = TidegateSystem(workdir, kafka="Kafka" in contender.name)
        try:
            system.start()
            warm = self.probe
            self.probe += 1
            system.send(
                [{"event_id": warm * 1000, "customer_id": warm, "amount": 1.0, "occurred_at": None}]
            )
            system.flush()
            if not wait_until(lambda: system.visible(warm), 120, 0.05):
                raise RuntimeError("the warm-up probe never became visible")
            start = self.probe
            self.probe += 10_000
            return measure(system, rate, self.duration, start)
        finally:
            system.stop()
