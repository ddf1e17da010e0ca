"""`POST /v1/consent` and `GET /v1/consent/{subject}`: consent choices in, state out.

Who may call: an API key one of whose roles has `write_consent: true` in the policies
(a CMP backend, a preference centre, a support tool). Recording consent is not egress,
so no purpose is declared; every call is audited.

The body names a subject and any of:

* `choices`: `[{"purpose": "marketing.email", "action": "grant" | "revoke" | "object",
  "expires_at": <unix time, optional>}]`;
* `tcf`: an IAB TCF v2 TC string (optionally with `tcf_vendor`, our vendor id): decoded
  and mapped to the purposes that list `tcf_purposes` (see `tcf.py`);
* the `Sec-GPC: 1` header (Global Privacy Control): opts out of every purpose marked
  `sale_or_sharing` (or, when unset, whose data uses are sale or sharing:
  `marketing.advertising.third_party`, `third_party_sharing`): `revoke` for consent
  purposes, `object` for the others.

`occurred_at` (unix time or ISO 8601) is when the person chose; it defaults to now, and
for TCF to the string's LastUpdated. A revocation or objection is effective for the
API at once (the guard reads the ledger on every request) and is pushed to sync
destinations in the background (`propagation.py`); the answer says so.
"""

from __future__ import annotations

import datetime as dt
import time
import weakref
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.keys import Principal, authenticate
from tidegate.errors import BadRequestError, ForbiddenError, TidegateError
from tidegate.privacy.consent import ConsentEvent
from tidegate.privacy.propagation import Propagator
from tidegate.privacy.taxonomy import is_sale_or_sharing

_propagators: weakref.WeakKeyDictionary[Any, Propagator] = weakref.WeakKeyDictionary()


