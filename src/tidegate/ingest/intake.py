"""The one way events enter: check each against its source, log the good, dead-letter the rest.

`Intake.submit` serves HTTP batches, dropped files and dead-letter replays: it answers
per index, appends the accepted events to the source's topic (keyed by the event's
subject or key, so one entity's events stay in order) and stores each rejected event
with its reason. `Intake.decode` is the worker's side: a record read from the log
(which Kafka producers and Debezium may have written directly) becomes a `Change`
or a dead letter.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tidegate.errors import UnknownSourceError
from tidegate.ingest.compiled import CompiledSchema, compiled
from tidegate.ingest.deadletters import DeadLetter, DeadLetterStore
from tidegate.ingest.unknown import UnknownFieldCounter
from tidegate.ingest.validate import Change, EventSchema, Invalid
from tidegate.log.base import EventLog, Message, Record
from tidegate.meta.parts import ObservationStore
from tidegate.project.project import Project, stream_sources

if TYPE_CHECKING:
    from tidegate.platform import Platform
    from tidegate.privacy.tombstones import ErasedFilter

SOURCE_HEADER = "tidegate-source"
CONSENT_SOURCE = "__consent"  # dead letters of the consent topic


@dataclass
class IntakeResult:
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: of `accepted`, events of erased subjects: taken and dropped (neither logged nor
    #: dead-lettered). Not in the answer: a producer is not told who was erased.
    erased: int = 0
    #: the source's `unknown_fields` policy, and what accepted events carried beyond it
    unknown_policy: str = "drop"
    unknown_events: int = 0
    unknown_fields: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "unknown_fields": {
                "policy": self.unknown_policy,
                "events": self.unknown_events,
                "fields": dict(sorted(self.unknown_fields.items())),
            },
        }


class Intake:
    def __init__(
        self,
        project: Project,
        event_log: EventLog,
        dead: DeadLetterStore,
        observations: ObservationStore | None = None,
    ) -> None:
        self.project = project
        self.log = event_log
        self.dead = dead
        #: is this valid event about an erased subject? (`privacy.tombstones.ErasedFilter`,
        #: set by whoever holds the platform): such events are dropped at the door
        self.erased: ErasedFilter | None = None
        self.unknown = UnknownFieldCounter(observations)
        self.schemas = {name: EventSchema(c) for name, c in stream_sources(project).items()}
        self._compiled: dict[str, CompiledSchema | None] = {
            name: compiled(schema) for name, schema in self.schemas.items()
        }
        #: where the key columns are in a taken event's values (`CompiledSchema.order`)
        self._key_positions = {
            name: _positions(fast.order, _key_columns(self.schemas[name]))
            for name, fast in self._compiled.items()
            if fast is not None
        }
        self.by_topic: dict[str, list[EventSchema]] = defaultdict(list)
        for schema in self.schemas.values():
            self.by_topic[schema.config.topic_name].append(schema)

    def close(self) -> None:
        self.log.close()
        self.dead.close()

    @property
    def topics(self) -> list[str]:
        return sorted(self.by_topic)

    def fast(self, source: str) -> CompiledSchema | None:
        """The source's fast path (`ingest.compiled`), None for a Debezium source."""
        return self._compiled.get(source)

    def schema(self, source: str) -> EventSchema:
        schema = self.schemas.get(source)
        if schema is None:
            known = ", ".join(sorted(self.schemas)) or "none"
            raise UnknownSourceError(
                f"no stream source named {source!r} (stream sources: {known})", source=source
            )
        return schema

    # ---------------------------------------------------------------- producers' side

    def submit(
        self,
        source: str,
        events: Sequence[Any],
        via: str,
        *,
        raw: bool = False,
        exact: Callable[[], Sequence[Any]] | None = None,
    ) -> IntakeResult:
        """Check `events` (parsed JSON values, or bytes when `raw`); log the valid ones.

        The fast path (`ingest.compiled`) takes the plain events of a JSON source in one
        pass; the rest go through the full validator one by one, with the same reasons
        as ever. `exact`, when given, returns the events as the standard JSON decoder
        reads them (`events` came from a faster decoder that reads integers beyond 64
        bits as floats): the full validator then checks and keeps those."""
        schema = self.schema(source)
        fast = self._compiled.get(source)
        result = IntakeResult(unknown_policy=schema.config.unknown_fields)
        messages: list[Message] = []
        letters: list[DeadLetter] = []
        now = time.time()
        erased = self.erased
        if erased is not None:
            erased.refresh()  # one query: tombstones newer than the last seen
            if erased.none_erased():
                erased = None  # nobody to drop: no per-event check
        headers = _headers(source)
        limit = schema.config.max_event_bytes
        objects = [_as_object(line, limit) for line in events] if raw else events
        taken = fast.values(objects) if fast is not None else [None] * len(events)
        names = fast.order if fast is not None else ()
        positions = self._key_positions.get(source, ())
        exact_events: Sequence[Any] | None = None
        new = tuple.__new__  # a Message without its Python-level `__new__` (one per event)
        ready = (
            _ready(events if raw else None, objects, taken, positions, limit, headers)
            if erased is None and fast is not None
            else None
        )
        for index, values in enumerate(taken):
            if ready is not None:
                message = ready[index]
                if message is not None:
                    messages.append(message)
                    continue
            if values is not None:
                payload = events[index] if raw else _fast_dumps(objects[index])
                if len(payload) <= limit:
                    if erased is not None and erased.about_erased(
                        source, dict(zip(names, values, strict=True))
                    ):
                        result.erased += 1
                        continue
                    key = _key(values, positions)
                    messages.append(new(Message, (key, payload, headers)))
                    continue
            # the full validator: every rejection, coercion and unknown field
            if raw or exact is None:
                event = events[index]
            else:
                if exact_events is None:
                    exact_events = exact()
                event = exact_events[index]
            message = self._check(schema, result, letters, index, event, via, raw, now)
            if message is not None:
                messages.append(message)
        if messages:
            self.log.append(schema.config.topic_name, messages)
        self.dead.add(letters)
        self.unknown.flush()
        result.accepted = len(messages) + result.erased
        return result

    def _check(
        self,
        schema: EventSchema,
        result: IntakeResult,
        letters: list[DeadLetter],
        index: int,
        event: Any,
        via: str,
        raw: bool,
        now: float,
    ) -> Message | None:
        """One event through the full validator: its message, or None when it was
        rejected (a dead letter and a reason) or dropped (about an erased subject)."""
        source = schema.name
        payload = event if raw else _dumps(event)
        try:
            if raw:
                change = schema.parse(payload)
            else:
                if len(payload) > schema.config.max_event_bytes:
                    schema.parse(payload)  # raises the size reason
                change = schema.from_object(event)
        except Invalid as err:
            if self.erased is not None and self.erased.about_erased(
                source, _loads_or_none(payload) if raw else event
            ):
                result.erased += 1  # a broken event about an erased person: not kept
                return None
            reason = str(err)
            result.rejected.append({"index": index, "reason": reason})
            letters.append(DeadLetter(source, reason, payload, via, at=now))
            return None
        if self.erased is not None and self.erased(change):
            result.erased += 1
            return None
        if change.unknown:
            result.unknown_events += 1
            for name in change.unknown:
                result.unknown_fields[name] = result.unknown_fields.get(name, 0) + 1
            self.unknown.count(source, change.unknown)
            if schema.config.unknown_fields == "drop" and schema.config.format == "json":
                payload = _without(event if not raw else orjson.loads(payload), schema)
        return Message(_partition_key(schema, change), payload, _headers(source))

    # ---------------------------------------------------------------- worker's side

    def decode(self, record: Record) -> Change | DeadLetter:
        """One record through the full validator: the worker sends here only what the
        batch fast path (`CompiledSchema.decode`) left, and what no fast path covers."""
        schemas = self.by_topic.get(record.topic, [])
        try:
            if len(schemas) > 1 and record.header(SOURCE_HEADER) is None and _is_null(record.value):
                # A tombstone on a topic several tables share names no table; the delete
                # before it did the work, so there is nothing to apply.
                return Change(schemas[0].name, "tombstone", {})
            schema = self._pick(record, schemas)
            change = schema.parse(record.value, record.key)
            if change.unknown and record.header(SOURCE_HEADER) is None:
                # written to the topic directly (Kafka producers, Debezium): counted here;
                # events that came through `submit` were counted there
                self.unknown.count(change.source, change.unknown)
            return change
        except Invalid as err:
            name = schemas[0].name if len(schemas) == 1 else _header_source(record, record.topic)
            return DeadLetter(
                name,
                str(err),
                record.value,
                "log",
                key=record.key,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )

    def _pick(self, record: Record, schemas: list[EventSchema]) -> EventSchema:
        if not schemas:
            raise Invalid(f"no stream source reads topic {record.topic!r}")
        if len(schemas) == 1:
            return schemas[0]
        named = record.header(SOURCE_HEADER)
        for schema in schemas:
            if named is not None and schema.name == named.decode(errors="replace"):
                return schema
        # Several Debezium sources on one topic: the envelope names the table.
        table = _debezium_table(record.value)
        for schema in schemas:
            if schema.config.table == table:
                return schema
        raise Invalid(f"Debezium event for unknown table {table!r} on topic {record.topic!r}")


