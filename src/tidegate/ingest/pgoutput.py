"""Decode PostgreSQL's built-in logical replication output (pgoutput, protocol 1).

pgoutput ships with every PostgreSQL (managed services included) and takes its tables
from a publication; wal2json is an extension. The messages, as `pg_logical_slot_peek
_binary_changes` returns them, are turned into the same change documents wal2json's
format 2 gives (`action` I/U/D/T, `columns`/`identity` as name-value lists, `timestamp`,
`lsn`), so the capture (`postgres_cdc.py`) treats both alike. Values arrive as text
(pgoutput's text format); the source's declared column types convert them, as they do
for CSV. An unchanged TOASTed value (`u`) is left out, as wal2json does.

Protocol: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass
class Relation:
    schema: str
    name: str
    columns: list[str]


@dataclass
class Decoder:
    """Decodes one peek's messages in order (Relation messages come before use)."""

    relations: dict[int, Relation] = field(default_factory=dict)
    timestamp: str | None = None  # of the transaction being decoded

    def decode(self, lsn: str, data: bytes) -> dict[str, Any] | None:
        """One message: a change document, or None (begin, commit, relation, type...)."""
        reader = _Reader(data)
        kind = reader.byte()
        if kind == "B":
            reader.int64()  # final LSN
            micros = reader.int64()
            self.timestamp = (_EPOCH_2000 + dt.timedelta(microseconds=micros)).isoformat()
            return None
        if kind == "R":
            relid = reader.int32()
            schema, name = reader.string(), reader.string()
            reader.byte()  # replica identity setting
            columns = []
            for _ in range(reader.int16()):
                reader.int8()  # flags (part of the key)
                columns.append(reader.string())
                reader.int32()  # type OID
                reader.int32()  # type modifier
            self.relations[relid] = Relation(schema, name, columns)
            return None
        if kind in ("I", "U", "D"):
            relation = self.relations[reader.int32()]
            change: dict[str, Any] = {
                "action": kind,
                "schema": relation.schema,
                "table": relation.name,
                "timestamp": self.timestamp,
                "lsn": lsn,
            }
            tag = reader.byte()
            if tag in ("K", "O"):
                change["identity"] = _tuple(reader, relation.columns)
                if kind == "D":
                    return change
                tag = reader.byte()
            if tag != "N":
                raise ValueError(f"pgoutput: unexpected tuple tag {tag!r} in {kind!r}")
            change["columns"] = _tuple(reader, relation.columns)
            if kind == "U" and "identity" not in change:  # the key did not change
                change["identity"] = change["columns"]
            return change
        if kind == "T":
            count = reader.int32()
            reader.int8()  # options (cascade, restart identity)
            relids = [reader.int32() for _ in range(count)]
            tables = [self.relations[r] for r in relids if r in self.relations]
            return {
                "action": "T",
                "tables": [(r.schema, r.name) for r in tables],
                "timestamp": self.timestamp,
                "lsn": lsn,
            }
        return None  # C(ommit), O(rigin), Y (type), M(essage)


def _tuple(reader: _Reader, names: list[str]) -> list[dict[str, Any]]:
    values = []
    for index in range(reader.int16()):
        tag = reader.byte()
        name = names[index] if index < len(names) else f"column{index}"
        if tag == "n":
            values.append({"name": name, "value": None})
        elif tag == "u":
            continue  # unchanged TOASTed value: left out, the stored one stays
        elif tag in ("t", "b"):
            raw = reader.take(reader.int32())
            values.append({"name": name, "value": raw.decode() if tag == "t" else raw.hex()})
        else:
            raise ValueError(f"pgoutput: unknown column tag {tag!r}")
    return values


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, size: int) -> bytes:
        chunk = bytes(self.data[self.at : self.at + size])
        self.at += size
        return chunk

    def byte(self) -> str:
        return self.take(1).decode()

    def int8(self) -> int:
        return int(struct.unpack("!b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack("!h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack("!i", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack("!q", self.take(8))[0])

    def string(self) -> str:
        end = bytes(self.data[self.at :]).index(b"\0")
        text = self.take(end).decode()
        self.at += 1
        return text


def decode_all(rows: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """Change documents of one peek's (lsn, data) rows, in order."""
    decoder = Decoder()
    for lsn, data in rows:
        change = decoder.decode(str(lsn), bytes(data))
        if change is not None:
            yield change
