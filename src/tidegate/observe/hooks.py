"""The calls the builder makes into observe/: one object per `build_products` run.

    observer = BuildObserver(platform)
    observer.started(name, version)          # OpenLineage START
    rows = warehouse.build_version(...)
    observer.gate(name, version)             # pillars + quality checks; raises QualityGateError
    warehouse.publish(...)                   #   when an `error` check failed
    ...
    observer.published(name, version, rows, seconds)   # time series, anomalies, COMPLETE
    observer.failed(name, version, message)            # on any failure: FAIL

Only `gate` may stop a build: through failed `error` checks, and, for a product with
`on_anomaly: block`, through anomalous metrics (unless the build accepts them,
`tidegate build --accept-anomalies`); the previous version stays live either way.
Anything else that goes wrong in here is logged and the build goes on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tidegate.observe.alerts import Alert, AlertRouter
from tidegate.observe.pillars import Observation, measure
from tidegate.observe.quality import (
    QualityGateError,
    QualityReport,
    classified_columns,
    prune_quality_tables,
    run_checks,
    store_rows,
)
from tidegate.observe.timeseries import ObserveStore
from tidegate.store.warehouse import BUILDS, version_table

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def never_raises(method: F) -> F:
    """Observability must not break the path it observes."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except QualityGateError:
            raise
        except Exception:
            log.warning("observe: %s failed", method.__name__, exc_info=True)
            return None

    return wrapper  # type: ignore[return-value]


@dataclass
class _Pending:
    started: float
    run_id: str
    observation: Observation | None = None
    quality: QualityReport | None = None


class AnomalyGateError(QualityGateError):
    """A product with `on_anomaly: block` built an anomalous version: not published."""

    code = "anomaly_gate"


