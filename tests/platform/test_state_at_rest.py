"""State at rest is the owner's only (issue 13 item 5): files 0600, folders 0700.

A real `tidegate build`, a sync to a file and to a SQLite database, `tidegate run` for
a few seconds with events posted to it; then every file and folder under `.tidegate/`
and every destination output tidegate created must be private. Before, they were
world-readable (0644 in 0755 folders with the usual umask 022)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.private import private_dir, private_file

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))

SYNCS = {
    "syncs/orders_file.yml": "name: orders_file\nproduct: customer_orders\npurpose: support\n"
    "destination: {type: file, path: out/files/orders.csv}\n",
    "syncs/orders_db.yml": "name: orders_db\nproduct: customer_orders\npurpose: support\n"
    "destination: {type: sqlite, path: out/db/orders.db, table: orders}\n",
}


def _tidegate(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    # a permissive umask in the caller's shell, as most are
    return subprocess.run(
        [TIDEGATE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )


def _modes(root: Path) -> dict[str, int]:
    found = {str(root): stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if path.is_socket():
                continue  # the admin socket: its folder is 0700
            found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _public(modes: dict[str, int]) -> dict[str, str]:
    return {
        path: oct(mode)
        for path, mode in modes.items()
        if mode & 0o077 or (not Path(path).is_dir() and mode != 0o600)
    }


def test_build_sync_and_run_leave_only_private_state(stream_project: Path) -> None:
    (stream_project / "syncs").mkdir(exist_ok=True)
    for relative, text in SYNCS.items():
        (stream_project / relative).write_text(text)
    (stream_project / "out").mkdir()  # the user's own folder: tidegate leaves its mode alone
    os.chmod(stream_project / "out", 0o755)
    built = _tidegate("build", "-p", str(stream_project))
    assert built.returncode == 0, built.stderr
    for sync in ("orders_file", "orders_db"):
        ran = _tidegate("sync", "run", sync, "-p", str(stream_project))
        assert ran.returncode == 0, ran.stderr
    with Platform.open(stream_project) as platform:
        ingest = "Bearer " + create_key(platform.meta, "shop", ["ingester"])[0]
    port = _free_port(0)
    process = subprocess.Popen(
        [TIDEGATE, "run", "-p", str(stream_project), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    if client.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "tidegate run did not come up"
                time.sleep(0.2)
            posted = client.post(
                "/v1/events/orders",
                json=[{"order_id": 1, "customer_id": 5, "amount": 12.5}],
                headers={"Authorization": ingest},
            )
            assert posted.json()["accepted"] == 1
            time.sleep(2)  # a micro-batch or two: log, warehouse, online store, changes
            state = _modes(stream_project / ".tidegate")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert any(p.endswith("warehouse.duckdb") for p in state), sorted(state)
    assert any(p.endswith("-wal") for p in state), sorted(state)  # SQLite side files too
    assert _public(state) == {}
    outputs = _modes(stream_project / "out")
    assert outputs.pop(str(stream_project / "out")) == 0o755
    assert (stream_project / "out" / "files" / "orders.csv").is_file()
    assert (stream_project / "out" / "db" / "orders.db").is_file()
    assert _public(outputs) == {}


def test_library_use_without_the_umask_still_narrows_what_it_creates(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        private_dir(tmp_path / "a" / "b")
        database = tmp_path / "a" / "b" / "x.db"
        private_file(database, side_files=True, create=True)
        (tmp_path / "a" / "b" / "x.db-wal").write_text("")
        private_file(database, side_files=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a" / "b" / "x.db-wal").stat().st_mode) == 0o600
