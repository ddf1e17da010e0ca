"""`http_sync`: the HTTP destination against a local server that rate-limits.

A local HTTP "CRM" on 127.0.0.1 (a free port, `ThreadingHTTPServer`, in this process)
accepts the HTTP destination's batched JSON POSTs and enforces `LIMIT` requests per
second: at most `LIMIT` requests are accepted in any 1-second window (a sliding-window
log, the strict reading of "N per second": no burst above it, ever). A request over the
limit is answered `429` with `Retry-After: <whole seconds until a slot frees>`, and not
applied. The server records every request's arrival time and answer, and every row key
it accepted.

A generated Parquet source (`id` key and subject, `name`, `score`) feeds a product; two
HTTP syncs (`upsert`, `trigger: manual`) post it to the server in batches of
`batch_rows` rows (200 requests a run quick, 500 full; small batches, so the client
can actually send faster than the limit):

| contender | the sync's `rate_limit` |
| --- | --- |
| `rate_limit = server limit` | `LIMIT`: the sync's own limiter alone should keep it under |
| `rate_limit = 2x server limit` | `2 * LIMIT`: the server answers 429 + `Retry-After`; the |
| | backoff must hold the accepted rate at the limit and lose no row |

Each run is `run_sync(..., full=True)` (every row resent, so each round sends the same
work) after the server's log is cleared. The primary value is the achieved rate:
accepted requests per second over the span from the first to the last accepted
request. Secondary numbers: that rate as a fraction of the limit, the most requests
*sent* (accepted or not) and *accepted* in any sliding 1-second window, the 429 count,
rows/s over the whole `run_sync`. Every run checks that the server accepted every row
exactly once by key (a missing or duplicated key fails the run). No reference
contender: the limit is the server's number, shown as `of_limit`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, Contender, Metric, Sample, register
from benchmarks.people import PRODUCT, PeopleProject

LIMIT = 20  # the server's requests per second
AT_LIMIT = "rate_limit = server limit"
OVER_LIMIT = "rate_limit = 2x server limit"
SYNCS = {AT_LIMIT: ("to_http_at", float(LIMIT)), OVER_LIMIT: ("to_http_over", 2.0 * LIMIT)}
MAX_REQUESTS = 100_000  # per run: the server refuses (503) beyond it
MAX_BODY = 16 * 1024 * 1024


def most_in_window(times: list[float], width: float = 1.0) -> int:
    """The most timestamps within any half-open window [t, t + width)."""
    ordered = sorted(times)
    most = start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass
class RateLimitedCrm:
    """What the server saw: arrivals (time, status) and accepted keys, with its limiter."""

    limit: int
    window: float = 1.0
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    keys: Counter[str] = field(default_factory=Counter)
    accepted: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()
            self.keys.clear()
            self.accepted.clear()

    def handle(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        now = time.monotonic()
        with self.lock:
            if len(self.arrivals) >= MAX_REQUESTS:
                self.arrivals.append((now, 503))
                return 503, {}, b'{"error": "benchmark request budget exhausted"}'
            while self.accepted and now - self.accepted[0] >= self.window:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.arrivals.append((now, 429))
                wait = self.accepted[0] + self.window - now
                headers = {"Retry-After": str(max(1, math.ceil(wait)))}
                return 429, headers, b'{"error": "rate limit exceeded"}'
            self.accepted.append(now)
            self.arrivals.append((now, 200))
            payload = json.loads(raw)
            key = payload["key"]
            field_name = "keys" if payload["operation"] == "delete" else "rows"
            for item in payload.get(field_name, []):
                self.keys[str(item if field_name == "keys" else item[key])] += 1
        return 200, {}, b'{"errors": []}'


def start_server(crm: RateLimitedCrm) -> tuple[ThreadingHTTPServer, threading.Thread, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if length > MAX_BODY:
                status, headers, body = 413, {}, b'{"error": "too large"}'
                self.close_connection = True
            else:
                status, headers, body = crm.handle(self.rfile.read(length))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 16

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="bench-http-crm", daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_address[1]}/v1/sync"


PEOPLE = PeopleProject(
    name="bench_http_sync",
    purpose="ops",
    legal_basis="contract",
    role="ops_app",
    personal=("name", "user.name", "person {}"),
)


def write_project(root: Path, url: str, batch_rows: int) -> None:
    PEOPLE.write(root)
    for sync, rate in SYNCS.values():
        # max_attempts: room for a few 429s in a row; each waits Retry-After (>= 1 s)
        (root / "syncs" / f"{sync}.yml").write_text(
            f"name: {sync}\nproduct: {PRODUCT}\npurpose: ops\n"
            f"destination: {{type: http, url: '{url}', timeout: 10s}}\n"
            f"mode: upsert\ntrigger: manual\nbatch_rows: {batch_rows}\n"
            f"rate_limit: {rate:g}\nretry: {{max_attempts: 10}}\n"
        )


@register
class HttpSyncBenchmark(Benchmark):
    name = "http_sync"
    title = f"HTTP destination vs a server limited to {LIMIT} requests/s"
    metric = Metric("requests/s", higher_is_better=True)
    rounds_full = 3
    rounds_quick = 2
    warmup_full = 1
    warmup_quick = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = 20_000 if self.quick else 100_000
        self.batch_rows = 100 if self.quick else 200
        self.crm = RateLimitedCrm(LIMIT)
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.platform: Any = None

    def sizes(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "batch_rows": self.batch_rows,
            "requests_per_run": math.ceil(self.rows / self.batch_rows),
            "server_limit_rps": LIMIT,
        }

    def contenders(self) -> list[Contender]:
        return [
            Contender(
                AT_LIMIT,
                "tidegate",
                description=f"sync rate_limit {LIMIT}/s: its own limiter keeps under the server's",
            ),
            Contender(
                OVER_LIMIT,
                "tidegate",
                description=f"sync rate_limit {2 * LIMIT}/s: 429 + Retry-After hold it back",
            ),
        ]

    def prepare(self) -> None:

        self.server, self.thread, url = start_server(self.crm)
        root = self.workdir / "project"
        write_project(root, url, self.batch_rows)
        self.platform = PEOPLE.open_people(root, self.rows)

    def environment(self) -> dict[str, Any]:
        return {"server": "http.server.ThreadingHTTPServer (sliding 1 s window)"}

    def run(self, contender: Contender) -> Sample:
        from tidegate.egress.sync import run_sync

        sync, rate = SYNCS[contender.name]
        self.crm.reset()
        started = time.perf_counter()
        report = run_sync(self.platform, sync, full=True)
        elapsed = time.perf_counter() - started
        with self.crm.lock:
            arrivals = list(self.crm.arrivals)
            keys = Counter(self.crm.keys)
        accepted = [at for at, status in arrivals if status == 200]
        rejected = sum(1 for _, status in arrivals if status == 429)
        expected = {str(i) for i in range(1, self.rows + 1)}
        missing = len(expected - keys.keys())
        duplicated = sum(1 for count in keys.values() if count > 1)
        unexpected = len(keys.keys() - expected)
        if missing or duplicated or unexpected:
            raise RuntimeError(
                f"{contender.name}: server holds {len(keys)} keys; {missing} missing, "
                f"{duplicated} duplicated, {unexpected} unexpected (report: {report})"
            )
        span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
        achieved = (len(accepted) - 1) / span if span > 0 else 0.0
        return Sample(
            achieved,
            {
                "of_limit": achieved / LIMIT,
                "max_sent_in_1s": float(most_in_window([at for at, _ in arrivals])),
                "max_accepted_in_1s": float(most_in_window(accepted)),
                "answers_429": float(rejected),
                "requests_accepted": float(len(accepted)),
                "rows_per_s": self.rows / elapsed,
                "sync_s": elapsed,
                "rows_received_once": float(len(keys)),
            },
            info={"sync_rate_limit": rate, "server_limit": LIMIT, "added": report.added},
        )

    def teardown(self) -> None:
        if self.platform is not None:
            self.platform.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
