"""Versioned schema migrations of the metadata backends: numbered SQL files per backend.

`sqlite/0001_base.sql`, `postgres/0001_base.sql`, ... Each backend applies the files
it has not applied yet when it opens, inside one transaction that also records them in
`schema_migrations (version, name, applied_at)`, and under a lock (SQLite: `BEGIN
IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock), so two processes opening a
project at once never apply a migration twice. Migration 1 is the schema tidegate had
before migrations existed, written with `IF NOT EXISTS`, so an older metadata file opens
and is simply stamped version 1.

Why not a migration library: the ones that fit (yoyo-migrations, alembic without the
ORM) open their own connections from a URL, keep their own lock tables and add
dependencies, while the stores already hold the connection, the lock and the
transaction a migration must run in. A migration here is an SQL file; the runner is
the few lines below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

VERSION_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file split into statements (our migrations hold no `;` inside one)."""
        parts = [part.strip() for part in self.sql.split(";")]
        return [part for part in parts if part and not _only_comments(part)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def migrations(backend: str) -> list[Migration]:
    """The migrations of `backend` (a folder of this package), in version order."""
    found: list[Migration] = []
    for entry in resources.files(__name__).joinpath(backend).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {versions}")
    return found


def pending(backend: str, applied: set[int]) -> list[Migration]:
    return [m for m in migrations(backend) if m.version not in applied]


def latest(backend: str) -> int:
    return len(migrations(backend))
