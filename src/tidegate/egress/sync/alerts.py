"""Alerts when a sync run fails or refused rows pass the sync's thresholds.

Every alert is logged (warning); when the sync names a webhook (`alerts.webhook_url`,
or the environment variable in `alerts.webhook_env`) it is also POSTed as
Slack-compatible JSON (`{"text": ...}` plus structured fields). A webhook that fails is
logged, never fails the sync.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from tidegate.project.models import AlertPolicy

if TYPE_CHECKING:
    from tidegate.egress.sync import SyncReport

log = logging.getLogger(__name__)


def reasons(report: SyncReport, policy: AlertPolicy) -> list[str]:
    found = []
    if report.run_error and policy.on_failure:
        found.append(f"the run failed: {report.run_error}")
    attempted = report.added + report.changed + report.failed
    if policy.failed_rows is not None and report.failed > policy.failed_rows:
        found.append(f"{report.failed} rows refused (threshold {policy.failed_rows})")
    if policy.failed_percent is not None and attempted:
        percent = 100.0 * report.failed / attempted
        if percent > policy.failed_percent:
            found.append(
                f"{percent:.1f}% of sent rows refused (threshold {policy.failed_percent:g}%)"
            )
    return found


def payload(report: SyncReport, found: list[str]) -> dict[str, Any]:
    text = f":rotating_light: tidegate sync *{report.sync}*: " + "; ".join(found)
    if report.errors:
        text += f"\nfirst error: {report.errors[0]}"
    return {
        "text": text,
        "sync": report.sync,
        "status": report.status,
        "reasons": found,
        "counts": report.counts(),
    }


def send_alerts(report: SyncReport, policy: AlertPolicy) -> list[str]:
    """Evaluate, log and deliver; returns the reasons (empty when nothing was wrong)."""
    found = reasons(report, policy)
    if not found:
        return found
    log.warning("sync %s alert: %s", report.sync, "; ".join(found))
    url = policy.webhook_url or os.environ.get(policy.webhook_env or "", "")
    if url:
        import httpx

        try:
            response = httpx.post(url, json=payload(report, found), timeout=10)
            if response.status_code >= 300:
                log.warning("sync %s: alert webhook answered %s", report.sync, response.status_code)
        except httpx.HTTPError as err:
            log.warning("sync %s: alert webhook failed: %s", report.sync, err)
    return found
