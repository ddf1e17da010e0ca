"""Where one subject's data is, system by system: what access requests read and erasure
requests delete (`subject_requests.py`).

A subject is matched by its id as text (`42` and `"42"` are the same person) in the
column each source and product declares as `subject`:

* **warehouse** (DuckDB): `raw.<source>` of every source with a subject column, every
  version table `builds.<product>__vN` of every product with one (the
  `products.<product>` views read those, so they need nothing of their own), and the
  failing rows quality checks kept of those versions (`quality.<product>__vN__<check>`);
* **online store**: the product keys of the subject's rows (the subject itself when a
  product is keyed by its subject column);
* **destinations**: the keys the sync state recorded for the subject
  (`MetadataStore.subject_locations`), read back from (or deleted in) each destination;
* **dead letters**: letters whose payload, parsed as the source's events are, has the
  subject in the source's subject field (Debezium: in `after` or `before`), whose
  message key is the subject id, or, for a payload that does not parse, that names the
  subject field and the id as a whole word.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.ingest.deadletters import DeadLetter, DeadLetterStore
from tidegate.observe.quality import QUALITY
from tidegate.project.project import Project
from tidegate.store.warehouse import BUILDS, RAW
from tidegate.timestamps import format_timestamp

if TYPE_CHECKING:
    from tidegate.platform import Platform

#: classifications whose values identify a person outright: searched for in free text
#: (audit, run history) when the subject is erased
IDENTIFYING = ("user.unique_id", "user.contact.email", "user.contact.phone_number")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plain(value: Any) -> Any:
    """A value as JSON can hold it (times as ISO 8601 in UTC, `timestamps.py`; dates as
    ISO dates)."""
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Relation:
    """A DuckDB table holding subject rows."""

    kind: str  # raw | build
    owner: str  # source or product name
    schema: str
    table: str
    subject_column: str
    key_column: str | None
    subject_type: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{quote(self.table)}"


@dataclass
class Found:
    """What the warehouse holds about a subject: rows per relation, product keys, and the
    identifying values seen (ids, emails, phones) for redaction elsewhere."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, set[str]] = field(default_factory=dict)  # product -> keys
    identifiers: set[str] = field(default_factory=set)


def relations(platform: Platform, cursor: Any, subject_type: str | None = None) -> list[Relation]:
    """The tables holding subject rows; with `subject_type`, only those whose subject
    column identifies that kind of person (customer 3 is not employee 3)."""
    project = platform.project
    present = {
        (str(s), str(t))
        for s, t in cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
        ).fetchall()
    }
    found: list[Relation] = []
    for name, source in sorted(project.sources.items()):
        column = getattr(source.config, "subject", None)
        if subject_type is not None and source.subject_type != subject_type:
            continue
        if column and (RAW, name) in present:
            key = getattr(source.config, "key", None)
            found.append(Relation("raw", name, RAW, name, column, key, source.subject_type))
    quality_columns: dict[str, set[str]] = {}
    for table, column in cursor.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
        [QUALITY],
    ).fetchall():
        quality_columns.setdefault(str(table), set()).add(str(column))
    for name, product in sorted(project.products.items()):
        column = product.subject_column
        if not column or (subject_type is not None and product.subject_type != subject_type):
            continue
        for schema, table in sorted(present):
            suffix = table[len(name) + 3 :] if table.startswith(f"{name}__v") else ""
            if schema == BUILDS and suffix.isdigit():
                found.append(
                    Relation(
                        "build",
                        name,
                        BUILDS,
                        table,
                        column,
                        product.config.key,
                        product.subject_type,
                    )
                )
            version = suffix.split("__", 1)[0]
            # a failing-row table of a check on a version: the rows as the build had them
            if (
                schema == QUALITY
                and "__" in suffix
                and version.isdigit()
                and column in quality_columns.get(table, set())
            ):
                found.append(
                    Relation("quality", name, QUALITY, table, column, None, product.subject_type)
                )
    return found


def identifying_columns(platform: Platform, relation: Relation) -> list[str]:
    project = platform.project
    owner = (
        project.sources[relation.owner]
        if relation.kind == "raw"
        else project.products[relation.owner]
    )
    return [
        name
        for name, spec in owner.columns.items()
        if spec.classification and spec.classification.startswith(IDENTIFYING)
    ]


