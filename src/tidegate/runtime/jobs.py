"""Jobs that span stages: build products, then run the syncs their builds trigger."""

from __future__ import annotations

from tidegate.egress.sync import SyncReport, run_sync
from tidegate.products.builder import BuildResult
from tidegate.runtime.platform import Platform


def syncs_after_build(platform: Platform, results: list[BuildResult]) -> list[SyncReport]:
    """Run every `trigger: on_build` sync whose product just published a new version."""
    published = {r.product for r in results if r.status == "live"}
    reports = []
    for name, sync in sorted(platform.project.syncs.items()):
        if sync.config.trigger == "on_build" and sync.config.product in published:
            reports.append(run_sync(platform, name))
    return reports
