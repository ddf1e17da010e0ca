"""Syncs: a product, seen through the sync's purpose, written into a destination.

One run:

1. the guard's plan for the sync's purpose (row filter + column treatments) and the
   field mapping become one SQL query, run by DuckDB (`mapping`);
2. its rows are diffed in DuckDB against the (key, hash) snapshot of what this sync
   wrote before (`diff`); only mapped, treated fields count; rows the guard withholds
   are counted with the purpose and legal basis;
3. rows of subjects who lost the legal basis are removed from the destination first
   (deleted, or suppressed where it cannot delete) and each removal is audited;
   then, on a full run, the circuit breakers (`breakers`) may stop the run here: it
   writes nothing more, is recorded as `blocked`, and waits for an approval;
4. added and changed rows go out in batches (`apply`: rate limit, retries, bisection
   of refused batches); each batch is checkpointed in the metadata store, so a run
   killed at any point resumes without losing a row, and in `insert` mode without
   sending one twice (the batch is marked in flight first and reconciled on resume);
5. in `mirror` mode, rows tidegate wrote that left the product are deleted; nothing
   tidegate did not write is ever touched;
6. refused rows are kept with the destination's own message and retried every run
   until they land or are dismissed (`tidegate sync errors NAME --dismiss`), their
   values scrubbed from the message; the run report (`report`: what the destination
   confirms: inserted, updated, deleted; unchanged, failed, withheld, skipped with
   reasons, retries with reasons) goes to the run history, the audit log, and to
   alerts when thresholds pass (`alerts`).

`preview.preview_sync` runs steps 1-3 and reads the destination instead of writing.

API for callers:

* `run_sync(platform, name, full=False, keys=None) -> SyncReport`: one run. `full`
  resends every row; `keys` limits the run to those product keys.
* `sync_changes(platform, name, changed_keys) -> SyncReport`: what the stream worker
  calls for `trigger: on_change` syncs with the product keys a micro-batch changed
  (keys as the product's key column holds them; any type, compared as text). Rows of
  those keys are diffed and sent, rows of those keys that vanished (or whose subject
  lost the legal basis) are removed; other rows are not looked at. Runs of one sync are
  serialized by a file lock, so a manual run and the worker never interleave.
* `due_syncs(platform, now)` (in `schedule`): the `trigger: schedule` syncs whose cron
  fired since their last run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tidegate.audit.log import AuditRecord
from tidegate.egress.destinations.base import Capabilities, Destination
from tidegate.egress.sync.alerts import send_alerts
from tidegate.egress.sync.apply import Sender
from tidegate.egress.sync.diff import PREV_MARK, Diff, Prefetch, SubjectTally, state_table
from tidegate.egress.sync.mapping import (
    CHANGED_RELATION,
    HASH,
    KEY,
    SUBJECT,
    Mapping,
    key_is_unique,
    resolve,
    rows_query,
    typed_key,
)
from tidegate.egress.sync.opening import Opening
from tidegate.egress.sync.overlap import Checkpoints
from tidegate.egress.sync.report import ALREADY_GONE, NOT_FOUND, SyncReport, scrub
from tidegate.errors import BadRequestError, NotFoundError, TidegateError
from tidegate.meta.base import SyncedRow, SyncRowError
from tidegate.observe.syncs import SyncLineage
from tidegate.platform import Platform
from tidegate.privacy.guard import SUBJECTS_RELATION, AccessContext, AccessPlan, guard_of
from tidegate.privacy.tombstones import ensure_purged
from tidegate.privacy.treatments import sql_text
from tidegate.private import private_dir, private_file
from tidegate.project.models import SyncConfig
from tidegate.store.warehouse import PRODUCTS

__all__ = ["SyncReport", "run_sync", "sync_changes"]

log = logging.getLogger(__name__)
SUBJECT_SAMPLE = 100
ERROR_SAMPLE = 100
COMPACT_AFTER = 32  # state segments a sync may pile up before a run compacts them


def sync_changes(platform: Platform, name: str, changed_keys: Iterable[Any]) -> SyncReport:
    """Sync only the rows of these product keys (for `trigger: on_change`)."""
    return run_sync(platform, name, keys=list(changed_keys))


def run_sync(
    platform: Platform, name: str, *, full: bool = False, keys: list[Any] | None = None
) -> SyncReport:
    sync = platform.project.syncs.get(name)
    if sync is None:
        known = ", ".join(sorted(platform.project.syncs)) or "none"
        raise NotFoundError(f"no sync named {name!r} (known: {known})")
    cfg = sync.config
    if full and cfg.mode == "insert":
        raise BadRequestError(
            f"sync {name!r} is in insert mode: --full would insert every row again; "
            "use upsert or mirror mode to resend everything"
        )
    with sync_lock(platform, name):
        _close_interrupted_runs(platform, name)
        report = SyncReport(sync=name, partial=keys is not None)
        report.run_id = platform.meta.start_run("sync", name)
        started = time.perf_counter()
        lineage = SyncLineage(platform, name)  # OpenLineage START / COMPLETE / FAIL
        lineage.started()
        try:
            _run(platform, cfg, report, full=full, keys=keys)
        except TidegateError as err:
            report.run_error = err.message
            lineage.failed(report.run_error)
            raise
        except Exception as err:
            report.run_error = f"{type(err).__name__}: {err}"
            lineage.failed(report.run_error)
            raise
        else:
            lineage.completed(report.added + report.changed)
        finally:
            report.seconds = time.perf_counter() - started
            platform.meta.finish_run(
                report.run_id,
                report.status,
                report.counts() | {"seconds": round(report.seconds, 3), "notes": report.notes},
                report.run_error or "; ".join(report.errors[:5]),
            )
            send_alerts(report, cfg.alerts)
    return report


@contextlib.contextmanager
def sync_lock(platform: Platform, name: str) -> Iterator[None]:
    """The per-sync lock: runs, removals and erasures of one sync never interleave."""
    directory = platform.state_dir / "locks"
    private_dir(directory)
    private_file(directory / f"sync-{name}.lock", create=True)
    with (directory / f"sync-{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if the process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _close_interrupted_runs(platform: Platform, name: str) -> None:
    """A run still 'running' while we hold the lock died with its process."""
    for run in platform.meta.runs("sync", name, limit=10):
        if run["status"] == "running":
            platform.meta.finish_run(
                run["run_id"], "interrupted", run["stats"], "the process stopped mid-run"
            )


@dataclass
class DiffPass:
    """One run's diff, before anything is written: what a run sends and a preview shows."""

    diff: Diff
    held: int  # rows the sync holds at the destination (its state), or the part looked at
    lost: list[SyncedRow]  # held rows whose subject lost the legal basis
    gone: list[SyncedRow]  # held rows that left the product


