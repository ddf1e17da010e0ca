"""One SparkSession per process, started on first use, with a Java it can run on.

A SparkSession owns a JVM that takes seconds to start, so the session is shared: every
SparkWarehouse of the process (and every test, through a session-scoped fixture) reuses
the one `SparkSession.builder.getOrCreate()` returns. Settings tidegate relies on are
fixed here, whatever the project adds in `conf`:

* `spark.sql.session.timeZone=UTC`: timestamps mean what DuckDB's UTC session means;
* `spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS`: Parquet timestamps DuckDB
  reads as TIMESTAMP WITH TIME ZONE (Spark's legacy INT96 loses that);
* `spark.sql.ansi.enabled=false`: a failed cast is NULL, as `TRY_CAST` in the SQL says.

Executors run Python code of tidegate's (the online publish, store/spark/publish.py),
so their Python must be this one, with this venv: `PYSPARK_PYTHON` and
`PYSPARK_DRIVER_PYTHON` are set to `sys.executable` in local mode (whatever the shell
had); on a cluster only when unset, since there the executors' interpreter may live at
another path (a cluster must have tidegate installed where its executors run).

Local mode needs a JDK (17 or 21). Without one, the user gets a SparkUnavailableError
naming JAVA_HOME, never a py4j traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.errors import ServiceUnavailableError
from tidegate.project.models import SparkStoreConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: where Debian and the Temurin packages put JDKs; the supported majors come first
JVM_DIRS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"))
SUPPORTED_JAVA = ("21", "17")

FIXED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.ansi.enabled": "false",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
}

_lock = threading.Lock()


class SparkUnavailableError(ServiceUnavailableError):
    """Spark could not start (no Java, a cluster that does not answer); the message says
    what to set."""

    code = "spark_unavailable"


def find_java_home(configured: str | None = None) -> str | None:
    """The JDK to run Spark on: `configured`, else JAVA_HOME, else the `java` on PATH,
    else a JDK 21 or 17 in the usual directories. None when there is none."""
    for candidate in (configured, os.environ.get("JAVA_HOME")):
        if candidate:
            return candidate if (Path(candidate) / "bin" / "java").exists() else None
    java = shutil.which("java")
    if java:
        return str(Path(java).resolve().parent.parent)
    for base in JVM_DIRS:
        if not base.is_dir():
            continue
        for major in SUPPORTED_JAVA:
            for home in sorted(base.glob(f"*{major}*")):
                if (home / "bin" / "java").exists():
                    return str(home)
    return None


def _is_remote(master: str) -> bool:
    return master.startswith("sc://")


def _point_workers_at_this_python(master: str) -> None:
    for name in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        if master.startswith("local"):
            os.environ[name] = sys.executable
        else:
            os.environ.setdefault(name, sys.executable)


def spark_session(config: SparkStoreConfig) -> SparkSession:
    """The process's SparkSession for `config` (created on first call)."""
    from tidegate.extras import require

    require("spark", "pyspark")
    from pyspark.sql import SparkSession

    java_home = None if _is_remote(config.master) else find_java_home(config.java_home)
    if java_home is None and not _is_remote(config.master):
        where = config.java_home or os.environ.get("JAVA_HOME")
        detail = f"JAVA_HOME={where} has no bin/java" if where else "no java was found"
        raise SparkUnavailableError(
            f"Spark needs a Java runtime (17 or 21) and {detail}: install a JDK and set "
            "JAVA_HOME to it (or `backends.store.java_home`), or point "
            "`backends.store.master` at a cluster (spark://... or sc://...)"
        )
    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        builder = SparkSession.builder.appName(config.app_name)
        if _is_remote(config.master):
            builder = builder.remote(config.master)
        else:
            assert java_home is not None
            os.environ["JAVA_HOME"] = java_home
            _point_workers_at_this_python(config.master)
            builder = builder.master(config.master)
            if config.master.startswith("local"):  # workers run this interpreter, not PATH's
                builder = builder.config("spark.pyspark.python", sys.executable)
        for key, value in {**config.conf, **FIXED_CONF}.items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as err:  # py4j/JVM start failures come as many types
            raise SparkUnavailableError(
                f"Spark ({config.master}) did not start: {str(err).strip()[:500]}; check "
                "JAVA_HOME (a JDK 17 or 21) and backends.store.master"
            ) from None
        if not _is_remote(config.master):
            session.sparkContext.setLogLevel("ERROR")
        log.info("spark session started on %s", config.master)
        return session


def stop_spark() -> None:
    """Stop the process's session (tests and benchmarks, at their end)."""
    from pyspark.sql import SparkSession

    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