def _without(event: Any, schema: EventSchema) -> bytes:
    """The event as logged under `unknown_fields: drop`: only its declared fields."""
    return _dumps({k: v for k, v in event.items() if k in schema.names})


def _dumps(event: Any) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def _ready(
    lines: Sequence[bytes] | None,
    objects: Sequence[Any],
    taken: Sequence[tuple[Any, ...] | None],
    positions: tuple[int, ...],
    limit: int,
    headers: tuple[tuple[str, bytes], ...],
) -> list[Message | None]:
    """Per event, its message when the fast path took it and nobody is erased (the common
    case): the events encoded, keyed and wrapped a column at a time instead of one by one.
    None where the per-event loop decides (not taken, or over `limit` once encoded).
    `lines` are the raw JSON lines (logged as sent), None for a JSON body (re-encoded)."""
    where = [index for index, values in enumerate(taken) if values is not None]
    if lines is not None:
        payloads = [lines[index] for index in where]
    else:
        picked = [objects[index] for index in where]
        try:
            payloads = list(map(orjson.dumps, picked))
        except TypeError:
            payloads = [_fast_dumps(event) for event in picked]
    keys = _keys([values for values in taken if values is not None], positions)
    ready: list[Message | None] = [None] * len(taken)
    new = tuple.__new__
    for index, key, payload in zip(where, keys, payloads, strict=True):
        if len(payload) <= limit:
            ready[index] = new(Message, (key, payload, headers))
    return ready


