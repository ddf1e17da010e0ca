"""One object that opens a project's backends and hands them to every command.

Heavy backends open lazily: the serving process never opens DuckDB (a DuckDB file has
one writer process), it reads the online store, which builds publish into.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tidegate.audit.log import AuditLog
from tidegate.audit.writer import AuditWriter
from tidegate.meta import MetadataStore, open_metadata
from tidegate.privacy.consent import ConsentLedger, ConsentView
from tidegate.privacy.guard import Guard
from tidegate.privacy.secrets import load_audit_key, load_master_key
from tidegate.project import Project, load_project
from tidegate.project.models import parse_duration
from tidegate.store.online import OnlineStore, open_online_store
from tidegate.store.warehouse import Warehouse

STATE_DIR = ".tidegate"


class Platform:
    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def open(cls, root: str | Path) -> Platform:
        return cls(load_project(root))

    @property
    def state_dir(self) -> Path:
        return self.project.root / STATE_DIR

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
    def audit(self) -> AuditLog:
        from tidegate.audit.anchor import AuditAnchor

        anchor = AuditAnchor(self.state_dir / "audit-anchor.json", load_master_key(self.state_dir))
        log = self.__dict__["audit"] = AuditLog(
            self.meta, anchor, key=load_audit_key(self.state_dir)
        )
        from tidegate.privacy.monitors import monitors_from_env

        monitors_from_env(self)  # access monitors when TIDEGATE_ACCESS_ALERT_WEBHOOK is set
        return log

    @property
    def audit_writer(self) -> AuditWriter:
        """Batched, non-blocking audit appends for hot paths (the serving API)."""
        return self.audit.writer

    @cached_property
    def consent(self) -> ConsentLedger:
        return ConsentLedger(self.meta)

    @cached_property
    def consent_view(self) -> ConsentView:
        return ConsentView(self.meta)

    @cached_property
    def guard(self) -> Guard:
        return Guard(self.project, self.consent_view, load_master_key(self.state_dir))

    def close(self) -> None:
        if "audit" in self.__dict__:
            self.audit.close()  # stores what the batch writer still holds
            del self.__dict__["audit"]
        for name in ("warehouse", "online", "meta"):
            if name in self.__dict__:
                getattr(self, name).close()
                del self.__dict__[name]

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
