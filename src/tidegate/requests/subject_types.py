"""Which person a subject request means: its subject type, and its id when it is named
by a lookup column; and which records, syncs and consent belong to that type.

Ids are unique only within a subject type (`project/subjects.py`), so each system a
request reaches is first narrowed to the type: warehouse tables, products and dead
letters by their source's or product's type (`subject_data.py`), syncs by their
product's, audit records by their product or the type they name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.audit.log import AuditRecord
from tidegate.errors import BadRequestError, NotFoundError
from tidegate.project.subjects import (
    consent_subject_type,
    default_subject_type,
    lookup_columns,
    request_type,
)
from tidegate.requests.subject_data import find_by_lookup

if TYPE_CHECKING:
    from tidegate.platform import Platform


def resolve(
    platform: Platform,
    subject: str,
    subject_type: str | None,
    by: str | None,
    warehouse_of: Callable[[Platform], tuple[Any, str]],
) -> tuple[str, str]:
    """(subject id, subject type) a request means. `by`: `subject` is the value of that
    lookup column (e.g. an email), found in the warehouse's tables of the type; it must
    name exactly one person."""
    kind = request_type(platform.project, subject_type)
    if by is None:
        return subject, kind
    allowed = lookup_columns(platform.project, kind)
    if by not in allowed:
        raise BadRequestError(
            f"{by!r} is not a lookup column of subject type {kind!r} (lookup: "
            f"{', '.join(allowed) or 'none declared; see subject_types in policies'})"
        )
    warehouse, why = warehouse_of(platform)
    if warehouse is None:
        from tidegate.errors import ServiceUnavailableError

        raise ServiceUnavailableError(f"cannot look the subject up by {by}: {why}")
    with warehouse.cursor() as cur:
        ids = find_by_lookup(platform, cur, kind, by, subject)
    if not ids:
        raise NotFoundError(f"no subject of type {kind!r} has {by} = {subject!r}")
    if len(ids) > 1:
        raise BadRequestError(
            f"{len(ids)} subjects of type {kind!r} have {by} = {subject!r}: name one by id"
            f" ({', '.join(ids[:10])})"
        )
    return ids[0], kind


def of_type(platform: Platform, body: str, kind: str) -> bool:
    """Whether an audit record naming the id may be about a subject of `kind`: records
    of a product (syncs, reads, exports) are about its subject type; records of requests
    name their type (records without one are of the default type)."""
    record = AuditRecord.readable(body)
    if record.subject_type is not None:
        return record.subject_type == kind
    product = platform.project.products.get(record.product or "")
    if product is not None and product.subject_type is not None:
        return product.subject_type == kind
    named = record.detail.get("subject_type") if isinstance(record.detail, dict) else None
    if named is not None:
        return bool(named == kind)
    default = default_subject_type(platform.project)
    return default is None or default == kind


def keys_consent(platform: Platform, kind: str) -> bool:
    """Whether the consent ledger's subject ids are of `kind`: the ledger is keyed by id
    alone and holds the default type's choices (`consent_subject_type`)."""
    return consent_subject_type(platform.project) == kind


def may_name(platform: Platform, kind: str) -> bool:
    """Whether untyped entries (the consent ledger, records naming no type) may be about
    a subject of `kind`: yes for the default type, and, with no default type, for every
    type (an erasure then clears them rather than leave an id that may be the person's)."""
    return consent_subject_type(platform.project) in (None, kind)


def syncs_of_type(platform: Platform, kind: str) -> list[str]:
    """The configured syncs whose product's subjects are of `kind`."""
    products = platform.project.products
    return sorted(
        name
        for name, sync in platform.project.syncs.items()
        if sync.config.product in products and products[sync.config.product].subject_type == kind
    )