def plan_and_mapping(
    platform: Platform, cfg: SyncConfig, cursor: Any = None
) -> tuple[AccessPlan, Mapping]:
    """The guard's plan for the sync's purpose and the field mapping through it; with
    the run's warehouse `cursor`, the product's presence is probed on it (cheaper than a
    catalog query on a cursor of its own)."""
    context = AccessContext(principal=f"sync:{cfg.name}", roles=(), purpose=cfg.purpose)
    plan = guard_of(platform).plan(context, cfg.product, check_roles=False)
    ensure_purged(platform)  # erased subjects never go out, even if sources still hold them
    if cursor is not None:
        live = _is_live(cursor, cfg.product)
    else:
        live = platform.warehouse.has_relation(PRODUCTS, cfg.product)
    if not live:
        raise NotFoundError(
            f"sync {cfg.name!r}: product {cfg.product!r} has no live version yet; "
            f"build it first (tidegate build)"
        )
    return plan, resolve(cfg, plan)


def _is_live(cursor: Any, product: str) -> bool:
    """Whether the product has a live version (its view in PRODUCTS resolves)."""
    import duckdb

    try:
        cursor.execute(f'SELECT * FROM {PRODUCTS}."{product}" LIMIT 0').fetchall()
    except duckdb.CatalogException:
        return False
    return True