def subject_rows(cursor: Any, relation: Relation, subject: str) -> list[dict[str, Any]]:
    sql = (
        f"SELECT * FROM {relation.qualified}"
        f" WHERE CAST({quote(relation.subject_column)} AS VARCHAR) = ?"
    )
    rows: list[dict[str, Any]] = cursor.sql(sql, params=[subject]).to_arrow_table().to_pylist()
    return rows


def find_in_warehouse(
    platform: Platform, cursor: Any, subject: str, subject_type: str | None = None
) -> tuple[list[Relation], Found]:
    found = Found(identifiers={subject})
    tables = relations(platform, cursor, subject_type)
    for relation in tables:
        rows = subject_rows(cursor, relation, subject)
        found.rows[relation.qualified] = [plain(r) for r in rows]
        if relation.kind == "build" and relation.key_column:
            keys = found.keys.setdefault(relation.owner, set())
            keys.update(str(r[relation.key_column]) for r in rows)
        for column in identifying_columns(platform, relation):
            found.identifiers.update(str(r[column]) for r in rows if r.get(column) is not None)
    return tables, found


def online_keys(
    platform: Platform, subject: str, found: Found | None, subject_type: str | None = None
) -> dict[str, set[str]]:
    """Product -> online-store keys of the subject (products with a subject column, of
    `subject_type` when given)."""
    keys: dict[str, set[str]] = {}
    for name, product in sorted(platform.project.products.items()):
        if not product.subject_column:
            continue
        if subject_type is not None and product.subject_type != subject_type:
            continue
        wanted = set(found.keys.get(name, set())) if found else set()
        if product.subject_column == product.config.key:
            wanted.add(subject)
        keys[name] = wanted
    return keys


# ---------------------------------------------------------------- dead letters


def letter_mentions(letter: DeadLetter, subject_column: str | None, subject: str) -> bool:
    if letter.key is not None and letter.key.decode("utf-8", "replace") == subject:
        return True
    if letter.payload is None or not subject_column:
        return False
    try:
        data = json.loads(letter.payload)
    except (ValueError, UnicodeDecodeError):
        text = letter.payload.decode("utf-8", "replace")
        word = re.compile(r"(?<![0-9A-Za-z_@.-])" + re.escape(subject) + r"(?![0-9A-Za-z_@-])")
        return subject_column in text and word.search(text) is not None
    return any(
        isinstance(candidate, dict)
        and candidate.get(subject_column) is not None
        and str(candidate.get(subject_column)) == subject
        for candidate in _event_objects(data)
    )


def _event_objects(data: Any) -> Iterator[Any]:
    yield data
    if isinstance(data, dict):
        inner = data.get("payload", data) if "schema" in data else data
        if isinstance(inner, dict):
            yield inner
            yield inner.get("after")
            yield inner.get("before")
    if isinstance(data, list):  # a batch posted as one payload
        yield from data


def personal_values(identifiers: Iterable[str]) -> list[str]:
    """The identifying values worth a substring search in free text (emails, phones):
    not bare numbers (an id like 42 is found only where a subject field holds it) and
    not too short to be distinctive."""
    return sorted({i for i in identifiers if len(i) >= 5 and not i.strip().lstrip("+-").isdigit()})


def text_mentions(data: bytes | None, values: Sequence[str]) -> bool:
    if not data or not values:
        return False
    text = data.decode("utf-8", "replace")
    return any(v in text for v in values)


def dead_letters_of(
    dead: DeadLetterStore,
    project: Project,
    subject: str,
    identifiers: Iterable[str] = (),
    subject_type: str | None = None,
) -> list[DeadLetter]:
    """Letters about the subject: by its subject field or message key, or (a letter whose
    subject field did not parse) by the subject's identifying values in the payload. With
    `subject_type`, letters of sources whose subjects are another kind of person are not
    about them."""
    columns = {
        name: getattr(source.config, "subject", None)
        for name, source in project.sources.items()
        if subject_type is None or source.subject_type in (None, subject_type)
    }
    values = personal_values(identifiers)
    found: list[DeadLetter] = []
    after = 0
    while True:
        page = dead.list(limit=1000, include_replayed=True, after_id=after)
        if not page:
            return found
        for letter in page:
            if letter.source in project.sources and letter.source not in columns:
                continue  # a source of another subject type
            if letter_mentions(letter, columns.get(letter.source), subject) or text_mentions(
                letter.payload, values
            ):
                found.append(letter)
        after = page[-1].id


