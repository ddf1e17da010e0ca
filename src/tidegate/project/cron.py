"""Five-field cron expressions (`minute hour day-of-month month day-of-week`), in UTC.

Parsing and "when does it fire next" are delegated to `cronsim` (the maintained parser
behind Healthchecks.io), so schedules mean what they mean
in classic cron, `*/n` in the day fields and the day-of-month OR day-of-week rule
included. A hand-written parser disagreed with classic cron on about one expression in
six. This module adds what a project file needs on top: the `@daily`-style shorthands,
and an error message that names the expression and says what is wrong, including dates
that never exist (`0 9 31 4 *`, "April 31st"), which cronsim rejects as it parses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cronsim import CronSim, CronSimError

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EXPECTED = (
    "expected 5 fields (minute hour day-of-month month day-of-week) "
    "or @hourly/@daily/@weekly/@monthly/@yearly"
)
# An arbitrary fixed moment: parsing does not depend on it.
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cron:
    """A validated expression (shorthands expanded)."""

    expression: str
    fields: str

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first whole minute strictly after `moment` (UTC) that the expression matches."""
        start = moment.astimezone(dt.UTC).replace(second=0, microsecond=0)
        try:
            return next(CronSim(self.fields, start))
        except StopIteration:
            raise ValueError(f"{self.expression!r} never fires") from None


def parse_cron(expression: str) -> Cron:
    """Parse or raise ValueError saying which field is wrong and why."""
    text = expression.strip()
    fields = _SHORTHANDS.get(text.lower(), text)
    if text.startswith("@") and text.lower() not in _SHORTHANDS:
        raise ValueError(f"{expression!r} is not a cron expression: {_EXPECTED}")
    if len(fields.split()) != 5:
        raise ValueError(f"{expression!r} is not a cron expression: {_EXPECTED}")
    try:
        CronSim(fields, _EPOCH)
    except CronSimError as err:
        reason = str(err).rstrip(".").lower()
        if reason == "bad day-of-month":
            reason = "bad day of month (out of range, or a date that never exists such as 31 4)"
        raise ValueError(f"{expression!r} is not a valid cron expression: {reason}") from None
    return Cron(expression=expression, fields=fields)


def next_fire(expression: str, after: dt.datetime) -> dt.datetime:
    """The first whole minute strictly after `after` (UTC) that the expression matches."""
    return parse_cron(expression).next_after(after)
