"""Optional dependencies, imported only where an at-scale backend needs them.

The embedded default (DuckDB, SQLite) needs none of them, so `pip install tidegate`
stays small. A backend calls `require("kafka", "confluent_kafka")` at its lazy import
instead of a bare `import`: when the package is missing, the user is told which extra
to install (`pip install 'tidegate[kafka]'`) instead of seeing a ModuleNotFoundError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tidegate.errors import TidegateError

#: extra -> what it enables (shown in the error message)
EXTRAS = {
    "kafka": "Apache Kafka as event log, sync destination or lineage transport",
    "postgres": "PostgreSQL sources, CDC, destinations and metadata",
    "redis": "Redis as online store or sync destination",
    "mysql": "MariaDB/MySQL sync destinations",
    "spark": "Apache Spark as the analytical store (backends.store: {type: spark})",
    "plot": "charts from `tidegate observe --plot`",
    "lineage": "OpenLineage events (observe.openlineage: file, HTTP or Kafka transport)",
    "granian": "granian as the HTTP server of `tidegate serve` (serve.server: granian)",
}


class MissingExtraError(TidegateError):
    """An optional dependency is not installed; the message names the extra to add."""

    code = "missing_extra"
    http_status = 501

    def __init__(self, extra: str, module: str) -> None:
        what = EXTRAS.get(extra, extra)
        super().__init__(
            f"{what} needs the optional package {module!r}, which is not installed: "
            f"pip install 'tidegate[{extra}]'",
            extra=extra,
            module=module,
        )
        self.extra = extra
        self.module = module


def require(extra: str, module: str) -> ModuleType:
    """Import `module` (from extra `extra`) or raise MissingExtraError naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but itself misses something: not our message
        raise MissingExtraError(extra, module) from None