def propagator_for(platform: Any) -> Propagator:
    found = _propagators.get(platform)
    if found is None:
        found = _propagators[platform] = Propagator(platform)
    return found


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(max_length=100)
    action: Literal["grant", "revoke", "object"]
    expires_at: float | None = None


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Annotated[str, Field(min_length=1, max_length=256)]
    choices: list[Choice] = Field(default=[], max_length=100)
    tcf: str | None = Field(default=None, max_length=10_000)
    tcf_vendor: int | None = Field(default=None, ge=1, le=65535)
    occurred_at: float | str | None = None
    source: str = Field(default="api", max_length=100)
    evidence: str = Field(default="", max_length=2000)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def _moment(value: float | str | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"occurred_at {value!r} is not a unix time or ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def gpc_purposes(purposes: dict[str, Any]) -> list[str]:
    """The purposes a Global Privacy Control signal opts out of."""
    return sorted(
        name
        for name, config in purposes.items()
        if (
            config.sale_or_sharing
            if config.sale_or_sharing is not None
            else is_sale_or_sharing(config.data_uses)
        )
        and config.legal_basis != "legal_obligation"
    )


def may_write_consent(platform: Any, principal: Principal) -> None:
    roles = platform.project.policy.roles
    if not any(roles[r].write_consent for r in principal.roles if r in roles):
        raise ForbiddenError(
            f"principal {principal.name!r} may not record consent: none of its roles has "
            "`write_consent: true`"
        )


def events_for(platform: Any, body: ConsentBody, gpc: bool) -> list[ConsentEvent]:
    """The ledger events a request means (validated; nothing is written)."""
    return consent_events(platform.project.policy.purposes, body, gpc)


def consent_events(purposes: dict[str, Any], body: ConsentBody, gpc: bool) -> list[ConsentEvent]:
    """The ledger events a consent body means, given the project's purposes: shared by the
    API and the consent topic (`consent_stream.py`). Raises BadRequestError."""
    from tidegate.privacy import tcf

    now = time.time()
    at = _moment(body.occurred_at) or now
    source, evidence = body.source, body.evidence
    events: list[ConsentEvent] = []
    for choice in body.choices:
        if choice.purpose not in purposes:
            raise BadRequestError(f"unknown purpose {choice.purpose!r}", known=sorted(purposes))
        events.append(
            ConsentEvent(
                body.subject, choice.purpose, choice.action, at, source, evidence, choice.expires_at
            )
        )
    if body.tcf:
        decoded = tcf.decode(body.tcf)
        when = _moment(body.occurred_at) or decoded.last_updated.timestamp()
        for found in tcf.choices(decoded, purposes, body.tcf_vendor):
            events.append(
                ConsentEvent(
                    body.subject,
                    found.purpose,
                    found.action,  # type: ignore[arg-type]
                    when,
                    "tcf",
                    f"cmp {decoded.cmp_id}; {found.reason}; tc={body.tcf[:512]}",
                )
            )
    if gpc:
        for name in gpc_purposes(purposes):
            action = "revoke" if purposes[name].legal_basis == "consent" else "object"
            events.append(
                ConsentEvent(body.subject, name, action, at, "gpc", "Sec-GPC: 1")  # type: ignore[arg-type]
            )
    if not events:
        raise BadRequestError(
            "nothing to record: give choices, a tcf string (with purposes mapped through "
            "tcf_purposes), or send Sec-GPC: 1"
        )
    return events


def state_of(platform: Any, subject: str) -> dict[str, bool]:
    view = platform.consent_view
    view.refresh()
    return {
        name: view.allowed(subject, name, purpose.legal_basis)
        for name, purpose in platform.project.policy.purposes.items()
    }


def create_consent_router(platform: Any) -> APIRouter:
    router = APIRouter(tags=["consent"])

    def denied(action: str, principal: Principal | None, subject: str, err: TidegateError) -> None:
        """Refused consent calls are audited too (who tried to write or read whose
        choices, and why not)."""
        detail: dict[str, Any] = {"code": err.code, "reason": err.message[:300]}
        if principal is not None:
            detail["key_id"] = principal.key_id
        platform.audit_writer.submit(
            AuditRecord(
                action=action,
                principal=principal.name if principal is not None else "anonymous",
                subjects=(subject,),
                outcome="denied",
                detail=detail,
            )
        )

    @router.post("/v1/consent")
    def post_consent(body: ConsentBody, request: Request) -> dict[str, Any]:
        """Record consent choices, a TCF string or a GPC signal for one subject."""
        principal: Principal | None = None
        gpc = request.headers.get("sec-gpc", "").strip() == "1"
        try:
            principal = authenticate(platform.meta, _token(request))
            may_write_consent(platform, principal)
            events = events_for(platform, body, gpc)
        except TidegateError as err:
            denied("consent", principal, body.subject, err)
            raise
        seqs = platform.consent.record(events)
        withdrawn = sorted({e.purpose for e in events if e.action != "grant"})
        platform.audit.append(  # consent is evidence: durable before we answer
            AuditRecord(
                action="consent",
                principal=principal.name,
                purpose=events[0].purpose if len(events) == 1 else None,
                subjects=(body.subject,),
                detail={
                    "key_id": principal.key_id,
                    "choices": [[e.purpose, e.action, e.source] for e in events],
                    "gpc": gpc,
                    "tcf": bool(body.tcf),
                },
            )
        )
        if withdrawn:
            propagator_for(platform).submit(body.subject)
        return {
            "subject": body.subject,
            "recorded": [
                {"seq": seq, "purpose": e.purpose, "action": e.action, "source": e.source}
                for seq, e in zip(seqs, events, strict=True)
            ],
            "allowed": state_of(platform, body.subject),
            "propagation": (
                {"status": "scheduled", "purposes": withdrawn} if withdrawn else {"status": "none"}
            ),
        }

    @router.get("/v1/consent/{subject}")
    def get_consent(subject: str, request: Request) -> dict[str, Any]:
        """A subject's consent history and current state per purpose."""
        principal: Principal | None = None
        try:
            principal = authenticate(platform.meta, _token(request))
            may_write_consent(platform, principal)
        except TidegateError as err:
            denied("consent_read", principal, subject, err)
            raise
        history = platform.consent.history(subject)
        platform.audit_writer.submit(
            AuditRecord(
                action="consent_read",
                principal=principal.name,
                subjects=(subject,),
                detail={"key_id": principal.key_id},
            )
        )
        return {
            "subject": subject,
            "history": [h.__dict__ for h in history],
            "allowed": state_of(platform, subject),
        }

    return router
