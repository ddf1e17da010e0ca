"""Prometheus metrics: `/metrics` on the API app (`instrument(app, platform)`).

Two sources, so that what the API process shows is true for every process:

* read at scrape time from the metadata store and the event log: build and sync runs
  (durations, outcomes), product freshness against the SLO, ingest (records per topic)
  and consumer lag. Builds, syncs and the worker usually run in other processes;
* measured in the API process itself (an ASGI wrapper): request latency histograms, and the guard's
  decisions on entity reads by purpose (allowed, filtered out, denied, unauthenticated).

prometheus-client is the reference client for the exposition format; the registry is
per app, never the global one, so several apps (tests) do not share series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidegate.meta.parts import SlotState
from tidegate.observe.slo import SloState

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from tidegate.platform import Platform

WORKER_GROUP = "tidegate-worker"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
DECISIONS = {200: "allowed", 404: "filtered_or_absent", 403: "denied", 401: "unauthenticated"}

#: builds in this process (the metadata table has them all; this is for logs and tests)
_LOCAL_BUILDS: dict[tuple[str, str], int] = {}


def record_build(product: str, outcome: str, seconds: float) -> None:
    _LOCAL_BUILDS[(product, outcome)] = _LOCAL_BUILDS.get((product, outcome), 0) + 1


@dataclass(frozen=True)
class SloReport:
    """What the SLO judgement says now (`products/slo.py` gathers it; observe/ cannot
    reach the planner, so the app hands a function that returns this)."""

    products: Sequence[SloState]
    compliance: dict[str, dict[str, float]]
    slots: Sequence[SlotState]


class PlatformCollector:
    """Series computed from stored state at each scrape."""

    def __init__(self, platform: Platform, slo: Callable[[], SloReport] | None = None) -> None:
        self.platform = platform
        self.slo = slo

    def _runs(self) -> list[tuple[str, str, str, float]]:
        return self.platform.meta.finished_runs()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        runs = self._runs()
        for kind, label in (("build", "product"), ("sync", "sync")):
            outcomes = CounterMetricFamily(
                f"tidegate_{kind}_runs",
                f"{kind.capitalize()} runs by outcome",
                labels=[label, "outcome"],
            )
            durations = HistogramMetricFamily(
                f"tidegate_{kind}_duration_seconds",
                f"{kind.capitalize()} run durations",
                labels=[label],
            )
            by_target: dict[str, list[float]] = {}
            counts: dict[tuple[str, str], int] = {}
            for run_kind, target, status, seconds in runs:
                if run_kind != kind:
                    continue
                counts[(target, status)] = counts.get((target, status), 0) + 1
                if seconds is not None:
                    by_target.setdefault(target, []).append(float(seconds))
            for (target, status), count in sorted(counts.items()):
                outcomes.add_metric([target, status], count)
            for target, values in sorted(by_target.items()):
                buckets = [(str(b), sum(1 for v in values if v <= b)) for b in BUCKETS]
                buckets.append(("+Inf", len(values)))
                durations.add_metric([target], buckets, sum(values))
            yield outcomes
            yield durations
        yield from self._freshness()
        yield from self._ingest()

    def _freshness(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        project = self.platform.project
        now = time.time()
        age = GaugeMetricFamily(
            "tidegate_product_freshness_seconds",
            "Seconds since the product last changed (build or incremental update)",
            labels=["product"],
        )
        slo = GaugeMetricFamily(
            "tidegate_product_freshness_slo_seconds", "Declared freshness", labels=["product"]
        )
        breach = GaugeMetricFamily(
            "tidegate_product_slo_breach",
            "1 while the product is behind its freshness SLO (the judgement `status` and"
            " `explain` show)",
            labels=["product", "mode"],
        )
        lag = GaugeMetricFamily(
            "tidegate_product_lag_seconds",
            "Seconds the product is behind (+Inf when never built)",
            labels=["product", "mode"],
        )
        compliance = GaugeMetricFamily(
            "tidegate_product_slo_compliance_ratio",
            "Share of sampled time within the freshness SLO over the window",
            labels=["product", "window"],
        )
        breaches = CounterMetricFamily(
            "tidegate_product_slo_breaches",
            "Incremental updates slower than the SLO",
            labels=["product"],
        )
        updates = self.platform.meta.freshness.all()
        for name in sorted(project.products):
            live = self.platform.meta.live_version(name)
            update = updates.get(name)
            last = max(
                [
                    t
                    for t in (
                        live.built_at if live else None,
                        update.last_update if update else None,
                    )
                    if t
                ]
                or [0.0]
            )
            slo.add_metric([name], project.freshness_seconds(name))
            breaches.add_metric([name], update.breaches if update else 0)
            if last:
                age.add_metric([name], now - last)
        if self.slo is not None:
            report = self.slo()
            for state in report.products:
                breach.add_metric([state.product, state.mode], float(not state.within))
                lag.add_metric([state.product, state.mode], state.lag)
            for product, windows in sorted(report.compliance.items()):
                for window, share in windows.items():
                    compliance.add_metric([product, window], share)
            yield from self._slots(report.slots)
        yield from (age, slo, breach, lag, compliance, breaches)

    def _slots(self, slots: Sequence[SlotState]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        lag_bytes = GaugeMetricFamily(
            "tidegate_cdc_slot_lag_bytes",
            "WAL bytes between the server's flushed position and the slot's confirmed LSN",
            labels=["source", "slot"],
        )
        lag_seconds = GaugeMetricFamily(
            "tidegate_cdc_slot_lag_seconds",
            "Age of the oldest change waiting in the slot (0 when caught up)",
            labels=["source", "slot"],
        )
        failing = GaugeMetricFamily(
            "tidegate_cdc_capture_failing",
            "1 while the capture of the source fails (slot dropped, PostgreSQL unreachable)",
            labels=["source", "slot"],
        )
        for state in slots:
            labels = [state.source, state.slot]
            if state.lag_bytes is not None:
                lag_bytes.add_metric(labels, state.lag_bytes)
            if state.lag_seconds is not None:
                lag_seconds.add_metric(labels, state.lag_seconds)
            failing.add_metric(labels, float(state.error is not None))
        yield from (lag_bytes, lag_seconds, failing)

    def _ingest(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        records = CounterMetricFamily(
            "tidegate_ingest_records",
            "Records appended to each stream source's topic (rate() = ingest rate)",
            labels=["topic"],
        )
        lag = GaugeMetricFamily(
            "tidegate_consumer_lag_records",
            "Records the stream worker has not applied yet",
            labels=["topic", "group"],
        )
        from tidegate.project.project import stream_sources

        topics = sorted({s.topic_name for s in stream_sources(self.platform.project).values()})
        if topics:
            try:
                event_log = self.platform.event_log
                for topic in topics:
                    ends = event_log.end_offsets(topic)
                    committed = event_log.committed(WORKER_GROUP, topic)
                    records.add_metric([topic], sum(ends.values()))
                    lag.add_metric(
                        [topic, WORKER_GROUP],
                        sum(max(0, end - committed.get(p, 0)) for p, end in ends.items()),
                    )
            except Exception:  # a log that cannot be read now: no samples this scrape
                pass
        yield records
        yield lag
        yield self._unknown_fields()

    def _unknown_fields(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        from tidegate.ingest.unknown import unknown_field_totals
        from tidegate.project.project import stream_sources

        unknown = CounterMetricFamily(
            "tidegate_ingest_unknown_fields",
            "Accepted events carrying a field their source does not declare, by field "
            '(field="" counts events), under the source\'s unknown_fields policy',
            labels=["source", "field", "policy"],
        )
        streams = stream_sources(self.platform.project)
        totals = unknown_field_totals(self.platform.meta.observations, streams)
        for source, fields in sorted(totals.items()):
            policy = streams[source].unknown_fields
            for name, count in sorted(fields.items()):
                unknown.add_metric([source, name, policy], count)
        return unknown


ENTITY = re.compile(r"^/v1/products/[^/]+/entities/[^/]+$")
ENTITY_ROUTE = "/v1/products/{product}/entities/{key}"
ROUTES = (
    (ENTITY, ENTITY_ROUTE),
    (re.compile(r"^/v1/products/[^/]+/lookup$"), "/v1/products/{product}/lookup"),
    (re.compile(r"^/v1/products/[^/]+$"), "/v1/products/{product}"),
    (re.compile(r"^/v1/events/[^/]+$"), "/v1/events/{source}"),
    (re.compile(r"^/v1/consent/[^/]+$"), "/v1/consent/{subject}"),
    (re.compile(r"^/v1/subjects/[^/]+$"), "/v1/subjects/{subject}"),
)
FIXED_ROUTES = frozenset(
    {
        "/v1/health",
        "/v1/health/live",
        "/v1/health/ready",
        "/v1/products",
        "/v1/consent",
        "/openapi.json",
        "/docs",
        "/docs/init.js",
    }
)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: the label of every path no route knows: 1,000 random paths once grew /metrics to 122 MB
OTHER = "other"


def route_of(path: str) -> str:
    """A bounded route label for a request path: a known route's template, or `other`."""
    if path in FIXED_ROUTES:
        return path
    for pattern, label in ROUTES:
        if pattern.match(path):
            return label
    return OTHER


