"""`serve`: one entity over HTTP, through the guard, against a raw online-store read.

The demo shop is built (consent choices loaded, as `tidegate demo` does), an API key is
created for a `support_agent`, and the API runs in a process of its own
(`benchmarks/serve_runner.py`, the same app and uvicorn settings as `tidegate serve`).
A separate load-generator process (`benchmarks/loadgen.py`) sends
`GET /v1/products/customer_360/entities/{random customer}` with `X-Purpose: support`,
closed loop, at 1 and at 16 concurrent clients, each run bounded in time and count.

Beside it:

* the physical limit: `SqliteOnlineStore.read` of a random key in a loop, in one
  process: what reading the serving store costs with no HTTP, auth, guard or audit;
* an informative floor: `GET /v1/health` on the same server at 16 clients, which is
  what uvicorn + FastAPI + the load generator cost before tidegate does any work.

The server's and the load generator's CPU time per request are recorded too: on a
small machine they share the cores, and these say who was busy.
"""

from __future__ import annotations

import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
    Contender,
    Metric,
    Sample,
    profile_path,
    register,
    run_json,
    wait_until,
)
from benchmarks.serve_runner import PROFILE_ENV

PRODUCT = "customer_360"
ENTITY_PATH = f"/v1/products/{PRODUCT}/entities/{{key}}"
API_C1 = "tidegate API, 1 client"
API_C16 = "tidegate API, 16 clients"
FLOOR = "HTTP floor: /v1/health, 16 clients"
RAW = "raw SQLite online-store read"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@register
class ServeBenchmark(Benchmark):
    name = "serve"
    title = "GET one entity (support purpose) over HTTP, vs a raw online-store read"
    metric = Metric("requests/s", higher_is_better=True)
    rounds_full = 3
    rounds_quick = 2
    warmup_full = 0
    warmup_quick = 0
    profile_in_process = False  # --profile profiles the API server process instead

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duration = 3.0 if self.quick else 10.0
        self.max_requests = 50_000 if self.quick else 300_000
        self.raw_reads = 30_000 if self.quick else 200_000
        self.project_dir = self.workdir / "shop"
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log: Any = None
        self.port = 0
        self.token = ""
        self.customers = 0
        self.online: Any = None
        self.rng = random.Random(7)

    def shop_size(self) -> Any:
        from tidegate.demo.generator import ShopSize

        if self.quick:
            return ShopSize(customers=2_000, orders=20_000, web_events=200_000, tickets=4_000)
        return ShopSize()

    def sizes(self) -> dict[str, Any]:
        return {
            "customers": self.shop_size().customers,
            "duration_s": self.duration,
            "max_requests": self.max_requests,
            "raw_reads": self.raw_reads,
        }

    def contenders(self) -> list[Contender]:
        return [
            Contender(API_C1, "tidegate", description="closed loop, 1 connection"),
            Contender(API_C16, "tidegate", description="closed loop, 16 connections"),
            Contender(FLOOR, "baseline", description="no auth, guard, store or audit"),
            Contender(RAW, "limit", reference=True, description="in-process loop"),
        ]

    def todo(self) -> list[str]:
        return [
            "peer: Feast feature server (SQLite online store, get-online-features) "
            "in its own venv, at 1 and 16 clients"
        ]

    def prepare(self) -> None:
        from tidegate.demo.generator import generate_shop
        from tidegate.demo.runner import load_consent, prepare_directory
        from tidegate.egress.serve.keys import create_key
        from tidegate.products.builder import build_products, load_sources
        from tidegate.runtime.platform import Platform
        from tidegate.store.online.sqlite_store import SqliteOnlineStore

        size = self.shop_size()
        self.customers = size.customers
        prepare_directory(self.project_dir)
        generate_shop(self.project_dir / "data", size=size)
        with Platform.open(self.project_dir) as platform:
            load_consent(platform, self.project_dir)
            load_sources(platform)
            results = build_products(platform)
            if any(r.status != "live" for r in results):
                raise RuntimeError(f"the demo shop did not build: {results}")
            self.token, _ = create_key(platform.meta, "bench", ["support_agent"])
            online_path = platform.project.path(platform.project.config.backends.online.path)
        self.online = SqliteOnlineStore(online_path)
        self._start_server()

    def _start_server(self) -> None:
        import httpx

        self.port = _free_port()
        self.server_log = (self.workdir / "server.log").open("wb")
        env = dict(os.environ)
        if self.settings.profile:
            path = profile_path(self.settings.results_dir, self.name, "api-server")
            env[PROFILE_ENV] = str(path)
        self.server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.serve_runner",
                str(self.project_dir),
                f"{self.port}",
            ],
            cwd=ROOT.parent,
            stdout=self.server_log,
            stderr=subprocess.STDOUT,
            env=env,
        )

        def up() -> bool:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(
                    f"the API exited with {self.server.returncode}; see {self.workdir}/server.log"
                )
            try:
                return httpx.get(f"{self._base()}/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout=60, interval=0.1):
            raise RuntimeError("the API did not answer /v1/health within 60s")
        response = httpx.get(
            self._base() + ENTITY_PATH.format(key=1), headers=self._headers(), timeout=10
        )
        if response.status_code != 200:
            raise RuntimeError(f"sanity GET failed: {response.status_code} {response.text[:300]}")

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Purpose": "support"}

    def environment(self) -> dict[str, Any]:
        return {
            "server": "uvicorn, 1 worker, log_level=warning (as `tidegate serve`)",
            "loadgen": "benchmarks/loadgen.py: threads + http.client keep-alive, closed loop",
            "loadgen_process": "separate",
            "uvloop": _has("uvloop"),
            "httptools": _has("httptools"),
        }

    def run(self, contender: Contender) -> Sample:
        if contender.name == RAW:
            return self._raw_reads()
        if contender.name == FLOOR:
            return self._load("/v1/health", 16, {})
        return self._load(ENTITY_PATH, 1 if contender.name == API_C1 else 16, self._headers())

    def _load(self, path: str, concurrency: int, headers: dict[str, str]) -> Sample:
        assert self.server is not None
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            "path": path,
            "keys": self.customers,
            "headers": headers,
            "concurrency": concurrency,
            "duration": self.duration,
            "max_requests": self.max_requests,
            "warmup_requests": 20,
            "seed": self.rng.randrange(1 << 30),
        }
        server_cpu, client_cpu = _cpu_seconds(self.server.pid), _children_cpu()
        result = run_json(
            [sys.executable, "-m", "benchmarks.loadgen"],
            stdin=config,
            timeout=self.duration + 120,
            cwd=ROOT.parent,
        )
        server_cpu = _cpu_seconds(self.server.pid) - server_cpu
        client_cpu = _children_cpu() - client_cpu
        requests = int(result["requests"])
        if not requests:
            raise RuntimeError(f"no request completed: {result['errors']}")
        bad = requests - int(result["statuses"].get("200", 0))
        if bad > requests * 0.01:
            raise RuntimeError(
                f"{bad} of {requests} requests failed: {result['statuses']} {result['errors'][:3]}"
            )
        metrics = {
            "requests": float(requests),
            "non_200": float(bad),
            "server_cpu_ms_per_req": server_cpu * 1000 / requests,
            "loadgen_cpu_ms_per_req": client_cpu * 1000 / requests,
        }
        return Sample(
            requests / result["elapsed"],
            metrics,
            latencies=result["latencies"],
            info={"statuses": result["statuses"], "errors": result["errors"]},
        )

    def _raw_reads(self) -> Sample:
        store, rng, keys = self.online, self.rng, self.customers
        deadline = time.perf_counter() + self.duration
        latencies: list[float] = []
        missing = 0
        started = time.perf_counter()
        for _ in range(self.raw_reads):
            key = str(rng.randint(1, keys))
            began = time.perf_counter()
            value = store.read(PRODUCT, key)
            ended = time.perf_counter()
            latencies.append(ended - began)
            missing += value is None
            if ended > deadline:
                break
        elapsed = time.perf_counter() - started
        if missing:
            raise RuntimeError(f"{missing} keys missing from the online store")
        return Sample(
            len(latencies) / elapsed, {"reads": float(len(latencies))}, latencies=latencies
        )

    def teardown(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=15)
        if self.server_log is not None:
            self.server_log.close()
        if self.online is not None:
            self.online.close()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
