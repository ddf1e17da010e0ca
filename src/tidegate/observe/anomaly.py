"""Anomalies in the pillars' time series: a z-score over a training window, with floors.

For a new value x of one series (product, metric, column):

1. training = the series' live points in `[at - training_window, at)`, narrowed to the
   same weekday (`seasonality: day_of_week`) or the same hour (`hour_of_day`), UTC;
   fewer than `min_training` points: no verdict;
2. z = (x - mean) / stddev (a flat history has stddev 0: any change past the floors
   is then an anomaly);
3. it is an anomaly when |z| >= `z_threshold`, the direction is one that alerts for
   this metric (a null % that *drops* is good news), and the change clears both floors:
   |x - mean| > the absolute floor and > `relative_floor` x |mean|. The floors are what
   keeps "47.0 became 47.3" from paging anyone.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime

from tidegate.observe.timeseries import ObserveStore, Point
from tidegate.project.observe_config import AnomalyConfig

#: metrics measured but not judged (derived, constant or judged elsewhere)
NOT_JUDGED = {
    "freshness.slo_s",
    "freshness.breach",
    "schema.columns",
    "schema.changed",
}
DEFAULT_DIRECTIONS = {
    "null_percent": "spike",
    "freshness.event_lag_s": "spike",
    "freshness.since_update_s": "spike",
    "volume.rows_removed": "spike",
}
#: absolute floors by metric, in the metric's unit (percentage points for null_percent;
#: one new or vanished value of a low-cardinality column is not news)
DEFAULT_FLOORS = {"null_percent": 1.0, "distinct_count": 1.0}


@dataclass(frozen=True)
class Anomaly:
    product: str
    metric: str
    column: str
    value: float
    mean: float
    stddev: float
    z: float
    training: int

    @property
    def direction(self) -> str:
        return "spike" if self.value > self.mean else "drop"

    def describe(self) -> str:
        where = f"{self.column}." if self.column else ""
        return (
            f"{where}{self.metric} {self.direction}: {self.value:.4g} vs mean {self.mean:.4g}"
            f" ± {self.stddev:.3g} (z={self.z:.1f}, {self.training} points)"
        )


def _season(at: float, seasonality: str) -> int | None:
    moment = datetime.fromtimestamp(at, UTC)
    if seasonality == "day_of_week":
        return moment.weekday()
    if seasonality == "hour_of_day":
        return moment.hour
    return None


def judge(
    value: float,
    history: list[Point],
    at: float,
    config: AnomalyConfig,
    *,
    metric: str,
) -> tuple[float, float, float] | None:
    """(mean, stddev, z) when `value` is an anomaly against `history`; None otherwise."""
    season = _season(at, config.seasonality)
    if season is not None:
        history = [p for p in history if _season(p.at, config.seasonality) == season]
    if len(history) < config.min_training:
        return None
    values = [p.value for p in history]
    mean = statistics.fmean(values)
    stddev = statistics.stdev(values) if len(values) > 1 else 0.0
    deviation = value - mean
    floor = config.floors.get(metric, DEFAULT_FLOORS.get(metric, config.absolute_floor))
    if abs(deviation) <= floor or abs(deviation) <= config.relative_floor * abs(mean):
        return None
    direction = config.directions.get(metric, DEFAULT_DIRECTIONS.get(metric, "both"))
    if (direction == "spike" and deviation < 0) or (direction == "drop" and deviation > 0):
        return None
    z = deviation / stddev if stddev > 0 else math.copysign(math.inf, deviation)
    if abs(z) < config.z_threshold:
        return None
    return mean, stddev, z


def detect(
    store: ObserveStore,
    product: str,
    metrics: list[tuple[str, str, float | None]],
    at: float,
    config: AnomalyConfig,
    *,
    kind: str = "build",
) -> list[Anomaly]:
    """Judge each new metric against its own history (points before `at`)."""
    from tidegate.project.models import parse_duration

    window = parse_duration(config.training_window).total_seconds()
    found = []
    for metric, column, value in metrics:
        if value is None or metric in NOT_JUDGED:
            continue
        history = store.series(product, metric, column, since=at - window, until=at, kind=kind)
        verdict = judge(value, history, at, config, metric=metric)
        if verdict is not None:
            mean, stddev, z = verdict
            found.append(Anomaly(product, metric, column, value, mean, stddev, z, len(history)))
    return found
