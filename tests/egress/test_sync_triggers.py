"""Issue 19, item 4: an `on_change` sync fires after any change of its product: a scheduled
rebuild, a manual rebuild, and consent (a new grant adds the person on the next tick, with
no row of the product changing)."""

from __future__ import annotations

import sqlite3
from typing import Any

from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.runtime.jobs import syncs_after_build
from tidegate.runtime.scheduler import Scheduler
from tidegate.runtime.worker import StreamWorker

ON_CHANGE = (
    "destination: {type: sqlite, path: crm.db, table: people}\nmode: mirror\ntrigger: on_change\n"
)


def held(root: Any) -> dict[int, str]:
    with sqlite3.connect(root / "crm.db") as db:
        return {int(r[0]): str(r[1]) for r in db.execute("SELECT id, email FROM people")}


def _scheduler(platform: Platform) -> tuple[StreamWorker, Scheduler]:
    worker = StreamWorker(platform)
    return worker, Scheduler(platform, worker.intake, worker.plans, worker.freshness)


def test_an_on_change_sync_fires_after_a_scheduled_rebuild(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    people.sync("crm", "purpose: ops\n" + ON_CHANGE)
    with Platform.open(people.root) as platform:
        worker, scheduler = _scheduler(platform)
        try:
            scheduler.rebuild(["people"])
            assert scheduler.synced == ["crm"]
            assert held(people.root) == {i: f"p{i}@example.com" for i in range(1, 4)}
            people.set_rows([people.row(1, email="new@example.com"), people.row(2)])
            load_sources(platform)
            scheduler.rebuild(["people"])
            assert scheduler.rebuilds == ["people", "people"]
            assert scheduler.synced == ["crm", "crm"]
        finally:
            worker.close()
    assert held(people.root) == {1: "new@example.com", 2: "p2@example.com"}


def test_an_on_change_sync_fires_after_a_manual_rebuild(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    people.sync("crm", "purpose: ops\n" + ON_CHANGE)
    people.sync(
        "by_hand",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: other}\ntrigger: manual\n",
    )
    with Platform.open(people.root) as platform:
        load_sources(platform)
        reports = syncs_after_build(platform, build_products(platform))
    assert [r.sync for r in reports] == ["crm"]  # manual syncs wait for a person
    assert set(held(people.root)) == {1, 2, 3}


def test_a_new_grant_adds_the_person_on_the_next_tick(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 5)])
    people.build()
    people.sync("crm", "purpose: crm\n" + ON_CHANGE)
    with Platform.open(people.root) as platform:
        people.grant(platform, [1])
        assert run_sync(platform, "crm").added == 1
        people.grant(platform, [2])  # while no runtime is up
        worker, scheduler = _scheduler(platform)
        try:
            scheduler.consent.check()  # the first look after a start catches up
            assert set(held(people.root)) == {1, 2}
            scheduler.consent.check()  # nothing new: nothing runs
            assert scheduler.consent.runs == ["crm"]

            people.grant(platform, [3])  # no row of the product changed
            scheduler.consent.check()
            assert set(held(people.root)) == {1, 2, 3}
            (last,) = platform.meta.runs("sync", "crm", limit=1)
            assert last["stats"]["inserted"] == 1
            assert last["stats"]["partial"]  # only the subject's key was looked at

            people.revoke(platform, [1])
            scheduler.consent.check()
            assert set(held(people.root)) == {2, 3}

            people.grant(platform, [4], purpose="ops")  # another purpose: not this sync's
            scheduler.consent.check()
            assert scheduler.consent.runs == ["crm", "crm", "crm"]
        finally:
            worker.close()
