"""OpenLineage runs for sync runs: one START, then COMPLETE or FAIL, per run.

The sync engine calls these three methods; none of them can fail a sync, and with
the default `transport: none` they cost nothing (no event is even built).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from tidegate.observe.hooks import never_raises

if TYPE_CHECKING:
    from tidegate.platform import Platform


class SyncLineage:
    def __init__(self, platform: Platform, sync: str) -> None:
        self.project = platform.project
        self.sync = sync
        self.run_id = str(uuid4())
        self.enabled = self.project.config.observe.openlineage.transport != "none"

    @functools.cached_property
    def emitter(self) -> Any:
        from tidegate.observe.openlineage import LineageEmitter

        return LineageEmitter(self.project)

    @never_raises
    def started(self) -> None:
        if self.enabled:
            self.emitter.sync_event("START", self.sync, self.run_id)

    @never_raises
    def completed(self, rows: int) -> None:
        if self.enabled:
            self.emitter.sync_event("COMPLETE", self.sync, self.run_id, rows=rows)

    @never_raises
    def failed(self, error: str) -> None:
        if self.enabled:
            self.emitter.sync_event("FAIL", self.sync, self.run_id, error=error)
