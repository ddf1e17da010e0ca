"""Access requests (GDPR Art. 15): everything tidegate holds about one subject of one
type, from every system, as one package; incomplete answers say what could not be read.

Split from `subject_requests.py` (erasure), which this module shares its subject checks,
locations and reports with.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tidegate.audit.log import AuditRecord
from tidegate.audit.redact import Redactor
from tidegate.privacy.consent import consent_ledger_of
from tidegate.privacy.tombstones import tombstones_of
from tidegate.requests.subject_data import (
    Found,
    dead_letters_of,
    find_in_warehouse,
    letter_json,
    online_keys,
    plain,
)
from tidegate.requests.subject_requests import (
    ACCESS_ACTION,
    _check_subject,
    _locations,
    _open_sync_destination,
    _warehouse,
    readable_times,
)
from tidegate.requests.subject_types import keys_consent, of_type, resolve

if TYPE_CHECKING:
    from tidegate.platform import Platform


def access(
    platform: Platform,
    subject: str,
    principal: str,
    *,
    subject_type: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """Everything held about `subject` (of `subject_type`; found by the lookup column
    `by` when given), as JSON (GDPR Art. 15)."""
    subject = _check_subject(subject)
    with platform.writer_lock:  # in a runtime: between micro-batches, never inside one
        subject, kind = resolve(platform, subject, subject_type, by, _warehouse)
        return _access(platform, subject, kind, principal)


def _access(platform: Platform, subject: str, kind: str, principal: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "subject": subject,
        "subject_type": kind,
        "generated_at": time.time(),
    }
    tombstones = tombstones_of(platform)
    result["erased"] = tombstones.is_erased(subject, kind)
    warehouse, why = _warehouse(platform)
    found: Found | None = None
    if warehouse is None:
        result["warehouse"] = {"status": "unavailable", "error": why}
    else:
        with warehouse.cursor() as cur:
            _, found = find_in_warehouse(platform, cur, subject, kind)
        result["warehouse"] = {"status": "ok", "tables": found.rows}
    result["online_store"] = _online_rows(platform, subject, found, kind)
    result["destinations"] = _destination_rows(platform, subject, kind)
    identifiers = (found.identifiers if found else set()) | {subject}
    result["dead_letters"] = _dead_letters(platform, subject, identifiers, kind)
    result["consent"] = _consent(platform, subject, kind)
    redactor = Redactor([subject], "")
    platform.audit.flush()
    carried = set(platform.audit.subject_seqs(subject, kind))  # every sync, export, read
    result["audit"] = [
        {"seq": stored.seq, **AuditRecord.readable(stored.body).as_json()}
        for stored in platform.meta.audit_records()
        if stored.seq in carried
        or (
            redactor.mentions(stored.body)
            and _names(redactor, stored.body)
            and of_type(platform, stored.body, kind)
        )
    ]
    result = readable_times(result)
    counts = {
        "warehouse_rows": sum(len(r) for r in found.rows.values()) if found else None,
        "online_rows": sum(len(r) for r in result["online_store"].values()),
        "destinations": len(result["destinations"]),
        "dead_letters": len(result["dead_letters"]),
        "consent_entries": len(result["consent"]["history"]),
        "audit_records": len(result["audit"]),
    }
    platform.audit.append(
        AuditRecord(
            action=ACCESS_ACTION,
            principal=principal,
            subjects=(subject,),
            subject_type=kind,
            detail={"subject": subject, "subject_type": kind, "counts": counts},
        )
    )
    result["counts"] = counts
    result["missing"] = _missing(result)
    result["complete"] = not result["missing"]
    return plain(result)  # type: ignore[no-any-return]


def _missing(result: dict[str, Any]) -> list[str]:
    """What the access package could not read, each with why: the answer is incomplete."""
    missing = []
    if result["warehouse"]["status"] != "ok":
        missing.append(f"warehouse unavailable ({result['warehouse'].get('error', '')})")
    for name, entry in result["destinations"].items():
        status = str(entry.get("status", ""))
        if status.startswith("failed"):
            missing.append(f"destination of sync {name}: {status}")
    return missing


def _names(redactor: Redactor, body: str) -> bool:
    """Whether a body names the subject as a value or a whole word (not as a digit run
    inside another number)."""
    return redactor._pattern is not None and redactor._pattern.search(body) is not None


def _online_rows(
    platform: Platform, subject: str, found: Found | None, kind: str
) -> dict[str, Any]:
    import json

    rows: dict[str, Any] = {}
    for product, keys in online_keys(platform, subject, found, kind).items():
        if not keys:
            continue
        held = platform.online.read_many(product, sorted(keys))
        if held:
            rows[product] = [json.loads(v) for _, v in sorted(held.items())]
    return rows


def _destination_rows(platform: Platform, subject: str, kind: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, keys in sorted(_locations(platform, subject, kind).items()):
        entry: dict[str, Any] = {"keys": keys}
        if name not in platform.project.syncs:
            entry["status"] = "sync no longer configured: rows not read back"
            result[name] = entry
            continue
        destination = None
        try:
            destination, mapping = _open_sync_destination(platform, name)
            entry["destination"] = destination.describe()
            if destination.capabilities.supports_read:
                wanted = set(keys)
                entry["rows"] = [
                    plain(r) for r in destination.read_all() if str(r.get(mapping.key)) in wanted
                ]
                entry["status"] = "ok"
            else:
                entry["status"] = "destination cannot be read back; keys listed"
        except Exception as err:  # reported in the answer; the other systems still answer
            entry["status"] = f"failed: {type(err).__name__}: {err}"[:300]
        finally:
            if destination is not None:
                destination.close()
        result[name] = entry
    return result


def _dead_letters(
    platform: Platform, subject: str, identifiers: set[str], kind: str
) -> list[dict[str, Any]]:
    dead = platform.meta.dead_letters
    letters = dead_letters_of(dead, platform.project, subject, identifiers, kind)
    return [letter_json(letter) for letter in letters]


def _consent(platform: Platform, subject: str, kind: str) -> dict[str, Any]:
    from tidegate.privacy.consent_input import state_of

    if not keys_consent(platform, kind):
        return {"history": [], "allowed": {}, "note": f"no consent is recorded for {kind}s"}
    history = consent_ledger_of(platform).history(subject)
    return {"history": [h.__dict__ for h in history], "allowed": state_of(platform, subject)}