def diff_pass(
    platform: Platform,
    cursor: Any,
    cfg: SyncConfig,
    plan: AccessPlan,
    mapping: Mapping,
    report: SyncReport,
    *,
    full: bool,
    keys: list[Any] | None,
) -> DiffPass:
    """Diff the guarded rows against the sync state on `cursor`; counts what is unchanged,
    skipped and withheld by the guard into `report`."""
    name = cfg.name
    diff = _guarded_rows(cursor, plan, mapping, keys)
    if keys is None:
        previous = platform.meta.synced_state(name)
    else:
        previous = platform.meta.synced_state(
            name, keys=diff.current_keys(), source_keys=[str(k) for k in keys]
        )
    dismissed = {
        e.key: e.row_hash
        for e in platform.meta.sync_row_errors(name, include_dismissed=True)
        if e.dismissed_at is not None
    }
    counts = diff.compare(previous, dismissed, resend_all=full)
    report.unchanged = counts.unchanged
    for reason, rows in counts.skipped.items():
        report.skip(reason, rows)
    report.withhold(_withheld_reason(plan), _product_rows(cursor, plan, keys) - counts.current)
    removed = diff.removed()
    lost = [r for r in removed if plan.row_filter and not plan.row_filter.admits(r.subject)]
    lost_keys = {r.key for r in lost}
    gone = [r for r in removed if r.key not in lost_keys]
    return DiffPass(diff, int(previous.num_rows), lost, gone)


def _withheld_reason(plan: AccessPlan) -> str:
    if plan.legal_basis == "consent":
        return f"no consent for purpose {plan.purpose!r} (legal basis: consent)"
    return f"objected to purpose {plan.purpose!r} (legal basis: {plan.legal_basis})"


def _product_rows(cursor: Any, plan: AccessPlan, keys: list[Any] | None) -> int:
    """Rows of the live product (of these keys), before the guard."""
    relation = f'{PRODUCTS}."{plan.product}"'
    if keys is None:
        row = cursor.execute(f"SELECT count(*) FROM {relation}").fetchall()[0]
    else:
        row = cursor.execute(
            f'SELECT count(*) FROM {relation} WHERE CAST("{plan.key_column}" AS VARCHAR) '
            f"IN (SELECT k FROM {CHANGED_RELATION})"
        ).fetchall()[0]
    return int(row[0])


def _run(
    platform: Platform, cfg: SyncConfig, report: SyncReport, *, full: bool, keys: list[Any] | None
) -> None:
    with platform.warehouse.cursor() as cursor:
        _run_on(platform, cursor, cfg, report, full=full, keys=keys)


