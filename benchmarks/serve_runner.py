"""The API server the `serve` benchmark loads, in a process of its own.

`python -m benchmarks.serve_runner PROJECT_DIR PORT [WORKERS]`: with one worker, what
`tidegate serve -p PROJECT_DIR --port PORT` does (same app, same uvicorn settings: log
level warning, so no access log), on 127.0.0.1. With more, what the README advises for
several cores: `TIDEGATE_PROJECT=PROJECT_DIR uvicorn --factory --workers N
tidegate.api:app_from_env` (each worker opens the project itself).

With `TIDEGATE_BENCH_PROFILE=<file.pstats>` in the environment, every thread (the event
loop and the worker threads that run the endpoints) is profiled with cProfile, and the
merged profile is written there when the server stops. Profiling needs the app in this
process, so it always runs one worker.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PROFILE_ENV = "TIDEGATE_BENCH_PROFILE"
#: `granian` runs the same app under granian instead of uvicorn
SERVER_ENV = "TIDEGATE_BENCH_SERVER"


def granian_command(workers: int) -> list[str]:
    """granian as its docs advise for an asyncio ASGI app: uvloop, access log off."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--log-level",
        "warning",
        "--no-ws",
    ]


class _AllThreads:
    """One cProfile.Profile per thread (cProfile sees only the thread that enabled it)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def _start_here(self, *_: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        with self.lock:
            self.profiles.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._start_here)
        self._start_here()

    def dump(self, path: Path) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        with self.lock:
            profiles = list(self.profiles)
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(path)


def _exit_quietly(*_: Any) -> None:
    raise SystemExit(0)


def main() -> int:
    import uvicorn

    from tidegate.api import create_app
    from tidegate.platform import Platform

    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    profile_to = os.environ.get(PROFILE_ENV)
    if os.environ.get(SERVER_ENV) == "granian" and not profile_to:
        os.environ["TIDEGATE_PROJECT"] = str(directory.resolve())
        return subprocess.call(
            [
                *granian_command(workers),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "tidegate.api:app_from_env",
            ]
        )
    if workers > 1 and not profile_to:
        os.environ["TIDEGATE_PROJECT"] = str(directory.resolve())
        uvicorn.run(
            "tidegate.api:app_from_env",
            factory=True,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            workers=workers,
        )
        return 0
    profiler = _AllThreads() if profile_to else None
    if profiler:
        # uvicorn re-raises SIGTERM after its graceful shutdown, with the handler found
        # before it started: exit through Python then, so the profile gets written
        signal.signal(signal.SIGTERM, _exit_quietly)
        profiler.start()
    try:
        with Platform.open(directory) as platform:
            uvicorn.run(
                create_app(platform), host="127.0.0.1", port=port, log_level="warning", workers=1
            )
    finally:
        if profiler and profile_to:
            profiler.dump(Path(profile_to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
