"""Syncs: a product, seen through the sync's purpose, written into a destination.

The rows come from the guard's SQL rewrite of the live product (row filter + column
treatments run inside DuckDB), are renamed by the field mapping, and diffed against
what this sync wrote last time (a hash per destination key, kept in the metadata
store): only added and changed rows are sent, and keys that left the guarded result
(deleted upstream, or a subject who lost the legal basis) are deleted from the
destination. Only rows tidegate itself wrote are ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tidegate.audit.log import AuditRecord
from tidegate.egress.destinations.base import open_destination
from tidegate.errors import DestinationError, NotFoundError
from tidegate.meta.base import SyncedRow
from tidegate.privacy.guard import SUBJECTS_RELATION, AccessContext, AccessPlan
from tidegate.privacy.treatments import sql_text, type_family
from tidegate.runtime.platform import Platform
from tidegate.store.warehouse import PRODUCTS

log = logging.getLogger(__name__)
SUBJECT_SAMPLE = 100


@dataclass
class SyncReport:
    sync: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "failed" if self.failed else "ok"


def _row_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()


def _dest_type(column_type: str, treatment: str) -> str:
    if treatment in {"hash", "mask"}:
        return "VARCHAR"
    if treatment == "generalize" and type_family(column_type) == "timestamp":
        return "DATE"
    return column_type


def run_sync(platform: Platform, name: str, *, full: bool = False) -> SyncReport:
    project = platform.project
    sync = project.syncs.get(name)
    if sync is None:
        raise NotFoundError(f"no sync named {name!r} (known: {', '.join(sorted(project.syncs))})")
    cfg = sync.config
    started = time.perf_counter()
    report = SyncReport(sync=name)
    run_id = platform.meta.start_run("sync", name)
    context = AccessContext(principal=f"sync:{name}", roles=(), purpose=cfg.purpose)
    plan = platform.guard.plan(context, cfg.product, check_roles=False)
    visible = {c.name: c for c in plan.visible_columns}
    mapping = cfg.fields or {c: c for c in visible}
    key_target = cfg.key or plan.key_column
    mapping = {target: source for target, source in mapping.items() if source in visible}
    if key_target not in mapping:
        raise DestinationError(
            f"sync {name!r}: the key {key_target!r} is dropped under purpose {cfg.purpose!r}; "
            "a destination cannot be keyed by a column the purpose may not see"
        )
    rows = _guarded_rows(platform, plan)
    mapped_rows = {}
    subjects: dict[str, str | None] = {}
    for row in rows:
        mapped = {target: row[source] for target, source in mapping.items()}
        dest_key = str(mapped[key_target])
        mapped_rows[dest_key] = mapped
        subjects[dest_key] = _subject_of(plan, row)
    previous = {} if full else platform.meta.synced_rows(name)
    written_before = platform.meta.synced_rows(name) if full else previous
    upserts: list[dict[str, Any]] = []
    new_state: list[SyncedRow] = []
    for dest_key, mapped in mapped_rows.items():
        digest = _row_hash(mapped)
        before = previous.get(dest_key)
        if before is None:
            report.added += 1
        elif before.row_hash != digest:
            report.changed += 1
        else:
            report.unchanged += 1
            continue
        upserts.append(mapped)
        new_state.append(SyncedRow(dest_key, digest, subjects[dest_key]))
    removed_keys = [k for k in written_before if k not in mapped_rows]
    columns = {
        target: _dest_type(visible[source].type, visible[source].treatment.treatment)
        for target, source in mapping.items()
    }
    destination = open_destination(cfg.destination, project.root)
    try:
        destination.open(columns, key_target)
        batch_rows = min(
            cfg.batch_rows or project.config.defaults.sync_batch_rows,
            destination.capabilities.max_batch_rows,
        )
        _write_batches(
            platform, destination, upserts, new_state, batch_rows, cfg.mode, name, report
        )
        if removed_keys and destination.capabilities.supports_delete and cfg.mode != "insert":
            key_values = [_typed_key(k, mapped_rows, key_target, columns) for k in removed_keys]
            destination.delete(key_values)
            platform.meta.apply_synced(name, [], removed_keys)
            report.removed = len(removed_keys)
    finally:
        destination.close()
    report.seconds = time.perf_counter() - started
    sent_subjects = sorted({s for s in (r.subject for r in new_state) if s is not None})
    platform.audit.append(
        AuditRecord(
            action="sync",
            principal=context.principal,
            purpose=plan.purpose,
            product=plan.product,
            columns=plan.treatments(),
            rows=len(upserts),
            subjects=tuple(sent_subjects[:SUBJECT_SAMPLE]),
            subject_count=len(sent_subjects),
            detail={
                "sync": name,
                "destination": destination.describe(),
                "added": report.added,
                "changed": report.changed,
                "removed": report.removed,
                "failed": report.failed,
            },
        )
    )
    platform.meta.finish_run(
        run_id,
        report.status,
        {
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "failed": report.failed,
        },
        "; ".join(report.errors[:5]),
    )
    return report


def _guarded_rows(platform: Platform, plan: AccessPlan) -> list[dict[str, Any]]:
    # keep the subject id beside the treated row, for the record of where data went
    tree = plan.select_sql(f'{PRODUCTS}."{plan.product}"', with_subject="__subject")
    table = platform.warehouse.arrow(sql_text(tree), **{SUBJECTS_RELATION: plan.subjects_table()})
    return list(table.to_pylist())


def _subject_of(plan: AccessPlan, row: dict[str, Any]) -> str | None:
    value = row.pop("__subject", None)
    return None if value is None else str(value)


def _typed_key(key: str, rows: dict[str, Any], key_target: str, columns: dict[str, str]) -> Any:
    return int(key) if type_family(columns[key_target]) == "integer" else key


def _write_batches(
    platform: Platform,
    destination: Any,
    upserts: list[dict[str, Any]],
    state: list[SyncedRow],
    batch_rows: int,
    mode: str,
    name: str,
    report: SyncReport,
) -> None:
    import pyarrow as pa

    for start in range(0, len(upserts), batch_rows):
        chunk = upserts[start : start + batch_rows]
        try:
            destination.write(pa.Table.from_pylist(chunk), "upsert" if mode == "mirror" else mode)
        except DestinationError as err:
            report.failed += len(chunk)
            report.errors.append(err.message)
            log.warning("sync %s: batch of %s rows failed: %s", name, len(chunk), err.message)
            continue
        # checkpoint per batch: a crash after this point does not resend these rows
        platform.meta.apply_synced(name, state[start : start + batch_rows], [])
