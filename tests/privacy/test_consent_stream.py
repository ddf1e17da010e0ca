"""Consent on a topic of the event log (`consent: {topic: ...}`): the stream worker records
valid messages in the ledger (audited, revocations propagated), dead-letters the others
with a reason, never records a redelivered message twice; the guard sees a revocation at
once. Embedded SQLite log end to end through `process_batch`, and one run on real Kafka."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.egress.sync import run_sync
from tidegate.errors import ConfigError
from tidegate.ingest.intake import CONSENT_SOURCE, open_intake, replay
from tidegate.log.base import Message, Record
from tidegate.meta.sqlite import sqlite_part
from tidegate.platform import Platform
from tidegate.privacy.consent import consent_ledger_of, consent_view_of
from tidegate.privacy.consent_input import consent_message
from tidegate.privacy.guard import AccessContext, guard_of
from tidegate.requests.propagation import propagator_for
from tidegate.runtime.worker import StreamWorker, run_worker

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_streamshop_consent", Path(__file__).parents[1] / "ingest" / "streamshop.py"
)
assert _spec is not None
assert _spec.loader is not None
streamshop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamshop)

TOPIC = "consent"
SPEC_TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # purposes 1, 2, 3

CONSENT_POLICY = """
purposes:
  marketing:
    legal_basis: consent
    tcf_purposes: [1, 3]
  analytics: {legal_basis: legitimate_interest}
  ads:
    legal_basis: consent
    data_uses: [marketing.advertising.third_party]
