"""Is a product within its freshness SLO now? One judgement for `status`, `/metrics`
and `explain`, so the three never disagree.

A product's **lag** is how far behind the truth it may be, in seconds:

* **static** and **batch** products are current as of their last refresh (a build, or
  the scheduler's check that nothing upstream changed since it), so their lag is the
  time since then: one older than its SLO is a breach, whether or not anyone noticed;
* an **incremental** product is current unless changes wait for it: its lag is how
  long the oldest waiting change has waited (an unapplied upstream change, a record
  on its topics the worker has not applied, a change still in a CDC slot), so an idle
  one with nothing waiting is fresh however long ago it last changed;
* a product never built has no data: a breach.

SLO compliance history: the runtime samples every product's judgement every
`SAMPLE_EVERY` seconds into the metadata store; the share of sampled time within SLO
over the last hour, day and week is what `status` and `/metrics` show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidegate.meta.parts import Freshness

SAMPLE_EVERY = 10.0
#: name -> seconds of the compliance windows shown
WINDOWS = {"1h": 3600.0, "1d": 86_400.0, "7d": 7 * 86_400.0}
KEEP_SAMPLES = 8 * 86_400.0


@dataclass(frozen=True)
class SloState:
    product: str
    mode: str
    slo: float
    lag: float  # seconds behind; inf when never built
    within: bool
    last_refresh: float | None
    reason: str


def judge(
    product: str,
    mode: str,
    slo: float,
    seen: Freshness | None,
    built_at: float | None,
    waiting: float,
    now: float,
) -> SloState:
    """The SLO state of one product. `waiting`: seconds the oldest change not yet applied
    to it has waited upstream (topics, CDC slots; 0 when none)."""
    refreshes = [t for t in (built_at, seen.last_update if seen else None) if t]
    last = max(refreshes) if refreshes else None
    if last is None:
        return SloState(product, mode, slo, math.inf, False, None, "never built")
    if mode == "incremental":
        pending = max(seen.current_lag(now) if seen else 0.0, waiting)
        reason = (
            "no change waiting" if pending == 0 else f"oldest waiting change {pending:.1f}s old"
        )
        return SloState(product, mode, slo, pending, pending <= slo, last, reason)
    age = max(0.0, now - last)
    if seen is not None and seen.stale_since is not None:
        reason = f"upstream changed {max(0.0, now - seen.stale_since):.1f}s ago, not rebuilt"
    else:
        reason = f"last refreshed {age:.1f}s ago"
    return SloState(product, mode, slo, age, age <= slo, last, reason)
