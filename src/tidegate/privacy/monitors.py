"""Real-time access monitors on the audit stream.

Every batch the audit log stores is handed, as records, to the monitors (an observer of
`AuditLog.write_batch`: the serving path's batched writer included, so an alert follows
the read within one batch interval plus a webhook call). Four rules:

* `volume`: a principal read more distinct subjects in the current window than
  `factor` x its baseline (the median of its earlier windows, at least `floor`);
* `new_purpose`: a principal with history declares a purpose it never used before;
* `denied`: a principal collects `denied_threshold` denied requests within a window;
* `erased_read`: a read names a subject that was erased (tombstone) or, for its
  purpose, has no legal basis any more (revoked, objected).

Reads are the actions in `READ_ACTIONS`. An alert goes to the log (warning) and, when
a webhook URL is set, as a Slack-compatible JSON POST (`{"text": ..., "blocks": [...]}`)
from a background thread. Alerts are deduplicated by (kind, principal, subject/purpose)
for `dedup_seconds`.

Configured in the project (`observe.access_monitors` in tidegate.yml) and on by default:
every process that guards egress runs them (`monitors_of`, from `guard_of`). Thresholds
may differ per role (`roles: {support_agent: {floor: 50}}`): a principal gets the
loosest values among its API key's roles. Alerts go through the same channels as syncs
and quality: `observe.alerts` routes the owner (`owner`, default `privacy`) to its webhook
(`owners`, else the default `webhook_url` / `webhook_env`, URLs or `env:VARIABLE`);
`TIDEGATE_ACCESS_ALERT_WEBHOOK`, when set, still takes precedence. Baselines and known
purposes are first read from the audit history.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.audit.log import AuditRecord
from tidegate.privacy.consent import consent_view_of

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)

READ_ACTIONS = frozenset({"serve", "export", "consent_read"})
ENV_WEBHOOK = "TIDEGATE_ACCESS_ALERT_WEBHOOK"


@dataclass(frozen=True)
class Alert:
    kind: str
    principal: str
    message: str
    key: str
    at: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)

    def slack(self) -> dict[str, Any]:
        text = f":rotating_light: tidegate access monitor [{self.kind}] {self.message}"
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": f"principal `{self.principal}` · {self.kind}"}
                    ],
                },
            ],
            "tidegate": {
                "kind": self.kind,
                "principal": self.principal,
                "at": self.at,
                "detail": self.detail,
            },
        }


@dataclass
class MonitorSettings:
    window: float = 60.0
    factor: float = 5.0
    floor: int = 20
    denied_threshold: int = 5
    dedup_seconds: float = 600.0


class Webhook:
    """POSTs alerts from a background thread; never blocks the audit writer."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.sent = 0
        self.failures = 0

    def __call__(self, alert: Alert) -> None:
        threading.Thread(target=self._post, args=(alert,), daemon=True).start()

    def _post(self, alert: Alert) -> None:
        body = json.dumps(alert.slack(), default=str).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                self.sent += 1
        except Exception as err:  # an unreachable webhook must not stop the monitors
            self.failures += 1
            log.warning("alert webhook failed: %s", err)