"""


def _write_project(root: Path, topic: str | None = TOPIC) -> Path:
    streamshop.write_stream_project(root)
    if topic is not None:
        (root / "tidegate.yml").write_text(f"name: streamshop\nconsent: {{topic: {topic}}}\n")
    (root / "policies" / "consent.yml").write_text(CONSENT_POLICY)
    product = root / "products" / "customer_orders.yml"
    text = product.read_text()
    assert text.count("purposes: [support]") == 1
    product.write_text(text.replace("purposes: [support]", "purposes: [support, marketing]"))
    (root / "syncs").mkdir()
    (root / "syncs" / "crm.yml").write_text(
        "name: crm\nproduct: customer_orders\npurpose: marketing\n"
        "destination: {type: sqlite, path: crm.db, table: audience}\n"
        "mode: upsert\ntrigger: manual\n"
    )
    return root


def _build(root: Path) -> Path:
    from tidegate.products.builder import build_products, load_sources

    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _build(_write_project(tmp_path / "shop"))


def _drain(platform: Platform, topics: list[str], group: str = "consent-test") -> list[Record]:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer(group, topics)
    records: list[Record] = []
    try:
        while batch := consumer.poll(10_000, 0.2):
            records += batch
    finally:
        consumer.close()
        intake.close()
    return records


def _produce(worker: StreamWorker, *values: dict[str, Any] | bytes) -> None:
    messages = [Message(v[:8], v) if isinstance(v, bytes) else consent_message(v) for v in values]
    worker.intake.log.append(TOPIC, messages)


def _state(platform: Platform, subject: str) -> dict[str, tuple[str, str]]:
    """purpose -> (latest action, source) in ledger order."""
    return {r.purpose: (r.action, r.source) for r in consent_ledger_of(platform).history(subject)}


def _allowed(platform: Platform, subject: str, purpose: str) -> bool:
    view = consent_view_of(platform)
    view.refresh()
    basis = platform.project.policy.purposes[purpose].legal_basis
    return view.allowed(subject, purpose, basis)


def test_messages_reach_the_ledger_and_the_rejected_are_dead_lettered(project: Path) -> None:
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        assert TOPIC in worker.topics
        _produce(
            worker,
            {"subject": "1", "purpose": "marketing", "action": "grant", "evidence": "form v3"},
            {"subject": "2", "choices": [{"purpose": "marketing", "action": "grant"}]},
            {"subject": "2", "purpose": "marketing", "action": "revoke", "source": "crm"},
            {"subject": "3", "purpose": "analytics", "action": "object", "occurred_at": 1e9},
            {"subject": "4", "tcf": SPEC_TCF},
            {"subject": "5", "gpc": True},
            b"{not json",
            {"subject": "6", "purpose": "astrology", "action": "grant"},
            {"subject": "7", "purpose": "marketing", "action": "maybe"},
            {"subject": "8"},
            b"[1, 2]",
        )
        report = worker.process_batch(_drain(platform, worker.topics))
        assert (report.records, report.dead, report.applied, report.consent) == (11, 5, 6, 6)

        assert _state(platform, "1") == {"marketing": ("grant", "log")}
        assert _state(platform, "2") == {"marketing": ("revoke", "crm")}
        assert _state(platform, "3") == {"analytics": ("object", "log")}
        assert _state(platform, "4") == {"marketing": ("grant", "tcf")}
        assert _state(platform, "5") == {"ads": ("revoke", "gpc")}
        assert all(not consent_ledger_of(platform).history(s) for s in ("6", "7", "8"))
        assert _allowed(platform, "1", "marketing")
        assert not _allowed(platform, "2", "marketing")
        assert not _allowed(platform, "3", "analytics")
        assert _allowed(platform, "4", "marketing")

        first = consent_ledger_of(platform).history("1")[0]
        assert first.evidence.startswith("form v3 [log consent/")
        assert first.occurred_at > 1e9  # the record's log time, not unset
        assert consent_ledger_of(platform).history("3")[0].occurred_at == 1e9

        dead = worker.intake.dead
        letters = dead.list(CONSENT_SOURCE)
        assert len(letters) == 5
        assert all(d.topic == TOPIC and d.via == "log" for d in letters)
        reasons = {(d.key or b"").decode(): d.reason for d in letters}
        assert reasons["{not jso"] == "malformed JSON"
        assert "unknown purpose 'astrology'" in reasons["6"]
        assert reasons["7"].startswith("invalid consent message: action:")
        assert reasons["8"].startswith("nothing to record")
        assert reasons["[1, 2]"] == "a consent message is a JSON object, not list"

        audit = [r for _, r in platform.audit.records() if r.action == "consent"]
        assert len(audit) == 6
        assert {r.principal for r in audit} == {f"log:{TOPIC}"}
        by_subject = {r.subjects[0]: r for r in audit}
        assert by_subject["4"].detail["tcf"] is True
        assert by_subject["5"].detail["gpc"] is True
        assert by_subject["1"].purpose == "marketing"

        # delivered again (offsets not committed): skipped, nothing doubled
        again = worker.process_batch(_drain(platform, worker.topics, "another-group"))
        assert (again.skipped, again.consent) == (11, 0)
        assert dead.count(CONSENT_SOURCE) == 5

        # a replay checks them again and keeps the reasons of those still refused
        intake = open_intake(platform.project)
        try:
            replayed = replay(intake, letters)
        finally:
            intake.close()
        assert (replayed.replayed, replayed.still_failing) == (0, 5)
        assert {(d.key or b"").decode(): d.reason for d in dead.list(CONSENT_SOURCE)} == reasons
        propagator_for(platform).wait()
        worker.close()


def test_a_revocation_on_the_topic_filters_the_subject_at_once(project: Path) -> None:
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        _produce(
            worker,
            *({"subject": s, "purpose": "marketing", "action": "grant"} for s in ("1", "2", "3")),
        )
        assert worker.process_batch(_drain(platform, worker.topics)).consent == 3
        context = AccessContext("analyst", (), "marketing")
        plan = guard_of(platform).plan(context, "customer_orders", check_roles=False)
        assert [s for s in (1, 2, 3, 4) if plan.admits({"customer_id": s})] == [1, 2, 3]
        assert run_sync(platform, "crm").status == "ok"
        assert _crm(project) == {1, 2, 3}

        _produce(worker, {"subject": "2", "purpose": "marketing", "action": "revoke"})
        report = worker.process_batch(_drain(platform, worker.topics, "second"))
        assert (report.applied, report.consent) == (1, 1)
        plan = guard_of(platform).plan(context, "customer_orders", check_roles=False)
        assert not plan.admits({"customer_id": 2})
        assert plan.admits({"customer_id": 1})
        assert plan.apply_row({"customer_id": 2, "name": "x"}) is None

        propagator = propagator_for(platform)
        propagator.wait(30)
        assert _crm(project) == {1, 3}  # out of the destination without a sync run
        assert [r.subject for r in propagator.reports] == ["2"]
        worker.close()


def _crm(root: Path) -> set[int]:
    db = sqlite3.connect(str(root / "crm.db"))
    try:
        return {int(row[0]) for row in db.execute("SELECT customer_id FROM audience")}
    finally:
        db.close()


def test_a_message_recorded_before_a_crash_is_not_recorded_again(project: Path) -> None:
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        _produce(
            worker,
            {"subject": "9", "purpose": "marketing", "action": "grant"},
            {"subject": "9", "purpose": "marketing", "action": "revoke"},
        )
        records = _drain(platform, worker.topics)
        assert worker.consent is not None
        # the process dies after the ledger write, before the applied offsets are stored
        assert worker.consent.handle(records).events == 2
        worker.close()
        propagator_for(platform).wait()

    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        report = worker.process_batch(records)
        assert (report.skipped, report.applied, report.consent) == (0, 2, 0)
        history = consent_ledger_of(platform).history("9")
        assert [h.action for h in history] == ["grant", "revoke"]
        assert not _allowed(platform, "9", "marketing")
        consent_audit = [r for _, r in platform.audit.records() if r.action == "consent"]
        assert len(consent_audit) == 2
        worker.close()


def test_the_consent_topic_is_off_by_default_and_must_be_its_own(tmp_path: Path) -> None:
    root = _build(_write_project(tmp_path / "off", topic=None))
    with Platform.open(root) as platform:
        worker = StreamWorker(platform)
        assert worker.consent is None
        assert worker.topics == worker.intake.topics
        assert not any(t.startswith("__") or t == TOPIC for t in worker.topics)
        worker.close()

    clash = _write_project(tmp_path / "clash", topic="orders")
    with Platform.open(clash) as platform, pytest.raises(ConfigError, match="stream source"):
        StreamWorker(platform)

    internal = _write_project(tmp_path / "internal", topic="__changes.customer_orders")
    with pytest.raises(ConfigError, match="change streams"):
        Platform.open(internal)


@pytest.mark.services
def test_consent_topic_on_kafka_is_recorded_then_committed(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic = f"consent-{suffix}"
    root = _write_project(tmp_path / "kshop", topic=topic)
    for source in ("orders", "clicks", "accounts"):
        path = root / "sources" / f"{source}.yml"
        path.write_text(path.read_text() + f"topic: {source}-{suffix}\n")
    _build(root)
    (root / "tidegate.yml").write_text(
        f"name: streamshop\nconsent: {{topic: {topic}}}\n"
        f"backends:\n  log: {{type: kafka, bootstrap: '{kafka_bootstrap}', partitions: 2,"
        f" namespace: t{suffix}}}\n"
    )
    group = f"consent-test-{suffix}"
    with Platform.open(root) as platform:
        platform.online  # noqa: B018  (opened here, before the worker thread uses it)
        intake = open_intake(platform.project)
        try:
            intake.log.append(
                topic,
                [
                    consent_message({"subject": "21", "purpose": "marketing", "action": "grant"}),
                    consent_message({"subject": "22", "purpose": "analytics", "action": "object"}),
                    Message(b"23", json.dumps({"subject": "23", "action": "grant"}).encode()),
                ],
            )
            stop = threading.Event()
            reports: list[Any] = []
            thread = threading.Thread(
                target=run_worker,
                args=(platform,),
                kwargs={"group": group, "stop": stop, "on_batch": reports.append},
                daemon=True,
            )
            thread.start()
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    committed = intake.log.committed(group, topic)
                    if sum(committed.values()) == 3:
                        break
                    time.sleep(0.2)
            finally:
                stop.set()
                thread.join(30)
            assert not thread.is_alive()
            ends = {p: o for p, o in intake.log.end_offsets(topic).items() if o}
            assert intake.log.committed(group, topic) == ends
            assert sum(r.consent for r in reports) == 2
            assert _allowed(platform, "21", "marketing")
            assert not _allowed(platform, "22", "analytics")
            letters = intake.dead.list(CONSENT_SOURCE)
            assert [d.key for d in letters] == [b"23"]
            assert "purpose and action" in letters[0].reason
        finally:
            propagator_for(platform).wait()
            for name in (topic, *(f"{s}-{suffix}" for s in ("orders", "clicks", "accounts"))):
                with contextlib.suppress(Exception):  # best effort: the names are unique
                    intake.log.delete_topic(name)
            intake.close()


def test_dead_letter_store_is_shared_with_the_worker(project: Path) -> None:
    """Consent letters sit beside the sources' letters, under their own source name."""
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        _produce(worker, b"nope")
        worker.intake.submit("clicks", [{"customer_id": 5}], "test")  # no event_id: dead
        report = worker.process_batch(_drain(platform, worker.topics))
        assert report.dead == 1  # the click was refused at submit, not on the log
        store = sqlite_part(platform.project.path(".tidegate/metadata.db"), "dead_letters")
        try:
            assert store.counts_by_source() == {CONSENT_SOURCE: 1, "clicks": 1}
        finally:
            store.close()
        worker.close()
