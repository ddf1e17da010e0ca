"""Load sources, then build each product in dependency order and publish it atomically.

Publishing a version means, in this order: its rows are written to the online store
under the new version number (by the warehouse: on Spark, from every partition in
parallel), the warehouse view flips to it, the online pointer flips, and the metadata
store records it live. A failure at any step leaves the previous version serving; the
half-built version is dropped, in the warehouse and in the online store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tidegate.audit.log import AuditRecord
from tidegate.errors import BuildError, TidegateError
from tidegate.meta.base import ProductVersion
from tidegate.observe.hooks import BuildObserver
from tidegate.platform import Platform
from tidegate.privacy.tombstones import (
    ensure_purged,
    purge_erased,
    without_erased_arrow,
    without_erased_sql,
)
from tidegate.project.models import FileSource
from tidegate.project.project import is_stream, stream_sources
from tidegate.store.sources import file_select, read_table_source
from tidegate.store.warehouse import version_table

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]  # (name, status)


@dataclass(frozen=True)
class BuildResult:
    product: str
    version: int | None
    rows: int
    seconds: float
    status: str  # live | failed
    error: str = ""


def load_sources(platform: Platform, names: list[str] | None = None) -> dict[str, int]:
    project = platform.project
    loaded: dict[str, int] = {}
    for name in names or list(project.sources):
        source = project.sources[name]
        if is_stream(source.config):  # kept current by the stream worker, not loaded
            from tidegate.ingest.raw import ensure_stream_table

            with platform.warehouse.cursor() as cur:
                loaded[name] = ensure_stream_table(cur, stream_sources(project)[name])
            continue
        # erased subjects never come back, and are never even written (privacy/)
        if platform.warehouse.reads_sources:  # e.g. Spark: its executors read the files
            rows = platform.warehouse.load_source(project, source)
        elif isinstance(source.config, FileSource):
            select = without_erased_sql(platform, name, file_select(project, source))
            rows = platform.warehouse.load_source_sql(name, select)
        else:
            table = without_erased_arrow(platform, name, read_table_source(project, source))
            types = {c: s.type for c, s in source.columns.items()}
            rows = platform.warehouse.load_source_arrow(name, table, types)
        rows -= purge_erased(platform, name)  # a tombstone written meanwhile
        loaded[name] = rows
        log.info("loaded source %s: %s rows", name, rows)
    return loaded


def build_products(
    platform: Platform,
    only: list[str] | None = None,
    progress: Progress | None = None,
    principal: str = "tidegate",
    accept_anomalies: bool = False,
) -> list[BuildResult]:
    project = platform.project
    unknown = sorted(set(only or ()) - set(project.products))
    if unknown:
        known = ", ".join(sorted(project.products))
        raise TidegateError(f"unknown product(s): {', '.join(unknown)} (known: {known})")
    order = project.downstream_of(set(only)) if only else project.build_order()
    ensure_purged(platform)  # an erasure holds even if it could not reach the warehouse
    results: list[BuildResult] = []
    failed: set[str] = set()
    # quality gate (and anomaly gate), pillars, lineage events (observe/)
    observer = BuildObserver(platform, accept_anomalies=accept_anomalies)
    for name in order:
        product = project.products[name]
        if product.depends_on & failed:
            results.append(BuildResult(name, None, 0, 0.0, "skipped", "an upstream product failed"))
            failed.add(name)
            continue
        if progress:
            progress(name, "building")
        started = time.perf_counter()
        run_id = platform.meta.start_run("build", name)
        version = platform.meta.next_version(name)
        observer.started(name, version)
        try:
            rows = platform.warehouse.build_version(product, project, version)
            observer.gate(name, version)  # failed `error` checks raise: not published
            _publish_online(platform, name, version, product.config.key)
        except (TidegateError, Exception) as err:
            platform.warehouse.drop_version(name, version)
            _discard_online(platform, name, version)
            message = (
                err.message if isinstance(err, TidegateError) else f"{type(err).__name__}: {err}"
            )
            platform.meta.finish_run(run_id, "failed", {"version": version}, message)
            platform.meta.publish_version(
                ProductVersion(
                    name, version, version_table(name, version), 0, time.time(), "failed"
                )
            )
            failed.add(name)
            seconds = time.perf_counter() - started
            results.append(BuildResult(name, version, 0, seconds, "failed", message))
            log.warning("build of %s failed: %s", name, message)
            observer.failed(name, version, message)
            if progress:
                progress(name, "failed")
            continue
        seconds = time.perf_counter() - started
        platform.meta.publish_version(
            ProductVersion(name, version, version_table(name, version), rows, time.time(), "live")
        )
        platform.meta.finish_run(
            run_id, "live", {"version": version, "rows": rows, "seconds": seconds}
        )
        platform.audit.append(
            AuditRecord(
                action="build",
                principal=principal,
                product=name,
                rows=rows,
                detail={"version": version, "seconds": round(seconds, 3)},
            )
        )
        results.append(BuildResult(name, version, rows, seconds, "live"))
        observer.published(name, version, rows, seconds)
        if progress:
            progress(name, "live")
    return results


def _publish_online(platform: Platform, product: str, version: int, key: str) -> None:
    """Write the version's rows, then flip the warehouse and the online pointer, each in
    one step, only once every row is written (by every partition, on Spark)."""
    online = platform.online
    done = platform.warehouse.publish_online(product, version, key, online.writer_spec())
    log.info(
        "published %s v%s online: %s rows from %s %s in %.2fs",
        *(product, version, done.rows, done.partitions, done.where, done.seconds),
    )
    platform.warehouse.publish(product, version)
    online.activate(product, version)


def _discard_online(platform: Platform, product: str, version: int) -> None:
    """Forget what some writers (partitions) put under a version that failed; the next
    activation would drop it too, so a store that is down only earns a warning."""
    try:
        platform.online.discard(product, version)
    except Exception as err:  # the build's own error is what the caller must see
        log.warning("could not discard online version %s of %s: %s", version, product, err)


def ensure_built(platform: Platform) -> None:
    missing = [n for n in platform.project.products if platform.meta.live_version(n) is None]
    if missing:
        raise BuildError(f"not built yet: {', '.join(missing)}; run `tidegate build` first")
