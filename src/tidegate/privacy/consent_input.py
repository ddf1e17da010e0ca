"""Consent choices as they come in: the body of `POST /v1/consent` and of a message on
the consent topic, checked by one model and turned into ledger events by one function.

Shared by the consent API (`requests/consent_api.py`), the consent topic reader
(`requests/consent_stream.py`) and dead-letter replay (`ingest/intake.py`); it only
validates and maps, nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tidegate.errors import BadRequestError, ForbiddenError, TidegateError
from tidegate.log.base import Message
from tidegate.platform.keys import Principal
from tidegate.privacy.consent import (
    DEFAULT_CLOCK_SKEW,
    ConsentEvent,
    check_not_future,
    coarse_moment,
    consent_view_of,
)
from tidegate.project.models import PurposeConfig, TcfPolicy
from tidegate.project.project import Project
from tidegate.project.taxonomy import is_sale_or_sharing

if TYPE_CHECKING:
    from tidegate.platform import Platform


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(max_length=100)
    action: Literal["grant", "revoke", "object"]
    expires_at: float | None = None


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Annotated[str, Field(min_length=1, max_length=256)]
    choices: list[Choice] = Field(default=[], max_length=100)
    tcf: str | None = Field(default=None, max_length=10_000)  # as tcf.MAX_LENGTH
    tcf_vendor: int | None = Field(default=None, ge=1, le=65535)
    occurred_at: float | str | None = None
    source: str = Field(default="api", max_length=100)
    evidence: str = Field(default="", max_length=2000)


def _moment(value: float | str | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"occurred_at {value!r} is not a unix time or ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def gpc_purposes(purposes: dict[str, PurposeConfig]) -> list[str]:
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


def may_write_consent(platform: Platform, principal: Principal) -> None:
    roles = platform.project.policy.roles
    if not any(roles[r].write_consent for r in principal.roles if r in roles):
        raise ForbiddenError(
            f"principal {principal.name!r} may not record consent: none of its roles has "
            "`write_consent: true`"
        )


def events_for(platform: Platform, body: ConsentBody, gpc: bool) -> list[ConsentEvent]:
    """The ledger events a request means (validated; nothing is written)."""
    project = platform.project
    return consent_events(
        project.policy.purposes,
        body,
        gpc,
        tcf_policy=project.policy.tcf,
        clock_skew=project.config.consent.clock_skew_seconds,
    )


def consent_events(
    purposes: dict[str, PurposeConfig],
    body: ConsentBody,
    gpc: bool,
    *,
    tcf_policy: TcfPolicy | None = None,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    received_at: float | None = None,
) -> list[ConsentEvent]:
    """The ledger events a consent body means, given the project's purposes: shared by the
    API, the consent topic (`consent_stream.py`) and bulk imports. Raises BadRequestError.

    `received_at` (default: now) is when tidegate got the choice: the default time of a
    choice, the clock a future date is checked against, and where a TCF string's
    day-rounded LastUpdated is placed within its day (`coarse_moment`)."""
    from tidegate.privacy import tcf

    now = time.time() if received_at is None else received_at
    explicit = _moment(body.occurred_at)
    if explicit is not None:
        check_not_future(explicit, now, clock_skew, "occurred_at")
    at = explicit or now
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
        policy = tcf_policy or TcfPolicy()
        vendor = policy.vendor_id
        if vendor is not None and body.tcf_vendor not in (None, vendor):
            raise BadRequestError(
                f"tcf_vendor {body.tcf_vendor} is not the project's vendor id {vendor} "
                "(tcf.vendor_id in policies)",
                field="tcf_vendor",
            )
        decoded = tcf.decode(body.tcf)
        stamp = decoded.last_updated.timestamp()
        check_not_future(stamp, now, clock_skew, "tcf")
        when = explicit or coarse_moment(stamp, now)
        for found in tcf.choices(decoded, purposes, vendor or body.tcf_vendor, policy=policy):
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


def state_of(platform: Platform, subject: str) -> dict[str, bool]:
    view = consent_view_of(platform)
    view.refresh()
    return {
        name: view.allowed(subject, name, purpose.legal_basis)
        for name, purpose in platform.project.policy.purposes.items()
    }


#: `CONSENT_SOURCE` (`__consent`, never a source name: those start with a letter) is the
#: dead-letter `source` of rejected consent messages
DEFAULT_SOURCE = "log"


class ConsentMessage(ConsentBody):
    """The body of `POST /v1/consent`, plus `gpc` and the one-choice shorthand."""

    purpose: str | None = Field(default=None, max_length=100)
    action: Literal["grant", "revoke", "object"] | None = None
    expires_at: float | None = None
    gpc: bool = False

    @model_validator(mode="after")
    def _one_choice(self) -> ConsentMessage:
        if self.purpose is None and self.action is None:
            if self.expires_at is not None:
                raise ValueError("expires_at needs a purpose and an action")
            return self
        if self.purpose is None or self.action is None:
            raise ValueError("give both purpose and action (or a list of choices)")
        choice = Choice(purpose=self.purpose, action=self.action, expires_at=self.expires_at)
        self.choices = [choice, *self.choices]
        return self


class Rejected(Exception):
    """A consent message that cannot be recorded; the text is the dead letter's reason."""


def parse(
    value: bytes | None,
    purposes: dict[str, PurposeConfig],
    at: float,
    *,
    tcf_policy: TcfPolicy | None = None,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> list[ConsentEvent]:
    """The ledger events one message means (`at`: when the log took it, the default for
    `occurred_at`). Raises Rejected with the reason. A future date is checked against
    our clock now, not the log's time (a replayed letter may be older than its date)."""
    if value is None:
        raise Rejected("empty message (no value)")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Rejected("malformed JSON") from None
    if not isinstance(data, dict):
        raise Rejected(f"a consent message is a JSON object, not {type(data).__name__}")
    try:
        message = ConsentMessage.model_validate(data)
    except ValidationError as err:
        raise Rejected(_validation_reason(err)) from None
    updates: dict[str, Any] = {}
    if "source" not in message.model_fields_set:
        updates["source"] = DEFAULT_SOURCE
    if message.occurred_at is None:
        updates["occurred_at"] = at
    if updates:
        message = message.model_copy(update=updates)
    try:
        return consent_events(
            purposes, message, message.gpc, tcf_policy=tcf_policy, clock_skew=clock_skew
        )
    except TidegateError as err:
        raise Rejected(err.message) from None
    except (ValueError, TypeError, OverflowError) as err:
        raise Rejected(f"{type(err).__name__}: {err}") from None


def _validation_reason(err: ValidationError) -> str:
    parts = []
    for error in err.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "invalid consent message: " + "; ".join(parts)


def consent_message(body: dict[str, Any]) -> Message:
    """A message for the consent topic, keyed by subject (producers' helper)."""
    subject = body.get("subject")
    key = str(subject).encode() if subject is not None else None
    return Message(key, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def recheck(project: Project, payload: bytes | None) -> str | None:
    """For dead-letter replay: why this consent message would still be refused, or None
    (its topic is then `project.config.consent.topic`)."""
    if not project.config.consent.topic:
        return "no consent topic is configured (consent.topic in tidegate.yml)"
    try:
        parse(
            payload,
            project.policy.purposes,
            time.time(),
            tcf_policy=project.policy.tcf,
            clock_skew=project.config.consent.clock_skew_seconds,
        )
    except Rejected as err:
        return str(err)
    return None
