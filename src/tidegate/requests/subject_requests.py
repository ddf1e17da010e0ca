"""Data subject requests: access (GDPR Art. 15) and erasure (Art. 17, 19).

Every request is about one person of one subject type (`project/subjects.py`): customer
3 and employee 3 are different people, so a request names the type (`subject_type`;
optional when the project has one type or a default one) and reaches only the tables,
products, syncs and dead letters whose subject column is of that type. A request may
name the person by a declared lookup column instead of the id (`by="email"`).

`access(platform, subject, principal)` returns, as JSON, everything tidegate holds about
the subject: warehouse rows (raw tables and every product version), the online store,
each sync destination the sync state says received them (read back by key), dead
letters, the consent ledger and state, and the audit records naming them. The request
itself is audited (action `subject_access`).

`erase(platform, subject, principal)` removes the subject everywhere and returns a
completion report, one entry per system, with what was removed and when. In order:

1. **tombstone** first: `HMAC-SHA256(key, id)` (`tombstones.py`), so from this moment
   the stream worker drops the subject's events and source loads purge them;
2. **warehouse**: the subject's rows in `raw.<source>`, in every `builds.<product>__vN`
   (the `products.*` views follow) and in the failing-row tables of quality checks, and
   keys waiting to be published; then the DuckDB file is scrubbed (`Warehouse.scrub`:
   tables rewritten, free blocks overwritten), since a DuckDB delete leaves the bytes;
3. **online store**: the subject's product keys, in every version held;
4. **destinations**: every key the sync state recorded for the subject is deleted through
   the destination's `delete`, under the sync's lock; the state rows go with it. A
   destination that cannot delete is reported `manual` with its description;
5. **dead letters** mentioning the subject (`subject_data.letter_mentions`), or, whose
   subject field did not parse, holding one of their identifying values (email, phone);
   **event log**: the subject's records in the stream sources' topics, the consent topic
   and the change streams, deleted where the log can (the embedded one), otherwise
   reported `retained` with the topic's retention settings (Kafka);
6. **metadata**: the sync state's remaining rows of the subject (row errors, in-flight,
   suppression lists), and the run history's texts naming the subject (redacted);
7. **consent ledger**: see below;
8. **audit log**: records naming the subject are redacted (`audit/redact.py`) after the
   completion report, a chained `erasure` record that authorises each redaction by its
   hash, is written; the chain still verifies.

What is kept, and why (Art. 17(3)(b) and (e): compliance with a legal obligation, and
the defence of legal claims; Art. 5(2) and 7(1): the controller must be able to show
that past processing had a legal basis and that the erasure was done):

* the tombstone: needed so that the erasure holds (Art. 17 and 19 would be defeated by
  a re-import); it cannot be reversed without the key;
* the consent ledger entries, **pseudonymised**: purpose, action, when, source, and
  `sha256:` of the evidence in place of the evidence; the subject id is replaced by the
  pseudonym `erased:<hash prefix>`. This shows which purposes had consent and when it
  was withdrawn, without naming the person; the original evidence (a TCF string, a form
  submission) can be matched against the digest if it is ever produced in a dispute;
* the audit records, with the subject's identifiers replaced by the same pseudonym;
* the completion report (itself the `erasure` audit record), naming the subject only by
  tombstone hash.

Not erased by tidegate (reported as such): operational sources it reads (files, tables,
topics it does not own; their owners erase there, and tidegate filters the subject out
of every load), records already in a Kafka event log (kept until the topic's retention;
every reader drops them), and the earlier records of a Kafka destination's compacted
topic (a tombstone is written; the log cleaner removes the record later, within the
topic's `segment.ms`, `min.compaction.lag.ms` and `delete.retention.ms`, all reported).

Both functions need the DuckDB warehouse, which one process at a time may open. While
`tidegate run` (or `worker`) holds it, the CLI hands the request to that runtime, which
answers it with the warehouse it holds (`runtime/control.py`). When another process
holds it past the lock timeout, access reports the warehouse `unavailable` and the
package incomplete (`complete: false`, `missing`; the CLI exits 1), and erasure reports
it `pending` (exit 1): the tombstone is already written, so every later source load,
rebuild and sync purges the subject (`tombstones.purge_all_erased`), and running the
erasure again (it is idempotent) completes the rest.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.audit.log import AuditRecord
from tidegate.audit.redact import (
    ERASURE_ACTION,
    Redactor,
    SubjectRedaction,
    body_digest,
    redactions_for,
)
from tidegate.errors import BadRequestError, TidegateError
from tidegate.privacy.guard import guard_of
from tidegate.privacy.tombstones import ErasureStore, erasure_store, tombstones_of
from tidegate.requests.subject_data import (
    Found,
    dead_letters_of,
    find_in_warehouse,
    online_keys,
    personal_values,
    quote,
    topic_matches,
)
from tidegate.requests.subject_types import (
    may_name,
    of_type,
    resolve,
    syncs_of_type,
)
from tidegate.timestamps import format_timestamp

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)
ACCESS_ACTION = "subject_access"


@dataclass
class SystemResult:
    """One line of the completion report."""

    system: str  # tombstone | warehouse | online_store | destination | dead_letters | ...
    location: str
    status: str  # removed | none | pending | failed | manual | kept | retained
    removed: int = 0
    at: float = field(default_factory=time.time)
    note: str = ""


@dataclass
class ErasureReport:
    request_id: str
    subject_hash: str
    principal: str
    started_at: float
    finished_at: float = 0.0
    systems: list[SystemResult] = field(default_factory=list)
    audit_seq: int | None = None
    subject_type: str | None = None

    @property
    def complete(self) -> bool:
        return all(s.status not in {"pending", "failed"} for s in self.systems)

    def as_json(self) -> dict[str, Any]:
        """The report as the API and `--json` give it (times in ISO 8601, UTC)."""
        report: dict[str, Any] = readable_times(
            {
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "systems": [asdict(s) for s in self.systems],
            }
        )
        return {
            "request_id": self.request_id,
            "subject_type": self.subject_type,
            "subject_hash": self.subject_hash,
            "principal": self.principal,
            "started_at": report["started_at"],
            "finished_at": report["finished_at"],
            "complete": self.complete,
            "audit_seq": self.audit_seq,
            "systems": report["systems"],
        }


def _check_subject(subject: str) -> str:
    subject = str(subject).strip()
    if not subject or len(subject) > 256:
        raise BadRequestError("a subject id is 1 to 256 characters")
    if any(ord(c) < 32 for c in subject):
        raise BadRequestError("a subject id holds no control characters")
    return subject


def _warehouse(platform: Platform) -> tuple[Any, str]:
    """The warehouse, or (None, why not) when it cannot be opened: another process that is
    not a runtime held the DuckDB file past the lock timeout (a runtime answers the
    request itself, `runtime/control.py`)."""
    from tidegate.errors import ServiceUnavailableError

    try:
        return platform.warehouse, ""
    except ServiceUnavailableError as err:
        return None, err.message[:500]
    except Exception as err:  # duckdb: a damaged or unreadable file
        return None, f"{type(err).__name__}: {err}"[:500]


def readable_times(value: Any) -> Any:
    """The access package with every recorded time (`at`, `*_at`: epoch seconds) as ISO 8601
    in UTC (`timestamps.py`): it is read by the person it is about, not by a program."""
    if isinstance(value, dict):
        return {
            k: format_timestamp(v)
            if (k == "at" or k.endswith("_at"))
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            else readable_times(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [readable_times(v) for v in value]
    return value


def _locations(platform: Platform, subject: str, kind: str) -> dict[str, list[str]]:
    """Sync -> keys the sync state recorded for the subject, in syncs of `kind` (and in
    syncs no longer configured, whose type cannot be told: listed, never deleted blind)."""
    mine = set(syncs_of_type(platform, kind))
    by_sync: dict[str, list[str]] = {}
    for location in platform.meta.subject_locations(subject):
        if location.sync in mine or location.sync not in platform.project.syncs:
            by_sync.setdefault(location.sync, []).append(location.key)
    return by_sync


def _open_sync_destination(platform: Platform, name: str) -> tuple[Any, Any]:
    from tidegate.egress.destinations.base import open_destination
    from tidegate.egress.sync.mapping import resolve
    from tidegate.privacy.guard import AccessContext

    cfg = platform.project.syncs[name].config
    context = AccessContext(principal=f"sync:{name}", roles=(), purpose=cfg.purpose)
    mapping = resolve(cfg, guard_of(platform).plan(context, cfg.product, check_roles=False))
    destination = open_destination(cfg.destination, platform.project.root, name)
    destination.open(mapping.columns, mapping.key)
    return destination, mapping


# ---------------------------------------------------------------- erasure


def erase(
    platform: Platform,
    subject: str,
    principal: str,
    reason: str = "",
    *,
    subject_type: str | None = None,
    by: str | None = None,
) -> ErasureReport:
    """Erase `subject` (of `subject_type`; found by the lookup column `by` when given)
    everywhere tidegate put it; see the module docstring."""
    subject = _check_subject(subject)
    with platform.writer_lock:  # in a runtime: between micro-batches, never inside one
        subject, kind = resolve(platform, subject, subject_type, by, _warehouse)
        return _erase(platform, subject, kind, principal, reason)


def _erase(
    platform: Platform, subject: str, kind: str, principal: str, reason: str
) -> ErasureReport:
    store = erasure_store(platform.meta)
    tombstones = tombstones_of(platform)
    digest = tombstones.hash(subject, kind)
    token = tombstones.pseudonym(subject, kind)
    report = ErasureReport(uuid.uuid4().hex[:16], digest, principal, time.time())
    report.subject_type = kind
    systems = report.systems

    added = store.add_tombstone(digest, report.started_at, report.request_id)
    tombstones.refresh()
    systems.append(
        SystemResult(
            "tombstone",
            "metadata: erased_subjects",
            "kept",
            note="new" if added else "already erased before; this request completes it",
        )
    )
    found = _erase_warehouse(platform, subject, kind, systems)
    _erase_online(platform, subject, kind, found, systems)
    _erase_destinations(platform, subject, kind, systems)
    identifiers = (found.identifiers if found else set()) | {subject}
    _erase_dead_letters(platform, subject, identifiers, kind, systems)
    _erase_event_log(platform, subject, found, identifiers, kind, systems)
    rows = store.erase_subject_rows(
        subject,
        token,
        _evidence_digest,
        personal_values(identifiers),
        syncs=syncs_of_type(platform, kind),
        consent=may_name(platform, kind),
    )
    state = sum(n for t, n in rows.items() if t != "consent_ledger")
    systems.append(
        SystemResult(
            "sync_state",
            "metadata: sync rows, row errors, in-flight batches, suppression lists",
            "removed" if state else "none",
            state,
        )
    )
    systems.append(
        SystemResult(
            "consent_ledger",
            "metadata: consent_ledger",
            "kept" if rows.get("consent_ledger") else "none",
            rows.get("consent_ledger", 0),
            note="entries pseudonymised: purpose, action and times kept, subject id replaced "
            "by its pseudonym, evidence by its SHA-256 (Art. 17(3)(b),(e); Art. 7(1))",
        )
    )
    redactor = Redactor(identifiers, token)
    _redact_runs(store, redactor, systems)
    _redact_observations(platform, store, subject, kind, systems)
    _events_and_sources(platform, systems)
    redaction = SubjectRedaction(
        subject,
        token,
        {p: frozenset(k) for p, k in online_keys(platform, subject, found, kind).items() if k},
    )
    _audit_and_redact(platform, store, redactor, redaction, report, reason)
    return report


def _evidence_digest(evidence: str) -> str:
    if not evidence:
        return ""
    return "sha256:" + hashlib.sha256(evidence.encode("utf-8")).hexdigest()


def _erase_warehouse(
    platform: Platform, subject: str, kind: str, systems: list[SystemResult]
) -> Found | None:
    from tidegate.store.warehouse import RAW

    warehouse, why = _warehouse(platform)
    if warehouse is None:
        systems.append(
            SystemResult(
                "warehouse",
                "duckdb",
                "pending",
                note="the DuckDB file is held by another process; the subject is purged at "
                f"the next source load (tombstone) and by running the erasure again ({why})",
            )
        )
        return None
    touched: list[str] = []
    with warehouse.cursor() as cur:
        tables, found = find_in_warehouse(platform, cur, subject, kind)
        cur.execute("BEGIN")
        try:
            for relation in tables:
                removed = len(found.rows.get(relation.qualified, []))
                if removed:
                    cur.execute(
                        f"DELETE FROM {relation.qualified}"
                        f" WHERE CAST({quote(relation.subject_column)} AS VARCHAR) = ?",
                        [subject],
                    )
                systems.append(
                    SystemResult(
                        "quality_rows" if relation.kind == "quality" else "warehouse",
                        f"duckdb: {relation.qualified}"
                        + (" (raw source)" if relation.schema == RAW else ""),
                        "removed" if removed else "none",
                        removed,
                    )
                )
                if removed:
                    touched.append(relation.qualified)
            pending = _pending_publish(cur, found)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    if pending:
        touched.append("tidegate_state.pending_publish")
        systems.append(
            SystemResult("warehouse", "duckdb: tidegate_state.pending_publish", "removed", pending)
        )
    where = f"duckdb file {warehouse.path.name}"
    try:
        blocks = warehouse.scrub(touched)
    except Exception as err:  # reported (failed): running the erasure again scrubs again
        log.warning("erasure: scrubbing the DuckDB file failed: %s", err)
        note = f"rows deleted, but the file was not scrubbed: {type(err).__name__}: {err}"
        systems.append(SystemResult("warehouse_file", where, "failed", note=note[:300]))
        return found
    systems.append(
        SystemResult(
            "warehouse_file",
            where,
            "removed",
            blocks,
            note="tables that lost rows rewritten, free blocks overwritten, write-ahead log "
            "checkpointed: deleted values are gone from the file's bytes",
        )
    )
    return found


def _pending_publish(cur: Any, found: Found) -> int:
    present = cur.execute(
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = 'tidegate_state' AND table_name = 'pending_publish'"
    ).fetchone()[0]
    if not present:
        return 0
    removed = 0
    for product, keys in found.keys.items():
        for key in keys:
            hit = cur.execute(
                "SELECT count(*) FROM tidegate_state.pending_publish WHERE product = ? AND key = ?",
                [product, key],
            ).fetchone()[0]
            if hit:
                cur.execute(
                    "DELETE FROM tidegate_state.pending_publish WHERE product = ? AND key = ?",
                    [product, key],
                )
                removed += int(hit)
    return removed


def _erase_online(
    platform: Platform,
    subject: str,
    subject_type: str,
    found: Found | None,
    systems: list[SystemResult],
) -> None:
    kind = platform.project.config.backends.online.type
    for product, keys in online_keys(platform, subject, found, subject_type).items():
        if not keys:
            continue
        held = platform.online.read_many(product, sorted(keys))
        platform.online.delete(product, sorted(keys))
        systems.append(
            SystemResult(
                "online_store",
                f"{kind}: {product}",
                "removed" if held else "none",
                len(held),
            )
        )
    if found is None:
        systems.append(
            SystemResult(
                "online_store",
                kind,
                "pending",
                note="keys of products not keyed by the subject need the warehouse",
            )
        )


def _erase_destinations(
    platform: Platform, subject: str, kind: str, systems: list[SystemResult]
) -> None:
    from tidegate.egress.sync import sync_lock
    from tidegate.egress.sync.mapping import typed_key

    for name, keys in sorted(_locations(platform, subject, kind).items()):
        if name not in platform.project.syncs:
            systems.append(
                SystemResult(
                    "destination",
                    f"sync {name}",
                    "manual",
                    note=f"{len(keys)} key(s) written by a sync no longer in the project: "
                    "erase them in its destination by hand",
                )
            )
            continue
        destination = None
        where = f"sync {name}"
        try:
            with sync_lock(platform, name):
                destination, mapping = _open_sync_destination(platform, name)
                where = f"sync {name} -> {destination.describe()}"
                if not destination.capabilities.supports_delete:
                    systems.append(
                        SystemResult(
                            "destination",
                            where,
                            "manual",
                            note=f"{len(keys)} key(s): this destination cannot delete",
                        )
                    )
                    continue
                destination.delete([typed_key(k, mapping) for k in keys])
                with erasure_store(platform.meta).erasing():
                    platform.meta.checkpoint_sync(name, deleted=keys)
                    # deletions are kept as "gone" entries until the state is compacted
                    compact = getattr(platform.meta, "compact_sync_state", None)
                    if compact is not None:
                        compact(name, 0)
            systems.append(SystemResult("destination", where, "removed", len(keys)))
            if destination.capabilities.delete_keeps_history:
                systems.append(_history_kept(destination, where, len(keys)))
        except Exception as err:  # reported (status failed); running the erasure again retries
            log.warning("erasure: destination of sync %s failed: %s", name, err)
            systems.append(
                SystemResult(
                    "destination", where, "failed", note=f"{type(err).__name__}: {err}"[:300]
                )
            )
        finally:
            if destination is not None:
                destination.close()


def _history_kept(destination: Any, where: str, keys: int) -> SystemResult:
    """What a destination whose deletes are tombstones still holds, and until when."""
    try:
        settings = destination.retention()
    except Exception as err:  # the report says it could not tell, never guesses
        settings = {"unknown": f"{type(err).__name__}: {err}"[:200]}
    held = ", ".join(f"{k}={v}" for k, v in settings.items()) or "settings unknown"
    return SystemResult(
        "destination_history",
        where,
        "retained",
        keys,
        note=f"a tombstone was written for each of the {keys} key(s), so no consumer that "
        "reads the topic's latest state sees the subject; the earlier records stay in the "
        "topic until its log cleaner compacts them: not before their segment is closed "
        "(segment.ms / segment.bytes) and they are min.compaction.lag.ms old, the "
        f"tombstones then kept delete.retention.ms ({held})",
    )


def _erase_dead_letters(
    platform: Platform,
    subject: str,
    identifiers: set[str],
    kind: str,
    systems: list[SystemResult],
) -> None:
    dead = platform.meta.dead_letters
    letters = dead_letters_of(dead, platform.project, subject, identifiers, kind)
    removed = dead.delete([letter.id for letter in letters])
    systems.append(
        SystemResult(
            "dead_letters", "metadata: dead_letters", "removed" if removed else "none", removed
        )
    )


def _erase_event_log(
    platform: Platform,
    subject: str,
    found: Found | None,
    identifiers: set[str],
    subject_type: str,
    systems: list[SystemResult],
) -> None:
    """The subject's records in every topic that can hold them (`subject_type`'s topics
    only): removed where the log can erase single records (the embedded log), otherwise
    reported as retained with the topic's own retention settings (Kafka: a topic is
    append-only). Either way the worker and every replay drop the subject's records if
    they are read again (tombstone)."""
    log_ = platform.event_log
    kind = platform.project.config.backends.log.type
    matches = topic_matches(
        platform.project, subject, found, identifiers, subject_type, log_.namespace
    )
    for match in matches:
        try:
            if not log_.has_topic(match.topic) or not any(log_.end_offsets(match.topic).values()):
                # never written (Kafka creates a topic on first write)
                systems.append(SystemResult("event_log", f"{kind}: topic {match.topic}", "none"))
                continue
            if log_.capabilities.erases_records:
                removed = log_.erase_records(match.topic, match)
                systems.append(
                    SystemResult(
                        "event_log",
                        f"{kind}: topic {match.topic}",
                        "removed" if removed else "none",
                        removed,
                    )
                )
                continue
            settings = log_.retention(match.topic)
            held = ", ".join(f"{k}={v}" for k, v in settings.items()) or "unknown"
            systems.append(
                SystemResult(
                    "event_log",
                    f"{kind}: topic {match.topic}",
                    "retained",
                    note="a Kafka topic is append-only: records already logged stay until "
                    f"the topic's retention deletes their segment ({held}); the worker "
                    "and every replay drop them (tombstone), so they reach no store",
                )
            )
        except Exception as err:  # reported; running the erasure again retries
            log.warning("erasure: event log topic %s failed: %s", match.topic, err)
            systems.append(
                SystemResult(
                    "event_log",
                    f"{kind}: topic {match.topic}",
                    "failed",
                    note=f"{type(err).__name__}: {err}"[:300],
                )
            )


def _redact_runs(store: ErasureStore, redactor: Redactor, systems: list[SystemResult]) -> None:
    changed: dict[int, tuple[str, str]] = {}
    for run_id, stats, error in store.runs_text():
        if redactor.mentions(stats) or redactor.mentions(error):
            new = (redactor.json_text(stats), redactor.text(error))
            if new != (stats, error):
                changed[run_id] = new
    store.redact_runs(changed)
    systems.append(
        SystemResult(
            "run_history",
            "metadata: runs",
            "removed" if changed else "none",
            len(changed),
            note="identifiers in run stats and errors replaced by the pseudonym" if changed else "",
        )
    )


def _redact_observations(
    platform: Platform, store: ErasureStore, subject: str, kind: str, systems: list[SystemResult]
) -> None:
    """Column statistics (min, max) of subject and id columns equal to the subject's id."""
    try:
        value = float(subject)
    except ValueError:
        return  # observations hold numbers only
    columns = [
        (name, column)
        for name, product in platform.project.products.items()
        for column, spec in product.columns.items()
        if product.subject_type == kind
        and (
            column == product.subject_column
            or (spec.classification or "").startswith("user.unique_id")
        )
    ]
    changed = store.redact_observations(columns, value)
    systems.append(
        SystemResult(
            "observations",
            "metadata: obs_points, obs_quality",
            "removed" if changed else "none",
            changed,
            note="statistics equal to the subject's id nulled" if changed else "",
        )
    )


