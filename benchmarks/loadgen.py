"""A bounded HTTP load generator, run as its own process: `python -m benchmarks.loadgen`.

It reads one JSON object on stdin and prints one JSON object on stdout:

    in : {"host": "127.0.0.1", "port": 8787, "path": "/v1/products/p/entities/{key}",
          "keys": 10000, "headers": {...}, "concurrency": 16, "duration": 10.0,
          "max_requests": 200000, "warmup_requests": 20, "seed": 1,
          "client": "http.client" | "httpx",
          "method": "GET" | "POST", "body": '{"keys": __KEYS__}', "batch": 100}
    out: {"requests": n, "elapsed": s, "latencies": [s, ...], "statuses": {"200": n},
          "errors": [...]}

Closed loop: `concurrency` threads, each with one keep-alive connection, each sending
its next request when the last one answered, every `{key}` drawn uniformly from
1..keys. With `"method": "POST"`, each request sends `body` with `__KEYS__` replaced by a
JSON array of `batch` keys drawn the same way (as `application/json`, unless the headers
say otherwise). It stops at `duration` seconds or `max_requests`, whichever comes first, and
refuses any host outside the loopback range: this is for servers on this machine.

The default client is the standard library's `http.client`, the thinnest HTTP/1.1
client Python has, so the generator's own CPU stays small next to the server's; httpx
is there to compare (`"client": "httpx"`).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import socket
import sys
import threading
import time
from typing import Any

MAX_DURATION = 300.0
MAX_REQUESTS = 5_000_000
MAX_CONCURRENCY = 256


def _check_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        raise SystemExit(f"loadgen: cannot resolve {host!r}") from None
    if not address.is_loopback:
        raise SystemExit(f"loadgen: {host} is not a loopback address; refusing to send load")


class _StdlibClient:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = headers

    def send(self, method: str, path: str, body: bytes | None = None) -> int:
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise
        return response.status

    def close(self) -> None:
        self.conn.close()


class _HttpxClient:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        import httpx

        self.client = httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=30)

    def send(self, method: str, path: str, body: bytes | None = None) -> int:
        response = self.client.request(method, path, content=body)
        return int(response.status_code)

    def close(self) -> None:
        self.client.close()


def run(config: dict[str, Any]) -> dict[str, Any]:
    host = str(config.get("host", "127.0.0.1"))
    _check_loopback(host)
    port = int(config["port"])
    template = str(config["path"])
    keys = int(config.get("keys", 1))
    headers = {str(k): str(v) for k, v in dict(config.get("headers", {})).items()}
    concurrency = min(int(config.get("concurrency", 1)), MAX_CONCURRENCY)
    duration = min(float(config.get("duration", 5.0)), MAX_DURATION)
    budget = min(int(config.get("max_requests", 100_000)), MAX_REQUESTS)
    warmup = int(config.get("warmup_requests", 10))
    seed = int(config.get("seed", 1))
    client_class = _HttpxClient if config.get("client") == "httpx" else _StdlibClient
    method = str(config.get("method", "GET")).upper()
    if method not in ("GET", "POST"):
        raise SystemExit(f"loadgen: method {method!r} is not GET or POST")
    body_template = str(config.get("body", "")) if method == "POST" else ""
    batch = max(1, min(int(config.get("batch", 1)), 10_000))
    if method == "POST" and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"

    lock = threading.Lock()
    issued = 0
    statuses: dict[str, int] = {}
    errors: list[str] = []
    per_thread: list[list[float]] = [[] for _ in range(concurrency)]
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()
    deadline = [0.0]

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= budget:
                return False
            issued += 1
            return True

    def request(client: Any, rng: random.Random) -> int:
        path = template.format(key=rng.randint(1, keys))
        if method == "GET":
            return int(client.send("GET", path))
        drawn = json.dumps([rng.randint(1, keys) for _ in range(batch)])
        return int(client.send("POST", path, body_template.replace("__KEYS__", drawn).encode()))

    def worker(index: int) -> None:
        rng = random.Random(seed * 1_000 + index)
        client = client_class(host, port, headers)
        latencies = per_thread[index]
        local: dict[str, int] = {}
        try:
            for _ in range(warmup):
                try:
                    request(client, rng)
                except Exception as err:
                    with lock:
                        errors.append(f"warm-up: {type(err).__name__}: {err}")
            ready.wait()
            go.wait()
            while time.perf_counter() < deadline[0] and take():
                started = time.perf_counter()
                try:
                    status = str(request(client, rng))
                except Exception as err:
                    status = "error"
                    if len(errors) < 20:
                        with lock:
                            errors.append(f"{type(err).__name__}: {err}")
                latencies.append(time.perf_counter() - started)
                local[status] = local.get(status, 0) + 1
        finally:
            client.close()
            with lock:
                for status, count in local.items():
                    statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=60)
    started = time.perf_counter()
    deadline[0] = started + duration
    go.set()
    for thread in threads:
        thread.join(timeout=duration + 60)
    elapsed = time.perf_counter() - started
    latencies = [x for part in per_thread for x in part]
    return {
        "requests": len(latencies),
        "elapsed": elapsed,
        "latencies": latencies,
        "statuses": statuses,
        "errors": errors[:20],
        "client": client_class.__name__,
        "concurrency": concurrency,
    }


def main() -> int:
    config = json.loads(sys.stdin.read())
    result = run(config)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
