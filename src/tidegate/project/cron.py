"""Five-field cron expressions (`minute hour day-of-month month day-of-week`), in UTC.

Small on purpose: lists (`1,15`), ranges (`1-5`), steps (`*/15`, `10-50/10`), names
(`jan`, `mon`), and the usual shorthands (`@hourly`, `@daily`, `@weekly`, `@monthly`,
`@yearly`). `parse_cron` validates and explains; `next_fire` finds the next minute at or
after a moment. As in classic cron, when both day fields are restricted a day matches
either of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(_MONTHS)},
    4: {d: i for i, d in enumerate(_WEEKDAYS)},
}
_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def matches(self, moment: dt.datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours:
            return False
        if moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)


def _field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _value(first, index), _value(last, index)
        else:
            start = _value(body, index)
            end = high if step_text else start
        for bound in (start, end):
            if not low <= bound <= high:
                raise ValueError(f"{name}: {bound} is outside {low}-{high}")
        if start > end:
            raise ValueError(f"{name}: range {body!r} runs backwards")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_cron(expression: str) -> Cron:
    """Parse or raise ValueError saying which field is wrong and why."""
    text = _SHORTHANDS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"{expression!r} is not a cron expression: expected 5 fields "
            "(minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly"
        )
    try:
        fields = [_field(part, i) for i, part in enumerate(parts)]
    except ValueError as err:
        raise ValueError(f"{expression!r} is not a valid cron expression: {err}") from None
    minutes, hours, days, months, weekdays = fields
    return Cron(
        minutes, hours, days, months, weekdays, any_day=parts[2] == "*", any_weekday=parts[4] == "*"
    )


def next_fire(expression: str, after: dt.datetime) -> dt.datetime:
    """The first whole minute strictly after `after` (UTC) that the expression matches."""
    cron = parse_cron(expression)
    moment = after.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    limit = moment + dt.timedelta(days=366 * 5)
    while moment < limit:
        if moment.month not in cron.months:
            moment = (moment.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(
                day=1
            )
            continue
        if cron.matches(moment):
            return moment
        if moment.hour not in cron.hours:
            moment = moment.replace(minute=0) + dt.timedelta(hours=1)
        else:
            moment += dt.timedelta(minutes=1)
    raise ValueError(f"{expression!r} never fires")
