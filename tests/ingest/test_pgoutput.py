"""pgoutput messages (protocol 1) become wal2json-shaped change documents."""

from __future__ import annotations

import struct

import pytest

from tidegate.ingest.pgoutput import decode_all


def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def _tuple(*values: str | bytes | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == b"u":
            out += b"u"
        else:
            assert isinstance(value, str)
            out += b"t" + struct.pack("!i", len(value.encode())) + value.encode()
    return out


RELATION = (
    b"R"
    + struct.pack("!i", 42)
    + _s("public")
    + _s("accounts")
    + b"d"
    + struct.pack("!h", 3)
    + b"".join(b"\x01" + _s(n) + struct.pack("!ii", 20, -1) for n in ("id", "customer_id", "tier"))
)
BEGIN = b"B" + struct.pack("!qqi", 100, 1_000_000, 7)  # commit time: 2000-01-01 00:00:01


def test_every_kind_of_change() -> None:
    rows = [
        ("0/1", BEGIN),
        ("0/2", RELATION),
        ("0/3", b"I" + struct.pack("!i", 42) + b"N" + _tuple("1", "11", "free")),
        ("0/4", b"U" + struct.pack("!i", 42) + b"N" + _tuple("1", "12", b"u")),
        (
            "0/5",
            b"U"
            + struct.pack("!i", 42)
            + b"K"
            + _tuple("1", None, None)
            + b"N"
            + _tuple("2", "12", "gold"),
        ),
        ("0/6", b"D" + struct.pack("!i", 42) + b"K" + _tuple("2", None, None)),
        ("0/7", b"T" + struct.pack("!ib", 1, 0) + struct.pack("!i", 42)),
        ("0/8", b"C" + struct.pack("!bqqq", 0, 100, 101, 1_000_000)),
    ]
    changes = list(decode_all(rows))
    assert [c["action"] for c in changes] == ["I", "U", "U", "D", "T"]
    insert, update, moved, delete, truncate = changes
    assert insert["columns"] == [
        {"name": "id", "value": "1"},
        {"name": "customer_id", "value": "11"},
        {"name": "tier", "value": "free"},
    ]
    assert (insert["schema"], insert["table"], insert["lsn"]) == ("public", "accounts", "0/3")
    assert insert["timestamp"].startswith("2000-01-01T00:00:01")
    # an unchanged TOASTed value is left out; the key did not move: identity = new row
    assert [c["name"] for c in update["columns"]] == ["id", "customer_id"]
    assert update["identity"] == update["columns"]
    assert moved["identity"][0] == {"name": "id", "value": "1"}
    assert moved["columns"][0] == {"name": "id", "value": "2"}
    assert "columns" not in delete
    assert delete["identity"][0] == {"name": "id", "value": "2"}
    assert truncate["tables"] == [("public", "accounts")]


def test_an_unknown_column_tag_is_an_error() -> None:
    bad = b"I" + struct.pack("!i", 42) + b"N" + struct.pack("!h", 1) + b"?"
    with pytest.raises(ValueError, match="unknown column tag"):
        list(decode_all([("0/1", RELATION), ("0/2", bad)]))
