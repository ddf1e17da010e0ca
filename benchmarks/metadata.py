"""`metadata`: the metadata store on SQLite vs PostgreSQL, side by side in one run.

Three groups, each with the embedded SQLite store as the reference (ratios are
PostgreSQL against it):

* **audit append**: `AuditLog.append(record)`, one record per call: one chained
  transaction each (the head locked, the next seq and hash computed, the row inserted),
  what an admin action or an unbatched egress costs;
* **consent write**: `ConsentLedger.record([event])`, one event per call: one
  transaction that bumps the change token and appends to the ledger, what `POST
  /v1/consent` and `tidegate consent` cost;
* **serve**: `GET /v1/products/people_out/entities/<id>` over HTTP (a real server on
  127.0.0.1 in this process, one keep-alive client, a random person per request),
  with metadata on SQLite or on PostgreSQL and the online store on SQLite for both, so
  only the metadata differs: each request asks the change token (API keys and consent
  caches), and the audit writer batches one record per request in the background.

The value is operations per second of one round; p50/p95/p99 are per operation. The
PostgreSQL server is the one of `scripts/services.sh` (`TIDEGATE_BENCH_PG_DSN`);
each run uses schemas of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, Contender, Metric, Sample, register
from benchmarks.people import PRODUCT, PeopleProject

DSN = os.environ.get(
    "TIDEGATE_BENCH_PG_DSN", "postgresql://tidegate:tidegate@127.0.0.1:5432/tidegate"
)
PURPOSE = "crm"
BACKENDS = ("SQLite", "PostgreSQL")
GROUPS = ("audit append", "consent write", "serve")


def people_project(metadata: str) -> PeopleProject:
    return PeopleProject(
        name="bench_metadata",
        purpose=PURPOSE,
        legal_basis="consent",
        role="crm_app",
        settings=f"backends:\n  metadata: {metadata}\n",
    )


def contender_name(group: str, backend: str) -> str:
    return f"{group}: {backend}"


class _Side:
    """One project, its platform and its API server, on one metadata backend."""

    def __init__(self, root: Path, metadata: str, people: int) -> None:
        import httpx

        from tidegate.api import create_app
        from tidegate.demo.runner import BackgroundServer, _free_port
        from tidegate.platform.keys import create_key

        project = people_project(metadata)
        project.write(root)
        self.platform = platform = project.open_people(root, people)
        self.token, _ = create_key(platform.meta, "bench", ["crm_app"])
        self.server = BackgroundServer(create_app(platform), _free_port(0))
        self.server.start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}", timeout=30)
        self.people = people
        self.next_subject = people + 1

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.platform.close()


@register
class MetadataBenchmark(Benchmark):
    name = "metadata"
    title = "metadata store: audit appends, consent writes, serving, SQLite vs PostgreSQL"
    metric = Metric("ops/s", higher_is_better=True)
    rounds_full = 5
    rounds_quick = 3
    warmup_full = 1
    warmup_quick = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.people = 1_000 if self.quick else 10_000
        self.writes = 200 if self.quick else 2_000
        self.requests = 300 if self.quick else 3_000
        self.schema = f"bench_meta_{os.getpid()}_{secrets.token_hex(3)}"
        self.sides: dict[str, _Side] = {}

    def sizes(self) -> dict[str, Any]:
        return {
            "people": self.people,
            "writes_per_round": self.writes,
            "requests_per_round": self.requests,
        }

    def contenders(self) -> list[Contender]:
        return [
            Contender(
                contender_name(group, backend),
                "tidegate",
                group,
                reference=backend == "SQLite",
                description=f"metadata on {backend}",
            )
            for group in GROUPS
            for backend in BACKENDS
        ]

    def prepare(self) -> None:
        sqlite = "{type: sqlite, path: .tidegate/metadata.db}"
        postgres = f'{{type: postgres, dsn: "{DSN}", schema: {self.schema}}}'
        for backend, config in zip(BACKENDS, (sqlite, postgres), strict=True):
            self.sides[backend] = _Side(self.workdir / backend.lower(), config, self.people)

    def environment(self) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(DSN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return {"postgres": row[0] if row else ""}

    # ---------------------------------------------------------------- the operations

    def _audit(self, side: _Side) -> list[float]:
        from tidegate.audit.log import AuditLog, AuditRecord

        log = AuditLog(side.platform.meta, key=b"bench-audit-key" * 2)  # no anchor file
        latencies = []
        for i in range(self.writes):
            record = AuditRecord("admin", "bench", detail={"op": "bench", "i": i})
            started = time.perf_counter()
            log.append(record)
            latencies.append(time.perf_counter() - started)
        return latencies

    def _consent(self, side: _Side) -> list[float]:
        from tidegate.privacy.consent import ConsentEvent, consent_ledger_of

        ledger = consent_ledger_of(side.platform)
        latencies = []
        for _ in range(self.writes):
            subject = str(side.next_subject)  # people nobody serves: the API is unaffected
            side.next_subject += 1
            event = ConsentEvent(subject, PURPOSE, "grant", time.time(), "bench")
            started = time.perf_counter()
            ledger.record([event])
            latencies.append(time.perf_counter() - started)
        return latencies

    def _serve(self, side: _Side) -> list[float]:
        rng = random.Random(7)
        headers = {"Authorization": f"Bearer {side.token}", "X-Purpose": PURPOSE}
        latencies = []
        for _ in range(self.requests):
            key = rng.randint(1, side.people)
            started = time.perf_counter()
            response = side.client.get(f"/v1/products/{PRODUCT}/entities/{key}", headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"API answered {response.status_code}: {response.text[:200]}")
        return latencies

    def run(self, contender: Contender) -> Sample:
        group, backend = contender.name.split(": ")
        side = self.sides[backend]
        operation = {"audit append": self._audit, "consent write": self._consent}.get(
            group, self._serve
        )
        started = time.perf_counter()
        latencies = operation(side)
        elapsed = time.perf_counter() - started
        return Sample(len(latencies) / elapsed, {"seconds": elapsed}, latencies=latencies)

    def teardown(self) -> None:
        for side in self.sides.values():
            side.close()
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