def _run_on(
    platform: Platform,
    cursor: Any,
    cfg: SyncConfig,
    report: SyncReport,
    *,
    full: bool,
    keys: list[Any] | None,
) -> None:
    name = cfg.name
    plan, mapping = plan_and_mapping(platform, cfg, cursor)
    report.notes += mapping.omitted
    write_mode = "upsert" if cfg.mode == "mirror" else cfg.mode
    # a product's key is unique: when it is also the subject, each row is one subject
    sent_subjects = SubjectTally(
        one_per_row=plan.subject_column is not None and plan.subject_column == plan.key_column,
        sample=SUBJECT_SAMPLE,
    )
    opening = Opening(
        cfg.destination,
        platform.project.root,
        name,
        cfg.mode,
        write_mode,
        mapping.columns,
        mapping.key,
        inflight=bool(platform.meta.sync_inflight(name)),
    )
    step: DiffPass | None = None
    diff_error: Exception | None = None
    early: Prefetch | None = None
    if opening.ahead:  # the diff runs while the destination opens (`opening`)
        try:
            step = diff_pass(platform, cursor, cfg, plan, mapping, report, full=full, keys=keys)
            # and DuckDB starts on the rows to send (only reading; nothing leaves before
            # the removals and the breakers below)
            rows = _batch_rows(platform, cfg, opening.capabilities)
            early = Prefetch(step.diff.changed(rows))
        except Exception as err:  # raised below, inside the run's audit scope
            diff_error = err
        except BaseException:
            opening.abandon()
            raise
    try:
        destination = opening.destination()
    except BaseException:
        if early is not None:
            early.close()
        raise
    sender: Sender | None = None
    try:
        opening.open()
        platform.meta.set_sync_target(name, destination.describe())
        if diff_error is not None:
            raise diff_error
        _reconcile_inflight(platform, destination, mapping, name, report)
        caps = destination.capabilities
        rates = [r for r in (cfg.rate_limit, caps.rate_limit) if r]
        sender = Sender(destination, cfg.retry, min(rates) if rates else None)
        batch_rows = _batch_rows(platform, cfg, caps)
        if step is None:
            step = diff_pass(platform, cursor, cfg, plan, mapping, report, full=full, keys=keys)
        # lost consent goes first and is never held back by a breaker
        _remove(platform, sender, plan, mapping, name, step.lost, report, batch_rows, consent=True)
        if keys is None and _blocked(platform, cfg, step, report):
            return
        _write_batches(
            platform,
            sender,
            step.diff,
            write_mode,
            mapping,
            batch_rows,
            name,
            report,
            sent_subjects,
            early,
        )
        if cfg.mode == "mirror":
            _remove(platform, sender, plan, mapping, name, step.gone, report, batch_rows)
        else:
            report.skip(
                f"left the product; mode {cfg.mode} does not delete (mirror does)",
                len(step.gone),
            )
        platform.meta.compact_sync_state(name, COMPACT_AFTER)
    except TidegateError as err:
        report.run_error = err.message
        raise
    finally:
        if early is not None:
            early.close()  # when the run stopped before sending (it is closed once sent)
        if sender is not None:
            for reason, count in sender.retry_reasons.items():
                report.retries[reason] = report.retries.get(reason, 0) + count
        destination.close()
        _audit_run(platform, plan, cfg, destination, report, sent_subjects)


def _blocked(platform: Platform, cfg: SyncConfig, step: DiffPass, report: SyncReport) -> bool:
    """Whether a circuit breaker stops this run before it writes (see `breakers`)."""
    from tidegate.egress.sync import breakers

    policy = breakers.policy_of(platform, cfg)
    if not policy.armed:
        return False
    to_hold = step.diff.candidates  # the rows the destination holds after this run
    reasons = breakers.tripped(
        policy, held=step.held, to_hold=to_hold, to_delete=len(step.gone), mode=cfg.mode
    )
    if policy.on_quality_issue == "block":
        reasons += breakers.quality_issues(platform, cfg.product)
    if not reasons:
        return False
    if breakers.pending_approval(platform, cfg.name) is not None:
        report.approved = True
        report.notes.append("ran past its circuit breakers on an approval: " + "; ".join(reasons))
        return False
    report.blocked = reasons
    breakers.alert(platform, cfg, reasons)
    log.warning("sync %s blocked by its circuit breakers: %s", cfg.name, "; ".join(reasons))
    return True


def _batch_rows(platform: Platform, cfg: SyncConfig, caps: Capabilities) -> int:
    """The sync's `batch_rows`; else the project default when it sets one; else the
    destination's preferred batch (bulk destinations load faster in big batches)."""
    defaults = platform.project.config.defaults
    if cfg.batch_rows:
        wanted = cfg.batch_rows
    elif "sync_batch_rows" in defaults.model_fields_set:
        wanted = defaults.sync_batch_rows
    else:
        wanted = caps.preferred_batch_rows or defaults.sync_batch_rows
    return max(1, min(wanted, caps.max_batch_rows))


