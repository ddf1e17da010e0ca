"""Readiness: can this process serve, and which backend stops it?

`/v1/health/ready` (and the console's backends panel) runs one cheap call against each
backend the platform wires: the warehouse, the online store, the event log and the
metadata store. Each runs in its own thread with a deadline, so a backend that hangs
(a Redis behind a dropped network) is reported as down instead of hanging the probe.
`/v1/health/live` only says the process answers: a liveness probe must not restart a
healthy process because a backend is away.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidegate.platform import Platform

DEADLINE = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float
    note: str = ""
    backend: str = ""  # its `type` in `backends:` (duckdb, redis, kafka, postgres, sqlite)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "ok": self.ok,
            "ms": round(self.ms, 1),
            "note": self.note,
        }


def _warehouse(platform: Platform) -> str:
    if "warehouse" not in platform.__dict__:  # not opened here: only its file can be seen
        config = platform.project.config.backends.store
        path = platform.project.path(config.local_file)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (nothing built yet)")
        return "held by the runtime process; file present"
    with platform.warehouse.cursor() as db:
        db.execute("SELECT 1").fetchall()
    return ""


def checks(platform: Platform) -> list[tuple[str, Callable[[], Any]]]:
    """(backend, a cheap call that raises when the backend is down)."""
    from tidegate.project.project import stream_sources

    project = platform.project
    first_product = next(iter(project.products), "")
    topics = sorted(s.topic_name for s in stream_sources(project).values())

    def event_log() -> str:
        if not topics:
            platform.event_log.committed("__tidegate_health", "__tidegate_health")
            return "no stream sources"
        platform.event_log.end_offsets(topics[0])
        return ""

    return [
        ("warehouse", lambda: _warehouse(platform)),
        ("online store", lambda: platform.online.current_version(first_product)),
        ("event log", event_log),
        ("metadata", lambda: platform.meta.runs(limit=1)),
    ]


def readiness(platform: Platform, deadline: float = DEADLINE) -> list[Check]:
    """Every backend's check, run at once, each given `deadline` seconds."""
    planned = checks(platform)
    configured = platform.project.config.backends
    kinds = {
        "warehouse": configured.store.type,
        "online store": configured.online.type,
        "event log": configured.log.type,
        "metadata": configured.metadata.type,
    }
    pool = ThreadPoolExecutor(max_workers=len(planned), thread_name_prefix="tidegate-health")
    started = time.perf_counter()
    try:
        futures = [(name, pool.submit(call)) for name, call in planned]
        out = []
        for name, future in futures:
            left = max(0.0, deadline - (time.perf_counter() - started))
            try:
                result = future.result(timeout=left)
                note = result if isinstance(result, str) else ""
                ms = (time.perf_counter() - started) * 1000
                out.append(Check(name, True, ms, note, kinds.get(name, "")))
            except FutureTimeout:
                note = f"no answer in {deadline:g}s"
                out.append(Check(name, False, deadline * 1000, note, kinds.get(name, "")))
            except Exception as err:  # a backend that does not answer: reported, not raised
                note = f"{type(err).__name__}: {err}"[:200]
                ms = (time.perf_counter() - started) * 1000
                out.append(Check(name, False, ms, note, kinds.get(name, "")))
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
