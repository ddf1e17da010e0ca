"""The YAML shape of circuit breakers: `breakers:` on a sync, `sync_breakers:` on a product.

    breakers:
      max_removed: 5%        # a mirror run may delete at most 5% of the rows it wrote
      max_row_change: 30%    # the rows to hold may differ by at most 30% from last time
      on_quality_issue: block  # the live version failed a warn check or is anomalous
      # either threshold may be a row count instead: `max_removed: 100`

A run that would pass a threshold writes nothing, records why in the sync's history,
alerts once, and waits for `tidegate sync approve NAME` or a version back within the
thresholds. A product's `sync_breakers` are the default of every sync of the product;
a sync's own `breakers` override them field by field. `on_anomaly: block` on a product
keeps an anomalous version from being published at all (`observe/hooks.py`).

Imported by `project/models.py`: nothing of tidegate at module level.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_THRESHOLD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


class Threshold(BaseModel):
    """A share (`5%`) or a row count (`100`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    percent: bool

    def exceeded(self, rows: int, of: int) -> bool:
        """Whether `rows` out of `of` passes the threshold."""
        if self.percent:
            return of > 0 and 100.0 * rows / of > self.value
        return rows > self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g} rows"


def parse_threshold(value: Any) -> Threshold:
    if isinstance(value, Threshold):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a threshold is a share such as '5%' or a row count such as 100")
    match = _THRESHOLD.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a threshold like '5%' or 100")
    number, percent = float(match.group(1)), bool(match.group(2))
    if percent and number > 100:
        raise ValueError(f"{value!r}: a share is at most 100%")
    return Threshold(value=number, percent=percent)


ThresholdField = Annotated[
    Threshold,
    BeforeValidator(parse_threshold),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "a share such as '5%' or a row count such as 100",
        }
    ),
]


class BreakerPolicy(BaseModel):
    """Thresholds that stop a sync run before it writes; it waits for `sync approve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_removed: ThresholdField | None = Field(
        default=None,
        description=(
            "rows a mirror run may delete (left the product), as a share of the rows the "
            "sync holds ('5%') or a count (100)"
        ),
    )
    max_row_change: ThresholdField | None = Field(
        default=None,
        description=(
            "how far the rows to hold may differ from the rows the sync holds, up or "
            "down ('30%' or a count)"
        ),
    )

    on_quality_issue: Literal["block", "ignore"] | None = Field(
        default=None,
        description=(
            "block: do not sync a live version that failed a warn-severity check or whose "
            "metrics are anomalous (error checks already keep a version from publishing); "
            "default ignore"
        ),
    )

    def merged(self, override: BreakerPolicy | None) -> BreakerPolicy:
        """These thresholds with `override`'s where it sets them."""
        if override is None:
            return self
        return self.model_copy(update={f: getattr(override, f) for f in override.model_fields_set})

    @property
    def armed(self) -> bool:
        return (
            self.max_removed is not None
            or self.max_row_change is not None
            or self.on_quality_issue == "block"
        )
