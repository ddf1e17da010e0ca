"""Helpers of the control-plane tests: a demo shop ready to run live, a real `tidegate run`
process, CLI calls as a person makes them, and output made comparable across copies."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))

LIVE_SYNC = """\
name: crm_live
product: customer_360
purpose: support
destination: {type: sqlite, path: live.db, table: profiles}
mode: upsert
trigger: on_change
fields:
  customer_id: customer_id
  email: email
  order_count: order_count
"""


def live_shop(demo_dir: Path, target: Path, *, fast_rebuilds: bool = True) -> Path:
    """A copy of the built demo, live (stream sources, as `tidegate demo` runs it), with an
    `on_change` sync and churn_risk rebuilt every 2s when something upstream changed (so a
    scheduled rebuild happens within a test); built again."""
    from tidegate.demo.livefeed import apply_live_overlay
    from tidegate.platform import Platform
    from tidegate.products.builder import build_products, load_sources

    shutil.copytree(demo_dir, target)
    apply_live_overlay(target)
    (target / "syncs" / "crm_live.yml").write_text(LIVE_SYNC)
    if fast_rebuilds:
        churn = target / "products" / "churn_risk.yml"
        churn.write_text(churn.read_text().replace("freshness: 1h", "freshness: 2s"))
    with Platform.open(target) as platform:
        load_sources(platform)
        results = build_products(platform)
    assert all(r.status == "live" for r in results), results
    return target


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
    return subprocess.run(
        [TIDEGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def running(
    project: Path, *command: str, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Any]:
    """`tidegate run` (or `command`) on `project` as a real process, until the block ends;
    waits until its admin socket answers. `env` adds to the process's environment."""
    from tidegate.runtime.control import answers, socket_path

    argv = list(command) or ["run"]
    argv += ["-p", str(project)]
    if port is not None:
        argv += ["--port", str(port)]
    process = subprocess.Popen(
        [TIDEGATE, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for(
            lambda: _alive(process) and answers(socket_path(project / ".tidegate")),
            90,
            f"the admin socket of `tidegate {' '.join(argv)}`",
        )
        if port is not None:
            wait_for(lambda: _alive(process) and _health(port), 60, "the API")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _alive(process: Any) -> bool:
    if process.poll() is not None:
        out, err = process.communicate()
        raise AssertionError(f"the runtime exited {process.returncode}:\n{out}\n{err}")
    return True


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


_VOLATILE = [
    # the two copies' folders, where a narrow table column cut the path before the root
    (re.compile(r"/(solo|live)/"), "/<copy>/"),
    # how many warehouse tables an erasure rewrites depends on what the runtime created
    (re.compile(r"\d+(\s*│\s*tables that lost rows rewritten)"), r"<n>\1"),
    # the freshness pillar's lag and age grow with the clock, whole seconds included
    (re.compile(r"(freshness\.\w+\s*│\s*)[\d.,]+"), r"\1<n>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?"), "<time>"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<elapsed>"),  # progress columns
    (re.compile(r"\d+\.\d+(e[-+]?\d+)?"), "<number>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<hex>"),
    (re.compile(r"(Erasure )[0-9a-f]+"), r"\1<id>"),
    (re.compile(r"\d+(ms|s)\b"), "<duration>"),
    (re.compile(r"[▁▂▃▄▅▆▇█]+"), "<sparkline>"),  # build seconds differ run to run
    # a table's columns are as wide as the widest value, and timings vary in length
    (re.compile(r"[─━]+"), "─"),
    (re.compile(r" {2,}"), " "),
]


def comparable(text: str, root: Path) -> str:
    """Output with the project path and what differs by the clock taken out."""
    text = text.replace(str(root), "<project>")
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text
