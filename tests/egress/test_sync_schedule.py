"""`trigger: schedule` syncs run from the scheduler's tick when their cron fires (fake clock)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.runtime.scheduler import Scheduler
from tidegate.runtime.worker import StreamWorker

SQLITE_DEST = "destination: {type: sqlite, path: crm.db, table: people}\n"


def held_scores(root: Any) -> dict[int, float]:
    with sqlite3.connect(root / "crm.db") as db:
        return {int(r[0]): float(r[1]) for r in db.execute("SELECT id, score FROM people")}


def test_a_scheduled_sync_runs_when_its_cron_fires_and_not_before(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync(
        "hourly",
        "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: schedule\nschedule: '0 * * * *'\n",
    )
    people.sync(
        "by_hand",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: other}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    with Platform.open(people.root) as platform:
        worker = StreamWorker(platform)
        start = dt.datetime.now(dt.UTC).timestamp()
        clock = [start]
        scheduler = Scheduler(
            platform, worker.intake, worker.plans, worker.freshness, lambda: clock[0]
        )

        def tick_at(moment: float) -> None:
            clock[0] = moment
            scheduler._last_tick = 0  # tick() is rate-limited on the clock; each call counts
            scheduler.tick()

        tick_at(start)  # never ran: due at once
        assert scheduler.synced == ["hourly"]
        assert held_scores(people.root) == {i: float(i) for i in range(1, 6)}

        people.set_rows([people.row(1, score=100.0)] + [people.row(i) for i in range(2, 6)])
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        tick_at(start + 1)  # the cron has not fired since the last run
        assert scheduler.synced == ["hourly"]
        assert held_scores(people.root)[1] == 1.0

        top_of_next_hour = (start // 3600 + 1) * 3600
        tick_at(top_of_next_hour + 5)
        assert scheduler.synced == ["hourly", "hourly"]
        assert held_scores(people.root)[1] == 100.0
        tick_at(top_of_next_hour + 65)  # fired once for this hour, ran once
        assert scheduler.synced == ["hourly", "hourly"]

        runs = platform.meta.runs("sync", "hourly")
        assert [r["status"] for r in runs] == ["ok", "ok"]
        assert platform.meta.runs("sync", "by_hand") == []  # manual syncs are never scheduled
        worker.close()
