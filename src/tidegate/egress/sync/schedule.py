"""Which `trigger: schedule` syncs are due: their cron fired since their last run (UTC).

The last run is the latest of the run history's start and, when the caller passes
`started`, its own record of when it last started the sync (the scheduler keeps one
in its own clock, so a test's fake clock and the run history never disagree).
"""

from __future__ import annotations

import datetime as dt

from tidegate.platform import Platform
from tidegate.project.cron import next_fire


def due_syncs(
    platform: Platform,
    now: dt.datetime | None = None,
    started: dict[str, dt.datetime] | None = None,
) -> list[str]:
    moment = now or dt.datetime.now(dt.UTC)
    due = []
    for name, sync in sorted(platform.project.syncs.items()):
        cfg = sync.config
        if cfg.trigger != "schedule" or not cfg.schedule:
            continue
        runs = platform.meta.runs("sync", name, limit=1)
        moments = [dt.datetime.fromtimestamp(runs[0]["started_at"], dt.UTC)] if runs else []
        if started and name in started:
            moments.append(started[name])
        if not moments or next_fire(cfg.schedule, max(moments)) <= moment:
            due.append(name)
    return due