class BuildObserver:
    def __init__(
        self,
        platform: Platform,
        *,
        clock: Callable[[], float] = time.time,
        accept_anomalies: bool = False,
    ) -> None:
        self.platform = platform
        self.accept_anomalies = accept_anomalies
        self.project = platform.project
        self.config = platform.project.config.observe
        self.clock = clock
        self._pending: dict[tuple[str, int], _Pending] = {}

    def store(self) -> ObserveStore:
        return self.platform.meta.observations

    def _owner(self, name: str) -> str:
        return self.project.products[name].config.owner

    @functools.cached_property
    def lineage(self) -> Any:
        from tidegate.observe.openlineage import LineageEmitter

        return LineageEmitter(self.project)

    # ---------------------------------------------------------------- the four calls

    @never_raises
    def started(self, name: str, version: int) -> None:
        from uuid import uuid4

        pending = _Pending(self.clock(), str(uuid4()))
        self._pending[(name, version)] = pending
        self.lineage.build_started(name, version, pending.run_id)

    def gate(self, name: str, version: int) -> None:
        """Measure the pillars and run the checks on the new version; stop a bad one."""
        pending = self._pending.setdefault((name, version), _Pending(self.clock(), ""))
        report = self._measure_and_check(name, version, pending)
        if report is None:
            return
        if report.warnings:
            self._alert(
                name,
                "quality_warning",
                "warn",
                f"version {version}: {len(report.warnings)} warning check(s) failed",
                [r.summary() for r in report.warnings],
                subject=",".join(sorted(r.name for r in report.warnings)),
            )
        blocking = report.blocking
        if blocking:
            names = ", ".join(r.name for r in blocking)
            self._alert(
                name,
                "quality_gate",
                "error",
                f"version {version} not published: {names} failed; the previous version stays live",
                [r.summary() for r in blocking],
                subject=",".join(sorted(r.name for r in blocking)),
            )
            raise QualityGateError(
                f"product {name!r}: quality checks failed ({names}); version {version} is not "
                f"published and the previous version stays live. Failing rows: "
                f"tidegate quality show {name}",
                product=name,
                version=version,
                checks=[r.name for r in blocking],
            )
        self._anomaly_gate(name, version, pending)

    def _anomaly_gate(self, name: str, version: int, pending: _Pending) -> None:
        """`on_anomaly: block`: an anomalous version is not published (judged here, before
        publishing, against the published versions' history)."""
        product = self.project.products[name]
        if product.config.on_anomaly != "block" or self.accept_anomalies:
            return
        anomalies = self._anomalies(name, pending)
        if not anomalies:
            return
        lines = [a.describe() for a in anomalies]
        self._alert(
            name,
            "anomaly_gate",
            "error",
            f"version {version} not published: {len(anomalies)} anomalous metric(s); "
            "the previous version stays live",
            lines,
            subject=",".join(sorted(f"{a.column}.{a.metric}" for a in anomalies)),
        )
        raise AnomalyGateError(
            f"product {name!r}: version {version} is anomalous ({'; '.join(lines)}); it is "
            "not published and the previous version stays live. If the change is real: "
            f"tidegate build --product {name} --accept-anomalies",
            product=name,
            version=version,
        )

    @never_raises
    def _anomalies(self, name: str, pending: _Pending) -> list[Any]:
        from tidegate.observe.anomaly import detect

        observation = pending.observation
        if observation is None:
            return []
        with self.store() as store:
            return detect(store, name, observation.metrics, observation.at, self.config.anomaly)

    @never_raises
    def _measure_and_check(self, name: str, version: int, pending: _Pending) -> QualityReport:
        product = self.project.products[name]
        warehouse = self.platform.warehouse
        relation = f'{BUILDS}."{version_table(name, version)}"'
        previous = self.platform.meta.live_version(name)
        at = self.clock()
        with warehouse.cursor() as cursor, self.store() as store:
            previous_relation = None
            if previous is not None and warehouse.has_relation(BUILDS, previous.table):
                previous_relation = f'{BUILDS}."{previous.table}"'
            pending.observation = measure(
                cursor,
                name,
                version,
                relation,
                key=product.config.key,
                at=at,
                previous_relation=previous_relation,
                previous_schema=store.last_schema(name),
                previous_built_at=previous.built_at if previous else None,
                slo_seconds=self.project.freshness_seconds(name),
                private=classified_columns(product),
            )
            report = run_checks(
                cursor, product, self.project, version, keep_rows=self.config.failing_rows_kept
            )
            prune_quality_tables(cursor, name, self.config.quality_tables_kept)
            store.add_quality(store_rows(report, at))
        pending.quality = report
        return report

    @never_raises
    def published(self, name: str, version: int, rows: int, seconds: float) -> None:
        from tidegate.observe.anomaly import detect

        pending = self._pending.pop((name, version), None)
        observation = pending.observation if pending else None
        if observation is not None:
            with self.store() as store:
                anomalies = detect(
                    store, name, observation.metrics, observation.at, self.config.anomaly
                )
                store.add_points(
                    name, version, observation.at, "build", "live", observation.metrics
                )
                store.add_schema(observation.schema, "live")
            if anomalies:
                self._alert(
                    name,
                    "anomaly",
                    "warn",
                    f"version {version}: {len(anomalies)} anomalous metric(s)",
                    [a.describe() for a in anomalies],
                    subject=",".join(sorted(f"{a.column}.{a.metric}" for a in anomalies)),
                )
            change = observation.schema_change
            if change:
                self._alert(
                    name,
                    "schema_change",
                    "warn",
                    f"version {version} changed the schema",
                    change.lines(),
                    subject=observation.schema.fingerprint,
                )
        if pending is not None:
            self.lineage.build_completed(
                name, version, pending.run_id, rows, observation, pending.quality
            )
        from tidegate.observe import metrics

        metrics.record_build(name, "live", seconds)

    @never_raises
    def failed(self, name: str, version: int, message: str) -> None:
        pending = self._pending.pop((name, version), None)
        if pending is not None and pending.observation is not None:
            obs = pending.observation
            with self.store() as store:
                store.add_points(name, version, obs.at, "build", "failed", obs.metrics)
                store.add_schema(obs.schema, "failed")
        if pending is not None:
            self.lineage.build_failed(
                name, version, pending.run_id, message, pending.observation, pending.quality
            )
        from tidegate.observe import metrics

        metrics.record_build(name, "failed", 0.0)

    # ---------------------------------------------------------------- alerts

    def _alert(
        self, name: str, kind: str, severity: str, title: str, lines: list[str], *, subject: str
    ) -> None:
        alert = Alert(name, self._owner(name), kind, severity, title, tuple(lines), subject)
        with self.store() as store:
            AlertRouter(self.config.alerts, store).send(alert, self.clock())
