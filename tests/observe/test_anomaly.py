"""Anomaly detection on simulated time series: noise stays quiet, real changes are caught."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tidegate.observe.anomaly import Anomaly, detect
from tidegate.observe.timeseries import ObserveStore
from tidegate.project.observe_config import AnomalyConfig

HOUR = 3600.0
START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def normal(rng: random.Random) -> list[tuple[str, str, float | None]]:
    """One hourly build of a healthy product: small noise on every metric."""
    return [
        ("volume.rows", "", round(10_000 * (1 + rng.gauss(0, 0.01)))),
        ("volume.rows_changed", "", round(400 * (1 + rng.gauss(0, 0.01)))),
        ("null_percent", "email", max(0.0, 5 + rng.gauss(0, 0.2))),
        ("null_percent", "customer_id", 0.0),
        ("mean", "lifetime_value", 100 + rng.gauss(0, 1.0)),
        ("stddev", "lifetime_value", 30 + rng.gauss(0, 0.3)),
        ("length_mean", "email", 18 + rng.gauss(0, 0.1)),
        ("distinct_count", "country", float(rng.choice([12, 12, 12, 13]))),
        ("freshness.since_update_s", "", HOUR + rng.gauss(0, 30)),
    ]


def simulate(store: ObserveStore, config: AnomalyConfig, hours: int) -> list[Anomaly]:
    """Feed `hours` hourly builds, judging each before storing it; return what alerted."""
    rng = random.Random(7)
    found: list[Anomaly] = []
    for hour in range(hours):
        at = START + hour * HOUR
        metrics = normal(rng)
        found += detect(store, "p", metrics, at, config)
        store.add_points("p", hour + 1, at, "build", "live", metrics)
    return found


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObserveStore]:
    with ObserveStore(tmp_path / "metadata.db") as opened:
        yield opened


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Anomaly]]:
    """A week of hourly builds with normal noise, simulated once."""
    path = tmp_path_factory.mktemp("week") / "metadata.db"
    with ObserveStore(path) as opened:
        found = simulate(opened, AnomalyConfig(), hours=7 * 24)
    return path, found


def test_a_week_of_normal_noise_raises_no_alert(week: tuple[Path, list[Anomaly]]) -> None:
    assert week[1] == []


@pytest.mark.parametrize(
    ("metric", "column", "value", "direction"),
    [
        ("volume.rows", "", 5_000.0, "drop"),
        ("null_percent", "email", 40.0, "spike"),
        ("mean", "lifetime_value", 160.0, "spike"),
        ("distinct_count", "country", 2.0, "drop"),
    ],
    ids=["volume-drop", "null-spike", "distribution-shift", "distinct-collapse"],
)
def test_injected_anomalies_are_detected(
    week: tuple[Path, list[Anomaly]], metric: str, column: str, value: float, direction: str
) -> None:
    config = AnomalyConfig()
    store = ObserveStore(week[0])
    at = START + 7 * 24 * HOUR
    rng = random.Random(99)
    metrics = [(m, c, value if (m, c) == (metric, column) else v) for m, c, v in normal(rng)]
    found = detect(store, "p", metrics, at, config)
    assert [(a.metric, a.column, a.direction) for a in found] == [(metric, column, direction)]
    assert abs(found[0].z) >= config.z_threshold
    store.close()


def test_direction_and_floors(store: ObserveStore) -> None:
    config = AnomalyConfig()
    simulate(store, config, hours=3 * 24)
    at = START + 3 * 24 * HOUR
    # fewer nulls is good news; a change inside the floors is noise, however large its z
    quiet = [("null_percent", "email", 0.0), ("mean", "lifetime_value", 104.0)]
    assert detect(store, "p", quiet, at, config) == []
    # without floors the same 4% move of the mean is an anomaly (z ≈ 4)
    strict = AnomalyConfig(relative_floor=0.0)
    assert [a.metric for a in detect(store, "p", quiet, at, strict)] == ["mean"]
    # a direction can be configured per metric
    only_spikes = AnomalyConfig(directions={"volume.rows": "spike"})
    assert detect(store, "p", [("volume.rows", "", 5_000.0)], at, only_spikes) == []


def test_minimum_training_size(store: ObserveStore) -> None:
    config = AnomalyConfig(min_training=7)
    for hour in range(6):
        store.add_points(
            "p", hour, START + hour * HOUR, "build", "live", [("volume.rows", "", 100)]
        )
    at = START + 6 * HOUR
    assert detect(store, "p", [("volume.rows", "", 1.0)], at, config) == []
    store.add_points("p", 6, at, "build", "live", [("volume.rows", "", 100)])
    found = detect(store, "p", [("volume.rows", "", 1.0)], at + HOUR, config)
    assert [a.metric for a in found] == ["volume.rows"]  # flat history: any real change


def test_failed_builds_do_not_train(store: ObserveStore) -> None:
    config = AnomalyConfig(min_training=3)
    for hour in range(5):
        store.add_points(
            "p", hour, START + hour * HOUR, "build", "live", [("volume.rows", "", 100)]
        )
        store.add_points(
            "p", hour, START + hour * HOUR, "build", "failed", [("volume.rows", "", 5)]
        )
    found = detect(store, "p", [("volume.rows", "", 5.0)], START + 5 * HOUR, config)
    assert [a.direction for a in found] == ["drop"]


def test_hour_of_day_seasonality(store: ObserveStore) -> None:
    """A nightly batch load triples the volume at 03:00: expected with seasonality."""
    for hour in range(10 * 24):
        rows = 50_000.0 if hour % 24 == 3 else 10_000.0 + (hour % 5)
        at = START + hour * HOUR
        store.add_points("p", hour, at, "build", "live", [("volume.rows", "", rows)])
    night = START + 10 * 24 * HOUR + 3 * HOUR
    seasonal = AnomalyConfig(seasonality="hour_of_day")
    assert detect(store, "p", [("volume.rows", "", 50_000.0)], night, seasonal) == []
    assert [
        a.metric
        for a in detect(store, "p", [("volume.rows", "", 50_000.0)], night, AnomalyConfig())
    ] == ["volume.rows"]
    # the nightly load that did not come is a drop, seen only with seasonality
    missing = detect(store, "p", [("volume.rows", "", 10_000.0)], night, seasonal)
    assert [a.direction for a in missing] == ["drop"]


def test_day_of_week_seasonality(store: ObserveStore) -> None:
    """Mondays are busy: with day_of_week seasonality a busy Monday is normal."""
    for day in range(21):
        at = START + day * 24 * HOUR
        rows = 30_000.0 if day % 7 == 0 else 10_000.0 + day
        store.add_points("p", day, at, "build", "live", [("volume.rows", "", rows)])
    monday = START + 21 * 24 * HOUR
    config = AnomalyConfig(seasonality="day_of_week", min_training=2, training_window="28d")
    assert detect(store, "p", [("volume.rows", "", 30_000.0)], monday, config) == []
    # a Monday as quiet as a Tuesday is the anomaly, and only seasonality sees it
    plain = AnomalyConfig(min_training=2, training_window="28d")
    quiet = [("volume.rows", "", 10_000.0)]
    assert detect(store, "p", quiet, monday, plain) == []
    assert [a.direction for a in detect(store, "p", quiet, monday, config)] == ["drop"]
