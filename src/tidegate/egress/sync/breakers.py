"""Circuit breakers: a sync run that would change the destination too much stops before it writes.

Evaluated on full runs (not the key-limited runs of `on_change`), after the diff and
before the first write, against the rows the sync holds at the destination (its state):

* `max_removed`: rows a `mirror` run would delete because they left the product;
* `max_row_change`: how far the rows to hold differ from the rows held, up or down;
* `on_quality_issue: block`: the product's live version failed a warn-severity check
  or its metrics are anomalous against the versions before it (`quality_issues`).

A tripped breaker: nothing is written (removals for lost consent still go: the law
does not wait for an approval), the run is recorded as `blocked` with the reasons, one
alert goes out (observe alerts, deduplicated per sync and reasons), and every later run
blocks the same way until `tidegate sync approve NAME` (audited) lets the next run
through once, or the product comes back within the thresholds by itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tidegate.audit.log import AuditRecord
from tidegate.errors import BadRequestError
from tidegate.observe.alerts import Alert, AlertRouter
from tidegate.platform import Platform
from tidegate.project.breakers import BreakerPolicy
from tidegate.project.models import SyncConfig

log = logging.getLogger(__name__)
APPROVAL = "sync_approval"  # the run-history kind of an approval


def policy_of(platform: Platform, cfg: SyncConfig) -> BreakerPolicy:
    """The sync's breakers over its product's defaults."""
    product = platform.project.products.get(cfg.product)
    base = product.config.sync_breakers if product is not None else None
    return (base or BreakerPolicy()).merged(cfg.breakers)


def tripped(
    policy: BreakerPolicy, *, held: int, to_hold: int, to_delete: int, mode: str
) -> list[str]:
    """Why this run may not write (empty: it may)."""
    reasons = []
    if mode == "mirror" and policy.max_removed and policy.max_removed.exceeded(to_delete, held):
        reasons.append(
            f"max_removed: the run would delete {to_delete:,} of the {held:,} rows the sync "
            f"holds (limit {policy.max_removed})"
        )
    change = abs(to_hold - held)
    if held and policy.max_row_change and policy.max_row_change.exceeded(change, held):
        reasons.append(
            f"max_row_change: {to_hold:,} rows to hold against {held:,} held "
            f"({100.0 * change / held:.1f}% change; limit {policy.max_row_change})"
        )
    return reasons


def quality_issues(platform: Platform, product: str) -> list[str]:
    """Why the live version of `product` is suspect: failed (warn) checks, anomalies."""
    from tidegate.observe.anomaly import detect

    live = platform.meta.live_version(product)
    if live is None:
        return []
    store = platform.meta.observations
    reasons = []
    failed = sorted(
        r["check_name"] for r in store.quality(product, live.version) if not r["passed"]
    )
    if failed:
        reasons.append(
            f"on_quality_issue: version {live.version} failed {len(failed)} check(s): "
            + ", ".join(failed[:10])
        )
    config = platform.project.config.observe.anomaly
    found = []
    for metric, column in store.series_names(product):
        mine = [
            p
            for p in store.series(product, metric, column, kind="build")
            if p.version == live.version
        ]
        if mine:
            point = mine[-1]
            found += detect(store, product, [(metric, column, point.value)], point.at, config)
    if found:
        reasons.append(
            f"on_quality_issue: version {live.version} is anomalous: "
            + "; ".join(a.describe() for a in found[:5])
        )
    return reasons


def pending_approval(platform: Platform, name: str) -> dict[str, Any] | None:
    """The approval the next run may use: one given after the last run that was not blocked."""
    approvals = platform.meta.runs(APPROVAL, name, limit=1)
    if not approvals:
        return None
    approval = approvals[0]
    for run in platform.meta.runs("sync", name, limit=50):
        if run["run_id"] > approval["run_id"] and run["status"] not in {"blocked", "running"}:
            return None
    return approval


def approve(platform: Platform, name: str, principal: str) -> dict[str, Any]:
    """Let the next run of a blocked sync through its breakers once; audited."""
    last = platform.meta.runs("sync", name, limit=1)
    if not last or last[0]["status"] != "blocked":
        status = last[0]["status"] if last else "never run"
        raise BadRequestError(
            f"sync {name!r} is not waiting for an approval (last run: {status})", sync=name
        )
    if pending_approval(platform, name) is not None:
        raise BadRequestError(
            f"sync {name!r} is already approved: its next run goes ahead", sync=name
        )
    blocked = last[0]
    reasons = list(blocked["stats"].get("blocked", []))
    run_id = platform.meta.start_run(APPROVAL, name)
    detail = {"sync": name, "blocked_run": blocked["run_id"], "reasons": reasons}
    platform.meta.finish_run(run_id, "approved", detail | {"principal": principal})
    platform.audit.append(AuditRecord(action="sync_approval", principal=principal, detail=detail))
    log.info("sync %s: approved by %s past %s", name, principal, "; ".join(reasons))
    return detail | {"approval_run": run_id}


def alert(platform: Platform, cfg: SyncConfig, reasons: list[str]) -> bool:
    """One alert per sync and set of reasons (observe's dedupe window); True when sent."""
    product = platform.project.products.get(cfg.product)
    owner = product.config.owner if product is not None else ""
    kinds = ",".join(sorted(r.split(":", 1)[0] for r in reasons))
    message = Alert(
        product=cfg.product,
        owner=owner,
        kind="sync_breaker",
        severity="error",
        title=(
            f"sync {cfg.name} stopped before writing; approve with "
            f"`tidegate sync approve {cfg.name}` or fix the product"
        ),
        lines=tuple(reasons),
        subject=f"{cfg.name}:{kinds}",
        details={"sync": cfg.name, "reasons": reasons},
    )
    config = platform.project.config.observe.alerts
    return AlertRouter(config, platform.meta.observations).send(message, time.time())
