"""The online store's row encoding: what the stream worker publishes and serving reads."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import zoneinfo

import orjson

from tidegate.store.online.codec import decode_row, encode_row

ROW = {
    "id": 7,
    "score": 0.1 + 0.2,
    "name": "Zoë",
    "born": dt.date(1990, 5, 17),
    "seen": dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC),
    "local": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
    "amount": decimal.Decimal("12.50"),
    "raw": b"\x00\xff",
    "flag": False,
    "none": None,
}


def test_rows_encode_as_compact_json_with_iso_dates() -> None:
    text = encode_row(ROW)
    assert " " not in text.replace("Zoë", "")
    assert json.loads(text) == {
        "id": 7,
        "score": 0.1 + 0.2,  # shortest round-trip repr
        "name": "Zoë",
        "born": "1990-05-17",
        "seen": "2026-01-02T03:04:05.120000+00:00",
        "local": "2026-01-02T03:04:05+01:00",
        "naive": "2026-01-02T03:04:05",
        "amount": 12.5,
        "raw": "00ff",
        "flag": False,
        "none": None,
    }
    types = {"born": "DATE", "seen": "TIMESTAMPTZ", "local": "TIMESTAMPTZ"}
    back = decode_row(text, types)
    assert back["born"] == ROW["born"]
    assert back["seen"] == ROW["seen"]
    assert back["local"] == ROW["local"]


def test_what_orjson_refuses_still_encodes() -> None:
    huge = 2**70  # a HUGEINT sum
    assert json.loads(encode_row({"total": huge, "at": dt.date(2026, 1, 1)})) == {
        "total": huge,
        "at": "2026-01-01",
    }


def test_non_finite_floats_become_null_that_strict_readers_accept() -> None:
    text = encode_row({"a": math.nan, "b": math.inf, "c": 1.0})
    assert orjson.loads(text) == {"a": None, "b": None, "c": 1.0}


def test_the_change_stream_key_fragment_keeps_its_shape() -> None:
    """The worker cuts `{"k":VALUE}` to VALUE with [5:-1] to build change messages."""
    assert encode_row({"k": 42})[5:-1] == "42"
    assert encode_row({"k": 'a"b'})[5:-1] == json.dumps('a"b')
