"""Addressing entities by pseudonym, under a purpose that hashes the key column.

Under such a purpose (the demo's `analytics` hashes `customer_id`) the caller knows
entities by their tokens only. Answering a clear id, or echoing it next to the token,
would hand out the token -> id table one lookup at a time (an analyst key rebuilt it in
10 batch lookups, issue 13). So the path key and every lookup key are read as tokens,
and the answer's `key` is the token that was asked for; a clear id addresses nothing.

The online store is keyed by clear ids, so this index maps token -> id for one
(product, purpose): built from the keys of the product's current version the first time
it is needed, rebuilt when the version changes, and topped up (the new keys only) when a
token is not found, at most once per `refresh_seconds`, since incremental updates add
keys to the current version in place. A scan costs one HMAC per key, so a product of
millions of keys pays seconds once per version; the result is kept per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidegate.privacy.guard import AccessPlan, ColumnPlan
from tidegate.privacy.treatments import value_treatment
from tidegate.store.online.base import OnlineStore

REFRESH_SECONDS = 5.0
MAX_INDEXES = 64


def key_column(plan: AccessPlan) -> ColumnPlan | None:
    """The plan's entry for the product's key column (None: the key is not a declared
    column, so it carries no treatment)."""
    return next((c for c in plan.columns if c.name == plan.key_column), None)


def key_treatment(plan: AccessPlan) -> str:
    column = key_column(plan)
    return "clear" if column is None else column.treatment.treatment


@dataclass
class _Index:
    version: int | None
    tokens: dict[str, str] = field(default_factory=dict)  # token -> clear key
    known: set[str] = field(default_factory=set)  # clear keys already hashed
    scanned_at: float = 0.0


class PseudonymIndex:
    def __init__(self, online: OnlineStore, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._online = online
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._indexes: dict[tuple[str, str], _Index] = {}

    def resolve(self, plan: AccessPlan, tokens: Sequence[str]) -> dict[str, str]:
        """token -> clear key, for the tokens that name an entity of the current version."""
        column = key_column(plan)
        if column is None:
            return {}
        version = self._online.current_version(plan.product)
        with self._lock:
            index = self._indexes.get((plan.product, plan.purpose))
            if index is None or index.version != version:
                if len(self._indexes) >= MAX_INDEXES:
                    self._indexes.clear()
                index = self._indexes[(plan.product, plan.purpose)] = _Index(version)
            missing = [t for t in tokens if t not in index.tokens]
            now = time.monotonic()
            if missing and (index.scanned_at == 0.0 or now - index.scanned_at >= self._refresh):
                self._scan(plan, column, index)
                index.scanned_at = now
            return {t: index.tokens[t] for t in tokens if t in index.tokens}

    def _scan(self, plan: AccessPlan, column: ColumnPlan, index: _Index) -> None:
        # the store's key is the column's text, which is what the hash treatment hashes
        # (for numbers, strings and dates; a row whose own token differs is never served
        # under this one: Serving checks the treated row against the token asked for)
        treat = value_treatment(column.treatment, column.type, plan.hash_key)
        for key in self._online.keys(plan.product):
            if key in index.known:
                continue
            index.known.add(key)
            token = treat(key)
            if isinstance(token, str):
                index.tokens[token] = key