def _keys(rows: list[tuple[Any, ...]], positions: tuple[int, ...]) -> list[bytes | None]:
    """Each row's message key: its first non-null key column (`_key_columns`), as text."""
    if not positions:
        return [None] * len(rows)
    first = [row[positions[0]] for row in rows]
    if None not in first:  # the usual case: the first key column always set
        return [str(value).encode() for value in first]
    return [_key(row, positions) for row in rows]


def _key(row: tuple[Any, ...], positions: tuple[int, ...]) -> bytes | None:
    for position in positions:
        value = row[position]
        if value is not None:
            return str(value).encode()
    return None


def _fast_dumps(event: Any) -> bytes:
    """An event the fast path took, as logged: orjson writes the same compact JSON
    (strings, integers, finite floats) several times faster; an integer beyond 64
    bits or a lone surrogate it refuses takes the standard encoder."""
    try:
        return orjson.dumps(event)
    except TypeError:
        return _dumps(event)


def _as_object(line: bytes, limit: int) -> Any:
    """A JSON line for the fast path: the event, or None (too big, or not JSON: the
    full validator says why)."""
    if len(line) > limit:
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _headers(source: str) -> tuple[tuple[str, bytes], ...]:
    return ((SOURCE_HEADER, source.encode()),)


def _header_source(record: Record, default: str) -> str:
    named = record.header(SOURCE_HEADER)
    return named.decode(errors="replace") if named is not None else default