def _events_and_sources(platform: Platform, systems: list[SystemResult]) -> None:
    for name, source in sorted(platform.project.sources.items()):
        config = source.config
        if not getattr(config, "subject", None):
            continue
        # a CDC table is both: an upstream table, and a topic (`_erase_event_log`)
        if config.type != "stream":
            systems.append(
                SystemResult(
                    "upstream_source",
                    f"source {name} ({config.type})",
                    "retained",
                    note="an operational source tidegate reads but does not own: erase "
                    "there; every load purges the subject meanwhile (tombstone)",
                )
            )


def _redact_carried(platform: Platform, redaction: SubjectRedaction, kind: str) -> int:
    """The subject's entries in `audit_subjects`: of its type, and untyped ones (records
    written before types, or naming none) where the type is the default one."""
    meta = platform.meta
    changed = meta.redact_audit_subjects(redaction.subject, kind, redaction.token)
    if may_name(platform, kind):  # the default type (or no default): untyped entries
        changed += meta.redact_audit_subjects(redaction.subject, "", redaction.token)
    return changed


def _audit_and_redact(
    platform: Platform,
    store: ErasureStore,
    redactor: Redactor,
    redaction: SubjectRedaction,
    report: ErasureReport,
    reason: str,
) -> None:
    platform.audit.flush()  # records queued by the serving path are redacted too
    kind = report.subject_type or ""
    records = (
        r
        for r in platform.meta.audit_records()
        if redaction.mentions(r.body) and of_type(platform, r.body, kind)
    )
    bodies = redactions_for(records, redaction)
    carried = _redact_carried(platform, redaction, kind)
    report.systems.append(
        SystemResult(
            "audit_log",
            "metadata: audit_subjects",
            "removed" if carried else "none",
            carried,
            note="the subject's id in the full subject lists of syncs, exports and reads "
            "replaced by the pseudonym"
            if carried
            else "",
        )
    )
    report.systems.append(
        SystemResult(
            "audit_log",
            "metadata: audit_log",
            "removed" if bodies else "none",
            len(bodies),
            note="identifiers replaced by the pseudonym in place; each redaction is "
            "authorised by this report's record, so `audit verify` still passes",
        )
    )
    report.finished_at = time.time()
    record = AuditRecord(
        action=ERASURE_ACTION,
        principal=report.principal,
        subject_count=1,
        outcome="complete" if report.complete else "partial",
        detail={
            "request_id": report.request_id,
            "subject_type": report.subject_type,
            "subject_hash": report.subject_hash,
            "reason": redactor.text(reason),
            "systems": [asdict(s) for s in report.systems],
            "redactions": [[seq, body_digest(body)] for seq, body in sorted(bodies.items())],
        },
    )
    (report.audit_seq,) = platform.audit.append(record)
    try:
        store.redact_audit(bodies)
    except Exception as err:
        raise TidegateError(
            f"erasure {report.request_id}: the audit records naming the subject could not be "
            f"redacted ({err}); run the erasure again"
        ) from None