class AccessMonitor:
    def __init__(
        self,
        erased_among: Callable[[Sequence[str]], Collection[str]] | None = None,
        lacking_basis: Callable[[Sequence[str], str], Collection[str]] | None = None,
        settings: MonitorSettings | None = None,
        sinks: Iterable[Callable[[Alert], None]] = (),
        settings_for: Callable[[AuditRecord], MonitorSettings | None] | None = None,
    ) -> None:
        """`erased_among(subjects)`: those erased; `lacking_basis(subjects, purpose)`:
        those without a legal basis for it now. Asked once per record for all its
        subjects (a 100-key lookup's record names a hundred)."""
        self.settings = settings or MonitorSettings()
        self._settings_for = settings_for
        self._erased_among = erased_among
        self._lacking_basis = lacking_basis
        self.sinks = list(sinks)
        self.alerts: list[Alert] = []
        self._lock = threading.Lock()
        self._purposes: dict[str, set[str]] = defaultdict(set)
        self._windows: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=50))
        self._current: dict[str, tuple[float, set[str]]] = {}
        self._denied: dict[str, deque[float]] = defaultdict(deque)
        self._sent: dict[str, float] = {}

    # ---------------------------------------------------------------- history

    def learn(self, records: Iterable[AuditRecord]) -> None:
        """Baselines and known purposes from past records (no alerts)."""
        with self._lock:
            for record in records:
                self._track(record, alert=False)
            for principal in list(self._current):
                self._roll(principal, float("inf"))

    # ---------------------------------------------------------------- live

    def observe(self, records: Iterable[AuditRecord]) -> list[Alert]:
        with self._lock:
            fired = [a for r in records for a in self._track(r, alert=True)]
        raised = [a for a in fired if self._fresh(a)]
        for alert in raised:
            log.warning("access monitor: %s", alert.message)
            self.alerts.append(alert)
            for sink in self.sinks:
                try:
                    sink(alert)
                except Exception:
                    log.exception("alert sink failed")
        return raised

    def _fresh(self, alert: Alert) -> bool:
        with self._lock:
            last = self._sent.get(alert.key)
            if last is not None and alert.at - last < self.settings.dedup_seconds:
                return False
            self._sent[alert.key] = alert.at
            return True

    def _track(self, record: AuditRecord, alert: bool) -> list[Alert]:
        found: list[Alert] = []
        who = record.principal
        if record.outcome == "denied":
            found += self._denied_rule(record)
        if record.action not in READ_ACTIONS or record.outcome == "denied":
            return found if alert else []
        if record.purpose:
            known = self._purposes[who]
            if record.purpose not in known and known:
                found.append(
                    Alert(
                        "new_purpose",
                        who,
                        f"{who} declared purpose {record.purpose!r} for the first time "
                        f"(used before: {', '.join(sorted(known))})",
                        f"new_purpose:{who}:{record.purpose}",
                        detail={"purpose": record.purpose, "product": record.product},
                    )
                )
            known.add(record.purpose)
        found += self._volume_rule(record)
        if alert:
            found += self._subject_rule(record)
        return found if alert else []

    def _for(self, record: AuditRecord) -> MonitorSettings:
        """The thresholds for this record's principal (its roles'), else the defaults."""
        found = self._settings_for(record) if self._settings_for is not None else None
        return found or self.settings

    def _roll(self, principal: str, now: float) -> None:
        started, subjects = self._current.get(principal, (now, set()))
        if now - started >= self.settings.window:
            self._windows[principal].append(len(subjects))
            self._current[principal] = (now, set())

    def _volume_rule(self, record: AuditRecord) -> list[Alert]:
        who = record.principal
        self._roll(who, record.at)
        _, subjects = self._current.setdefault(who, (record.at, set()))
        subjects.update(record.subjects)
        history = self._windows[who]
        rules = self._for(record)
        baseline = statistics.median(history) if history else 0
        limit = rules.factor * max(baseline, rules.floor)
        if len(subjects) > limit:
            return [
                Alert(
                    "volume",
                    who,
                    f"{who} read {len(subjects)} distinct subjects in {self.settings.window:g}s, "
                    f"over {limit:g} ({rules.factor:g} x baseline {baseline:g})",
                    f"volume:{who}",
                    detail={"subjects": len(subjects), "baseline": baseline, "limit": limit},
                )
            ]
        return []

    def _denied_rule(self, record: AuditRecord) -> list[Alert]:
        who = record.principal
        times = self._denied[who]
        times.append(record.at)
        while times and record.at - times[0] > self.settings.window:
            times.popleft()
        if len(times) >= self._for(record).denied_threshold:
            return [
                Alert(
                    "denied",
                    who,
                    f"{who} was denied {len(times)} times within {self.settings.window:g}s",
                    f"denied:{who}",
                    detail={"count": len(times), "last": record.action},
                )
            ]
        return []

    def _subject_rule(self, record: AuditRecord) -> list[Alert]:
        subjects = record.subjects
        if not subjects:
            return []
        erased = set(self._erased_among(subjects)) if self._erased_among is not None else set()
        lacking: set[str] = set()
        if self._lacking_basis is not None and record.purpose:
            lacking = set(self._lacking_basis(subjects, record.purpose))
        if not erased and not lacking:
            return []
        found = []
        for subject in subjects:
            if subject in erased:
                why = "erased"
            elif subject in lacking:
                why = f"without a legal basis for {record.purpose!r} (revoked or objected)"
            else:
                continue
            found.append(
                Alert(
                    "erased_read",
                    record.principal,
                    f"{record.principal} asked for a subject that is {why} "
                    f"({record.action} {record.product or ''}, outcome {record.outcome})",
                    f"erased_read:{record.principal}:{subject}:{record.purpose}",
                    detail={"purpose": record.purpose, "outcome": record.outcome},
                )
            )
        return found


