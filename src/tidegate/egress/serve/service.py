"""What each serving endpoint does, without HTTP: authenticate, limit, plan, read, treat, audit.

The hot path of one entity read, in order: the credential (cached while the metadata
database is unchanged), the rate limit (a token bucket in memory), the access plan
(cached per roles x purpose x product until consent changes, see `state.py`), one
online-store read, one JSON parse (typed decoding only for date columns whose
treatment needs a date), the treatments, one orjson encode, and an audit record handed
to the background writer (never waited for).

Every call produces exactly one audit record, allowed or denied; a subject the purpose
may not see is answered exactly like a key that does not exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.auth import Authenticator
from tidegate.egress.serve.pseudonyms import PseudonymIndex, key_treatment
from tidegate.egress.serve.ratelimit import limiter_for
from tidegate.egress.serve.state import ChangeWatch, PlanCache, VersionTimes
from tidegate.errors import ForbiddenError, NotFoundError, TidegateError
from tidegate.platform import Platform
from tidegate.platform.keys import Principal
from tidegate.privacy.guard import AccessContext, AccessPlan, guard_of, purposes_on
from tidegate.privacy.treatments import ValueTreatment, value_treatment
from tidegate.project.models import NAME_PATTERN
from tidegate.store.online.base import Entry
from tidegate.timestamps import format_timestamp
from tidegate.type_families import type_family

MAX_KEY_LENGTH = 256
MAX_LOOKUP_KEYS = 1_000
AUDIT_KEYS_SHOWN = 20  # keys named in a lookup's audit record (the count is always there)


def iso(at: float | None) -> str | None:
    return format_timestamp(at)


@dataclass
class Call:
    """One request's audit facts, filled in as it goes."""

    action: str
    product: str | None = None
    purpose: str | None = None
    principal: Principal | None = None
    generation: int | None = None  # the metadata watch, read once per request
    admitted: bool = False  # authenticated and rate-limited already (`Serving.admit`)
    audited: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Shape:
    """Per plan: what treating rows and auditing them need, decided once per plan, not
    once per row or value (`Serving._shape`)."""

    plan: AccessPlan
    columns: dict[str, str]  # visible column -> treatment (audit)
    treatments: dict[str, str]  # every column -> treatment (response)
    key_treatment: str  # how the purpose sees the key column: how entities are addressed
    #: visible columns in order: (name, None) shown as stored, or (name, function) to
    #: treat with; `plan.apply_row` with the clear columns' no-op calls taken out
    visible: tuple[tuple[str, ValueTreatment | None], ...] = ()
    #: the visible column names in order, the visible columns a treatment changes, and the
    #: dropped names: a stored row holding just `names` (once `dropped` are out) is
    #: treated in place instead of copied value by value
    names: tuple[str, ...] = ()
    treated: tuple[tuple[str, ValueTreatment], ...] = ()
    dropped: tuple[str, ...] = ()
    #: the row filter, unpacked: the subject column (None: every row passes), how its
    #: stored text is read (dates and timestamps a treatment needs typed), and the
    #: filter's subjects with its mode (None: no filter)
    subject_column: str | None = None
    subject_decode: Callable[[str], Any] | None = None
    members: frozenset[str] | None = None
    allow: bool = True


def _typed(family: str, treat: ValueTreatment) -> ValueTreatment:
    """`treat` on the value a date or timestamp column holds in the online store (ISO
    text): typed first, as the warehouse has it, so treatments see what DuckDB sees."""
    parse = dt.date.fromisoformat if family == "date" else dt.datetime.fromisoformat

    def typed(value: Any) -> Any:
        return treat(parse(value) if isinstance(value, str) else value)

    return typed


