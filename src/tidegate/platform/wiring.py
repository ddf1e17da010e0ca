"""One object that opens a project's backends and hands them to every command.

Heavy backends open lazily: the serving process never opens DuckDB (a DuckDB file has
one writer process), it reads the online store, which builds publish into.

Platform sits below every stage (layer 2): it opens only the backends of layers 0-1.
Services of the stages above (the guard, the consent ledger, tombstones, intake...)
hang on it through `component`, a typed memo keyed by the factory that builds them,
so each is built once per platform without Platform importing its module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
from tidegate.store.warehouse import Warehouse

STATE_DIR = ".tidegate"

T = TypeVar("T")


class Platform:
    def __init__(self, project: Project) -> None:
        self.project = project
        self._components: dict[Callable[[Platform], object], object] = {}
        self._building = threading.RLock()  # one of each, even when threads race

    @classmethod
    def open(cls, root: str | Path) -> Platform:
        return cls(load_project(root))

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
        return open_metadata(self.project.path(self.project.config.backends.metadata.path))

    @cached_property
    def warehouse(self) -> Warehouse:
        config = self.project.config.backends.store
        return Warehouse(
            self.project.path(config.path), threads=config.threads, memory_limit=config.memory_limit
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

        anchor = AuditAnchor(self.state_dir / "audit-anchor.json", self.master_key)
        return AuditLog(self.meta, anchor, key=load_audit_key(self.state_dir))

    @property
    def audit_writer(self) -> AuditWriter:
        """Batched, non-blocking audit appends for hot paths (the serving API)."""
        return self.audit.writer

    def close(self) -> None:
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
