"""Work that is due by the clock, not by events: rebuilds, drop folders, log retention.

`tick()` is cheap and called between micro-batches by the worker loop, so the one
process that writes the warehouse does both and never races itself:

* a **batch** product is rebuilt every `freshness` when something upstream changed
  since its last build; a product that reads the clock (time windows) is rebuilt every
  `freshness` whether or not anything changed, so "last hour" counters decay on time;
* drop folders of stream sources are swept;
* the embedded log drops records past retention (Kafka does this itself);
* `trigger: schedule` syncs whose cron fired since their last run are run;
* a rebuild runs the `on_build` and `on_change` syncs of what it published, and consent
  recorded since the last tick runs the `on_change` syncs of its purposes (`triggers`);
* a batch product with nothing changed upstream is confirmed current when half its
  freshness has passed since its last refresh (nothing to rebuild; not counted as an
  update), so it is honestly fresh, while one nobody refreshes breaches;
* every `SAMPLE_EVERY` seconds each product's SLO state is sampled into the compliance
  history (`products/slo.py`), pruned to a week once an hour.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from tidegate.egress.sync import SyncReport
from tidegate.errors import TidegateError
from tidegate.ingest.files import ingest_folder
from tidegate.ingest.intake import Intake
from tidegate.observe.freshness import FreshnessLedger
from tidegate.observe.slo import SAMPLE_EVERY
from tidegate.platform import Platform
from tidegate.products.planner import ProductPlan
from tidegate.project.project import stream_sources
from tidegate.runtime.triggers import ConsentTrigger, after_builds

log = logging.getLogger(__name__)

TICK_EVERY = 0.25
RETENTION_EVERY = 60.0
PRUNE_EVERY = 3600.0


class Scheduler:
    def __init__(
        self,
        platform: Platform,
        intake: Intake,
        plans: dict[str, ProductPlan],
        freshness: FreshnessLedger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platform = platform
        self.intake = intake
        self.plans = plans
        self.freshness = freshness
        self.clock = clock
        self._last_tick = 0.0
        self._last_retention = clock()
        self.rebuilds: list[str] = []  # what tick() rebuilt, newest last (for tests and logs)
        self.synced: list[str] = []  # scheduled syncs tick() ran, newest last
        self._sync_started: dict[str, dt.datetime] = {}  # sync -> when tick() last started it
        self.consent = ConsentTrigger(platform)
        self._last_sample: float | None = None
        self._last_prune = 0.0

    def due(self, now: float | None = None) -> list[str]:
        """Products whose scheduled rebuild is due now."""
        now = self.clock() if now is None else now
        state = self.freshness.all()
        found = []
        for name, plan in self.plans.items():
            every = plan.reevaluate_every
            if every is None:
                continue
            live = self.platform.meta.live_version(name)
            built_at = live.built_at if live else 0.0
            if now - built_at < every:
                continue
            stale = state.get(name)
            if plan.time_window or (stale is not None and stale.stale_since is not None):
                found.append(name)
        return found

    def tick(self) -> None:
        now = self.clock()
        if now - self._last_tick < TICK_EVERY:
            return
        self._last_tick = now
        self._sweep_folders()
        if now - self._last_retention >= RETENTION_EVERY:
            self._last_retention = now
            removed = self.intake.log.enforce_retention()
            if removed:
                log.info("log retention dropped %s records", removed)
        due = self.due(now)
        if due:
            self.rebuild(due)
        self.confirm_idle(now, skip=set(due))
        self.run_due_syncs(now)
        self.consent.check()
        self.sample_slo(now)

    def confirm_idle(self, now: float, skip: set[str] | None = None) -> list[str]:
        """Batch products without an upstream change since their last refresh, confirmed
        current once half their freshness has passed; returns their names."""
        state = self.freshness.all()
        confirmed = []
        for name, plan in self.plans.items():
            if plan.mode != "batch" or plan.time_window or name in (skip or set()):
                continue
            seen = state.get(name)
            if seen is not None and seen.stale_since is not None:
                continue  # a rebuild is owed, not a confirmation
            live = self.platform.meta.live_version(name)
            if live is None:
                continue
            last = max(live.built_at, seen.last_update or 0.0) if seen else live.built_at
            if now - last >= plan.freshness / 2:  # a change marked meanwhile is kept
                self.freshness.confirm(name, plan.mode, now)
                confirmed.append(name)
        return confirmed

    def sample_slo(self, now: float) -> None:
        """One SLO compliance sample per product every SAMPLE_EVERY seconds."""
        from tidegate.products.slo import prune, sample, slo_states

        if self._last_sample is not None and now - self._last_sample < SAMPLE_EVERY:
            return
        covered = SAMPLE_EVERY if self._last_sample is None else now - self._last_sample
        self._last_sample = now
        sample(
            self.platform,
            slo_states(self.platform, self.plans, now),
            min(covered, 2 * SAMPLE_EVERY),
            now,
        )
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            prune(self.platform, now)

    def run_due_syncs(self, now: float) -> None:
        """Run the `trigger: schedule` syncs whose cron fired since their last run."""
        from tidegate.egress.sync import run_sync
        from tidegate.egress.sync.schedule import due_syncs

        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        for name in due_syncs(self.platform, moment, self._sync_started):
            self._sync_started[name] = moment
            try:
                run_sync(self.platform, name)
            except TidegateError as err:  # recorded in the run history; retried next fire
                log.warning("scheduled sync %s failed: %s", name, err.message)
            self.synced.append(name)

    def rebuild(self, names: list[str]) -> None:
        from tidegate.products.builder import build_products

        state = self.freshness.all()
        try:
            results = build_products(self.platform, names, principal="scheduler")
        except TidegateError as err:
            log.warning("scheduled rebuild of %s failed: %s", ", ".join(names), err.message)
            return
        now = self.clock()
        for result in results:
            plan = self.plans.get(result.product)
            if result.status != "live" or plan is None:
                continue
            stale = state.get(result.product)
            since = stale.stale_since if stale and stale.stale_since else now
            self.freshness.updated(result.product, plan.mode, now - since, plan.freshness)
            self.rebuilds.append(result.product)
        published = {r.product for r in results if r.status == "live"}
        for product in sorted(published):
            for report in self._syncs_after(product):
                self.synced.append(report.sync)

    def _syncs_after(self, product: str) -> list[SyncReport]:
        """The syncs a rebuild of `product` triggers; a failing one is in its history."""
        try:
            return after_builds(self.platform, {product})
        except TidegateError as err:
            log.warning("a sync after rebuilding %s failed: %s", product, err.message)
            return []

    def _sweep_folders(self) -> None:
        for name, config in stream_sources(self.platform.project).items():
            if config.drop_folder:
                folder = self.platform.project.path(config.drop_folder)
                report = ingest_folder(self.intake, name, folder)
                if report.files:
                    log.info(
                        "ingested %s from %s: %s accepted, %s rejected",
                        ", ".join(report.files),
                        folder,
                        report.accepted,
                        report.rejected,
                    )
