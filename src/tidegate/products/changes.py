"""The products' change streams `__changes.<product>`: which keys changed, never their rows.

The stream worker appends one message per changed key to the log topic
`__changes.<product>`. The log is not behind the guard: whoever can read it (a Kafka
client, the SQLite file) sees every message, of every subject, revoked or erased ones
included, and erasure cannot rewrite a log. So a message says only *that* something
changed:

    {"op": "upsert" | "delete", "key": <key>, "version": <live version>, "at": <unix time>}

and the message's log key is the same key text. A consumer that needs the row reads it
through the normal, guarded path (the serving API, a sync, an export), which applies
purpose, consent and treatments at that moment.

The key itself is pseudonymised (HMAC-SHA256, hex, with a key derived from the
project's hash key, one per product) unless the product's key column is explicitly
non-personal (`classification: none` or a `system.*` category) and is not the subject
column. A customer id is the subject's identifier; in clear it would say who changed
and when, and an erasure would have to reach every log segment. Pseudonymised, the log
holds nothing that identifies anyone to a reader without the hash key, so erasure has
nothing to reach there. A clear key of a non-personal column (a plan name, a country
code) carries no personal data by its declaration.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import orjson

from tidegate.log.base import CHANGES_PREFIX, Message, namespaced
from tidegate.project.models import NOT_PERSONAL
from tidegate.project.project import Product

__all__ = ["CHANGES_PREFIX", "ChangeEncoder", "change_key", "changes_topic", "key_is_personal"]


def changes_topic(product: str, namespace: str = "") -> str:
    """The product's change stream on the log, inside the log's `namespace` (Kafka)."""
    return namespaced(namespace, CHANGES_PREFIX + product)


def key_is_personal(product: Product) -> bool:
    """Fail closed: only a key column declared non-personal, that is not the subject, is
    left in clear."""
    key = product.config.key
    if product.subject_column == key:
        return True
    spec = product.columns.get(key)
    label = spec.classification if spec is not None else None
    return not (label == NOT_PERSONAL or (label or "").split(".")[0] == "system")


def change_key(master: bytes, product: str) -> bytes:
    """The HMAC key for one product's change stream: unlinkable to every purpose's hashes
    and to the other products' streams."""
    return hmac.new(master, f"tidegate/changes/{product}".encode(), hashlib.sha256).digest()


class ChangeEncoder:
    """Turns one product's changed keys into change-stream messages."""

    def __init__(self, product: Product, master: bytes) -> None:
        self.product = product.name
        self._secret = change_key(master, product.name) if key_is_personal(product) else None

    def key_text(self, key: object) -> str:
        """The key as it appears on the stream: the online store's key text, or its
        pseudonym."""
        text = str(key)
        if self._secret is None:
            return text
        # the one-shot C HMAC: a third of the time of copying a keyed `hmac.HMAC`
        return hmac.digest(self._secret, text.encode("utf-8"), "sha256").hex()

    def messages(
        self, upserted: Iterable[object], deleted: Iterable[object], version: int, at: float
    ) -> list[Message]:
        """One message per changed key. The body is the JSON object of the module's
        docstring, written from a per-batch template (only the key differs between
        messages): several times faster than encoding a dict per key, the same bytes."""
        out: list[Message] = []
        key_text = self.key_text
        dumps = orjson.dumps  # escapes a clear key exactly as for a whole object
        tail = b',"version":' + dumps(version) + b',"at":' + dumps(at) + b"}"
        for op, keys in (("upsert", upserted), ("delete", deleted)):
            head = b'{"op":"' + op.encode() + b'","key":'
            for key in keys:
                text = key_text(key)
                out.append(Message(text.encode(), head + dumps(text) + tail))
        return out
