"""Alerts: logged always, POSTed as Slack-compatible JSON, routed by product owner, deduplicated.

Routing: `observe.alerts.owners[<owner>]` (a URL, or `env:VARIABLE`), else the default
webhook (`webhook_url`, or the variable named by `webhook_env`), else only the log. The
same alert (same product, kind and subject, e.g. the same failing checks) is sent once
per `dedupe` window; repeats are counted, not sent. A webhook that fails is logged and
never fails the build that raised the alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tidegate.observe.timeseries import ObserveStore
from tidegate.project.observe_config import AlertsConfig

log = logging.getLogger(__name__)
ICONS = {"error": ":rotating_light:", "warn": ":warning:"}


@dataclass(frozen=True)
class Alert:
    product: str
    owner: str
    kind: str  # quality_gate | quality_warning | anomaly | schema_change
    severity: str  # error | warn
    title: str
    lines: tuple[str, ...] = ()
    subject: str = ""  # what makes two alerts the same (e.g. the failing checks)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.product}|{self.kind}|{self.subject}"

    def payload(self) -> dict[str, Any]:
        icon = ICONS.get(self.severity, "")
        text = f"{icon} tidegate *{self.product}* (owner {self.owner}): {self.title}"
        if self.lines:
            text += "\n" + "\n".join(f"• {line}" for line in self.lines)
        return {
            "text": text,
            "product": self.product,
            "owner": self.owner,
            "kind": self.kind,
            "severity": self.severity,
            "details": self.details,
        }


class AlertRouter:
    def __init__(self, config: AlertsConfig, store: ObserveStore) -> None:
        self.config = config
        self.store = store

    def route(self, owner: str) -> str | None:
        return self.config.target(owner)  # shared with the access monitors

    def send(self, alert: Alert, now: float | None = None) -> bool:
        """Log and deliver unless a duplicate; returns whether it was sent."""
        from tidegate.project.models import parse_duration

        window = parse_duration(self.config.dedupe).total_seconds()
        if not self.store.should_send(alert.key, window, now):
            log.info("alert for %s deduplicated: %s", alert.product, alert.title)
            return False
        log.warning(
            "alert [%s] %s: %s%s",
            alert.severity,
            alert.product,
            alert.title,
            "".join(f"; {line}" for line in alert.lines),
        )
        url = self.route(alert.owner)
        if url:
            import httpx

            try:
                response = httpx.post(url, json=alert.payload(), timeout=10)
                if response.status_code >= 300:
                    log.warning(
                        "alert webhook for %s answered %s", alert.product, response.status_code
                    )
            except httpx.HTTPError as err:
                log.warning("alert webhook for %s failed: %s", alert.product, err)
        return True