def find_by_lookup(
    platform: Platform, cursor: Any, subject_type: str, column: str, value: str
) -> list[str]:
    """The ids of subjects of `subject_type` whose `column` (a declared lookup column)
    equals `value` in any table of that type, distinct and sorted."""
    ids: set[str] = set()
    for relation in relations(platform, cursor, subject_type):
        owner = (
            platform.project.sources[relation.owner]
            if relation.kind == "raw"
            else platform.project.products[relation.owner]
        )
        if column not in owner.columns:
            continue
        rows = cursor.execute(
            f"SELECT DISTINCT CAST({quote(relation.subject_column)} AS VARCHAR)"
            f" FROM {relation.qualified} WHERE CAST({quote(column)} AS VARCHAR) = ?"
            f" AND {quote(relation.subject_column)} IS NOT NULL",
            [value],
        ).fetchall()
        ids.update(str(r[0]) for r in rows)
    return sorted(ids)


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    payload: Any = None
    if letter.payload is not None:
        try:
            payload = json.loads(letter.payload)
        except (ValueError, UnicodeDecodeError):
            payload = letter.payload.decode("utf-8", "replace")
    return {
        "id": letter.id,
        "source": letter.source,
        "reason": letter.reason,
        "via": letter.via,
        "at": letter.at,
        "payload": payload,
        "replayed_at": letter.replayed_at,
    }


# ---------------------------------------------------------------- event log


@dataclass(frozen=True)
class TopicMatch:
    """Which records of one topic are about the subject: its id in the topic's subject
    field (source events, Debezium `before`/`after`, consent messages), its entity key
    as the record key (a product's change stream), or one of its identifying values
    (email, phone) anywhere in the payload (an event whose subject field is wrong)."""

    topic: str
    subject: str
    subject_field: str | None
    keys: frozenset[str]
    values: tuple[str, ...]

    def __call__(self, record: Any) -> bool:
        if text_mentions(record.value, self.values):
            return True
        if (
            self.keys
            and record.key is not None
            and record.key.decode("utf-8", "replace") in self.keys
        ):
            return True
        if self.subject_field is None or record.value is None:
            return False
        try:
            data = json.loads(record.value)
        except (ValueError, UnicodeDecodeError):
            return False
        name = self.subject_field
        return any(
            isinstance(candidate, dict)
            and candidate.get(name) is not None
            and str(candidate.get(name)) == self.subject
            for candidate in _event_objects(data)
        )


def topic_matches(
    project: Project,
    subject: str,
    found: Found | None,
    identifiers: Iterable[str],
    subject_type: str | None = None,
    namespace: str = "",
) -> list[TopicMatch]:
    """Every topic of the event log that can hold the subject's data, with its matcher:
    the stream sources' topics, the consent topic, and each product's change stream.
    With `subject_type`, only the topics of that kind of person: erasing customer 12
    never touches employee 12's events (the consent topic is the default type's)."""
    from tidegate.products.changes import changes_topic
    from tidegate.project.project import stream_sources
    from tidegate.project.subjects import consent_subject_type

    def ours(kind: str | None) -> bool:
        return subject_type is None or kind == subject_type

    values = tuple(personal_values(identifiers))
    none: frozenset[str] = frozenset()
    matches = [
        TopicMatch(config.topic_name, subject, config.subject, none, values)
        for name, config in sorted(stream_sources(project).items())
        if ours(project.sources[name].subject_type)
    ]
    if project.config.consent.topic and ours(consent_subject_type(project)):
        matches.append(TopicMatch(project.config.consent.topic, subject, "subject", none, values))
    for name, product in sorted(project.products.items()):
        if not ours(product.subject_type):
            continue
        keys = set(found.keys.get(name, set())) if found else set()
        if product.subject_column and product.subject_column == product.config.key:
            keys.add(subject)
        topic = changes_topic(name, namespace)
        matches.append(TopicMatch(topic, subject, None, frozenset(keys), values))
    return matches
