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

from typing import Any

from fastapi import APIRouter, Request

from tidegate.audit.log import AuditRecord
from tidegate.platform import Platform
from tidegate.platform.keys import authenticate
from tidegate.privacy.consent import consent_ledger_of
from tidegate.privacy.consent_input import ConsentBody, events_for, may_write_consent, state_of
from tidegate.requests.propagation import propagator_for


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def create_consent_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["consent"])

    @router.post("/v1/consent")
    def post_consent(body: ConsentBody, request: Request) -> dict[str, Any]:
        """Record consent choices, a TCF string or a GPC signal for one subject."""
        principal = authenticate(platform.meta, _token(request))
        may_write_consent(platform, principal)
        gpc = request.headers.get("sec-gpc", "").strip() == "1"
        events = events_for(platform, body, gpc)
        seqs = consent_ledger_of(platform).record(events)
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
        principal = authenticate(platform.meta, _token(request))
        may_write_consent(platform, principal)
        history = consent_ledger_of(platform).history(subject)
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