def shape_of(plan: AccessPlan) -> _Shape:
    """The plan's `_Shape`: each visible column's treatment bound to its type and key."""
    visible: list[tuple[str, ValueTreatment | None]] = []
    decoders: dict[str, Callable[[str], Any]] = {}
    for column in plan.visible_columns:
        if column.treatment.treatment == "clear":
            visible.append((column.name, None))
            continue
        treat = value_treatment(column.treatment, column.type, plan.hash_key)
        family = type_family(column.type)
        if family in ("date", "timestamp"):
            treat = _typed(family, treat)
            decoders[column.name] = (
                dt.date.fromisoformat if family == "date" else dt.datetime.fromisoformat
            )
        visible.append((column.name, treat))
    subject = plan.subject_column
    row_filter = plan.row_filter if subject is not None else None
    return _Shape(
        plan=plan,
        columns={c.name: c.treatment.treatment for c in plan.visible_columns},
        treatments={c.name: c.treatment.treatment for c in plan.columns},
        key_treatment=key_treatment(plan),
        visible=tuple(visible),
        names=tuple(name for name, _ in visible),
        treated=tuple((name, treat) for name, treat in visible if treat is not None),
        dropped=tuple(c.name for c in plan.columns if c.treatment.treatment == "drop"),
        subject_column=subject,
        subject_decode=decoders.get(subject) if subject is not None else None,
        members=row_filter.subjects if row_filter is not None else None,
        allow=row_filter is None or row_filter.mode == "allow",
    )


