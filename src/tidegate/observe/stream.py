"""Observing incremental updates: what the stream worker changed, per product, per batch.

Builds are observed in full by `hooks.BuildObserver`. A micro-batch touches a handful
of keys, so measuring every pillar on it would cost more than the update itself: the
worker records volume (rows upserted, deleted) and freshness (event-time lag) as time
series points of kind `incremental`, and OpenLineage gets one START/COMPLETE pair per
`batch_updates` updates (batched by `LineageEmitter.incremental_update`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from tidegate.observe.hooks import metadata_path, never_raises
from tidegate.observe.timeseries import ObserveStore

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)
TABLE_LEVEL = ""  # the column name used for product-level metrics


class StreamObserver:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.project = platform.project

    @functools.cached_property
    def lineage(self) -> Any:
        from tidegate.observe.openlineage import LineageEmitter

        return LineageEmitter(self.project)

    @never_raises
    def updated(self, product: str, upserted: int, deleted: int, lag_seconds: float) -> None:
        """One micro-batch changed `product`: record volume and freshness, count lineage."""
        version = self.platform.meta.live_version(product)
        with ObserveStore(metadata_path(self.platform)) as store:
            store.add_points(
                product,
                version.version if version else None,
                time.time(),
                "incremental",
                "live",
                [
                    ("rows_upserted", TABLE_LEVEL, float(upserted)),
                    ("rows_deleted", TABLE_LEVEL, float(deleted)),
                    ("rows_changed", TABLE_LEVEL, float(upserted + deleted)),
                    ("event_lag_seconds", TABLE_LEVEL, float(lag_seconds)),
                ],
            )
        self.lineage.incremental_update(product, upserted + deleted)

    @never_raises
    def close(self) -> None:
        if "lineage" in self.__dict__:
            self.lineage.flush()
