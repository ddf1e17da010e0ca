"""The consent ledger and the state derived from it, per legal basis.

Expectations are computed here from the ledger's meaning (latest entry by `occurred_at`,
ties by ledger order), never by asking the code under test.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.meta.base import ConsentRow
from tidegate.meta.sqlite import SqliteMetadataStore
from tidegate.privacy.consent import ConsentEvent, ConsentLedger, ConsentView, RowFilter

NOW = 1_700_000_000.0
BASES = ("consent", "contract", "legitimate_interest", "legal_obligation")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteMetadataStore]:
    meta = SqliteMetadataStore(tmp_path / "m.db")
    yield meta
    meta.close()


def ev(
    subject: str,
    action: str,
    at: float,
    purpose: str = "marketing.email",
    expires_at: float | None = None,
) -> ConsentEvent:
    return ConsentEvent(
        subject=subject,
        purpose=purpose,
        action=action,  # type: ignore[arg-type]
        occurred_at=at,
        expires_at=expires_at,
    )


def view_after(store: SqliteMetadataStore, *events: ConsentEvent) -> ConsentView:
    if events:
        ConsentLedger(store).record(events)
    view = ConsentView(store)
    view.refresh()
    return view


# ------------------------------------------------------------------ per legal basis

# (label, history as (action, minutes before NOW, expires in minutes or None),
#  allowed under consent, allowed under contract / legitimate interest)
CASES = [
    ("nothing recorded", [], False, True),
    ("grant", [("grant", 10, None)], True, True),
    ("revoke", [("revoke", 10, None)], False, False),
    ("object", [("object", 10, None)], False, False),
    ("grant then revoke", [("grant", 20, None), ("revoke", 10, None)], False, False),
    ("revoke then grant", [("revoke", 20, None), ("grant", 10, None)], True, True),
    ("object then grant", [("object", 20, None), ("grant", 10, None)], True, True),
    ("grant then object", [("grant", 20, None), ("object", 10, None)], False, False),
    ("grant, expired", [("grant", 20, -1)], False, True),
    ("grant, not yet expired", [("grant", 20, 5)], True, True),
    ("expired grant after revoke", [("revoke", 30, None), ("grant", 20, -1)], False, True),
    ("newer first in the ledger", [("grant", 10, None), ("object", 20, None)], True, True),
]


@pytest.mark.parametrize(
    ("label", "history", "consent", "contract"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("basis", BASES)
def test_state_per_legal_basis(
    store: SqliteMetadataStore,
    basis: str,
    label: str,
    history: list[tuple[str, int, int | None]],
    consent: bool,
    contract: bool,
) -> None:
    events = [
        ev("42", action, NOW - ago * 60, expires_at=None if exp is None else NOW + exp * 60)
        for action, ago, exp in history
    ]
    view = view_after(store, *events)
    want = {
        "consent": consent,
        "contract": contract,
        "legitimate_interest": contract,
        "legal_obligation": True,
    }[basis]
    assert view.allowed("42", "marketing.email", basis, now=NOW) is want
    row_filter = view.row_filter("marketing.email", basis, now=NOW)
    assert row_filter.admits("42") is want
    assert row_filter.admits(42) is want  # ids compare as text


def test_legal_obligation_ignores_objections(store: SqliteMetadataStore) -> None:
    view = view_after(store, ev("1", "object", NOW - 5, purpose="tax"))
    assert view.allowed("1", "tax", "legal_obligation", now=NOW)
    row_filter = view.row_filter("tax", "legal_obligation", now=NOW)
    assert row_filter == RowFilter(mode="deny", subjects=frozenset())
    assert row_filter.admits("1")
    assert row_filter.admits(None)


def test_purposes_are_independent(store: SqliteMetadataStore) -> None:
    view = view_after(
        store,
        ev("1", "grant", NOW - 5, purpose="marketing.email"),
        ev("1", "object", NOW - 5, purpose="support"),
    )
    assert view.allowed("1", "marketing.email", "consent", now=NOW)
    assert not view.allowed("1", "analytics", "consent", now=NOW)
    assert not view.allowed("1", "support", "contract", now=NOW)
    assert view.allowed("1", "fraud", "legitimate_interest", now=NOW)
    assert view.row_filter("analytics", "consent", now=NOW).subjects == frozenset()
    assert view.row_filter("fraud", "legitimate_interest", now=NOW).subjects == frozenset()


# ------------------------------------------------------------------ ordering


def test_late_arriving_older_event_does_not_override_newer(store: SqliteMetadataStore) -> None:
    ledger = ConsentLedger(store)
    ledger.record([ev("7", "grant", NOW - 10)])
    view = ConsentView(store)
    view.refresh()
    assert view.allowed("7", "marketing.email", "consent", now=NOW)
    # a revocation made earlier (NOW - 60) reaches us only now: the grant stays the latest
    ledger.record([ev("7", "revoke", NOW - 60)])
    view.refresh()
    assert view.allowed("7", "marketing.email", "consent", now=NOW)
    assert view.row_filter("marketing.email", "consent", now=NOW).admits("7")
    # ...and the reverse: a late grant older than a revocation does not restore consent
    ledger.record([ev("8", "revoke", NOW - 10), ev("8", "grant", NOW - 60)])
    view.refresh()
    assert not view.allowed("8", "marketing.email", "consent", now=NOW)
    assert not view.allowed("8", "marketing.email", "contract", now=NOW)
    # a fresh view over the same ledger reaches the same state
    fresh = view_after(store)
    assert fresh.allowed("7", "marketing.email", "consent", now=NOW)
    assert not fresh.allowed("8", "marketing.email", "consent", now=NOW)


@pytest.mark.parametrize(
    ("actions", "allowed"),
    [(("grant", "revoke"), False), (("revoke", "grant"), True), (("grant", "object"), False)],
)
@pytest.mark.parametrize("one_batch", [True, False])
def test_ties_are_broken_by_ledger_order(
    store: SqliteMetadataStore, actions: tuple[str, str], allowed: bool, one_batch: bool
) -> None:
    first, second = (ev("3", a, NOW - 30) for a in actions)
    ledger = ConsentLedger(store)
    view = ConsentView(store)
    if one_batch:
        ledger.record([first, second])
    else:
        ledger.record([first])
        view.refresh()
        ledger.record([second])
    view.refresh()
    assert view.allowed("3", "marketing.email", "consent", now=NOW) is allowed
    assert view.row_filter("marketing.email", "consent", now=NOW).admits("3") is allowed


def test_expiry_is_exclusive_and_evaluated_at_the_moment_asked(
    store: SqliteMetadataStore,
) -> None:
    view = view_after(store, ev("5", "grant", NOW - 100, expires_at=NOW))
    assert view.allowed("5", "marketing.email", "consent", now=NOW - 1)
    assert not view.allowed("5", "marketing.email", "consent", now=NOW)
    assert not view.allowed("5", "marketing.email", "consent", now=NOW + 1)
    assert view.row_filter("marketing.email", "consent", now=NOW - 1).admits("5")
    assert not view.row_filter("marketing.email", "consent", now=NOW).admits("5")
    # an expired grant is no objection: contract-based purposes still allow
    assert view.allowed("5", "marketing.email", "contract", now=NOW + 1)


def test_explicit_now_is_used_even_when_it_is_zero(store: SqliteMetadataStore) -> None:
    view = view_after(store, ev("5", "grant", 0.0, expires_at=10.0))
    assert view.allowed("5", "marketing.email", "consent", now=0.0)
    assert view.row_filter("marketing.email", "consent", now=0.0).admits("5")


def test_default_now_is_the_current_time(store: SqliteMetadataStore) -> None:
    view = view_after(
        store,
        ev("1", "grant", NOW, expires_at=1.0),  # expired long ago
        ev("2", "grant", NOW, expires_at=4_000_000_000.0),  # expires in 2096
    )
    assert not view.allowed("1", "marketing.email", "consent")
    assert view.allowed("2", "marketing.email", "consent")
    assert view.row_filter("marketing.email", "consent").subjects == frozenset({"2"})


# ------------------------------------------------------------------ refresh


class SpyStore(SqliteMetadataStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[tuple[int, list[int]]] = []

    def consent_rows(self, after_seq: int = 0) -> list[ConsentRow]:
        rows = super().consent_rows(after_seq)
        self.reads.append((after_seq, [r.seq for r in rows]))
        return rows


def test_refresh_reads_only_new_entries_and_revocation_shows_at_once(tmp_path: Path) -> None:
    spy = SpyStore(tmp_path / "m.db")
    ledger = ConsentLedger(spy)
    view = ConsentView(spy)
    first = ledger.record([ev("1", "grant", NOW - 50), ev("2", "grant", NOW - 50)])
    view.refresh()
    assert spy.reads[-1] == (0, first)
    assert view.row_filter("marketing.email", "consent", now=NOW).subjects == {"1", "2"}

    view.refresh()  # nothing new
    assert spy.reads[-1] == (first[-1], [])

    revoke = ledger.record([ev("1", "revoke", NOW - 1)])
    view.refresh()
    assert spy.reads[-1] == (first[-1], revoke)
    assert not view.allowed("1", "marketing.email", "consent", now=NOW)
    assert view.row_filter("marketing.email", "consent", now=NOW).subjects == {"2"}
    assert view.row_filter("marketing.email", "contract", now=NOW).subjects == {"1"}
    spy.close()


def test_view_does_not_change_until_refreshed(store: SqliteMetadataStore) -> None:
    view = view_after(store, ev("1", "grant", NOW - 50))
    ConsentLedger(store).record([ev("1", "revoke", NOW - 1)])
    assert view.allowed("1", "marketing.email", "consent", now=NOW)  # not yet seen
    view.refresh()
    assert not view.allowed("1", "marketing.email", "consent", now=NOW)


# ------------------------------------------------------------------ ledger


def test_ledger_is_append_only_history_in_order(store: SqliteMetadataStore) -> None:
    ledger = ConsentLedger(store)
    seqs = ledger.record(
        [
            ConsentEvent("9", "marketing.email", "grant", NOW - 9, "web", "form#1", NOW + 99),
            ConsentEvent("9", "marketing.email", "revoke", NOW - 20, "email", "unsubscribe"),
            ConsentEvent("10", "marketing.email", "grant", NOW - 1),
        ]
    )
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    history = ledger.history("9")
    assert [(r.action, r.occurred_at, r.source, r.evidence) for r in history] == [
        ("grant", NOW - 9, "web", "form#1"),
        ("revoke", NOW - 20, "email", "unsubscribe"),
    ]
    assert history[0].expires_at == NOW + 99
    assert history[1].expires_at is None
    assert [r.seq for r in history] == seqs[:2]


def test_unknown_action_is_refused_and_nothing_is_written(store: SqliteMetadataStore) -> None:
    ledger = ConsentLedger(store)
    with pytest.raises(ValueError, match="unknown consent action 'pause'"):
        ledger.record([ev("1", "grant", NOW), ev("1", "pause", NOW)])
    assert ledger.history("1") == []
    assert list(store.consent_rows()) == []


# ------------------------------------------------------------------ row filter


def test_row_filter_allow_and_deny() -> None:
    allow = RowFilter(mode="allow", subjects=frozenset({"1", "2"}))
    deny = RowFilter(mode="deny", subjects=frozenset({"1", "2"}))
    for subject, inside in [("1", True), (2, True), ("3", False), (3, False), ("", False)]:
        assert allow.admits(subject) is inside
        assert deny.admits(subject) is not inside
    # a row about nobody in particular: an allow-list cannot vouch for it, a deny-list
    # has no objection to it
    assert not allow.admits(None)
    assert deny.admits(None)
    assert not RowFilter(mode="allow", subjects=frozenset()).admits("1")
    assert RowFilter(mode="deny", subjects=frozenset()).admits("1")


def test_row_filter_shape_per_basis(store: SqliteMetadataStore) -> None:
    view = view_after(
        store,
        ev("a", "grant", NOW - 5),
        ev("b", "revoke", NOW - 5),
        ev("c", "object", NOW - 5),
        ev("d", "grant", NOW - 5, expires_at=NOW - 1),
    )
    assert view.row_filter("marketing.email", "consent", now=NOW) == RowFilter(
        "allow", frozenset({"a"})
    )
    for basis in ("contract", "legitimate_interest"):
        assert view.row_filter("marketing.email", basis, now=NOW) == RowFilter(
            "deny", frozenset({"b", "c"})
        )
    assert view.row_filter("marketing.email", "legal_obligation", now=NOW) == RowFilter(
        "deny", frozenset()
    )


# ------------------------------------------------------------------ property


@dataclass(frozen=True)
class Entry:
    subject: str
    purpose: str
    action: str
    at: float
    expires_at: float | None


SUBJECTS = ("s1", "s2", "s3", "s4")
PURPOSES = ("p.one", "p.two")

entries = st.builds(
    Entry,
    subject=st.sampled_from(SUBJECTS),
    purpose=st.sampled_from(PURPOSES),
    action=st.sampled_from(("grant", "revoke", "object")),
    at=st.integers(0, 6).map(lambda m: NOW - 600 + m * 60.0),  # few distinct times: ties
    expires_at=st.sampled_from([None, None, NOW - 1, NOW, NOW + 1]),
)


def model(ledger: Iterable[Entry], subject: str, purpose: str, basis: str) -> bool:
    """Allowed per the ledger's meaning, from the entries in the order they were recorded."""
    mine = [
        (e.at, i, e) for i, e in enumerate(ledger) if (e.subject, e.purpose) == (subject, purpose)
    ]
    if basis == "legal_obligation":
        return True
    if not mine:
        return basis != "consent"
    latest = max(mine, key=lambda t: (t[0], t[1]))[2]
    if basis == "consent":
        return latest.action == "grant" and (latest.expires_at is None or latest.expires_at > NOW)
    return latest.action not in ("revoke", "object")


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(entries, min_size=1, max_size=6), min_size=1, max_size=4),
    refresh_between=st.booleans(),
)
def test_view_matches_the_ledger_meaning(batches: list[list[Entry]], refresh_between: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        meta = SqliteMetadataStore(Path(tmp) / "m.db")
        try:
            ledger = ConsentLedger(meta)
            view = ConsentView(meta)
            recorded: list[Entry] = []
            for batch in batches:
                ledger.record(
                    ConsentEvent(e.subject, e.purpose, e.action, e.at, expires_at=e.expires_at)  # type: ignore[arg-type]
                    for e in batch
                )
                recorded.extend(batch)
                if refresh_between:
                    view.refresh()
            view.refresh()
            for purpose in (*PURPOSES, "p.never"):
                for basis in BASES:
                    row_filter = view.row_filter(purpose, basis, now=NOW)
                    everyone = (*SUBJECTS, "nobody")
                    for subject in everyone:
                        want = model(recorded, subject, purpose, basis)
                        assert view.allowed(subject, purpose, basis, now=NOW) is want
                        assert row_filter.admits(subject) is want, (subject, purpose, basis)
                    # the monitors' question, for many subjects at once
                    assert view.lacking(everyone, purpose, basis, now=NOW) == [
                        s for s in everyone if not model(recorded, s, purpose, basis)
                    ]
                    assert row_filter.admits(None) is (row_filter.mode == "deny")
        finally:
            meta.close()