def treat_row(shape: _Shape, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the stored row as the plan shows it, or None when its subject is filtered out;
    the subject id). What `plan.apply_row` gives, on a row parsed from the online store;
    in place when the row holds the visible columns in order (the usual case)."""
    subject = None
    column = shape.subject_column
    if column is not None:
        value = row.get(column)
        if value is not None:
            decode = shape.subject_decode
            if decode is not None and isinstance(value, str):
                value = decode(value)  # the subject as the plan's filter sees it
            subject = str(value)
    # the plan's RowFilter.admits: a subject passes an allow-list when on it, a deny-list
    # when not on it; a row about nobody passes a deny-list only
    members = shape.members
    if members is not None and (subject is not None and subject in members) is not shape.allow:
        return None, subject
    for name in shape.dropped:
        row.pop(name, None)
    if tuple(row) == shape.names:
        # the stored row is the visible columns in order: treat the few columns a
        # treatment changes in place (same values, same order, no copy)
        for name, treat in shape.treated:
            value = row[name]
            if value is not None:
                row[name] = treat(value)
        return row, subject
    treated: dict[str, Any] = {}
    for name, maybe in shape.visible:
        value = row.get(name)
        treated[name] = maybe(value) if maybe is not None and value is not None else value
    return treated, subject


class Serving:
    def __init__(self, platform: Platform) -> None:
        import re

        self.platform = platform
        self.project = platform.project
        self.watch = ChangeWatch(platform.meta)
        serve = self.project.config.serve
        self.auth = Authenticator(platform.meta, self.watch, serve.jwt, self.project.root)
        self.plans = PlanCache(guard_of(platform), platform.meta, self.watch)
        self.limiter = limiter_for(self.project)  # shared across replicas on Redis
        self.versions = VersionTimes(platform.meta)
        self.pseudonyms = PseudonymIndex(platform.online)
        self._shapes: dict[int, _Shape] = {}
        self._name = re.compile(NAME_PATTERN)

    def close(self) -> None:
        self.watch.close()
        self.limiter.close()

    # ---------------------------------------------------------------- common steps

    def principal(self, call: Call, token: str | None) -> Principal:
        if call.admitted and call.principal is not None:
            return call.principal
        call.generation = self.watch.generation()
        principal = self.auth.authenticate(token, call.generation)
        call.principal = principal
        self.limiter.check(principal.name, principal.roles)
        return principal

    async def admit(self, call: Call, token: str | None) -> Principal:
        """Authenticate and take a rate-limit token without blocking the event loop (a
        shared limiter asks Redis); the handler's `principal()` then reuses the result."""
        call.generation = self.watch.generation()
        principal = self.auth.authenticate(token, call.generation)
        call.principal = principal
        await self.limiter.acheck(principal.name, principal.roles)
        call.admitted = True
        return principal

    def audit(self, call: Call, record: AuditRecord) -> None:
        call.audited = True
        self.platform.audit_writer.submit(record)

    def audit_denied(self, call: Call, err: TidegateError) -> None:
        if call.audited:
            return
        principal = call.principal
        detail = dict(call.detail)
        detail.update(code=err.code, reason=err.message[:300])
        if principal is not None:
            detail["key_id"] = principal.key_id
        self.audit(
            call,
            AuditRecord(
                action=call.action,
                principal=principal.name if principal else "anonymous",
                purpose=call.purpose,
                product=call.product,
                outcome="denied",
                detail=detail,
            ),
        )

    def _shape(self, plan: AccessPlan) -> _Shape:
        found = self._shapes.get(id(plan))
        if found is not None and found.plan is plan:
            return found
        shape = shape_of(plan)
        if len(self._shapes) > 1_000:
            self._shapes.clear()
        self._shapes[id(plan)] = shape
        return shape

    def _plan(self, call: Call, principal: Principal, product: str) -> AccessPlan:
        if not self._name.match(product) or len(product) > 63:
            raise NotFoundError(f"no product named {product[:80]!r}", product=product[:80])
        return self.plans.plan(
            AccessContext(principal.name, principal.roles, call.purpose), product, call.generation
        )

    @staticmethod
    def _treat(shape: _Shape, entry: Entry) -> tuple[dict[str, Any] | None, str | None]:
        """(treated row or None when filtered, subject id)."""
        return treat_row(shape, orjson.loads(entry.value))

    def _stored_keys(self, shape: _Shape, keys: Sequence[str]) -> dict[str, str]:
        """Asked key -> the online store's key. Where the purpose sees the key column in
        clear, the same; where it hashes it, keys are pseudonyms (a clear id addresses
        nothing, so lookups are no token -> id oracle); any other treatment hides the key,
        so entities cannot be addressed under that purpose at all."""
        plan, treatment = shape.plan, shape.key_treatment
        if treatment == "clear":
            return {k: k for k in keys}
        if treatment == "hash":
            return self.pseudonyms.resolve(plan, keys)
        raise ForbiddenError(
            f"purpose {plan.purpose!r} does not see the key column {plan.key_column!r} of "
            f"{plan.product!r} ({treatment}): its entities cannot be addressed by key",
            purpose=plan.purpose,
            product=plan.product,
        )

    @staticmethod
    def _answers_to(shape: _Shape, treated: dict[str, Any], key: str) -> bool:
        """Under a hashed key, the row's own token must be the one asked for."""
        if shape.key_treatment != "hash":
            return True
        return treated.get(shape.plan.key_column) == key

    # ---------------------------------------------------------------- endpoints

    def entity(self, call: Call, token: str | None, key: str) -> dict[str, Any]:
        principal, shape, stored = self._entity_read(call, token, key)
        product = call.product or ""
        entry = self.platform.online.read_entry(product, stored) if stored is not None else None
        return self._entity_answer(call, principal, shape, key, entry)

    async def aentity(self, call: Call, token: str | None, key: str) -> dict[str, Any]:
        """`entity` on the event loop: the online-store read does not block it."""
        principal, shape = self._entity_plan(call, token)
        resolved = await self._astored_keys(shape, [key]) if len(key) <= MAX_KEY_LENGTH else {}
        stored = resolved.get(key)
        entry = None
        if stored is not None:
            found = await self.platform.online.aread_entries(call.product or "", (stored,))
            entry = found.get(stored)
        return self._entity_answer(call, principal, shape, key, entry)

    def _entity_read(
        self, call: Call, token: str | None, key: str
    ) -> tuple[Principal, _Shape, str | None]:
        """(principal, shape, the online store's key to read or None): every check
        before the read."""
        principal, shape = self._entity_plan(call, token)
        stored = self._stored_keys(shape, [key]) if len(key) <= MAX_KEY_LENGTH else {}
        return principal, shape, stored.get(key)

    def _entity_plan(self, call: Call, token: str | None) -> tuple[Principal, _Shape]:
        principal = self.principal(call, token)
        return principal, self._shape(self._plan(call, principal, call.product or ""))

    async def _astored_keys(self, shape: _Shape, keys: Sequence[str]) -> dict[str, str]:
        """`_stored_keys` from the event loop: under a hashed key the pseudonym index asks
        the online store (its current version; a key scan when it is built or topped up),
        so that runs in a worker thread and the loop keeps serving meanwhile."""
        if shape.key_treatment != "hash":
            return self._stored_keys(shape, keys)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._stored_keys, shape, keys)

    def _entity_answer(
        self, call: Call, principal: Principal, shape: _Shape, key: str, entry: Entry | None
    ) -> dict[str, Any]:
        product = call.product or ""
        plan = shape.plan
        treated, subject = self._treat(shape, entry) if entry is not None else (None, None)
        if treated is not None and not self._answers_to(shape, treated, key):
            entry, treated = None, None
        shown_key = key[:MAX_KEY_LENGTH]
        if entry is None or treated is None:
            self.audit(
                call,
                AuditRecord(
                    action="serve",
                    principal=principal.name,
                    purpose=plan.purpose,
                    product=product,
                    rows=0,
                    subjects=(subject,) if subject is not None else (),
                    subject_type=plan.subject_type,
                    outcome="filtered" if entry is not None else "absent",
                    detail={"key": shown_key, "key_id": principal.key_id},
                ),
            )
            raise NotFoundError(f"no entity {shown_key!r} in {product!r}", product=product)
        self.audit(
            call,
            AuditRecord(
                action="serve",
                principal=principal.name,
                purpose=plan.purpose,
                product=product,
                columns=shape.columns,
                rows=1,
                subjects=(subject,) if subject is not None else (),
                subject_type=plan.subject_type,
                detail={"key": shown_key, "key_id": principal.key_id},
            ),
        )
        built_at = self.versions.built_at(product, entry.version)
        return {
            "product": product,
            "key": key,
            "purpose": plan.purpose,
            "version": entry.version,
            "built_at": built_at,
            "updated_at": iso(entry.written_at),
            "treatments": shape.treatments,
            "data": treated,
        }

    def lookup(
        self, call: Call, token: str | None, keys: Sequence[str], *, authenticated: bool = False
    ) -> dict[str, Any]:
        principal, shape, stored = self._lookup_read(call, token, keys, authenticated)
        wanted = list(dict.fromkeys(stored.values()))
        entries = self.platform.online.read_entries(call.product or "", wanted)
        return self._lookup_answer(call, principal, shape, keys, stored, entries)

    async def alookup(
        self, call: Call, token: str | None, keys: Sequence[str], *, authenticated: bool = False
    ) -> dict[str, Any]:
        """`lookup` on the event loop: the online-store read does not block it."""
        principal, shape = self._lookup_plan(call, token, authenticated)
        stored = await self._astored_keys(shape, list(dict.fromkeys(keys)))
        wanted = list(dict.fromkeys(stored.values()))
        entries = await self.platform.online.aread_entries(call.product or "", wanted)
        return self._lookup_answer(call, principal, shape, keys, stored, entries)

    def _lookup_read(
        self, call: Call, token: str | None, keys: Sequence[str], authenticated: bool
    ) -> tuple[Principal, _Shape, dict[str, str]]:
        principal, shape = self._lookup_plan(call, token, authenticated)
        return principal, shape, self._stored_keys(shape, list(dict.fromkeys(keys)))

    def _lookup_plan(
        self, call: Call, token: str | None, authenticated: bool
    ) -> tuple[Principal, _Shape]:
        principal = call.principal
        if principal is None or not authenticated:
            principal = self.principal(call, token)
        return principal, self._shape(self._plan(call, principal, call.product or ""))

    def _lookup_answer(
        self,
        call: Call,
        principal: Principal,
        shape: _Shape,
        keys: Sequence[str],
        stored: dict[str, str],
        entries: dict[str, Entry],
    ) -> dict[str, Any]:
        product = call.product or ""
        plan = shape.plan
        distinct = list(dict.fromkeys(keys))
        served: dict[str, dict[str, Any]] = {}
        subjects: dict[str, None] = {}
        version: int | None = None
        stamps: dict[float, str | None] = {}  # rows written together share their time
        hashed = shape.key_treatment == "hash"
        loads = orjson.loads
        for key in distinct:
            name = stored.get(key)
            entry = entries.get(name) if name is not None else None
            if entry is None:
                continue
            treated, subject = treat_row(shape, loads(entry.value))
            if treated is None:
                continue  # filtered: answered like a key that does not exist
            if hashed and not self._answers_to(shape, treated, key):
                continue
            version = entry.version
            at = entry.written_at
            stamp = stamps.get(at)
            if stamp is None:
                stamp = stamps[at] = iso(at)
            # the result itself: a key asked twice shares it
            served[key] = {"key": key, "found": True, "data": treated, "updated_at": stamp}
            if subject is not None:
                subjects[subject] = None
        self.audit(
            call,
            AuditRecord(
                action="serve",
                principal=principal.name,
                purpose=plan.purpose,
                product=product,
                columns=shape.columns if served else {},
                rows=len(served),
                subjects=tuple(subjects),
                subject_type=plan.subject_type,
                outcome="allowed" if served else "absent",
                detail={
                    "key_id": principal.key_id,
                    "lookup": len(keys),
                    "found": len(served),
                    "not_found": len(distinct) - len(served),
                    "keys": distinct[:AUDIT_KEYS_SHOWN],
                },
            ),
        )
        results = [served.get(key) or {"key": key, "found": False} for key in keys]
        return {
            "product": product,
            "purpose": plan.purpose,
            "version": version,
            "built_at": self.versions.built_at(product, version) if version else None,
            "treatments": shape.treatments,
            "results": results,
        }

    def list_products(self, call: Call, token: str | None) -> dict[str, Any]:
        principal = self.principal(call, token)
        policy = self.project.policy
        visible = [
            {
                "name": name,
                "description": p.config.description,
                "owner": p.config.owner,
                "purposes": list(p.config.purposes),
                "allowed_purposes": purposes_on(self.project, principal.roles, name),
            }
            for name, p in self.project.products.items()
            if policy.roles_allow_product(principal.roles, name)
        ]
        self.audit(
            call,
            AuditRecord(
                action="catalog",
                principal=principal.name,
                detail={"key_id": principal.key_id, "products": len(visible)},
            ),
        )
        return {"products": visible}

    def describe(self, call: Call, token: str | None) -> dict[str, Any]:
        principal = self.principal(call, token)
        name = call.product or ""
        product = self.project.products.get(name) if self._name.match(name) else None
        if product is None:
            raise NotFoundError(f"no product named {name[:80]!r}", product=name[:80])
        policy = self.project.policy
        if not policy.roles_allow_product(principal.roles, name):
            raise ForbiddenError(
                f"principal {principal.name!r} may not read product {name!r}", product=name
            )
        config = product.config
        live = self.platform.meta.live_version(name)
        body = {
            "name": name,
            "description": config.description,
            "owner": config.owner,
            "contract_version": config.version,
            "key": config.key,
            "subject": config.subject,
            "purposes": list(config.purposes),
            "allowed_purposes": purposes_on(self.project, principal.roles, name),
            "columns": {
                column: {
                    "type": spec.type,
                    "description": spec.description,
                    "classification": spec.classification,
                    "nullable": spec.nullable,
                }
                for column, spec in config.columns.items()
            },
            "freshness": self._freshness(name),
            "ttl_seconds": self.platform.online.ttl(name),
            "version": live.version if live else None,
            "built_at": iso(live.built_at) if live else None,
        }
        self.audit(
            call,
            AuditRecord(
                action="catalog",
                principal=principal.name,
                product=name,
                detail={"key_id": principal.key_id},
            ),
        )
        return body

    def _freshness(self, product: str) -> dict[str, Any]:
        """The declared SLO, and what the stream worker last recorded (observe/freshness.py)."""
        declared = self.project.products[product].config.freshness
        body: dict[str, Any] = {
            "slo": declared or self.project.config.defaults.freshness,
            "slo_seconds": self.project.freshness_seconds(product),
            "mode": None,
            "last_update": None,
            "lag_seconds": None,
            "breaches": 0,
        }
        seen = self.platform.meta.freshness.all().get(product)
        if seen is not None:
            body.update(
                mode=seen.mode,
                last_update=iso(seen.last_update),
                lag_seconds=round(seen.current_lag(time.time()), 3),
                breaches=seen.breaches,
            )
        return body
