"""`console`: page loads of the web console on the demo shop (issue 18: p95 under 300 ms).

`tidegate serve` runs in its own process on the demo shop (default size; quick: small),
built beforehand, with an API key for the `dpo` role (every product and purpose). One
client (httpx, keep-alive, loopback) loads each page in turn, sequentially, with the key
in the Authorization header (the same page handler as a cookie session):

* `catalog page`: `GET /console/` (every product: freshness ledger, live versions,
  quality status, planner mode; the page view is audited);
* `catalog search`: `GET /console/?q=email`;
* `product page`: `GET /console/products/customer_360` (contract matrix, every pillar
  chart drawn as SVG, quality, versions, lineage; audited);
* `product page + sample`: the same with a live sample of 20 keys through `analytics`
  (a guarded lookup with its `serve` audit record);
* `API health` (baseline): `GET /v1/health` on the same server, the HTTP floor.

The primary number of each run is the p95 of its page loads in ms (full HTML received);
the table's p50/p95/p99 are over every load of the counted rounds. No peer: the consoles
a user would compare with (Marquez, DataHub, Fides) are separate JVM/Node services
whose page loads are not the same work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Benchmark,
    Contender,
    Metric,
    Sample,
    percentile,
    register,
    wait_until,
)

KEYS = ",".join(str(k) for k in range(1, 21))
PAGES = {
    "catalog page": "/console/",
    "catalog search": "/console/?q=email",
    "product page": "/console/products/customer_360",
    "product page + sample": f"/console/products/customer_360?purpose=analytics&keys={KEYS}",
    "API health": "/v1/health",
}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@register
class ConsoleBenchmark(Benchmark):
    name = "console"
    title = "Console page loads on the demo shop (p95 ms)"
    metric = Metric("p95 ms")
    rounds_full = 5
    rounds_quick = 3

    def contenders(self) -> list[Contender]:
        return [
            Contender(
                name,
                "baseline" if name == "API health" else "tidegate",
                reference=name == "catalog page",
                description=path,
            )
            for name, path in PAGES.items()
        ]

    @property
    def loads(self) -> int:
        return 40 if self.quick else 200

    def sizes(self) -> dict[str, Any]:
        return {"shop": "small" if self.quick else "default", "loads_per_round": self.loads}

    def prepare(self) -> None:
        import httpx

        from tidegate.demo.generator import SMALL, generate_shop
        from tidegate.demo.runner import load_consent, prepare_directory
        from tidegate.platform import Platform
        from tidegate.platform.keys import create_key
        from tidegate.products.builder import build_products, load_sources

        self.shop = self.workdir / "shop"
        prepare_directory(self.shop)
        if self.quick:
            generate_shop(self.shop / "data", seed=7, size=SMALL)
        else:
            generate_shop(self.shop / "data", seed=7)
        with Platform.open(self.shop) as platform:
            load_consent(platform, self.shop)
            load_sources(platform)
            build_products(platform)
            self.key = create_key(platform.meta, "bench-console", ["dpo"])[0]
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        tidegate = Path(sys.executable).parent / "tidegate"
        self.log = (self.workdir / "serve.log").open("w")
        self.server = subprocess.Popen(
            [str(tidegate), "serve", "--project", str(self.shop), "--port", str(port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

        def up() -> bool:
            try:
                return self.client.get("/v1/health").status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, 60):
            raise RuntimeError(f"tidegate serve did not start; see {self.workdir / 'serve.log'}")
        for path in PAGES.values():  # first loads: templates compiled, lineage parsed
            answer = self.client.get(path)
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")

    def run(self, contender: Contender) -> Sample:
        path = PAGES[contender.name]
        latencies = []
        for _ in range(self.loads):
            started = time.perf_counter()
            answer = self.client.get(path)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: {answer.status_code}")
        p95 = percentile(latencies, 95) * 1000
        return Sample(
            value=p95,
            metrics={"p50 ms": percentile(latencies, 50) * 1000, "bytes": len(answer.content)},
            latencies=latencies,
        )

    def teardown(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        server = getattr(self, "server", None)
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        log = getattr(self, "log", None)
        if log is not None:
            log.close()
