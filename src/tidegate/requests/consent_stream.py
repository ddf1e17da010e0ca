"""Consent choices on a topic of the event log: the third way into the consent ledger,
beside `POST /v1/consent` and the TCF strings and GPC signals that API takes.

Off by default; `consent: {topic: consent}` in tidegate.yml turns it on. (Whoever may
write the topic records consent for anyone, which the API allows only to roles with
`write_consent`, so the topic is opted into, and its name is the project's choice.)
The stream worker (`runtime/worker.py`) subscribes to it beside its sources' topics and
hands its records to `ConsentStream.handle`.

A message is one JSON object: the body of `POST /v1/consent`, checked by the same model
and turned into ledger events by the same function (`privacy/consent_input.consent_events`):
`subject`, `choices`, `tcf` (+ `tcf_vendor`), `occurred_at`, `source`, `evidence`; and
besides:

* `gpc: true`: the Global Privacy Control signal (the API's `Sec-GPC: 1` header);
* `purpose`, `action` (`grant` | `revoke` | `object`) and `expires_at`: one choice, the
  shorthand for `choices: [{purpose, action, expires_at}]`.

`source` defaults to `log`, and `occurred_at` to the moment the log accepted the record
(a redelivered record means the same moment, not a later one). Producers should key
messages by subject so one person's choices keep their order.

Per micro-batch, before the worker commits anything:

1. each record is parsed and mapped; malformed JSON or a body the API would refuse (an
   unknown purpose, a bad action, a broken TC string, nothing to record) becomes a dead
   letter under source `__consent` with the reason: nothing is dropped silently; a
   message about an erased subject is dropped and counted, as on the event path;
2. the events go into the ledger in one transaction, then one `consent` audit record
   per message (durably, as the API does); every event carries its log position in its
   evidence (`[log TOPIC/PARTITION@OFFSET]`), so a record delivered again after a crash
   before the offsets were committed is recognised and not recorded twice;
3. subjects who revoked or objected are pushed out of sync destinations in the
   background (`propagation.py`), as the API does; the guard sees the new state on its
   next read.

The worker then stores the applied offsets and the caller commits them: a record's
offset is committed only after its ledger entries are durable.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidegate.audit.log import AuditRecord
from tidegate.errors import ConfigError, Problem
from tidegate.ingest.deadletters import DeadLetter
from tidegate.ingest.intake import CONSENT_SOURCE
from tidegate.log.base import Record
from tidegate.platform import Platform
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
from tidegate.privacy.consent_input import Rejected, parse
from tidegate.requests.propagation import propagator_for


def position_tag(record: Record) -> str:
    return f"[log {record.topic}/{record.partition}@{record.offset}]"


def _tagged(event: ConsentEvent, tag: str) -> ConsentEvent:
    evidence = f"{event.evidence} {tag}" if event.evidence else tag
    return dataclasses.replace(event, evidence=evidence)


@dataclass
class ConsentBatch:
    records: int = 0
    events: int = 0  # ledger entries written
    duplicates: int = 0  # records already in the ledger (delivered again after a crash)
    erased: int = 0  # messages about erased subjects, dropped unrecorded
    letters: list[DeadLetter] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # subjects sent to propagation


class ConsentStream:
    """Records the consent topic's messages in the ledger; one per stream worker."""

    def __init__(self, platform: Platform, topic: str) -> None:
        from tidegate.project.project import stream_sources

        project = platform.project
        taken = {c.topic_name: name for name, c in stream_sources(project).items()}
        if topic in taken:
            raise ConfigError(
                [
                    Problem(
                        str(project.root / "tidegate.yml"),
                        0,
                        "consent.topic",
                        f"consent topic {topic!r} is also the topic of stream source "
                        f"{taken[topic]!r}; give consent a topic of its own",
                    )
                ],
                project.root,
            )
        self.platform = platform
        self.topic = topic

    @classmethod
    def of(cls, platform: Platform) -> ConsentStream | None:
        """The project's consent topic reader, or None when `consent.topic` is unset."""
        topic = platform.project.config.consent.topic
        return cls(platform, topic) if topic else None

    def handle(self, records: Sequence[Record]) -> ConsentBatch:
        """Record these consent-topic records (dead letters are the caller's to store)."""
        from tidegate.privacy.tombstones import tombstones_of

        batch = ConsentBatch(records=len(records))
        if not records:
            return batch
        purposes = self.platform.project.policy.purposes
        tombstones = tombstones_of(self.platform)
        parsed: list[tuple[Record, list[ConsentEvent]]] = []
        for record in records:
            try:
                events = parse(
                    record.value,
                    purposes,
                    record.timestamp or time.time(),
                    tcf_policy=self.platform.project.policy.tcf,
                    clock_skew=self.platform.project.config.consent.clock_skew_seconds,
                )
            except Rejected as err:
                batch.letters.append(self._letter(record, str(err)))
                continue
            if tombstones.is_erased(events[0].subject):
                batch.erased += 1
                continue
            tag = position_tag(record)
            parsed.append((record, [_tagged(e, tag) for e in events]))
        fresh = self._not_yet_recorded(parsed)
        batch.duplicates = len(parsed) - len(fresh)
        if not fresh:
            return batch
        ledger_events = [e for _, events in fresh for e in events]
        consent_ledger_of(self.platform).record(ledger_events)  # durable before the offsets move
        batch.events = len(ledger_events)
        self.platform.audit.append(*(self._audit(r, events) for r, events in fresh))
        batch.withdrawn = sorted(
            {e.subject for _, events in fresh for e in events if e.action != "grant"}
        )
        propagator = propagator_for(self.platform)
        for subject in batch.withdrawn:
            propagator.submit(subject)
        return batch

    def _not_yet_recorded(
        self, parsed: list[tuple[Record, list[ConsentEvent]]]
    ) -> list[tuple[Record, list[ConsentEvent]]]:
        """Drop the records whose events the ledger already holds (found by position tag).
        All events of a batch are written in one transaction, so one found is all found."""
        if not parsed:
            return []
        subjects = {events[0].subject for _, events in parsed}
        seen: set[str] = set()
        for subject in subjects:
            for row in consent_ledger_of(self.platform).history(subject):
                if row.evidence.endswith("]") and "[log " in row.evidence:
                    seen.add(row.evidence[row.evidence.rindex("[log ") :])
        return [(r, events) for r, events in parsed if position_tag(r) not in seen]

    def _audit(self, record: Record, events: list[ConsentEvent]) -> AuditRecord:
        return AuditRecord(
            action="consent",
            principal=f"log:{self.topic}",
            purpose=events[0].purpose if len(events) == 1 else None,
            subjects=(events[0].subject,),
            detail={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "choices": [[e.purpose, e.action, e.source] for e in events],
                "gpc": any(e.source == "gpc" for e in events),
                "tcf": any(e.source == "tcf" for e in events),
            },
        )

    def _letter(self, record: Record, reason: str) -> DeadLetter:
        return DeadLetter(
            CONSENT_SOURCE,
            reason,
            record.value,
            "log",
            key=record.key,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
