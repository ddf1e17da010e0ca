"""Where a sync destination really is, as an OpenLineage (namespace, name) pair.

Lineage (`tidegate lineage`, OpenLineage events) must show the real place data goes,
not just the destination's type: a file's path, a SQLite file and its table, a
PostgreSQL host, database, schema and table. Names follow the OpenLineage dataset
naming conventions where they define one (postgres, mysql, kafka, file), and the same
shape elsewhere. Credentials never appear: a URL's user and password are cut, and a
DSN kept in an environment variable is shown by the variable's name when it is unset.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from tidegate.project.models import (
    FileDestination,
    HttpDestination,
    KafkaDestination,
    MysqlDestination,
    PostgresDestination,
    RedisDestination,
    SqliteDestination,
)


def _value(value: str | None, env: str | None) -> str:
    """The configured value, else the environment's, else `$VAR` (never raises)."""
    if value:
        return value
    if env:
        return os.environ.get(env) or f"${env}"
    return ""


def _server(url: str, scheme: str, default_port: int | None = None) -> tuple[str, str]:
    """(`scheme://host:port`, path without the leading slash), credentials cut."""
    if url.startswith("$"):
        return f"{scheme}://{url}", ""
    parts = urlsplit(url if "://" in url else f"{scheme}://{url}")
    host = parts.hostname or "localhost"
    port = parts.port or default_port
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{netloc}", parts.path.lstrip("/")


def _absolute(path: str, root: Path) -> str:
    given = Path(path)
    return str(given if given.is_absolute() else (root / given).resolve())


def destination_location(destination: object, root: Path) -> tuple[str, str]:
    """(namespace, name) of a sync destination; `root` resolves relative file paths."""
    if isinstance(destination, FileDestination):
        return "file", _absolute(destination.path, root)
    if isinstance(destination, SqliteDestination):
        return f"sqlite://{_absolute(destination.path, root)}", destination.table
    if isinstance(destination, PostgresDestination):
        server, database = _server(_value(destination.dsn, destination.dsn_env), "postgres", 5432)
        name = ".".join(p for p in (database, destination.schema_name, destination.table) if p)
        return server, name
    if isinstance(destination, MysqlDestination):
        server, database = _server(_value(destination.dsn, destination.dsn_env), "mysql", 3306)
        return server, ".".join(p for p in (database, destination.table) if p)
    if isinstance(destination, KafkaDestination):
        bootstrap = _value(destination.bootstrap, destination.bootstrap_env).split(",")[0]
        server, _ = _server(bootstrap, "kafka")
        return server, destination.topic
    if isinstance(destination, RedisDestination):
        server, database = _server(_value(destination.url, destination.url_env), "redis", 6379)
        return f"{server}/{database or '0'}", destination.key_template
    if isinstance(destination, HttpDestination):
        parts = urlsplit(destination.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}", parts.path or "/"
    kind = getattr(destination, "type", "destination")
    return str(kind), str(getattr(destination, "location", "") or kind)


def location_label(destination: object, root: Path) -> str:
    """Where for people: `file:exports/out.csv`, `sqlite:crm.db/audience` (paths inside the
    project relative to it, as in its YAML), `postgres://h:5432/db.public.t`."""
    if isinstance(destination, FileDestination):
        return f"file:{_shown(destination.path, root)}"
    if isinstance(destination, SqliteDestination):
        return f"sqlite:{_shown(destination.path, root)}/{destination.table}"
    namespace, name = destination_location(destination, root)
    return f"{namespace}/{name}"


def _shown(path: str, root: Path) -> str:
    absolute = Path(_absolute(path, root))
    try:
        return str(absolute.relative_to(root.resolve()))
    except ValueError:
        return str(absolute)
