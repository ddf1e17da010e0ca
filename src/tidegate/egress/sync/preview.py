"""Preview (dry run): what the next run of a sync would do at its destination; writes nothing.

The same steps as a run up to the first write (`diff_pass`: guard, mapping, diff
against the sync state), then, instead of sending, each batch is looked at the way the
destination would take it:

* rows it would insert and update: where the destination can look keys up
  (`supports_lookup`), by asking it which keys it holds, exactly as the write would
  find them (an `update` of a key it does not hold is skipped, as the run skips it);
  elsewhere by what this sync wrote before, as the run counts them;
* rows it would delete: rows of subjects who lost the legal basis, and in `mirror`
  mode rows that left the product;
* rows the guard withholds, with the purpose and legal basis; the columns dropped,
  masked, hashed or generalized under the purpose; fields the mapping leaves out;
* a sample of rows as the destination would receive them (after guard and mapping);
* whether a circuit breaker would stop the run.

The destination is only read (`attach`, `existing_keys`: no table is created), the sync
state and the run history are not touched. A preview is audited like any egress: it
shows rows of the product to whoever asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidegate.audit.log import AuditRecord
from tidegate.egress.destinations.base import open_destination
from tidegate.egress.sync import (
    SyncReport,
    _batch_rows,
    diff_pass,
    plan_and_mapping,
)
from tidegate.egress.sync import breakers as breaker_rules
from tidegate.egress.sync.diff import PREV_MARK
from tidegate.egress.sync.mapping import typed_key
from tidegate.egress.sync.report import NOT_FOUND
from tidegate.errors import DestinationError, NotFoundError
from tidegate.platform import Platform

SAMPLE_ROWS = 20
UNCONFIRMED = (
    "this destination cannot say which keys it holds: the rows counted as updates are "
    "sent, and those it does not hold are skipped by the run (as it answers)"
)


@dataclass
class SyncPreview:
    sync: str
    destination: str
    mode: str
    purpose: str
    legal_basis: str
    insert: int = 0
    update: int = 0
    delete: int = 0
    delete_for_consent: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)  # treatment -> columns
    sample: list[dict[str, Any]] = field(default_factory=list)
    sample_deletes: list[str] = field(default_factory=list)
    breakers: list[str] = field(default_factory=list)
    approved: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sync": self.sync,
            "destination": self.destination,
            "mode": self.mode,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "counts": {
                "insert": self.insert,
                "update": self.update,
                "delete": self.delete,
                "delete_for_consent": self.delete_for_consent,
                "unchanged": self.unchanged,
                "skipped": sum(self.skipped.values()),
                "withheld": sum(self.withheld.values()),
            },
            "skipped_reasons": dict(self.skipped),
            "withheld_reasons": dict(self.withheld),
            "columns": dict(self.columns),
            "sample": self.sample,
            "sample_deletes": self.sample_deletes,
            "breakers": {"tripped": self.breakers, "approved": self.approved},
            "notes": self.notes,
        }


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def preview_sync(platform: Platform, name: str, principal: str = "cli") -> SyncPreview:
    """What the next full run of `name` would do (see the module doc)."""
    sync = platform.project.syncs.get(name)
    if sync is None:
        known = ", ".join(sorted(platform.project.syncs)) or "none"
        raise NotFoundError(f"no sync named {name!r} (known: {known})")
    cfg = sync.config
    plan, mapping = plan_and_mapping(platform, cfg)
    destination = open_destination(cfg.destination, platform.project.root, name)
    caps = destination.capabilities
    write_mode = "upsert" if cfg.mode == "mirror" else cfg.mode
    if write_mode not in caps.modes:
        destination.close()
        raise DestinationError(
            f"sync {name!r}: destination {destination.kind!r} does not support mode "
            f"{cfg.mode!r} (it supports {', '.join(caps.modes)})"
        )
    result = SyncPreview(name, destination.describe(), cfg.mode, plan.purpose, plan.legal_basis)
    for column, treatment in plan.treatments().items():
        if treatment != "clear":
            result.columns.setdefault(treatment, []).append(column)
    result.notes += mapping.omitted
    report = SyncReport(sync=name)  # collects what diff_pass counts; never stored
    lookup = caps.supports_lookup
    try:
        if lookup:
            destination.attach(mapping.columns, mapping.key)
        batch_rows = _batch_rows(platform, cfg, destination.capabilities)
        with platform.warehouse.cursor() as cursor:
            step = diff_pass(platform, cursor, cfg, plan, mapping, report, full=False, keys=None)
            result.unchanged = report.unchanged
            result.withheld = dict(report.withheld)
            result.skipped = dict(report.skipped)
            deletes = list(step.lost)
            result.delete_for_consent = _present(destination, mapping, step.lost, lookup)
            result.delete = result.delete_for_consent
            if cfg.mode == "mirror":
                result.delete += _present(destination, mapping, step.gone, lookup)
                deletes += step.gone
            elif step.gone:
                reason = f"left the product; mode {cfg.mode} does not delete (mirror does)"
                result.skipped[reason] = result.skipped.get(reason, 0) + len(step.gone)
            result.sample_deletes = [r.key for r in deletes[:SAMPLE_ROWS]]
            policy = breaker_rules.policy_of(platform, cfg)
            if policy.armed:
                result.breakers = breaker_rules.tripped(
                    policy,
                    held=step.held,
                    to_hold=step.diff.candidates,
                    to_delete=len(step.gone),
                    mode=cfg.mode,
                )
                if policy.on_quality_issue == "block":
                    result.breakers += breaker_rules.quality_issues(platform, cfg.product)
                result.approved = bool(result.breakers) and (
                    breaker_rules.pending_approval(platform, name) is not None
                )
            fields = list(mapping.fields)
            for table in step.diff.changed(batch_rows):
                _look(result, table, fields, write_mode, destination, mapping, lookup)
    finally:
        destination.close()
    _audit(platform, plan, cfg, result, principal)
    return result


def _present(destination: Any, mapping: Any, rows: list[Any], lookup: bool) -> int:
    """How many of these state rows a delete would remove (the destination's count)."""
    if not rows or not destination.capabilities.supports_delete:
        return len(rows)
    if not lookup:
        return len(rows)
    held = destination.existing_keys([typed_key(r.key, mapping) for r in rows])
    return sum(1 for r in rows if r.key in held)


def _look(
    result: SyncPreview,
    table: Any,
    fields: list[str],
    mode: str,
    destination: Any,
    mapping: Any,
    lookup: bool,
) -> None:

    seen = table.column(PREV_MARK).to_pylist()
    rows = table.select(fields).to_pylist()
    if mode == "insert":
        reason = "changed, but mode insert does not update rows"
        skipped = sum(seen)
        if skipped:
            result.skipped[reason] = result.skipped.get(reason, 0) + skipped
        rows = [r for r, s in zip(rows, seen, strict=True) if not s]
        result.insert += len(rows)
    else:
        if lookup:
            keys = [r[mapping.key] for r in rows]
            held = destination.existing_keys(keys)
            existed = [str(_plain(k)) in held for k in keys]
        elif mode == "update":  # only the destination knows; the run reports what it says
            existed = [True] * len(rows)
            if UNCONFIRMED not in result.notes:
                result.notes.append(UNCONFIRMED)
        else:
            existed = [bool(s) for s in seen]
        if mode == "update":
            missing = existed.count(False)
            if missing:
                result.skipped[NOT_FOUND] = result.skipped.get(NOT_FOUND, 0) + missing
            rows = [r for r, e in zip(rows, existed, strict=True) if e]
            result.update += len(rows)
        else:
            result.update += existed.count(True)
            result.insert += existed.count(False)
    room = SAMPLE_ROWS - len(result.sample)
    if room > 0:
        result.sample += [{k: _plain(v) for k, v in r.items()} for r in rows[:room]]


def _audit(platform: Platform, plan: Any, cfg: Any, result: SyncPreview, principal: str) -> None:
    platform.audit.append(
        AuditRecord(
            action="sync_preview",
            principal=principal,
            purpose=plan.purpose,
            product=plan.product,
            columns=plan.treatments(),
            rows=len(result.sample),
            detail={
                "sync": cfg.name,
                "destination": result.destination,
                "mode": cfg.mode,
                "insert": result.insert,
                "update": result.update,
                "delete": result.delete,
            },
        )
    )
