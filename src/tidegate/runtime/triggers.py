"""Triggers that never miss: which syncs run after a product changed, and after consent did.

A product changes four ways, and each runs the syncs that wait for it:

* a micro-batch of incremental updates: the worker runs `on_change` syncs with the
  changed keys (`worker.py`);
* a build, by hand (`tidegate build`) or by the scheduler (a stale batch product, a
  time window): `after_builds` runs its `on_build` and `on_change` syncs;
* consent: a new grant lets a person through the guard without any row of the product
  changing, so `ConsentTrigger` (called by the scheduler's tick) reads the ledger
  entries recorded since it last looked and runs the `on_change` syncs of those
  purposes for those subjects (only their keys when the product's key is its subject;
  else a full diff). A revocation is also pushed out at once by `propagation`; this
  run is the safety net. The first look after a start reads the whole ledger and runs
  each sync for what was recorded since its last run, so a grant recorded while no
  runtime was up is not missed either.
"""

from __future__ import annotations

import logging

from tidegate.egress.sync import SyncReport, run_sync, sync_changes
from tidegate.errors import TidegateError
from tidegate.platform import Platform

log = logging.getLogger(__name__)
AFTER_BUILD = ("on_build", "on_change")


def after_builds(platform: Platform, products: set[str]) -> list[SyncReport]:
    """Run every `on_build` and `on_change` sync of these freshly published products."""
    reports = []
    for name, sync in sorted(platform.project.syncs.items()):
        cfg = sync.config
        if cfg.trigger in AFTER_BUILD and cfg.product in products:
            reports.append(run_sync(platform, name))
    return reports


class ConsentTrigger:
    """Runs `on_change` syncs for consent recorded since the last look (see the module doc)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.last_seq: int | None = None  # None: not looked yet (the first look catches up)
        self.runs: list[str] = []  # syncs it ran, newest last (for tests and logs)

    def _syncs(self) -> dict[str, str]:
        """on_change sync -> its purpose."""
        return {
            name: sync.config.purpose
            for name, sync in sorted(self.platform.project.syncs.items())
            if sync.config.trigger == "on_change"
        }

    def check(self) -> None:
        syncs = self._syncs()
        first = self.last_seq is None
        rows = list(self.platform.meta.consent_rows(self.last_seq or 0))
        self.last_seq = max([r.seq for r in rows], default=self.last_seq or 0)
        if not syncs or not rows:
            return
        for name, purpose in syncs.items():
            since = 0.0
            if first:  # after a start: what was recorded since the sync last ran
                last = self.platform.meta.runs("sync", name, limit=1)
                if not last:
                    continue  # never run: its first trigger sends everything anyway
                since = float(last[0]["started_at"])
            subjects = {r.subject for r in rows if r.purpose == purpose and r.recorded_at >= since}
            if subjects:
                self._run(name, subjects)

    def _run(self, name: str, subjects: set[str]) -> None:
        cfg = self.platform.project.syncs[name].config
        product = self.platform.project.products.get(cfg.product)
        by_key = product is not None and product.config.subject == product.config.key
        try:
            if by_key:
                sync_changes(self.platform, name, sorted(subjects))
            else:
                run_sync(self.platform, name)
        except TidegateError as err:  # recorded in the run history; the next look retries
            log.warning("consent-triggered sync %s failed: %s", name, err.message)
            return
        self.runs.append(name)
