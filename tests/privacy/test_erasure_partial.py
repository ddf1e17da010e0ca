"""An erasure that could reach only the metadata (the warehouse was held elsewhere) left
the tombstone and nothing else: the sources and the live product versions still hold the
subject. Every later sync and every rebuild (a scheduled one loads no source) must keep
the subject out anyway: nothing may bring an erased person back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tidegate.demo.runner import crm_rows
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.privacy.tombstones import erasure_store, tombstones_of
from tidegate.products.builder import build_products


def _count(platform: Platform, relation: str, subject: str) -> int:
    with platform.warehouse.cursor() as cur:
        row = cur.execute(
            f"SELECT count(*) FROM {relation} WHERE CAST(customer_id AS VARCHAR) = ?", [subject]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _a_synced_subject(demo_copy: Path, scratch: Path) -> str:
    """Someone the audience sync sends (consented to marketing.email), found on a copy."""
    shutil.copytree(demo_copy, scratch)
    with Platform.open(scratch) as platform:
        run_sync(platform, "crm_audience")
        rows = crm_rows(platform)
    assert rows
    return str(min(int(r["customer_id"]) for r in rows))


def test_a_tombstone_alone_keeps_the_subject_out_of_syncs_and_rebuilds(
    demo_copy: Path, tmp_path: Path
) -> None:
    subject = _a_synced_subject(demo_copy, tmp_path / "scratch")
    with Platform.open(demo_copy) as platform:
        tombstones = tombstones_of(platform)
        erasure_store(platform.meta).add_tombstone(tombstones.hash(subject), time.time(), "t")
        assert _count(platform, 'raw."customers"', subject) == 1  # the source still has it
        assert _count(platform, 'products."marketing_audience"', subject) == 1

        report = run_sync(platform, "crm_audience")  # no rebuild in between
        sent = {str(r["customer_id"]) for r in crm_rows(platform)}
        assert sent, report
        assert subject not in sent

        results = build_products(platform, principal="scheduler")  # loads no source
        assert all(r.status == "live" for r in results), results
        assert _count(platform, 'raw."customers"', subject) == 0
        for product in platform.project.products:
            assert _count(platform, f'products."{product}"', subject) == 0, product
            assert platform.online.read(product, subject) is None, product
        run_sync(platform, "crm_audience")
        assert subject not in {str(r["customer_id"]) for r in crm_rows(platform)}


HOLD = """
import sys, time, duckdb
db = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def test_an_access_request_the_api_cannot_complete_is_a_503(demo_copy: Path) -> None:
    import subprocess
    import sys

    import httpx

    from tidegate.api import create_app
    from tidegate.demo.runner import BackgroundServer, _free_port
    from tidegate.platform.keys import create_key

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_copy / ".tidegate" / "warehouse.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    platform = Platform.open(demo_copy)
    try:
        assert holder.stdout.readline().strip() == "holding"
        platform.lock_timeout = 0.5
        dpo = create_key(platform.meta, "dpo-tool", ["dpo"])[0]
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{server.port}/v1/subjects/42",
                headers={"Authorization": f"Bearer {dpo}"},
                timeout=30,
            )
        finally:
            server.stop()
    finally:
        platform.close()
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["complete"] is False
    assert any("warehouse unavailable" in m and f"PID {holder.pid}" in m for m in body["missing"])