def _guarded_rows(cursor: Any, plan: AccessPlan, mapping: Mapping, keys: list[Any] | None) -> Diff:
    """The guarded, mapped rows of the product, as a temporary table on `cursor`."""
    import pyarrow as pa

    relations: dict[str, Any] = {SUBJECTS_RELATION: plan.subjects_table()}
    if keys is not None:
        relations[CHANGED_RELATION] = pa.table({"k": pa.array([str(k) for k in keys], pa.string())})
    tree = rows_query(plan, mapping, f'{PRODUCTS}."{plan.product}"', partial=keys is not None)
    return Diff(cursor, sql_text(tree), relations, unique_keys=key_is_unique(plan, mapping))


def _reconcile_inflight(
    platform: Platform, destination: Destination, mapping: Mapping, name: str, report: SyncReport
) -> None:
    """After a crash mid-batch: record the rows of the interrupted batch that landed."""
    marker = platform.meta.sync_inflight(name)
    if not marker:
        return
    if destination.capabilities.supports_lookup:
        present = destination.existing_keys([typed_key(r.key, mapping) for r in marker])
        landed = [r for r in marker if r.key in present]
        platform.meta.checkpoint_sync(name, upserted=landed, clear_inflight=True)
        log.info("sync %s: reconciled an interrupted batch: %s", name, len(landed))
        report.notes.append(
            f"resumed after an interruption: {len(landed)} of {len(marker)} rows of the "
            "interrupted batch had landed"
        )
    else:
        platform.meta.checkpoint_sync(name, clear_inflight=True)
        report.notes.append(
            f"resumed after an interruption: the {len(marker)} rows of the interrupted batch "
            "are sent again (this destination cannot say what landed; event ids and "
            "idempotency keys let it drop duplicates)"
        )


def _write_batches(
    platform: Platform,
    sender: Sender,
    diff: Diff,
    mode: str,
    mapping: Mapping,
    batch_rows: int,
    name: str,
    report: SyncReport,
    sent_subjects: SubjectTally,
    started: Prefetch | None = None,
) -> None:
    """Send the added and changed rows batch by batch, each one checkpointed; the rows
    stay Arrow from DuckDB to the destination and into the sync state. The next batch
    is read from DuckDB while the current one is sent, and the one before is checkpointed
    meanwhile where a resend is harmless (`overlap`). `started`: the reading of
    `diff.changed(batch_rows)` already under way."""
    fields = list(mapping.fields)
    with (
        Checkpoints(
            overlap=mode != "insert", several=diff.candidates > diff.first_batch_rows(batch_rows)
        ) as checkpoints,
        started or Prefetch(diff.changed(batch_rows)) as batches,
    ):
        for table in batches:
            _write_batch(
                platform,
                sender,
                diff,
                table,
                mode,
                fields,
                name,
                report,
                sent_subjects,
                checkpoints,
            )


