"""Helpers of the fault tests: restarting a real service, a worker thread, waiting."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


def services(*args: str, timeout: float = 300) -> None:
    """`scripts/services.sh ARGS`, failing the test with its output if it fails."""
    done = subprocess.run(
        ["bash", str(SERVICES), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"services.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def ensure_up(service: str, port: int) -> None:
    """Bring `service` back whatever the test did to it (`up` is idempotent)."""
    if not port_open(port):
        services("up", service)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


class WorkerThread:
    """`run_worker` in a thread; `stop()` joins it and re-raises what it died of."""

    def __init__(self, target: Callable[[threading.Event], None]) -> None:
        self.event = threading.Event()
        self.error: BaseException | None = None
        self.batches = 0

        def body() -> None:
            try:
                target(self.event)
            except BaseException as err:  # reported by stop()
                self.error = err

        self.thread = threading.Thread(target=body, name="test-worker", daemon=True)

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def alive(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"the worker died: {self.error!r}") from self.error
        return self.thread.is_alive()

    def on_batch(self, report: Any) -> None:
        self.batches += 1

    def stop(self, timeout: float = 60) -> None:
        self.event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise AssertionError(f"the worker died: {self.error!r}") from self.error