def attach_monitors(
    platform: Platform,
    *,
    webhook_url: str | None = None,
    settings: MonitorSettings | None = None,
    learn: bool = True,
    settings_for: Callable[[AuditRecord], MonitorSettings | None] | None = None,
) -> AccessMonitor:
    """Monitors on the platform's audit log (learned from its history first)."""
    from tidegate.privacy.tombstones import tombstones_of

    tombstones = tombstones_of(platform)
    view = consent_view_of(platform)
    project = platform.project

    def erased_among(subjects: Sequence[str]) -> list[str]:
        return tombstones.erased_among(list(subjects))

    def lacking_basis(subjects: Sequence[str], purpose: str) -> list[str]:
        # the policy in force now: a live reload (`policy_reload.py`) swaps it
        config = project.policy.purposes.get(purpose)
        if config is None:
            return []
        return view.lacking(subjects, purpose, config.legal_basis)

    def refreshed(records: list[AuditRecord]) -> None:
        tombstones.refresh()
        view.refresh()
        monitor.observe(records)

    sinks: list[Callable[[Alert], None]] = [Webhook(webhook_url)] if webhook_url else []
    monitor = AccessMonitor(erased_among, lacking_basis, settings, sinks, settings_for)
    if learn:
        monitor.learn(record for _, record in platform.audit.records())
    platform.audit.observers.append(refreshed)
    return monitor


def _role_settings(
    platform: Platform, base: MonitorSettings
) -> Callable[[AuditRecord], MonitorSettings | None]:
    """Per-role thresholds: a record's API key (`detail.key_id`) names the roles."""
    config = platform.project.config.observe.access_monitors
    roles_of_key: dict[str, tuple[str, ...]] = {}
    cached: dict[tuple[str, ...], MonitorSettings] = {}

    def settings_for(record: AuditRecord) -> MonitorSettings | None:
        key_id = record.detail.get("key_id") if record.detail else None
        if not config.roles or not isinstance(key_id, str):
            return None
        if key_id not in roles_of_key:
            roles_of_key.update({k.key_id: k.roles for k in platform.meta.api_keys()})
        roles = tuple(r for r in roles_of_key.get(key_id, ()) if r in config.roles)
        if not roles:
            return None
        if roles not in cached:
            rules = [config.roles[r] for r in roles]
            cached[roles] = MonitorSettings(
                window=base.window,
                factor=max((r.factor for r in rules if r.factor), default=base.factor),
                floor=max((r.floor for r in rules if r.floor is not None), default=base.floor),
                denied_threshold=max(
                    (r.denied_threshold for r in rules if r.denied_threshold),
                    default=base.denied_threshold,
                ),
                dedup_seconds=base.dedup_seconds,
            )
        return cached[roles]

    return settings_for


def monitors_of(platform: Platform) -> AccessMonitor | None:
    """The project's access monitors on this platform's audit log (None when
    `observe.access_monitors.enabled` is false). Called once per platform, by `guard_of`."""
    from tidegate.project.models import parse_duration

    config = platform.project.config.observe.access_monitors
    if not config.enabled:
        return None
    settings = MonitorSettings(
        window=parse_duration(config.window).total_seconds(),
        factor=config.factor,
        floor=config.floor,
        denied_threshold=config.denied_threshold,
        dedup_seconds=parse_duration(config.dedupe).total_seconds(),
    )
    url = os.environ.get(ENV_WEBHOOK) or platform.project.config.observe.alerts.target(config.owner)
    return attach_monitors(
        platform,
        webhook_url=url,
        settings=settings,
        settings_for=_role_settings(platform, settings),
    )


def monitors_from_env(platform: Platform) -> AccessMonitor | None:
    """Kept for callers of the old name: the project's monitors (`monitors_of`)."""
    return monitors_of(platform)