def _write_batch(
    platform: Platform,
    sender: Sender,
    diff: Diff,
    table: Any,
    mode: str,
    fields: list[str],
    name: str,
    report: SyncReport,
    sent_subjects: SubjectTally,
    checkpoints: Checkpoints,
) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    meta = platform.meta
    if mode == "insert":  # insert never touches a row it already sent
        seen = table.column(PREV_MARK)
        report.skip("changed, but mode insert does not update rows", pc.sum(seen).as_py() or 0)
        table = table.filter(pc.invert(seen))
        if not table.num_rows:
            return
        meta.set_sync_inflight(name, state_table(table))
        log.info("sync %s: batch in flight, %s rows", name, table.num_rows)
    outcome = sender.write(table.select(fields), mode)
    refused: list[SyncRowError] = []
    landed = table
    if outcome.refused or outcome.missing:
        landed = table.take(pa.array(sorted(outcome.landed), pa.int64()))
    if outcome.refused:
        now = time.time()
        order = sorted(outcome.refused)
        failed = table.take(pa.array(order, pa.int64()))
        rows = failed.select(fields).to_pylist()
        refused = [
            SyncRowError(key, subject, row_hash, scrub(outcome.refused[i], row), now, now, 1)
            for i, key, subject, row_hash, row in zip(
                order,
                failed.column(KEY).to_pylist(),
                failed.column(SUBJECT).to_pylist(),
                failed.column(HASH).to_pylist(),
                rows,
                strict=True,
            )
        ]
    report.skip(NOT_FOUND, len(outcome.missing))
    changed = int(pc.sum(landed.column(PREV_MARK)).as_py() or 0)
    checkpoints.submit(
        meta.checkpoint_sync,
        name,
        upserted=state_table(landed),
        errors=refused,
        clear_inflight=mode == "insert",
        # rows the diff found added are not in the state: no de-duplication on read
        fresh=not diff.resend_all and changed == 0,
    )
    # the destination's word where it gave one; else what this sync wrote before
    updated = len(outcome.existed - outcome.missing) if outcome.confirmed else changed
    report.changed += updated
    report.added += landed.num_rows - updated
    report.failed += len(refused)
    for error in refused[: max(0, ERROR_SAMPLE - len(report.errors))]:
        report.errors.append(f"{error.key}: {error.message}")
    sent_subjects.add(landed.column(SUBJECT))
    log.info("sync %s: batch sent, %s landed, %s refused", name, landed.num_rows, len(refused))


def _remove(
    platform: Platform,
    sender: Sender,
    plan: AccessPlan,
    mapping: Mapping,
    name: str,
    rows: list[SyncedRow],
    report: SyncReport,
    batch_rows: int,
    *,
    consent: bool = False,
) -> None:
    """Delete rows tidegate wrote (or suppress them where the destination cannot delete)."""
    can_delete = sender.destination.capabilities.supports_delete
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start : start + batch_rows]
        done = len(chunk)
        if can_delete:
            # the destination's count: a row someone else deleted first is not counted
            done = min(done, sender.delete([typed_key(r.key, mapping) for r in chunk]))
            platform.meta.checkpoint_sync(name, deleted=[r.key for r in chunk])
        else:
            platform.meta.checkpoint_sync(name, suppressed=chunk)
        report.removed += done
        report.skip(ALREADY_GONE, len(chunk) - done)
        if not consent:
            continue
        report.revoked += done
        subjects = sorted({r.subject for r in chunk if r.subject is not None})
        platform.audit.append(
            AuditRecord(
                action="sync_removal",
                principal=f"sync:{name}",
                purpose=plan.purpose,
                product=plan.product,
                rows=len(chunk),
                subjects=tuple(subjects[:SUBJECT_SAMPLE]),
                subject_count=len(subjects),
                subject_type=plan.subject_type,
                carried=tuple(subjects),
                outcome="removed" if can_delete else "suppressed",
                detail={
                    "sync": name,
                    "destination": sender.destination.describe(),
                    "reason": f"no legal basis for {plan.purpose!r} any more",
                    "keys": [r.key for r in chunk[:SUBJECT_SAMPLE]],
                },
            )
        )


def _audit_run(
    platform: Platform,
    plan: AccessPlan,
    cfg: SyncConfig,
    destination: Destination,
    report: SyncReport,
    sent_subjects: SubjectTally,
) -> None:
    subject_count, subjects = sent_subjects.summary()
    platform.audit.append(
        AuditRecord(
            action="sync",
            principal=f"sync:{cfg.name}",
            purpose=plan.purpose,
            product=plan.product,
            columns=plan.treatments(),
            rows=report.added + report.changed,
            subjects=tuple(subjects),
            subject_count=subject_count,
            subject_type=plan.subject_type,
            carried=sent_subjects.everyone(),
            outcome="failed" if report.run_error else "blocked" if report.blocked else "allowed",
            detail={
                "sync": cfg.name,
                "destination": destination.describe(),
                "mode": cfg.mode,
                "run_id": report.run_id,
            }
            | report.counts(),
        )
    )