def method_of(method: str) -> str:
    """A bounded method label (HTTP lets a client send any token as a method)."""
    return method if method in METHODS else OTHER


def instrument(
    app: ASGIApp, platform: Platform, slo: Callable[[], SloReport] | None = None
) -> ASGIApp:
    """Wrap an ASGI app: serve `/metrics`, time every request, count guard decisions.
    `slo`: the SLO judgement of every product (breach, lag, compliance, CDC slots)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry()
    latency = Histogram(
        "tidegate_api_request_duration_seconds",
        "API request latency",
        ["route", "method", "status"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )
    decisions = Counter(
        "tidegate_guard_decisions",
        "Entity reads by declared purpose and the guard's decision",
        ["purpose", "decision"],
        registry=registry,
    )
    registry.register(PlatformCollector(platform, slo))
    purposes = set(platform.project.policy.purposes)
    # bounded: route, method and status labels are (route_of, method_of, DECISIONS)
    timers: dict[tuple[str, str, str], Any] = {}
    counters: dict[tuple[str, str], Any] = {}

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/metrics":
            body = generate_latest(registry)
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":  # the status the app answered
                status["code"] = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            route = route_of(path)
            labels = (route, method_of(scope.get("method", "")), str(status["code"]))
            timer = timers.get(labels)
            if timer is None:  # labels() costs a lock and a lookup: once per label set
                timer = timers[labels] = latency.labels(*labels)
            timer.observe(time.perf_counter() - started)
            if route is ENTITY_ROUTE:
                sent: dict[bytes, bytes] = dict(scope.get("headers") or [])
                purpose = sent.get(b"x-purpose", b"").decode("latin-1") or "none"
                if purpose not in purposes and purpose != "none":
                    purpose = "undeclared"  # keeps label values bounded
                decision = (purpose, DECISIONS.get(status["code"], "error"))
                counter = counters.get(decision)
                if counter is None:
                    counter = counters[decision] = decisions.labels(*decision)
                counter.inc()

    return wrapped
