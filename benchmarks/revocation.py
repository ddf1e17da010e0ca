"""`revocation`: from a consent revocation to the subject's absence, per system.

A product of N people (`id` key and subject, email, score) goes out under `crm`, a purpose
resting on consent, which every person granted: served by the API (a real HTTP server
on 127.0.0.1, in this process) and synced to a PostgreSQL table and to Redis hashes.

One operation: a subject not revoked before is revoked (a ledger write, as
`POST /v1/consent` and `tidegate consent revoke` do) and, for the destinations,
propagated (`privacy.propagation.propagate`, what the consent API runs in the
background); the clock stops when the subject is absent from the system measured:

* **API**: `GET /v1/products/people_out/entities/<id>` answers 404 (the guard reads the
  ledger on every request, so the first read after the write already does);
* **PostgreSQL**: `SELECT 1 … WHERE id = <id>` finds no row (polled);
* **Redis**: the subject's hash no longer exists (polled).

Each round runs every contender once, alternating which starts (the harness rotates),
each measuring `revocations` subjects; the value is the median latency, and p50/p95/p99
are over every revocation of every counted round. The target (issue 4): p99 under 1 s
for the destinations; the API is immediate. There is no peer or physical limit here:
the groups each hold one contender, so no ratios are shown.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, Contender, Sample, register
from benchmarks.people import PRODUCT, PeopleProject
from tidegate.privacy.consent import consent_ledger_of

DSN = os.environ.get(
    "TIDEGATE_BENCH_PG_DSN", "postgresql://tidegate:tidegate@127.0.0.1:5432/tidegate"
)
REDIS_URL = os.environ.get("TIDEGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PURPOSE = "crm"
API = "API: next read is 404"
POSTGRES = "PostgreSQL destination: row gone"
REDIS = "Redis destination: hash gone"
POLL = 0.001
GIVE_UP = 30.0


PEOPLE = PeopleProject(
    name="bench_revocation", purpose=PURPOSE, legal_basis="consent", role="crm_app"
)


def write_project(root: Path, table: str, prefix: str) -> None:
    PEOPLE.write(root)
    (root / "syncs" / "to_pg.yml").write_text(
        f"name: to_pg\nproduct: {PRODUCT}\npurpose: {PURPOSE}\n"
        f'destination: {{type: postgres, dsn: "{DSN}", table: {table}}}\n'
        "mode: upsert\ntrigger: manual\n"
    )
    (root / "syncs" / "to_redis.yml").write_text(
        f"name: to_redis\nproduct: {PRODUCT}\npurpose: {PURPOSE}\n"
        f"destination: {{type: redis, url: \"{REDIS_URL}\", key_template: '{prefix}:{{key}}'}}\n"
        "mode: upsert\ntrigger: manual\n"
    )


@register
class RevocationBenchmark(Benchmark):
    name = "revocation"
    title = "consent revocation → absence: API, PostgreSQL, Redis"
    rounds_full = 5
    rounds_quick = 3
    warmup_full = 1
    warmup_quick = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.people = 2_000 if self.quick else 20_000
        self.revocations = 20 if self.quick else 50
        token = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.table = f"bench_revoke_{token}"
        self.prefix = f"bench:revoke:{token}"
        self.platform: Any = None
        self.server: Any = None
        self.client: Any = None
        self.token = ""
        self.next_subject = 1

    def sizes(self) -> dict[str, Any]:
        return {"people": self.people, "revocations_per_round": self.revocations}

    def contenders(self) -> list[Contender]:
        return [
            Contender(API, "tidegate", "api", description="ledger write, then GET until 404"),
            Contender(
                POSTGRES, "tidegate", "postgres", description="ledger write + propagate; poll"
            ),
            Contender(REDIS, "tidegate", "redis", description="ledger write + propagate; poll"),
        ]

    def prepare(self) -> None:
        import httpx
        import psycopg
        import redis

        from tidegate.api import create_app
        from tidegate.demo.runner import BackgroundServer, _free_port
        from tidegate.egress.sync import run_sync
        from tidegate.platform.keys import create_key

        root = self.workdir / "project"
        write_project(root, self.table, self.prefix)
        self.platform = platform = PEOPLE.open_people(root, self.people)
        for name in ("to_pg", "to_redis"):
            report = run_sync(platform, name)
            assert report.added == self.people, report
        self.token, _ = create_key(platform.meta, "bench", ["crm_app"])
        self.server = BackgroundServer(create_app(platform), _free_port(0))
        self.server.start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}", timeout=30)
        self.pg = psycopg.connect(DSN, autocommit=True)
        self.redis = redis.Redis.from_url(REDIS_URL)

    def environment(self) -> dict[str, Any]:
        row = self.pg.execute("SHOW server_version").fetchone()
        return {
            "postgres": row[0] if row else "",
            "redis": self.redis.info("server").get("redis_version", ""),
        }

    # ---------------------------------------------------------------- one revocation

    def _revoke(self) -> str:
        from tidegate.privacy.consent import ConsentEvent

        subject = str(self.next_subject)
        self.next_subject += 1
        if self.next_subject > self.people:
            raise RuntimeError("every subject was revoked: raise `people`")
        consent_ledger_of(self.platform).record(
            [ConsentEvent(subject, PURPOSE, "revoke", time.time(), "bench")]
        )
        return subject

    def _api_absent(self, subject: str) -> bool:
        response = self.client.get(
            f"/v1/products/{PRODUCT}/entities/{subject}",
            headers={"Authorization": f"Bearer {self.token}", "X-Purpose": PURPOSE},
        )
        if response.status_code not in (200, 404):
            raise RuntimeError(f"API answered {response.status_code}: {response.text[:200]}")
        return bool(response.status_code == 404)

    def _pg_absent(self, subject: str) -> bool:
        from psycopg import sql

        query = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(self.table))
        return self.pg.execute(query, (int(subject),)).fetchone() is None

    def _redis_absent(self, subject: str) -> bool:
        return not self.redis.exists(f"{self.prefix}:{subject}")

    def _until(self, absent: Any, subject: str, started: float) -> float:
        while not absent(subject):
            if time.perf_counter() - started > GIVE_UP:
                raise RuntimeError(f"subject {subject} still present after {GIVE_UP}s")
            time.sleep(POLL)
        return time.perf_counter() - started

    def run(self, contender: Contender) -> Sample:
        import threading

        from tidegate.requests.propagation import propagate

        latencies: list[float] = []
        for _ in range(self.revocations):
            if contender.name == API:
                started = time.perf_counter()
                subject = self._revoke()
                latencies.append(self._until(self._api_absent, subject, started))
                continue
            absent = self._pg_absent if contender.name == POSTGRES else self._redis_absent
            started = time.perf_counter()
            subject = self._revoke()
            worker = threading.Thread(target=propagate, args=(self.platform, subject))
            worker.start()  # in the background, as the consent API does
            latencies.append(self._until(absent, subject, started))
            worker.join()
        latencies.sort()
        value = latencies[len(latencies) // 2]
        return Sample(value, {"revocations": float(len(latencies))}, latencies=latencies)

    def teardown(self) -> None:
        from psycopg import sql

        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        if self.platform is not None:
            self.platform.close()
        if getattr(self, "pg", None) is not None:
            self.pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.table)))
            self.pg.close()
        if getattr(self, "redis", None) is not None:
            for key in self.redis.scan_iter(f"{self.prefix}:*", count=1000):
                self.redis.delete(key)
            self.redis.close()
