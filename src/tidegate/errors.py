"""Every error tidegate raises on purpose, under one root.

The hierarchy::

    TidegateError                      root; carries `code`, `http_status`, `to_error_detail()`
    ├── ConfigError                    a project that cannot be loaded; holds `Problem`s
    ├── SqlError                       SQL that does not parse or plan
    ├── NotFoundError                  404: unknown product, or a subject the guard filtered out
    │   └── UnknownSourceError         events posted for a source the project does not declare
    ├── AuthenticationError            401: missing, unknown, expired or revoked credentials
    ├── ForbiddenError                 403: the principal's roles may not use that purpose/product
    ├── BadRequestError                400/422: a malformed API call
    ├── BuildError                     a product build that failed (the old version stays live)
    ├── ServiceUnavailableError        a backend (database, broker) that cannot be reached
    ├── CdcSlotError                   a CDC replication slot lost or held by another reader
    ├── DestinationError               a sync destination refused or failed
    │   ├── TransientDestinationError  worth retrying: timeouts, 5xx, connection resets
    │   └── TerminalDestinationError   not worth retrying: constraint violations, 4xx
    └── LogError                       the event log (SQLite file or Kafka) refused an operation
        └── CommitFailedError          offsets of partitions this consumer no longer owns

Errors travel: the CLI prints `str(err)`; the API answers `err.http_status` with
`err.to_error_detail()` as the JSON body. Both show the same message, and neither
shows a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a project, pinned to the file and line a person must edit."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" [{self.field}]" if self.field else ""
        return f"{where}:{field} {self.message}"


class TidegateError(Exception):
    """Root of every error tidegate raises on purpose."""

    code = "tidegate_error"
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_error_detail(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"]["details"] = self.details
        return body


class ConfigError(TidegateError):
    code = "invalid_project"
    http_status = 400

    def __init__(self, problems: list[Problem], root: Path | None = None) -> None:
        self.problems = sorted(problems)
        self.root = root
        lines = "\n".join(str(p) for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{count} {noun} in the project:\n{lines}")


class SqlError(TidegateError):
    code = "invalid_sql"
    http_status = 400


class NotFoundError(TidegateError):
    code = "not_found"
    http_status = 404


class AuthenticationError(TidegateError):
    code = "unauthenticated"
    http_status = 401


class ForbiddenError(TidegateError):
    code = "forbidden"
    http_status = 403


class BadRequestError(TidegateError):
    code = "bad_request"
    http_status = 400


class BuildError(TidegateError):
    code = "build_failed"
    http_status = 500


class ServiceUnavailableError(TidegateError):
    code = "service_unavailable"
    http_status = 503


class CdcSlotError(TidegateError):
    """A CDC source's replication slot cannot be used: dropped (the changes since are
    gone from PostgreSQL) or held by another reader. Retrying does not help; the message
    says what a person must do."""

    code = "cdc_slot"
    http_status = 409


class DestinationError(TidegateError):
    code = "destination_error"
    http_status = 502


class TransientDestinationError(DestinationError):
    code = "destination_transient"


class TerminalDestinationError(DestinationError):
    code = "destination_terminal"


class LogError(TidegateError):
    code = "log_error"
    http_status = 503


class CommitFailedError(LogError):
    """The group rebalanced: the partitions went to another consumer, which will redeliver."""

    code = "commit_failed"


class UnknownSourceError(NotFoundError):
    code = "unknown_source"
