"""tidegate's benchmarks: each one side by side with the peer a user would pick instead
and with the physical limit (raw DuckDB, raw Redis/SQLite, PostgreSQL COPY).

Run with `make bench` (`QUICK=1` for a small size) or `python -m benchmarks --help`.
"""

from __future__ import annotations

import importlib

#: One module per benchmark; importing a module registers its benchmark.
MODULES = (
    "build",
    "sync_postgres",
    "serve",
    "ingest",
    "freshness",
    "revocation",
    "http_sync",
    "metadata",
    "anonymize",
    "console",
    "scale",
)


def load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
