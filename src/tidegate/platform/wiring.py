"""One object that opens a project's backends and hands them to every command.

Heavy backends open lazily: the serving process never opens DuckDB (a DuckDB file has
one writer process), it reads the online store, which builds publish into.

Platform sits below every stage (layer 2): it opens only the backends of layers 0-1.
Services of the stages above (the guard, the consent ledger, tombstones, intake...)
hang on it through `component`, a typed memo keyed by the factory that builds them,
so each is built once per platform without Platform importing its module.

A runtime (`run`, `worker`) holds the warehouse for as long as it runs and answers CLI
commands on its admin socket (`runtime/control.py`): it runs them in-process with its own
Platform, *lent* to the command (`lend()`): `Platform.open` of the same project then
returns that Platform, whose `close()` leaves the backends open for the runtime.
`writer_lock` keeps those commands, the worker's micro-batches and the scheduler's
rebuilds from interleaving on the warehouse.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from typing import TypeVar, cast

from tidegate.audit.log import AuditLog
from tidegate.audit.writer import AuditWriter
from tidegate.log.base import EventLog, open_event_log
from tidegate.meta import MetadataStore, open_metadata
from tidegate.platform.secrets import load_audit_key, load_master_key
from tidegate.project import Project, load_project
from tidegate.project.models import parse_duration
from tidegate.store.online import OnlineStore, open_online_store
from tidegate.store.registry import open_warehouse
from tidegate.store.warehouse import Warehouse

STATE_DIR = ".tidegate"
#: seconds a command waits for a warehouse another (non-runtime) process holds
LOCK_TIMEOUT_ENV = "TIDEGATE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 60.0

_lent: ContextVar[Platform | None] = ContextVar("tidegate_lent_platform", default=None)


def _stderr_notice(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


T = TypeVar("T")


class Platform:
    def __init__(self, project: Project) -> None:
        self.project = project
        self._components: dict[Callable[[Platform], object], object] = {}
        self._building = threading.RLock()  # one of each, even when threads race
        #: how long opening the warehouse waits for another process's lock (None: forever)
        self.lock_timeout: float | None = _lock_timeout()
        #: who hears "waiting for the warehouse: held by PID …" while it waits
        self.wait_notice: Callable[[str], None] = _stderr_notice
        self._loans = 0

    @classmethod
    def open(cls, root: str | Path) -> Platform:
        lent = _lent.get()
        if lent is not None and Path(root).resolve() == lent.project.root.resolve():
            return lent
        return cls(load_project(root))

    @cached_property
    def writer_lock(self) -> threading.RLock:
        """Held around each warehouse write of a runtime: a micro-batch, a scheduler tick,
        a command run for the CLI; so a CLI build and an incremental update never race."""
        return threading.RLock()

    @contextmanager
    def lend(self) -> Iterator[Platform]:
        """In this thread (context), `Platform.open` of this project returns this Platform,
        and closing it leaves the backends open for their owner."""
        self._loans += 1
        token = _lent.set(self)
        try:
            yield self
        finally:
            _lent.reset(token)
            self._loans -= 1

    @property
    def lent(self) -> bool:
        """Whether this Platform is a runtime's, lent to a command run for the CLI."""
        return self._loans > 0

    @property
    def state_dir(self) -> Path:
        return self.project.root / STATE_DIR

    @cached_property
    def master_key(self) -> bytes:
        """The key behind keyed hashing, pseudonyms and the audit anchor."""
        return load_master_key(self.state_dir)

    def component(self, factory: Callable[[Platform], T]) -> T:
        """The service `factory` builds from this platform, built once and kept.

        Stages above the platform use it for their per-platform services (e.g.
        `privacy.guard.guard_of`); a component with a `close()` is closed with the
        platform, before the backends it uses.
        """
        with self._building:
            if factory not in self._components:
                self._components[factory] = factory(self)
            return cast(T, self._components[factory])

    @cached_property
    def meta(self) -> MetadataStore:
        return open_metadata(self.project.config.backends.metadata, self.project.root)

    @cached_property
    def warehouse(self) -> Warehouse:
        return open_warehouse(
            self.project.config.backends.store,
            self.project.root,
            wait=self.lock_timeout,
            notice=self.wait_notice,
        )

    @cached_property
    def online(self) -> OnlineStore:
        ttls = {
            name: parse_duration(product.config.ttl).total_seconds()
            for name, product in self.project.products.items()
            if product.config.ttl
        }
        return open_online_store(self.project.config.backends.online, self.project.root, ttls)

    @cached_property
    def event_log(self) -> EventLog:
        """The project's event log (SQLite file or Kafka), for readers such as /metrics;
        the stream worker and intake open their own producer and consumers."""
        return open_event_log(self.project.config.backends.log, self.project.root)

    @cached_property
    def audit(self) -> AuditLog:
        from tidegate.audit.anchor import AuditAnchor

        # one host (SQLite metadata): a file beside the state; several hosts sharing
        # PostgreSQL metadata: the store's compare-and-set anchor slot, one for all
        shared = self.meta if self.project.config.backends.metadata.type != "sqlite" else None
        anchor = AuditAnchor(self.state_dir / "audit-anchor.json", self.master_key, shared)
        return AuditLog(self.meta, anchor, key=load_audit_key(self.state_dir))

    @property
    def audit_writer(self) -> AuditWriter:
        """Batched, non-blocking audit appends for hot paths (the serving API)."""
        return self.audit.writer

    def close(self) -> None:
        if self._loans:  # a command run by the runtime: the runtime closes at its end
            return
        with self._building:
            components = list(self._components.values())
            self._components.clear()
        for component in reversed(components):
            close = getattr(component, "close", None)
            if callable(close):
                close()
        if "audit" in self.__dict__:
            self.audit.close()  # stores what the batch writer still holds
            del self.__dict__["audit"]
        for name in ("event_log", "warehouse", "online", "meta"):
            if name in self.__dict__:
                getattr(self, name).close()
                del self.__dict__[name]

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
