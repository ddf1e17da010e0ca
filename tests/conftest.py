"""Shared fixtures: real services (failing loudly when absent) and a built demo shop.

Service fixtures never skip: a test marked `services` that cannot reach its server
fails with a message saying how to start it. CI runs `make test`, which starts them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tidegate.platform import Platform

PG_DSN = os.environ.get("TIDEGATE_PG_DSN", "postgresql://tidegate:tidegate@127.0.0.1:5432/tidegate")
REDIS_URL = os.environ.get("TIDEGATE_REDIS_URL", "redis://127.0.0.1:6379/0")
KAFKA_BOOTSTRAP = os.environ.get("TIDEGATE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MYSQL_DSN = os.environ.get(
    "TIDEGATE_MYSQL_DSN", "mysql://tidegate:tidegate@127.0.0.1:3306/tidegate"
)
DEMO_ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)


def _require_port(name: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as err:
        pytest.fail(
            f"{name} is not reachable on {host}:{port} ({err}); start the services with "
            "`make services-up` (scripts/services.sh up)",
            pytrace=False,
        )


@pytest.fixture
def pg_dsn() -> str:
    _require_port("PostgreSQL", "127.0.0.1", 5432)
    return PG_DSN


@pytest.fixture
def redis_url() -> str:
    _require_port("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def kafka_bootstrap() -> str:
    _require_port("Kafka", "127.0.0.1", 9092)
    return KAFKA_BOOTSTRAP


@pytest.fixture
def mysql_dsn() -> str:
    _require_port("MariaDB", "127.0.0.1", 3306)
    return MYSQL_DSN


@pytest.fixture
def pg_table(pg_dsn: str) -> Iterator[str]:
    """A table name unique to this test, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _load_module(name: str, path: Path) -> Any:
    """A helper module of the test suite, loaded by path (tests are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


streamshop = _load_module(
    "tidegate_tests_streamshop", Path(__file__).parent / "ingest" / "streamshop.py"
)


own_pg = _load_module(
    "tidegate_tests_own_postgres", Path(__file__).parent / "services" / "own_postgres.py"
)


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL of this test alone (tests/services/own_postgres.py), started; removed
    afterwards. Stop or restart it freely: the shared server is not touched."""
    server = own_pg.OwnPostgres()
    try:
        server.pg_ctl("start")
        yield server
    finally:
        server.remove()


@pytest.fixture
def stream_project(tmp_path: Path) -> Path:
    """The small stream project (tests/ingest/streamshop.py), not built yet."""
    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    return root


@pytest.fixture
def built_stream_project(stream_project: Path) -> Path:
    from tidegate.products.builder import build_products, load_sources

    with Platform.open(stream_project) as platform:
        load_sources(platform)
        results = build_products(platform)
        assert all(r.status == "live" for r in results), results
    return stream_project


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo shop (small size), built once per session: products live, consent loaded."""
    from tidegate.demo.generator import SMALL, generate_shop
    from tidegate.demo.runner import load_consent, prepare_directory
    from tidegate.products.builder import build_products, load_sources

    directory = tmp_path_factory.mktemp("demo") / "shop"
    prepare_directory(directory)
    generate_shop(directory / "data", seed=7, size=SMALL, anchor=DEMO_ANCHOR)
    with Platform.open(directory) as platform:
        load_consent(platform, directory)
        load_sources(platform)
        results = build_products(platform)
        assert all(r.status == "live" for r in results), results
    return directory


@pytest.fixture
def demo_copy(demo_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the built demo, for tests that change state."""
    import shutil

    target = tmp_path / "shop"
    shutil.copytree(demo_dir, target)
    return target


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession (`local[2]`) for the whole run: the JVM starts once, and
    every Spark test and SparkWarehouse of the session shares it."""
    from tidegate.project.models import SparkStoreConfig
    from tidegate.store.spark.session import spark_session, stop_spark

    session = spark_session(SparkStoreConfig(type="spark"))
    yield session
    stop_spark()