def _key_columns(schema: EventSchema) -> tuple[str, ...]:
    """The columns whose first non-null value keys an event's message, in order."""
    config = schema.config
    # CDC rows keep their order per row; events keep theirs per subject (the entity).
    order = (config.key,) if config.format == "debezium" else (config.subject, config.key)
    return tuple(column for column in (*order, config.event_id) if column)


def _positions(order: tuple[str, ...], columns: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(order.index(column) for column in columns if column in order)


def _partition_key(schema: EventSchema, change: Change) -> bytes | None:
    for column in _key_columns(schema):
        if change.row.get(column) is not None:
            return str(change.row[column]).encode()
    return None


def _debezium_table(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Invalid("malformed JSON") from None
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        data = data["payload"]
    source = data.get("source") if isinstance(data, dict) else None
    table = source.get("table") if isinstance(source, dict) else None
    return str(table) if table is not None else None


def _is_null(value: bytes | None) -> bool:
    return value is None or value.strip() == b"null"


def _loads_or_none(payload: bytes) -> Any:
    """A raw event as JSON, or None when it is not JSON."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None


def intake_of(platform: Platform) -> Intake:
    """The platform's intake (one per platform object, closed with it): the HTTP ingest
    route's. The stream worker opens its own (`open_intake`)."""
    return platform.component(_intake)


def _intake(platform: Platform) -> Intake:
    return platform_intake(platform)


def platform_intake(platform: Platform) -> Intake:
    """A new intake that drops events of erased subjects (a tombstone check per event)."""
    from tidegate.privacy.tombstones import ErasedFilter

    intake = open_intake(platform.project)
    intake.erased = ErasedFilter(platform)
    return intake


def open_intake(project: Project) -> Intake:
    """The project's event log and dead-letter store, behind one Intake (closing it
    closes the metadata store opened for it)."""
    from tidegate.log.base import open_event_log
    from tidegate.meta import open_metadata
    from tidegate.meta.parts import owning

    event_log = open_event_log(project.config.backends.log, project.root)
    meta = open_metadata(project.config.backends.metadata, project.root)
    return Intake(project, event_log, owning(meta.dead_letters, meta), meta.observations)


@dataclass
class ReplayReport:
    replayed: int = 0
    still_failing: int = 0
    erased: int = 0  # letters about erased subjects, deleted instead of replayed


def replay(intake: Intake, letters: Sequence[DeadLetter]) -> ReplayReport:
    """Check dead letters again; append those that now pass to their source's topic."""
    report = ReplayReport()
    done: list[int] = []
    erased: list[int] = []
    if intake.erased is not None:
        intake.erased.refresh()
    for letter in letters:
        if letter.replayed_at is not None:
            continue
        if letter.source == CONSENT_SOURCE:  # a consent-topic message (requests/consent_stream)
            if _replay_consent(intake, letter):
                done.append(letter.id)
                report.replayed += 1
            else:
                report.still_failing += 1
            continue
        try:
            schema = intake.schema(letter.source)
            change = schema.parse(letter.payload, letter.key)
        except (Invalid, UnknownSourceError) as err:
            reason = err.message if isinstance(err, UnknownSourceError) else str(err)
            intake.dead.update_reason(letter.id, reason)
            report.still_failing += 1
            continue
        if intake.erased is not None and intake.erased(change):
            erased.append(letter.id)  # about an erased subject: goes, never replayed
            continue
        message = Message(_partition_key(schema, change), letter.payload, _headers(letter.source))
        intake.log.append(schema.config.topic_name, [message])
        done.append(letter.id)
        report.replayed += 1
    intake.dead.mark_replayed(done)
    report.erased = intake.dead.delete(erased) if erased else 0
    return report


def _replay_consent(intake: Intake, letter: DeadLetter) -> bool:
    from tidegate.privacy.consent_input import recheck

    reason = recheck(intake.project, letter.payload)
    if reason is not None:
        intake.dead.update_reason(letter.id, reason)
        return False
    topic = intake.project.config.consent.topic
    assert topic is not None
    intake.log.append(topic, [Message(letter.key, letter.payload)])
    return True
