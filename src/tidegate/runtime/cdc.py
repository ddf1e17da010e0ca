"""PostgreSQL CDC under the runtime: one capture thread for the project's `cdc: logical`
sources, beside the stream worker that applies what it captures.

The thread resumes each source's replication slot (or creates it and takes the
snapshot, `ingest/postgres_cdc.py`), then polls: changes go to the source's topic,
and the worker applies them like any Debezium topic, so products keep their SLO from
the same micro-batches. Between polls of a caught-up slot the thread sleeps `IDLE`.

Failures are kept apart by kind:

* PostgreSQL unreachable (restarting): the slot's state says so (`status`), and the
  capture tries again with a growing pause; it resumes from the slot's confirmed LSN;
* the slot dropped or used by another reader (`CdcSlotError`): logged once, shown by
  `status` and /metrics, and checked again every `SLOT_RETRY` seconds, so that after
  `tidegate cdc reset SOURCE` the capture takes a fresh snapshot by itself.

Only the process that runs the worker captures: a slot serves one reader at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tidegate.errors import CdcSlotError, ServiceUnavailableError, TidegateError
from tidegate.ingest.intake import Intake, open_intake
from tidegate.ingest.postgres_cdc import PostgresCdc
from tidegate.meta.parts import SlotState
from tidegate.platform import Platform
from tidegate.project.project import cdc_slot, cdc_sources

log = logging.getLogger(__name__)

IDLE = 0.1
SLOT_RETRY = 5.0
RETRY_LONGEST = 5.0


@dataclass
class _Source:
    name: str
    slot: str
    capture: PostgresCdc | None = None
    error: str | None = None
    next_try: float = 0.0
    delay: float = 0.2


class CdcCapture:
    """Captures every CDC source of the project until `stop` is set."""

    def __init__(self, platform: Platform, stop: threading.Event) -> None:
        self.platform = platform
        self.stop = stop
        project = platform.project
        self.sources = [
            _Source(name, cdc_slot(project, config))
            for name, config in cdc_sources(project).items()
        ]
        self._thread: threading.Thread | None = None
        self._intake: Intake | None = None

    def start(self) -> None:
        if self.sources:
            self._thread = threading.Thread(target=self.run, name="tidegate-cdc", daemon=True)
            self._thread.start()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                moved = sum(self._step(source) for source in self.sources)
                if not moved:
                    self.stop.wait(IDLE)
        finally:
            for source in self.sources:
                if source.capture is not None:
                    source.capture.close()
            if self._intake is not None:
                self._intake.close()

    def _step(self, source: _Source) -> int:
        now = time.monotonic()
        if now < source.next_try:
            return 0
        try:
            if source.capture is None:
                source.capture = self._open(source)
                taken = source.capture.start()
                if taken:
                    log.info("CDC %s: snapshot of %s rows taken", source.name, taken)
            moved = source.capture.poll()
        except CdcSlotError as err:
            self._failed(source, err, SLOT_RETRY, drop=True)
            return 0
        except ServiceUnavailableError as err:
            self._failed(source, err, source.delay, drop=False)
            source.delay = min(source.delay * 2, RETRY_LONGEST)
            return 0
        except TidegateError as err:
            self._failed(source, err, SLOT_RETRY, drop=True)
            return 0
        except Exception as err:  # unforeseen (a driver error): kept visible, tried again
            log.exception("CDC %s: unexpected failure", source.name)
            self._failed(source, TidegateError(f"{type(err).__name__}: {err}"), SLOT_RETRY, True)
            return 0
        if source.error is not None:
            log.info("CDC %s: capturing again", source.name)
        source.error, source.delay = None, 0.2
        return moved

    def _open(self, source: _Source) -> PostgresCdc:
        config = cdc_sources(self.platform.project)[source.name]
        dsn = config.resolved_dsn()
        if not dsn:
            raise TidegateError(
                f"source {source.name!r}: environment variable {config.dsn_env} is unset"
            )
        if self._intake is None:
            self._intake = open_intake(self.platform.project)
        return PostgresCdc(
            dsn,
            source.slot,
            self._intake,
            source.name,
            config.table,
            config.schema_name,
            positions=self.platform.meta.cdc_positions,
            plugin=config.plugin,
            publication=config.publication,
        )

    def _failed(self, source: _Source, err: TidegateError, pause: float, drop: bool) -> None:
        if err.message != source.error:
            level = logging.ERROR if isinstance(err, CdcSlotError) else logging.WARNING
            log.log(level, "CDC %s: %s", source.name, err.message)
        source.error = err.message
        source.next_try = time.monotonic() + pause
        previous = source.capture.last if source.capture is not None else None
        self.platform.meta.cdc_positions.report(
            SlotState(
                source.slot,
                source.name,
                previous.confirmed_lsn if previous else None,
                previous.lag_bytes if previous else None,
                None,
                err.message,
                time.time(),
            )
        )
        if drop and source.capture is not None:
            source.capture.close()
            source.capture = None
