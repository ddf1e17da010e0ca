"""Which `trigger: schedule` syncs are due: their cron fired since their last run (UTC)."""

from __future__ import annotations

import datetime as dt

from tidegate.project.cron import next_fire
from tidegate.runtime.platform import Platform


def due_syncs(platform: Platform, now: dt.datetime | None = None) -> list[str]:
    moment = now or dt.datetime.now(dt.UTC)
    due = []
    for name, sync in sorted(platform.project.syncs.items()):
        cfg = sync.config
        if cfg.trigger != "schedule" or not cfg.schedule:
            continue
        runs = platform.meta.runs("sync", name, limit=1)
        if not runs:
            due.append(name)
            continue
        last = dt.datetime.fromtimestamp(runs[0]["started_at"], dt.UTC)
        if next_fire(cfg.schedule, last) <= moment:
            due.append(name)
    return due
