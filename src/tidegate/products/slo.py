"""Every product's SLO state, gathered once for `status`, `/metrics` and `explain`
(the judgement itself is `observe/slo.py`).

What waits upstream of an incremental product is read where it waits: the first
record on each of its topics the worker group has not committed (its age, from the
log's timestamp), and each CDC slot's last reported lag. Reading the log is cheap
(one record per partition) and needs no warehouse, so any process can judge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from tidegate.meta.parts import SlotState
from tidegate.observe.metrics import WORKER_GROUP, SloReport
from tidegate.observe.slo import KEEP_SAMPLES, WINDOWS, SloState, judge
from tidegate.platform import Platform
from tidegate.products.planner import ProductPlan, plan_project
from tidegate.project.project import cdc_slot, cdc_sources, stream_sources


def slo_states(
    platform: Platform, plans: dict[str, ProductPlan] | None = None, now: float | None = None
) -> list[SloState]:
    """The SLO state of every product, in build order."""
    plans = plans if plans is not None else plan_project(platform.project)
    now = time.time() if now is None else now
    seen = platform.meta.freshness.all()
    waits = _waiting(platform, {s for p in plans.values() for s in p.streams}, now)
    states = []
    for name, plan in plans.items():
        live = platform.meta.live_version(name)
        waiting = max([waits.get(s, 0.0) for s in plan.streams] or [0.0])
        states.append(
            judge(
                name,
                plan.mode,
                plan.freshness,
                seen.get(name),
                live.built_at if live else None,
                waiting,
                now,
            )
        )
    return states


def slot_states(platform: Platform) -> list[SlotState]:
    """The last report of each CDC source's slot (sources never captured left out)."""
    wanted = {cdc_slot(platform.project, c) for c in cdc_sources(platform.project).values()}
    return [s for s in platform.meta.cdc_positions.states() if s.slot in wanted]


def _waiting(platform: Platform, sources: Iterable[str], now: float) -> dict[str, float]:
    """Source -> seconds its oldest change not yet applied has waited (0: none)."""
    project = platform.project
    streams = stream_sources(project)
    captured = cdc_sources(project)
    slots = {s.slot: s for s in platform.meta.cdc_positions.states()} if captured else {}
    waits: dict[str, float] = {}
    for source in sorted(set(sources)):
        wait = _topic_wait(platform, streams[source].topic_name, now) if source in streams else 0
        if source in captured:
            slot = slots.get(cdc_slot(project, captured[source]))
            wait = max(wait, _slot_wait(slot, now))
        waits[source] = wait
    return waits


def _topic_wait(platform: Platform, topic: str, now: float) -> float:
    try:
        log = platform.event_log
        ends = log.end_offsets(topic)
        committed = log.committed(WORKER_GROUP, topic)
        oldest = math.inf
        for partition, end in ends.items():
            offset = committed.get(partition, 0)
            if offset < end:
                first = log.read(topic, partition, offset, 1)
                if first and first[0].timestamp:
                    oldest = min(oldest, first[0].timestamp)
    except Exception:  # a log that cannot be read now: nothing known to wait
        return 0.0
    return 0.0 if oldest == math.inf else max(0.0, now - oldest)


def _slot_wait(slot: SlotState | None, now: float) -> float:
    if slot is None:
        return 0.0
    if slot.error is not None:
        return math.inf  # capture failing: nothing keeps the product fresh
    if slot.lag_bytes:  # not caught up at the last report: those changes still wait
        return (slot.lag_seconds or 0.0) + max(0.0, now - slot.at)
    return slot.lag_seconds or 0.0


def compliance(platform: Platform, now: float | None = None) -> dict[str, dict[str, float]]:
    """Product -> window -> share of sampled time within SLO (windows without samples
    are left out)."""
    now = time.time() if now is None else now
    totals = {w: platform.meta.freshness.compliance(now - s) for w, s in WINDOWS.items()}
    out: dict[str, dict[str, float]] = {}
    for window, by_product in totals.items():
        for product, (within, sampled) in by_product.items():
            if sampled > 0:
                out.setdefault(product, {})[window] = within / sampled
    return out


def sample(platform: Platform, states: list[SloState], seconds: float, now: float) -> None:
    """Record one compliance sample per product, covering `seconds`."""
    platform.meta.freshness.sample([(s.product, now, seconds, s.within) for s in states])


def prune(platform: Platform, now: float) -> None:
    """Forget samples older than the longest window needs."""
    platform.meta.freshness.prune_samples(now - KEEP_SAMPLES)


def slo_report(platform: Platform) -> SloReport:
    """Everything `/metrics` shows of SLOs and CDC slots, judged now."""
    return SloReport(slo_states(platform), compliance(platform), slot_states(platform))
