"""Revocation propagates: a subject who lost the legal basis for a purpose leaves every
sync destination that holds them for that purpose, without waiting for the next run.

Where data went is the sync state (`sync_rows`: sync, destination key, subject, when
written), shown by `MetadataStore.subject_locations`. `propagate(platform, subject)`:

1. refreshes the consent view (the ledger as of now);
2. for each sync holding rows of the subject, checks the sync's purpose: when the
   subject has no legal basis for it any more, deletes those keys from the destination
   (or records them as suppressed where the destination cannot delete), under the same
   per-sync file lock the sync engine takes, and checkpoints the sync state;
3. writes one `sync_removal` audit record per sync, with the keys and the reason.

What needs no removal: the serving API and the online store. The online store holds
products, not per-purpose copies; every read goes through the guard, which evaluates
consent at that moment, so the next API read after a revocation is already a 404.
Products in DuckDB are likewise filtered on every bulk read. Erasure (which removes the
data itself) is `requests/subject_requests.py`.

Nothing here opens the DuckDB warehouse, so the serving process can run it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidegate.audit.log import AuditRecord
from tidegate.meta.base import SyncedRow
from tidegate.privacy.consent import consent_view_of
from tidegate.privacy.guard import guard_of

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)


@dataclass
class Removal:
    sync: str
    destination: str
    purpose: str
    keys: list[str]
    how: str  # deleted | suppressed | failed
    error: str = ""


@dataclass
class PropagationReport:
    subject: str
    removals: list[Removal] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # syncs whose purpose still has a basis
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.how != "failed" for r in self.removals)


def remove_from_sync(
    platform: Platform, name: str, rows: list[SyncedRow], reason: str, principal: str
) -> Removal:
    """Delete these state rows' keys from the sync's destination (or suppress them)."""
    from tidegate.egress.destinations.base import open_destination
    from tidegate.egress.sync.mapping import resolve, typed_key
    from tidegate.privacy.guard import AccessContext

    cfg = platform.project.syncs[name].config
    context = AccessContext(principal=f"sync:{name}", roles=(), purpose=cfg.purpose)
    plan = guard_of(platform).plan(context, cfg.product, check_roles=False)
    mapping = resolve(cfg, plan)
    keys = [r.key for r in rows]
    destination = open_destination(cfg.destination, platform.project.root, name)
    removal = Removal(name, destination.describe(), cfg.purpose, keys, "deleted")
    try:
        from tidegate.egress.sync import sync_lock

        with sync_lock(platform, name):
            if destination.capabilities.supports_delete:
                destination.open(mapping.columns, mapping.key)
                destination.delete([typed_key(k, mapping) for k in keys])
                platform.meta.checkpoint_sync(name, deleted=keys)
            else:
                platform.meta.checkpoint_sync(name, suppressed=rows)
                removal.how = "suppressed"
    except Exception as err:  # reported and audited; the next sync run retries it
        removal.how, removal.error = "failed", f"{type(err).__name__}: {err}"[:300]
        log.warning("removing %s keys from sync %s failed: %s", len(keys), name, err)
    finally:
        destination.close()
    subjects = sorted({r.subject for r in rows if r.subject is not None})
    platform.audit.append(
        AuditRecord(
            action="sync_removal",
            principal=principal,
            purpose=cfg.purpose,
            product=cfg.product,
            rows=len(keys) if removal.how != "failed" else 0,
            subjects=tuple(subjects[:100]),
            subject_count=len(subjects),
            subject_type=platform.project.products[cfg.product].subject_type
            if cfg.product in platform.project.products
            else None,
            carried=tuple(subjects),
            outcome=removal.how,
            detail={
                "sync": name,
                "destination": removal.destination,
                "reason": reason,
                "keys": keys[:100],
                **({"error": removal.error} if removal.error else {}),
            },
        )
    )
    return removal


def propagate(
    platform: Platform, subject: str, principal: str = "propagation"
) -> PropagationReport:
    """Remove `subject` from every sync destination whose purpose lost its legal basis."""
    started = time.perf_counter()
    subject = str(subject)
    report = PropagationReport(subject)
    view = consent_view_of(platform)
    view.refresh()
    policy = platform.project.policy
    by_sync: dict[str, list[SyncedRow]] = {}
    for location in platform.meta.subject_locations(subject):
        by_sync.setdefault(location.sync, []).append(
            SyncedRow(location.key, "", subject, None, location.written_at)
        )
    for name, rows in sorted(by_sync.items()):
        sync = platform.project.syncs.get(name)
        if sync is None:
            continue  # a sync removed from the project: `request erase` still reaches it
        purpose = sync.config.purpose
        basis = policy.purposes[purpose].legal_basis
        if view.allowed(subject, purpose, basis):
            report.kept.append(name)
            continue
        reason = f"subject {subject} has no legal basis for {purpose!r} any more"
        report.removals.append(remove_from_sync(platform, name, rows, reason, principal))
    report.seconds = time.perf_counter() - started
    return report


class Propagator:
    """Runs `propagate` off the request path, one subject at a time, in order."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.reports: list[PropagationReport] = []
        self._subject_locks: dict[str, threading.Lock] = {}

    def submit(self, subject: str) -> None:
        thread = threading.Thread(
            target=self._run, args=(subject,), name="tidegate-propagate", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _run(self, subject: str) -> None:
        try:
            with self._lock_for(subject):
                self.reports.append(propagate(self._platform, subject))
        except Exception:
            log.exception("propagating the consent change of subject %s failed", subject)

    def _lock_for(self, subject: str) -> threading.Lock:
        with self._lock:
            return self._subject_locks.setdefault(subject, threading.Lock())

    def wait(self, timeout: float | None = None) -> None:
        """For tests and shutdown: wait for the propagations under way."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


def propagator_for(platform: Platform) -> Propagator:
    """The platform's propagator (one per platform object)."""
    return platform.component(Propagator)
