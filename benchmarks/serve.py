"""`serve`: customer_360 over HTTP on Redis: tidegate vs Feast's feature server vs raw Redis.

One run, every contender alternated round by round, at 1, 16 and 64 concurrent clients
(quick: 1 and 16):

* **tidegate**: the demo shop built with `backends.online` on Redis (a unique key prefix,
  removed afterwards), consent choices loaded, an API key for a `support_agent`, the API
  as the README advises for several cores (`uvicorn --factory --workers 2
  tidegate.api:app_from_env`, one worker per core; `benchmarks/serve_runner.py`).
  `GET /v1/products/customer_360/entities/{k}` and `POST .../lookup` with 100 keys, purpose
  `support`: authentication, purpose check, consent filter, treatments and audit all on.
* **Feast** (the peer), pinned in its own venv: a temporary feature repo with entity
  `customer_id` and one feature view holding the same product's columns, from a Parquet
  export of the rows tidegate built; `feast apply`, `feast materialize` into the same
  Redis server (Feast's own key format, its own project name, `feast teardown` and a key
  sweep afterwards); `feast serve` tuned as its docs advise for production: several
  gunicorn/uvicorn workers (2, one per core, like tidegate), no worker recycling
  (`--max-requests 0`), keep-alive, access log off, registry cached 60 s.
  `POST /get-online-features` (the feature service) for 1 and for 100 entities.
* **raw Redis**, the physical limit: `redis-benchmark` (C, one connection per client, no
  pipelining) on copies of the same values under the tidegate prefix: `GET` of the
  same JSON strings, `HGETALL` of a hash with the same fields (Feast's layout is a
  hash), and `MGET` of 100 keys for the batch.
* an informative floor: `GET /v1/health` on tidegate's server at 16 clients.

HTTP load comes from a separate process (`benchmarks/loadgen.py`: closed loop, threads,
keep-alive, random customer per request, bounded by time and count, loopback only).
Server and load-generator CPU per request are recorded. After the runs, a tidegate-vs-
Feast table (throughput and p99 ratios per concurrency) is printed and stored in the
JSON under `environment.versus`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
    Contender,
    Metric,
    Sample,
    median,
    peer_venv,
    percentile,
    profile_path,
    register,
    run_json,
    wait_until,
)
from benchmarks.serve_runner import PROFILE_ENV, SERVER_ENV

PRODUCT = "customer_360"
ENTITY_PATH = f"/v1/products/{PRODUCT}/entities/{{key}}"
LOOKUP_PATH = f"/v1/products/{PRODUCT}/lookup"
BATCH = 100
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: one uvicorn worker per core: the README's advice for this machine (`--workers 2`)
TIDEGATE_WORKERS = 2
FEAST_REQUIREMENTS = ["feast[redis]==0.67.0"]
#: Feast's docs: several workers for production; 2 = one per core, as tidegate gets
#: (`--workers -1` would be 2 x cores + 1 = 5; TIDEGATE_BENCH_FEAST_WORKERS overrides)
FEAST_WORKERS = int(os.environ.get("TIDEGATE_BENCH_FEAST_WORKERS", "2"))
FEAST_DIR = ROOT / "feast_app"
FLOOR = "HTTP floor: /v1/health, c=16"
FLOOR_GRANIAN = "HTTP floor (granian): /v1/health, c=16"


@dataclass(frozen=True)
class _Spec:
    system: str  # tidegate | feast | redis | floor
    shape: str  # single | batch
    concurrency: int
    op: str = ""  # redis: GET | HGETALL | MGET
    server: str = "uvicorn"  # tidegate and floor: uvicorn | granian


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's and gunicorn's workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(parents.get(current, []))
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes, from /proc (0 for any gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _started(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): tells a PID from its reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stop(process: subprocess.Popen[bytes] | None, pids: dict[int, str | None]) -> None:
    """SIGTERM the server (it stops its workers), then SIGKILL any of its recorded worker
    PIDs still alive (the same process: same start time)."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid, started in pids.items():
        if process is not None and pid == process.pid:
            continue
        if started is not None and _started(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@register
class ServeBenchmark(Benchmark):
    name = "serve"
    title = "customer_360 over HTTP on Redis: tidegate (guard on) vs Feast vs raw Redis"
    metric = Metric("requests/s", higher_is_better=True)
    rounds_full = 3
    rounds_quick = 2
    warmup_full = 0
    warmup_quick = 0
    profile_in_process = False  # --profile profiles the API server process instead

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duration = 2.0 if self.quick else 4.0
        self.levels = (1, 16) if self.quick else (1, 16, 64)
        self.max_requests = 50_000 if self.quick else 300_000
        self.project_dir = self.workdir / "shop"
        self.feast_repo = self.workdir / "feast_repo"
        self.prefix = f"tgbench_{os.getpid()}_{secrets.token_hex(3)}"
        self.feast_project = f"tgbench_{secrets.token_hex(4)}"
        self.specs: dict[str, _Spec] = {}
        self.token = ""
        self.customers = 0
        self.rng = random.Random(7)
        self.redis: Any = None
        self.server: subprocess.Popen[bytes] | None = None
        self.server_pids: dict[int, str | None] = {}
        self.port = 0
        #: server name -> (process, port, worker pids): uvicorn is `self.server` too
        self.servers: dict[str, tuple[subprocess.Popen[bytes], int, dict[int, str | None]]] = {}
        self.feast: subprocess.Popen[bytes] | None = None
        self.feast_pids: dict[int, str | None] = {}
        self.feast_port = 0
        self.feast_python: Path | None = None
        self.feast_unavailable: str | None = None
        self.feast_applied = False
        self.logs: list[Any] = []
        self.rate_guess: dict[str, float] = {}
        self.seen: dict[str, int] = {}
        self.counted: dict[str, list[Sample]] = {}
        self.env: dict[str, Any] = {}

    # ---------------------------------------------------------------- contenders

    def shop_size(self) -> Any:
        from tidegate.demo.generator import ShopSize

        if self.quick:
            return ShopSize(customers=2_000, orders=20_000, web_events=200_000, tickets=4_000)
        return ShopSize()

    def sizes(self) -> dict[str, Any]:
        return {
            "customers": self.shop_size().customers,
            "concurrency": list(self.levels),
            "batch_keys": BATCH,
            "duration_s": self.duration,
            "max_requests": self.max_requests,
        }

    def contenders(self) -> list[Contender]:
        out: list[Contender] = []

        def add(name: str, kind: str, group: str, spec: _Spec, desc: str, ref: bool = False):
            self.specs[name] = spec
            out.append(Contender(name, kind, group=group, reference=ref, description=desc))

        guard = "purpose support, consent filter, treatments, audit; Redis online store"
        for c in self.levels:
            single, batch = f"single c={c}", f"batch{BATCH} c={c}"
            add(
                f"tidegate GET, c={c}",
                "tidegate",
                single,
                _Spec("tidegate", "single", c),
                f"GET {ENTITY_PATH}, {guard}; uvicorn --workers {TIDEGATE_WORKERS}",
            )
            add(
                f"tidegate GET (granian), c={c}",
                "tidegate",
                single,
                _Spec("tidegate", "single", c, server="granian"),
                f"the same app under granian --workers {TIDEGATE_WORKERS} (serve.server: granian)",
            )
            add(
                f"Feast get-online-features, c={c}",
                "peer",
                single,
                _Spec("feast", "single", c),
                f"feast serve --workers {FEAST_WORKERS} --max-requests 0 --no-access-log, "
                "1 entity, feature service (15 features), Redis online store",
            )
            add(
                f"redis GET, c={c}",
                "limit",
                single,
                _Spec("redis", "single", c, "GET"),
                "redis-benchmark GET of a random key holding the same JSON value",
                ref=True,
            )
            add(
                f"redis HGETALL, c={c}",
                "limit",
                single,
                _Spec("redis", "single", c, "HGETALL"),
                "redis-benchmark HGETALL of a random hash with the same 16 fields",
                ref=True,
            )
            add(
                f"tidegate lookup x{BATCH}, c={c}",
                "tidegate",
                batch,
                _Spec("tidegate", "batch", c),
                f"POST {LOOKUP_PATH} with {BATCH} random keys, {guard}",
            )
            add(
                f"tidegate lookup x{BATCH} (granian), c={c}",
                "tidegate",
                batch,
                _Spec("tidegate", "batch", c, server="granian"),
                f"POST {LOOKUP_PATH} with {BATCH} random keys, under granian",
            )
            add(
                f"Feast x{BATCH}, c={c}",
                "peer",
                batch,
                _Spec("feast", "batch", c),
                f"POST /get-online-features with {BATCH} random entities",
            )
            add(
                f"redis MGET x{BATCH}, c={c}",
                "limit",
                batch,
                _Spec("redis", "batch", c, "MGET"),
                f"redis-benchmark MGET of {BATCH} random keys holding the same JSON values",
                ref=True,
            )
            if c == 16:
                add(
                    FLOOR,
                    "baseline",
                    single,
                    _Spec("floor", "single", 16),
                    "tidegate's server, an endpoint that does nothing: uvicorn + loadgen cost",
                )
                add(
                    FLOOR_GRANIAN,
                    "baseline",
                    single,
                    _Spec("floor", "single", 16, server="granian"),
                    "the same under granian: granian + loadgen cost",
                )
        return out

    # ---------------------------------------------------------------- preparation

    def prepare(self) -> None:
        import redis

        self.redis = redis.Redis.from_url(REDIS_URL)
        self.redis.ping()
        self._build_tidegate()
        self._copy_raw_values()
        try:
            self._prepare_feast()
        except Exception as err:
            self.feast_unavailable = f"{type(err).__name__}: {str(err)[-1500:]}"
        self._start_tidegate()
        if not self.settings.profile:
            self._start_tidegate("granian")

    def _build_tidegate(self) -> None:
        from tidegate.demo.generator import generate_shop
        from tidegate.demo.runner import load_consent, prepare_directory
        from tidegate.platform import Platform
        from tidegate.platform.keys import create_key
        from tidegate.products.builder import build_products, load_sources

        size = self.shop_size()
        self.customers = size.customers
        prepare_directory(self.project_dir)
        config = self.project_dir / "tidegate.yml"
        text = config.read_text()
        old = "online: {type: sqlite, path: .tidegate/online.db}"
        if old not in text:
            raise RuntimeError(f"the demo's tidegate.yml has no line {old!r} to switch to Redis")
        config.write_text(
            text.replace(old, f"online: {{type: redis, url: '{REDIS_URL}', prefix: {self.prefix}}}")
        )
        generate_shop(self.project_dir / "data", size=size)
        with Platform.open(self.project_dir) as platform:
            load_consent(platform, self.project_dir)
            load_sources(platform)
            results = build_products(platform)
            if any(r.status != "live" for r in results):
                raise RuntimeError(f"the demo shop did not build: {results}")
            self.token, _ = create_key(platform.meta, "bench", ["support_agent"])
            warehouse = platform.project.path(platform.project.config.backends.store.path)
        self.parquet = self.workdir / "customer_360.parquet"
        self._export_parquet(warehouse, self.parquet)

    def _export_parquet(self, warehouse: Path, target: Path) -> None:
        """The built product's rows for Feast, plus the event timestamp Feast needs."""
        import duckdb

        self.event_time = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            con.execute(
                f"""COPY (
                  SELECT * REPLACE (CAST(birth_date AS VARCHAR) AS birth_date),
                         TIMESTAMPTZ '{self.event_time.isoformat()}' AS event_timestamp
                  FROM products.{PRODUCT}
                ) TO '{target}' (FORMAT parquet)"""
            )
        finally:
            con.close()

    def _copy_raw_values(self) -> None:
        """For redis-benchmark: the same values at `{prefix}:raw:s:{i:012d}` (string) and
        `{prefix}:raw:h:{i:012d}` (hash of the columns), i = customer_id - 1."""
        version = self.redis.get(f"{self.prefix}:{PRODUCT}:current")
        if version is None:
            raise RuntimeError("tidegate published nothing to Redis")
        base = f"{self.prefix}:{PRODUCT}:v{int(version)}:"
        pipe = self.redis.pipeline(transaction=False)
        sizes = []
        for start in range(0, self.customers, 1000):
            ids = range(start + 1, min(start + 1000, self.customers) + 1)
            values = self.redis.mget([f"{base}{i}" for i in ids])
            for i, value in zip(ids, values, strict=True):
                if value is None:
                    raise RuntimeError(f"customer {i} is missing from tidegate's Redis store")
                sizes.append(len(value))
                row = json.loads(value.split(b"|", 1)[1])
                fields = {k: "" if v is None else str(v) for k, v in row.items()}
                pipe.set(f"{self.prefix}:raw:s:{i - 1:012d}", value)
                pipe.hset(f"{self.prefix}:raw:h:{i - 1:012d}", mapping=fields)
            pipe.execute()
        self.value_bytes = median([float(s) for s in sizes])

    def _feast_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEAST_USAGE"] = "False"  # no telemetry
        return env

    def _feast(self, *args: str, timeout: float = 600) -> str:
        assert self.feast_python is not None
        feast = self.feast_python.parent / "feast"
        done = subprocess.run(
            [str(feast), "-c", str(self.feast_repo), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._feast_env(),
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"feast {' '.join(args)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-1500:]}"
            )
        return done.stdout

    def _prepare_feast(self) -> None:
        self.feast_python = peer_venv("feast", FEAST_REQUIREMENTS)
        self.feast_repo.mkdir()
        (self.feast_repo / "feature_store.yaml").write_text(
            f"""project: {self.feast_project}
provider: local
registry: {self.feast_repo / "registry.db"}
online_store:
  type: redis
  connection_string: "{REDIS_HOST}:{REDIS_PORT},db=0"
offline_store:
  type: file
entity_key_serialization_version: 3
"""
        )
        template = (FEAST_DIR / "features.py").read_text()
        (self.feast_repo / "features.py").write_text(
            template.replace("__PARQUET__", str(self.parquet))
        )
        started = time.perf_counter()
        self._feast("apply")
        self.feast_applied = True
        applied = time.perf_counter()
        end = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        start = self.event_time - dt.timedelta(days=1)
        self._feast("materialize", start.isoformat(), end.isoformat())
        self.feast_times = {
            "apply_s": applied - started,
            "materialize_s": time.perf_counter() - applied,
        }
        self._start_feast()

    def _start_feast(self) -> None:
        import httpx

        assert self.feast_python is not None
        self.feast_port = _free_port()
        log = (self.workdir / "feast.log").open("wb")
        self.logs.append(log)
        self.feast = subprocess.Popen(
            [
                str(self.feast_python.parent / "feast"),
                "-c",
                str(self.feast_repo),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.feast_port),
                "--workers",
                str(FEAST_WORKERS),
                "--max-requests",
                "0",
                "--max-requests-jitter",
                "0",
                "--keep-alive-timeout",
                "30",
                "--registry_ttl_sec",
                "60",
                "--no-access-log",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._feast_env(),
            start_new_session=True,
        )
        self._wait_up(self.feast, f"http://127.0.0.1:{self.feast_port}/health", "feast.log")
        self.feast_pids = {p: _started(p) for p in _descendants(self.feast.pid)}
        response = httpx.post(
            f"http://127.0.0.1:{self.feast_port}/get-online-features",
            content=self._feast_body().replace("__KEYS__", "[1, 2]"),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        if response.status_code != 200:
            raise RuntimeError(f"Feast sanity POST: {response.status_code} {response.text[:300]}")
        answer = response.json()
        statuses = [s for r in answer["results"] for s in r["statuses"]]
        if any(s != "PRESENT" for s in statuses):
            raise RuntimeError(f"Feast answered values not PRESENT: {answer}"[:500])
        self.feast_sample = answer

    def _feast_body(self) -> str:
        return '{"feature_service": "customer_360_service", "entities": {"customer_id": __KEYS__}}'

    def _wait_up(self, process: subprocess.Popen[bytes], url: str, log: str) -> None:
        import httpx

        def up() -> bool:
            if process.poll() is not None:
                tail = (self.workdir / log).read_text(errors="replace")[-1500:]
                raise RuntimeError(f"server exited with {process.returncode}: {tail}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout=120, interval=0.2):
            raise RuntimeError(f"{url} did not answer within 120s")

    def _start_tidegate(self, server: str = "uvicorn") -> None:
        import httpx

        port = _free_port()
        log = (self.workdir / f"server-{server}.log").open("wb")
        self.logs.append(log)
        env = dict(os.environ)
        env[SERVER_ENV] = server
        if self.settings.profile:
            path = profile_path(self.settings.results_dir, self.name, "api-server")
            env[PROFILE_ENV] = str(path)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.serve_runner",
                str(self.project_dir),
                str(port),
                str(TIDEGATE_WORKERS),
            ],
            cwd=ROOT.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        self._wait_up(process, f"{base}/v1/health", f"server-{server}.log")
        # each worker opens the project; give them all time to answer
        for _ in range(20):
            response = httpx.get(base + ENTITY_PATH.format(key=1), headers=self._headers())
            if response.status_code != 200:
                raise RuntimeError(f"sanity GET: {response.status_code} {response.text[:300]}")
        self.tidegate_sample = response.json()
        response = httpx.post(
            base + LOOKUP_PATH, json={"keys": list(range(1, BATCH + 1))}, headers=self._headers()
        )
        if response.status_code != 200:
            raise RuntimeError(f"sanity lookup: {response.status_code} {response.text[:300]}")
        pids = {p: _started(p) for p in _descendants(process.pid)}
        self.servers[server] = (process, port, pids)
        if server == "uvicorn":
            self.server, self.port, self.server_pids = process, port, pids

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Purpose": "support"}

    def environment(self) -> dict[str, Any]:
        feast: dict[str, Any] = {"requirements": FEAST_REQUIREMENTS}
        if self.feast_unavailable:
            feast["unavailable"] = self.feast_unavailable
        else:
            feast.update(
                workers=FEAST_WORKERS,
                command=f"feast serve --workers {FEAST_WORKERS} --max-requests 0 "
                "--max-requests-jitter 0 --keep-alive-timeout 30 --registry_ttl_sec 60 "
                "--no-access-log (gunicorn + uvicorn workers)",
                project=self.feast_project,
                setup_seconds=getattr(self, "feast_times", {}),
                version=self._feast_version(),
            )
        profiled = self.settings.profile
        self.env.update(
            tidegate_server=(
                "uvicorn, 1 worker, in-process app (profiling)"
                if profiled
                else f"uvicorn --factory --workers {TIDEGATE_WORKERS} app_from_env, "
                "log_level=warning (README: --workers 2 for both cores)"
            ),
            tidegate_workers=1 if profiled else TIDEGATE_WORKERS,
            online_store=f"redis {REDIS_URL} prefix {self.prefix}",
            value_bytes_median=getattr(self, "value_bytes", None),
            feast=feast,
            redis_benchmark=_command_version(["redis-benchmark", "--version"]),
            redis_server=_command_version(["redis-cli", "INFO", "server"], "redis_version:"),
            loadgen="benchmarks/loadgen.py: threads + http.client keep-alive, closed loop",
            loadgen_process="separate",
            p50_p99_note="per-run p50/p99 are in each sample's metrics; the comparison "
            "table uses their medians over counted rounds for every contender",
        )
        return self.env

    def _feast_version(self) -> str | None:
        if self.feast_python is None:
            return None
        done = subprocess.run(
            [str(self.feast_python), "-c", "import feast; print(feast.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._feast_env(),
        )
        return done.stdout.strip() or None

    # ---------------------------------------------------------------- runs

    def run(self, contender: Contender) -> Sample:
        spec = self.specs[contender.name]
        if spec.system == "redis":
            sample = self._redis_benchmark(contender.name, spec)
        elif spec.system == "feast":
            if self.feast_unavailable or self.feast is None:
                raise RuntimeError(f"Feast unavailable: {self.feast_unavailable}")
            sample = self._load(spec, self.feast_port, self.feast_pids)
        else:
            if spec.server not in self.servers:
                raise RuntimeError(f"no tidegate server under {spec.server} (profiling?)")
            _, port, pids = self.servers[spec.server]
            sample = self._load(spec, port, pids)
        self.seen[contender.name] = self.seen.get(contender.name, 0) + 1
        if self.seen[contender.name] > self.warmup_rounds():
            self.counted.setdefault(contender.name, []).append(sample)
        return sample

    def _load(self, spec: _Spec, port: int, processes: dict[int, str | None]) -> Sample:
        pids = list(processes)
        config: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "keys": self.customers,
            "concurrency": spec.concurrency,
            "duration": self.duration,
            "max_requests": self.max_requests,
            "warmup_requests": 20,
            "seed": self.rng.randrange(1 << 30),
        }
        batch = BATCH if spec.shape == "batch" else 1
        if spec.system == "floor":
            config.update(path="/v1/health", headers={})
        elif spec.system == "tidegate" and spec.shape == "single":
            config.update(path=ENTITY_PATH, headers=self._headers())
        elif spec.system == "tidegate":
            config.update(
                path=LOOKUP_PATH,
                headers=self._headers(),
                method="POST",
                body='{"keys": __KEYS__}',
                batch=BATCH,
            )
        else:
            config.update(
                path="/get-online-features",
                headers={},
                method="POST",
                body=self._feast_body(),
                batch=batch,
            )
        server_cpu, client_cpu = _cpu_seconds(pids), _children_cpu()
        result = run_json(
            [sys.executable, "-m", "benchmarks.loadgen"],
            stdin=config,
            timeout=self.duration + 120,
            cwd=ROOT.parent,
        )
        server_cpu = _cpu_seconds(pids) - server_cpu
        client_cpu = _children_cpu() - client_cpu
        requests = int(result["requests"])
        if not requests:
            raise RuntimeError(f"no request completed: {result['errors']}")
        bad = requests - int(result["statuses"].get("200", 0))
        if bad > requests * 0.01:
            raise RuntimeError(
                f"{bad} of {requests} requests failed: {result['statuses']} {result['errors'][:3]}"
            )
        latencies = result["latencies"]
        rate = requests / result["elapsed"]
        metrics = {
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "keys_per_s": rate * batch,
            "requests": float(requests),
            "non_200": float(bad),
            "server_cpu_ms_per_req": server_cpu * 1000 / requests,
            "loadgen_cpu_ms_per_req": client_cpu * 1000 / requests,
        }
        info = {"statuses": result["statuses"], "errors": result["errors"]}
        return Sample(rate, metrics, latencies=latencies, info=info)

    def _redis_benchmark(self, name: str, spec: _Spec) -> Sample:
        if spec.op == "GET":
            command = ["GET", f"{self.prefix}:raw:s:__rand_int__"]
        elif spec.op == "HGETALL":
            command = ["HGETALL", f"{self.prefix}:raw:h:__rand_int__"]
        else:
            command = ["MGET", *[f"{self.prefix}:raw:s:__rand_int__"] * BATCH]
        guess = self.rate_guess.get(name, 2_000.0 if spec.op == "MGET" else 15_000.0)
        count = int(min(max(guess * self.duration, 2_000), 3_000_000))
        started = time.perf_counter()
        done = subprocess.run(
            [
                "redis-benchmark",
                "-h",
                REDIS_HOST,
                "-p",
                str(REDIS_PORT),
                "-n",
                str(count),
                "-c",
                str(spec.concurrency),
                "-r",
                str(self.customers),
                "--csv",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=self.duration * 10 + 60,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"redis-benchmark exited {done.returncode}: {done.stderr[-500:]}")
        rows = [line for line in done.stdout.splitlines() if line.startswith('"')]
        if len(rows) < 2:
            raise RuntimeError(f"redis-benchmark printed no CSV: {done.stdout[-500:]}")
        header = [h.strip('"') for h in rows[0].split(",")]
        values = dict(zip(header, [v.strip('"') for v in rows[1].split(",")], strict=True))
        rate = float(values["rps"])
        self.rate_guess[name] = rate
        metrics = {
            "p50_ms": float(values["p50_latency_ms"]),
            "p99_ms": float(values["p99_latency_ms"]),
            "avg_ms": float(values["avg_latency_ms"]),
            "keys_per_s": rate * (BATCH if spec.op == "MGET" else 1),
            "requests": float(count),
            "wall_s": elapsed,
        }
        return Sample(rate, metrics, info={"csv": values})

    # ---------------------------------------------------------------- comparison and teardown

    def _medians(self, name: str) -> dict[str, float] | None:
        samples = self.counted.get(name)
        if not samples:
            return None
        return {
            "requests_per_s": median([s.value for s in samples]),
            "p50_ms": median([s.metrics["p50_ms"] for s in samples]),
            "p99_ms": median([s.metrics["p99_ms"] for s in samples]),
        }

    def _versus(self) -> list[dict[str, Any]]:
        rows = []
        for c, server in [(c, server) for c in self.levels for server in ("", " (granian)")]:
            for shape, tg, peer, raw in (
                (
                    "single" + server,
                    f"tidegate GET{server}, c={c}",
                    f"Feast get-online-features, c={c}",
                    f"redis GET, c={c}",
                ),
                (
                    f"batch{BATCH}{server}",
                    f"tidegate lookup x{BATCH}{server}, c={c}",
                    f"Feast x{BATCH}, c={c}",
                    f"redis MGET x{BATCH}, c={c}",
                ),
            ):
                mine, theirs, limit = self._medians(tg), self._medians(peer), self._medians(raw)
                row: dict[str, Any] = {"shape": shape, "concurrency": c, "tidegate": mine}
                row["feast"] = theirs if theirs else {"unavailable": self.feast_unavailable}
                row["raw_redis"] = limit
                if mine and theirs:
                    row["throughput_tidegate_over_feast"] = (
                        mine["requests_per_s"] / theirs["requests_per_s"]
                    )
                    row["p99_tidegate_over_feast"] = mine["p99_ms"] / theirs["p99_ms"]
                if mine and limit:
                    row["throughput_tidegate_over_raw"] = (
                        mine["requests_per_s"] / limit["requests_per_s"]
                    )
                rows.append(row)
        return rows

    def _goals(self) -> dict[str, Any]:
        """Issue 16 item 3, per server: single-key GET at 16 connections over the same
        server's /v1/health (goal >= 0.6), p99 at one connection (<= 5 ms), the 100-key
        lookup over Feast's (>= 8x)."""
        goals: dict[str, Any] = {}
        for server, floor in (("", FLOOR), (" (granian)", FLOOR_GRANIAN)):
            get16, base = self._medians(f"tidegate GET{server}, c=16"), self._medians(floor)
            get1 = self._medians(f"tidegate GET{server}, c=1")
            lookups = [
                (
                    self._medians(f"tidegate lookup x{BATCH}{server}, c={c}"),
                    self._medians(f"Feast x{BATCH}, c={c}"),
                )
                for c in self.levels
            ]
            goal: dict[str, Any] = {}
            if get16 and base:
                goal["get_c16_over_health"] = get16["requests_per_s"] / base["requests_per_s"]
            if get1:
                goal["get_c1_p99_ms"] = get1["p99_ms"]
            ratios = [m["requests_per_s"] / f["requests_per_s"] for m, f in lookups if m and f]
            if ratios:
                goal["lookup_over_feast_min"] = min(ratios)
            goals[server.strip(" ()") or "uvicorn"] = goal
        return goals

    def _print_versus(self, rows: list[dict[str, Any]]) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console() if sys.stdout.isatty() else Console(width=150)
        table = Table(title="serve: tidegate vs Feast vs raw Redis (medians of counted rounds)")
        for heading in (
            "shape",
            "c",
            "tidegate req/s",
            "p50 / p99 ms",
            "Feast req/s",
            "p50 / p99 ms",
            "tidegate/Feast req/s",
            "tidegate/Feast p99",
            "raw Redis req/s",
            "raw p50 / p99 ms",
            "tidegate/raw",
        ):
            table.add_column(heading, justify="left" if heading == "shape" else "right")

        def rate(m: dict[str, Any] | None) -> str:
            return f"{m['requests_per_s']:,.0f}" if m and "requests_per_s" in m else "—"

        def lat(m: dict[str, Any] | None) -> str:
            return f"{m['p50_ms']:.2f} / {m['p99_ms']:.2f}" if m and "p99_ms" in m else "—"

        def ratio(value: float | None) -> str:
            return "—" if value is None else f"{value:.2f}x"

        for row in rows:
            feast = row["feast"] if "requests_per_s" in row["feast"] else None
            table.add_row(
                row["shape"],
                str(row["concurrency"]),
                rate(row["tidegate"]),
                lat(row["tidegate"]),
                rate(feast) if feast else "unavailable",
                lat(feast),
                ratio(row.get("throughput_tidegate_over_feast")),
                ratio(row.get("p99_tidegate_over_feast")),
                rate(row["raw_redis"]),
                lat(row["raw_redis"]),
                ratio(row.get("throughput_tidegate_over_raw")),
            )
        if self.feast_unavailable:
            table.caption = f"Feast unavailable: {self.feast_unavailable}"
        console.print(table)

    def teardown(self) -> None:
        try:
            if self.counted:
                rows = self._versus()
                self.env["versus"] = rows
                self._print_versus(rows)
                self.env["goals"] = goals = self._goals()
                self.env["goals_held"] = {
                    server: {k: _holds(k, v) for k, v in goal.items()}
                    for server, goal in goals.items()
                }
                for server, goal in goals.items():
                    shown = ", ".join(
                        f"{k} {v:.2f} ({'held' if _holds(k, v) else 'NOT held'})"
                        for k, v in goal.items()
                    )
                    print(f"goals, {server}: {shown}")
        finally:
            self._teardown_processes()

    def _teardown_processes(self) -> None:
        for process, _, pids in self.servers.values():
            _stop(process, pids)
        if not self.servers:
            _stop(self.server, self.server_pids)
        _stop(self.feast, self.feast_pids)
        for log in self.logs:
            log.close()
        cleanup: dict[str, Any] = {}
        if self.feast_applied:
            try:
                self._feast("teardown", timeout=300)
                cleanup["feast_teardown"] = "ok"
            except Exception as err:
                cleanup["feast_teardown"] = f"failed: {err}"[:500]
        if self.redis is not None:
            cleanup["tidegate_keys_removed"] = self._sweep(f"{self.prefix}:*")
            # Feast's Redis keys end with the project name (serialized entity key + project)
            cleanup["feast_keys_left_removed"] = self._sweep(f"*{self.feast_project}")
            self.redis.close()
        if self.feast_repo.exists():
            shutil.rmtree(self.feast_repo, ignore_errors=True)
        self.env["cleanup"] = cleanup

    def _sweep(self, pattern: str) -> int:
        removed = 0
        batch: list[Any] = []
        for key in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(self.redis.unlink(*batch))
                batch = []
        if batch:
            removed += int(self.redis.unlink(*batch))
        return removed


#: issue 16 item 3: the goal of each number `_goals` gives (at least, or at most)
GOALS: dict[str, tuple[str, float]] = {
    "get_c16_over_health": (">=", 0.6),
    "get_c1_p99_ms": ("<=", 5.0),
    "lookup_over_feast_min": (">=", 8.0),
}


def _holds(name: str, value: float) -> bool:
    sense, bound = GOALS[name]
    return value >= bound if sense == ">=" else value <= bound


def _command_version(command: list[str], marker: str = "") -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in done.stdout.splitlines():
        if line.startswith(marker):
            return line[len(marker) :].strip() if marker else line.strip()
    return None
