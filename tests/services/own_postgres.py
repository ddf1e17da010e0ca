"""A PostgreSQL cluster a test owns (`own_postgres` fixture in tests/conftest.py): the
same binaries as scripts/services.sh, a fresh data folder, `wal_level=logical`, a free
port. Tests that stop or restart PostgreSQL use it, so the shared server keeps serving
every other test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tidegate.demo.runner import _free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A PostgreSQL cluster of this test: initdb in a fresh folder, `wal_level=logical`,
    run as the postgres user, on a free port."""

    def __init__(self) -> None:
        assert (PG_BIN / "initdb").exists(), f"no PostgreSQL binaries in {PG_BIN}"
        self.dir = Path(tempfile.mkdtemp(prefix="tidegate-pg-", dir="/var/tmp"))
        self.data = self.dir / "data"
        self.port = _free_port(0)
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nwal_level = logical\n"
                "max_replication_slots = 4\nmax_wal_senders = 4\nfsync = off\n"
            )

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def pg_ctl(self, action: str) -> None:
        log = str(self.dir / "log")
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-m", "fast", action
        )

    def connect(self) -> Any:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                return psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the test's PostgreSQL does not answer"
                time.sleep(0.2)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)
