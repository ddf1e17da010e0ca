"""The guard, end to end over a real build: what leaves is exactly what policy allows.

A small project is written to disk, loaded, and built once (DuckDB warehouse + SQLite
online store). Each example then records a random consent history in a fresh ledger
and reads the product through every egress path:

* serve: rows from the online store, decoded and passed through `AccessPlan.apply_row`;
* bulk (syncs): `AccessPlan.select_sql` run by DuckDB;
* stream: `AccessPlan.apply_arrow` on Arrow batches;
* export: the rows `privacy.export` reads (then k-anonymises), subjects never added;
* change stream: what the stream worker appends to `__changes.<product>` for every row,
  whatever the consent: keys, versions and operations only (products/changes.py).

Which subjects may appear, and what each column must look like, are worked out here
from the history and from the policy as written below, not by asking the guard.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.egress.serve.http import dumps
from tidegate.egress.serve.service import shape_of, treat_row
from tidegate.errors import BadRequestError, ForbiddenError, NotFoundError
from tidegate.log.base import Record
from tidegate.meta.sqlite import SqliteMetadataStore
from tidegate.platform import Platform
from tidegate.platform.secrets import load_master_key
from tidegate.privacy.consent import ConsentEvent, ConsentLedger, ConsentView
from tidegate.privacy.guard import SUBJECTS_RELATION, AccessContext, AccessPlan, Guard
from tidegate.privacy.treatments import purpose_key, sql_text
from tidegate.products.builder import build_products, load_sources
from tidegate.products.changes import ChangeEncoder, changes_topic
from tidegate.project import Project, load_project
from tidegate.store.online.codec import decode_row
from tidegate.store.warehouse import PRODUCTS

PRODUCT = "accounts"
MASTER = b"guard-property-test-master-key-0"

# ------------------------------------------------------------------ the project

BASES = {
    "support": "contract",
    "fraud": "legitimate_interest",
    "marketing.email": "consent",
    "analytics": "consent",
    "tax": "legal_obligation",
    "research": "consent",  # defined, but the product does not allow it
}
PRODUCT_PURPOSES = ["support", "fraud", "marketing.email", "analytics", "tax"]
ROLES = {
    "support_agent": ["support"],
    "risk_officer": ["fraud"],
    "marketer": ["marketing.email"],
    "analyst": ["analytics"],
    "accountant": ["tax"],
    "researcher": ["research"],
    "manager": ["support", "analytics"],
    # limited to one product: half of a pooled key (issue 13): with accounts_analyst, it
    # must not read accounts for support
    "plans_support": ["support"],
    "accounts_analyst": ["analytics"],
}
ROLE_PRODUCTS = {"plans_support": ["plan_counts"], "accounts_analyst": [PRODUCT]}

COLUMNS = {  # name: (type, classification)
    "account_id": ("BIGINT", "none"),
    "person_id": ("BIGINT", "user.unique_id"),
    "email": ("VARCHAR", "user.contact.email"),
    "full_name": ("VARCHAR", "user.name"),
    "birth_date": ("DATE", "user.demographic.date_of_birth"),
    "balance": ("DOUBLE", "user.financial.balance"),
    "last_seen": ("TIMESTAMP WITH TIME ZONE", "user.behavior.last_seen"),
    "notes": ("VARCHAR", "user.sensitive.notes"),
    "plan": ("VARCHAR", "none"),
}

POLICY_YAML = """
purposes:
{purposes}
roles:
{roles}
treatments:
  "*":
    user.unique_id: clear
    user.contact: drop
    user.financial: drop
  support:
    user.contact: clear
    user.name: {{treatment: mask, keep: 2}}
    user.demographic: {{treatment: generalize, granularity: year}}
    user.behavior: clear
  fraud:
    user.contact.email: hash
    user.financial: clear
    user.behavior: generalize
  marketing.email:
    user.contact.email: mask
    user.name: {{treatment: generalize, keep: 1}}
  analytics:
    user.unique_id: hash
    user.financial: {{treatment: generalize, step: 2.5}}
    user.demographic: generalize
    user.behavior: hash
  tax:
    user.name: clear
    user.financial: hash
default_treatment: drop
"""

# What the policy above means for each column, worked out by hand (not by the code).
# Columns absent from a purpose's map are dropped.
EXPECTED_TREATMENT: dict[str, dict[str, tuple[str, Any]]] = {
    "support": {
        "account_id": ("clear", None),
        "person_id": ("clear", None),
        "email": ("clear", None),
        "full_name": ("mask", 2),
        "birth_date": ("generalize", "year"),
        "last_seen": ("clear", None),
        "plan": ("clear", None),
    },
    "fraud": {
        "account_id": ("clear", None),
        "person_id": ("clear", None),
        "email": ("hash", None),
        "balance": ("clear", None),
        "last_seen": ("generalize", "month"),
        "plan": ("clear", None),
    },
    "marketing.email": {
        "account_id": ("clear", None),
        "person_id": ("clear", None),
        "email": ("mask", 1),
        "full_name": ("generalize", 1),
        "plan": ("clear", None),
    },
    "analytics": {
        "account_id": ("clear", None),
        "person_id": ("hash", None),
        "balance": ("generalize", 2.5),
        "birth_date": ("generalize", "month"),
        "last_seen": ("hash", None),
        "plan": ("clear", None),
    },
    "tax": {
        "account_id": ("clear", None),
        "person_id": ("clear", None),
        "full_name": ("clear", None),
        "balance": ("hash", None),
        "plan": ("clear", None),
    },
}


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@dataclass(frozen=True)
class Account:
    account_id: int
    person_id: int | None
    email: str | None
    full_name: str
    birth_date: dt.date | None
    balance: float
    last_seen: dt.datetime | None
    last_seen_text: str | None  # DuckDB's text of it in UTC: what a hash covers
    notes: str
    plan: str


ACCOUNTS = [
    Account(1, 101, "ada@example.com", "Ada Lovelace", dt.date(1815, 12, 10), 120.75,
            ts("2024-03-01T10:00:00+00:00"), "2024-03-01 10:00:00+00", "vip", "gold"),
    Account(2, 101, "ada@work.example", "Ada, Countess", dt.date(1815, 12, 10), 0.0,
            ts("2024-03-02T08:15:30.5+00:00"), "2024-03-02 08:15:30.5+00", "second", "basic"),
    Account(3, 102, "grace@example.com", "Grace Hopper", dt.date(1906, 12, 9), -3.5,
            # late on 29 Feb at -02:00 is already March in UTC
            ts("2024-02-29T23:30:00-02:00"), "2024-03-01 01:30:00+00", "", "gold"),
    Account(4, 103, "zoë@exämple.org", "Zoë Ñandú", dt.date(2000, 2, 29), 1e6,
            ts("2023-12-31T23:59:59+00:00"), "2023-12-31 23:59:59+00", "ünïcode", "basic"),
    Account(5, 104, None, "X", None, 7.25, None, None, "nulls", "basic"),
    Account(6, 105, "linus@example.com", "Linus T", dt.date(1969, 12, 28), 99.99,
            ts("2025-01-15T12:00:00+05:30"), "2025-01-15 06:30:00+00", "n", "gold"),
    Account(7, None, "ops@example.com", "Shared Inbox", None, 1.0,
            ts("2024-06-01T00:00:00+00:00"), "2024-06-01 00:00:00+00", "no person", "team"),
    Account(8, 102, "grace@navy.example", "Amazing Grace", dt.date(1906, 12, 9), 250.0,
            ts("2024-07-04T12:00:00+00:00"), "2024-07-04 12:00:00+00", "", "basic"),
]  # fmt: skip
SUBJECT_IDS = sorted({a.person_id for a in ACCOUNTS if a.person_id is not None})


def write_project(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    for folder in ("sources", "products", "policies", "syncs"):
        (root / folder).mkdir()
    (root / "tidegate.yml").write_text("name: guard_props\n", encoding="utf-8")
    with (root / "data" / "accounts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for a in ACCOUNTS:
            writer.writerow(
                [
                    a.account_id,
                    "" if a.person_id is None else a.person_id,
                    a.email or "",
                    a.full_name,
                    a.birth_date or "",
                    repr(a.balance),
                    "" if a.last_seen is None else a.last_seen.isoformat(sep=" "),
                    a.notes,
                    a.plan,
                ]
            )
    columns_yaml = "\n".join(
        f"  {name}: {{type: {t}" + (f", classification: {c}" if c else "") + "}"
        for name, (t, c) in COLUMNS.items()
    )
    (root / "sources" / "accounts_raw.yml").write_text(
        "name: accounts_raw\ntype: file\npath: data/accounts.csv\nkey: account_id\n"
        f"subject: person_id\ncolumns:\n{columns_yaml}\n",
        encoding="utf-8",
    )
    (root / "products" / f"{PRODUCT}.yml").write_text(
        f"name: {PRODUCT}\nowner: test\nkey: account_id\nsubject: person_id\n"
        f"sql: SELECT {', '.join(COLUMNS)} FROM accounts_raw\n"
        f"purposes: [{', '.join(PRODUCT_PURPOSES)}]\ncolumns:\n{columns_yaml}\n",
        encoding="utf-8",
    )
    purposes = "\n".join(f"  {p}: {{legal_basis: {b}}}" for p, b in BASES.items())
    roles = "\n".join(
        f"  {r}: {{purposes: [{', '.join(ps)}], products: {ROLE_PRODUCTS.get(r, ['*'])}}}"
        for r, ps in ROLES.items()
    )
    (root / "products" / "plan_counts.yml").write_text(
        "name: plan_counts\nowner: test\nkey: plan\n"
        "sql: SELECT plan, count(*) AS n FROM accounts_raw GROUP BY plan\n"
        "purposes: [support, analytics]\ncolumns:\n"
        "  plan: {type: VARCHAR, classification: none}\n"
        "  n: {type: BIGINT, classification: none}\n",
        encoding="utf-8",
    )
    (root / "policies" / "policy.yml").write_text(
        POLICY_YAML.format(purposes=purposes, roles=roles), encoding="utf-8"
    )
    (root / "syncs" / "fraud_feed.yml").write_text(
        f"name: fraud_feed\nproduct: {PRODUCT}\npurpose: fraud\n"
        "destination: {type: sqlite, path: out/fraud.db, table: accounts}\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("guard_project")
    write_project(root)
    project = load_project(root)
    with Platform(project) as built:
        assert load_sources(built) == {"accounts_raw": len(ACCOUNTS)}
        results = build_products(built)
        assert {(r.product, r.status) for r in results} == {
            (PRODUCT, "live"),
            ("plan_counts", "live"),
        }, results
        yield built


@pytest.fixture(scope="module")
def changes(platform: Platform) -> list[Record]:
    return change_stream(platform)


# ------------------------------------------------------------------ the egress paths


def serve_rows(platform: Platform, plan: AccessPlan) -> dict[int, dict[str, Any]]:
    types = {n: s.type for n, s in platform.project.products[PRODUCT].columns.items()}
    out: dict[int, dict[str, Any]] = {}
    for account in ACCOUNTS:
        encoded = platform.online.read(PRODUCT, str(account.account_id))
        assert encoded is not None
        treated = plan.apply_row(decode_row(encoded, types))
        if treated is not None:
            out[account.account_id] = treated
    return out


def served_rows(platform: Platform, plan: AccessPlan) -> dict[int, dict[str, Any]]:
    """What the serving API answers: the stored JSON through its own row treatment (the
    plan's treatments bound once per column, the row filter unpacked: `shape_of`)."""
    shape = shape_of(plan)
    out: dict[int, dict[str, Any]] = {}
    for account in ACCOUNTS:
        encoded = platform.online.read(PRODUCT, str(account.account_id))
        assert encoded is not None
        treated, subject = treat_row(shape, orjson.loads(encoded))
        assert subject == (None if account.person_id is None else str(account.person_id))
        if treated is not None:
            out[account.account_id] = treated
    return out


def bulk_rows(platform: Platform, plan: AccessPlan) -> dict[int, dict[str, Any]]:
    tree = plan.select_sql(f'{PRODUCTS}."{PRODUCT}"', with_subject="__subject")
    table = platform.warehouse.arrow(sql_text(tree), **{SUBJECTS_RELATION: plan.subjects_table()})
    out: dict[int, dict[str, Any]] = {}
    by_id = {a.account_id: a for a in ACCOUNTS}
    for row in table.to_pylist():
        subject = row.pop("__subject")
        account = by_id[row["account_id"]]
        assert subject == (None if account.person_id is None else str(account.person_id))
        out[row["account_id"]] = row
    return out


def stream_rows(platform: Platform, plan: AccessPlan) -> dict[int, dict[str, Any]]:
    """The streaming path: the product's rows as Arrow batches through `apply_arrow`."""
    table = platform.warehouse.arrow(f'SELECT * FROM {PRODUCTS}."{PRODUCT}"')
    out: dict[int, dict[str, Any]] = {}
    for batch in table.to_batches(max_chunksize=7):
        for row in plan.apply_arrow(batch).to_pylist():
            out[row["account_id"]] = row
    return out


def export_rows(platform: Platform, plan: AccessPlan) -> dict[int, dict[str, Any]]:
    """The export path: the rows `privacy.export` anonymises, before generalisation; and,
    after k-anonymisation on one column, every subject left must be among them."""
    from tidegate.egress.export import SUBJECT_MARKER, guarded_rows
    from tidegate.privacy.anonymize import anonymize

    rows = guarded_rows(platform, plan)
    subjects = {r[SUBJECT_MARKER] for r in rows}
    qi = next(c.name for c in plan.visible_columns if c.name != plan.key_column)
    anonymised = anonymize([dict(r) for r in rows], [qi], 2, 0.5)
    assert {r[SUBJECT_MARKER] for r in anonymised.rows} <= subjects
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        row.pop(SUBJECT_MARKER)
        out[row["account_id"]] = row
    return out


def change_stream(platform: Platform) -> list[Record]:
    """Every row of the product published on its change stream, read back raw from the log
    (what the stream worker appends after a micro-batch touched them all)."""
    encoder = ChangeEncoder(platform.project.products[PRODUCT], platform.master_key)
    keys = [a.account_id for a in ACCOUNTS]
    topic = changes_topic(PRODUCT)
    log = platform.event_log
    log.append(topic, encoder.messages(keys[:-1], keys[-1:], 1, time.time()))
    return [r for p in range(log.partitions(topic)) for r in log.read(topic, p, 0, 1000)]


def assert_change_stream_holds_keys_only(records: list[Record]) -> None:
    blob = b"\n".join((r.key or b"") + b"\t" + (r.value or b"") for r in records)
    for account in ACCOUNTS:
        for value in (account.email, account.full_name, account.birth_date, account.last_seen):
            if value is not None:
                assert str(value).encode() not in blob
                assert json.dumps(str(value))[1:-1].encode() not in blob
    messages = [json.loads(r.value or b"") for r in records]
    assert {tuple(sorted(m)) for m in messages} == {("at", "key", "op", "version")}
    # `account_id` is declared non-personal and is not the subject: its key stays clear
    assert sorted(m["key"] for m in messages) == sorted(str(a.account_id) for a in ACCOUNTS)
    assert [r.key for r in records] == [m["key"].encode() for m in messages]


# ------------------------------------------------------------------ expectations


def hmac_hex(purpose: str, text: str) -> str:
    return hmac.new(purpose_key(MASTER, purpose).key, text.encode(), hashlib.sha256).hexdigest()


def expected_value(purpose: str, column: str, account: Account) -> Any:
    kind, arg = EXPECTED_TREATMENT[purpose][column]
    value = getattr(account, column)
    if value is None or kind == "clear":
        return value
    if kind == "hash":
        text = {
            "last_seen": account.last_seen_text,
            "balance": repr(account.balance),
            "person_id": str(account.person_id),
        }.get(column, value)
        return hmac_hex(purpose, text)
    if kind == "mask":
        at = value.find("@")
        return value[:arg] + "***" + (value[at:] if at >= 0 else "")
    if kind == "generalize":
        if isinstance(value, str):
            return value[:arg]
        if isinstance(value, float):
            return (value // arg) * arg
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).date()
        return value.replace(month=1, day=1) if arg == "year" else value.replace(day=1)
    raise AssertionError(kind)


def expected_rows(purpose: str, subjects: set[int]) -> dict[int, dict[str, Any]]:
    visible = EXPECTED_TREATMENT[purpose]
    return {
        a.account_id: {c: expected_value(purpose, c, a) for c in COLUMNS if c in visible}
        for a in ACCOUNTS
        if (a.person_id in subjects)
        # a row about no one cannot have been consented to; without consent as the basis
        # nobody objected to it either
        or (a.person_id is None and BASES[purpose] != "consent")
    }


@dataclass(frozen=True)
class Choice:
    subject: int
    purpose: str
    action: str
    minutes_ago: int
    expires: str  # never | past | future


def allowed_subjects(history: list[Choice], purpose: str) -> set[int]:
    """Subjects with a legal basis for `purpose` under `history` (in ledger order)."""
    basis = BASES[purpose]
    allowed: set[int] = set()
    for subject in SUBJECT_IDS:
        mine = [(c.minutes_ago, i, c) for i, c in enumerate(history)]
        mine = [m for m in mine if (m[2].subject, m[2].purpose) == (subject, purpose)]
        if basis == "legal_obligation":
            ok = True
        elif not mine:
            ok = basis != "consent"
        else:
            # the latest choice made: fewest minutes ago, then the later ledger entry
            latest = min(mine, key=lambda m: (m[0], -m[1]))[2]
            if basis == "consent":
                ok = latest.action == "grant" and latest.expires in ("never", "future")
            else:
                ok = latest.action not in ("revoke", "object")
        if ok:
            allowed.add(subject)
    return allowed


def to_event(choice: Choice, now: float) -> ConsentEvent:
    expires = {"never": None, "past": now - 3600, "future": now + 3600}[choice.expires]
    return ConsentEvent(
        subject=str(choice.subject),
        purpose=choice.purpose,
        action=choice.action,  # type: ignore[arg-type]
        occurred_at=now - 86_400 + (60 - choice.minutes_ago) * 60.0,
        expires_at=expires,
    )


@contextmanager
def fresh_guard(project: Project, tmp: Path, events: list[ConsentEvent]) -> Iterator[Guard]:
    """A guard over a ledger of its own, so examples never see each other's consent."""
    store = SqliteMetadataStore(tmp / "consent.db")
    try:
        if events:
            ConsentLedger(store).record(events)
        yield Guard(project, ConsentView(store), MASTER)
    finally:
        store.close()


def may_declare(roles: tuple[str, ...], purpose: str) -> bool:
    """One single role must allow the purpose on the product: roles are never pooled."""
    return any(purpose in ROLES[r] and PRODUCT in ROLE_PRODUCTS.get(r, [PRODUCT]) for r in roles)


# ------------------------------------------------------------------ the property


def histories(focus: str) -> st.SearchStrategy[list[Choice]]:
    """Consent histories, most choices about the purpose asked for so that they matter."""
    about = st.one_of(st.just(focus), st.sampled_from(sorted(BASES)))
    return st.lists(
        st.builds(
            Choice,
            subject=st.sampled_from([*SUBJECT_IDS, 999]),  # 999 has no rows
            purpose=about,
            action=st.sampled_from(["grant", "revoke", "object"]),
            minutes_ago=st.integers(0, 5),  # few distinct moments: ties happen
            expires=st.sampled_from(["never", "never", "past", "future"]),
        ),
        max_size=25,
    )


def role_sets(purpose: str | None) -> st.SearchStrategy[tuple[str, ...]]:
    """Any roles, and often one that may declare `purpose` among them."""
    able = sorted(r for r, ps in ROLES.items() if purpose in ps) or sorted(ROLES)
    return st.builds(
        lambda some, extra: tuple(dict.fromkeys([*some, *extra])),
        st.lists(st.sampled_from(sorted(ROLES)), max_size=2, unique=True),
        st.lists(st.sampled_from(able), max_size=1),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_leaves_is_exactly_what_policy_and_consent_allow(
    platform: Platform, changes: list[Record], data: st.DataObject
) -> None:
    purpose = data.draw(st.sampled_from([*sorted(BASES), None, "", "nope"]), label="purpose")
    history = data.draw(histories(purpose if purpose in BASES else "support"), label="history")
    roles = data.draw(role_sets(purpose), label="roles")
    now = time.time()
    context = AccessContext(principal="prop", roles=roles, purpose=purpose)
    events = [to_event(c, now) for c in history]
    # (e) the change stream carries no row values of anyone, whatever was declared
    assert_change_stream_holds_keys_only(changes)
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_guard(platform.project, Path(tmp), events) as guard,
    ):
        # (d) who may declare what
        if not purpose:
            with pytest.raises(BadRequestError):
                guard.plan(context, PRODUCT)
            return
        if purpose not in PRODUCT_PURPOSES or not may_declare(roles, purpose):
            with pytest.raises(ForbiddenError):
                guard.plan(context, PRODUCT)
            return
        plan = guard.plan(context, PRODUCT)
        served = serve_rows(platform, plan)
        api = served_rows(platform, plan)
        bulk = bulk_rows(platform, plan)
        stream = stream_rows(platform, plan)
        exported = export_rows(platform, plan)

    expected = expected_rows(purpose, allowed_subjects(history, purpose))
    # (a) exactly the subjects with a legal basis; (b) every column as the policy says
    assert served == expected
    # the API's answer as sent (the store's date and time text where no treatment
    # types it) is the JSON of the typed rows above
    assert dumps(api) == dumps(served)
    assert bulk == expected
    # (c) the two paths agree, column for column
    assert served == bulk
    assert stream == expected
    assert exported == expected
    for rows in (served, api, bulk, stream, exported):
        for row in rows.values():
            assert list(row) == [c for c in COLUMNS if c in EXPECTED_TREATMENT[purpose]]


# ------------------------------------------------------------------ named cases


@pytest.fixture
def guard(platform: Platform, tmp_path: Path) -> Iterator[Guard]:
    """A guard over an empty ledger of its own."""
    with fresh_guard(platform.project, tmp_path, []) as fresh:
        yield fresh


def plan_for(guard: Guard, purpose: str | None, *roles: str) -> AccessPlan:
    return guard.plan(AccessContext("someone", roles, purpose), PRODUCT)


def test_revocation_shows_on_the_next_plan(platform: Platform, tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "consent.db")
    ledger = ConsentLedger(store)
    guard = Guard(platform.project, ConsentView(store), MASTER)
    now = time.time()
    ledger.record(
        [
            ConsentEvent("101", "marketing.email", "grant", now - 60),
            ConsentEvent("102", "marketing.email", "grant", now - 60),
        ]
    )
    plan = plan_for(guard, "marketing.email", "marketer")
    assert set(serve_rows(platform, plan)) == set(bulk_rows(platform, plan)) == {1, 2, 3, 8}
    ledger.record([ConsentEvent("102", "marketing.email", "revoke", now - 1)])
    plan = plan_for(guard, "marketing.email", "marketer")
    assert set(serve_rows(platform, plan)) == set(bulk_rows(platform, plan)) == {1, 2}
    store.close()


def test_objection_removes_a_subject_from_contract_purposes(
    platform: Platform, tmp_path: Path
) -> None:
    store = SqliteMetadataStore(tmp_path / "consent.db")
    guard = Guard(platform.project, ConsentView(store), MASTER)
    everyone = {a.account_id for a in ACCOUNTS}
    assert set(bulk_rows(platform, plan_for(guard, "support", "support_agent"))) == everyone
    ConsentLedger(store).record([ConsentEvent("101", "support", "object", time.time())])
    plan = plan_for(guard, "support", "support_agent")
    assert set(bulk_rows(platform, plan)) == set(serve_rows(platform, plan)) == everyone - {1, 2}
    # a legal obligation does not bend to objections
    ConsentLedger(store).record([ConsentEvent("101", "tax", "object", time.time())])
    plan = plan_for(guard, "tax", "accountant")
    assert set(bulk_rows(platform, plan)) == set(serve_rows(platform, plan)) == everyone
    store.close()


@pytest.mark.parametrize("purpose", [None, ""])
def test_no_purpose_is_a_bad_request(guard: Guard, purpose: Any) -> None:
    with pytest.raises(BadRequestError, match="purpose is required"):
        plan_for(guard, purpose, "manager")
    with pytest.raises(BadRequestError):
        guard.plan(AccessContext("sync:x", (), purpose), PRODUCT, check_roles=False)


@pytest.mark.parametrize(
    ("purpose", "roles"),
    [
        ("marketing.email", ("support_agent",)),  # a role that may not declare it
        # roles not pooled: support (on plan_counts only) + analytics (on accounts)
        ("support", ("plans_support", "accounts_analyst")),
        ("analytics", ()),  # no roles at all
        ("marketing.email", ("manager", "analyst")),
        ("nope", ("manager",)),  # not a purpose
        ("research", ("researcher",)),  # may declare it, but the product does not allow it
    ],
)
def test_purposes_the_roles_may_not_use_are_forbidden(
    guard: Guard, purpose: str, roles: tuple[str, ...]
) -> None:
    with pytest.raises(ForbiddenError):
        plan_for(guard, purpose, *roles)


def test_syncs_skip_role_checks_but_not_purpose_checks(guard: Guard) -> None:
    plan = guard.plan(AccessContext("sync:x", (), "fraud"), PRODUCT, check_roles=False)
    assert plan.purpose == "fraud"
    for purpose in ("research", "nope"):
        with pytest.raises(ForbiddenError):
            guard.plan(AccessContext("sync:x", (), purpose), PRODUCT, check_roles=False)
    with pytest.raises(NotFoundError):
        guard.plan(AccessContext("a", ("support_agent",), "support"), "no_such_product")


def test_plan_matches_the_policy_written_by_hand(guard: Guard) -> None:
    for purpose, visible in EXPECTED_TREATMENT.items():
        role = next(r for r, ps in ROLES.items() if ps == [purpose])
        plan = plan_for(guard, purpose, role)
        assert {c: t for c, t in plan.treatments().items() if t != "drop"} == {
            c: kind for c, (kind, _arg) in visible.items()
        }
        assert set(plan.treatments()) == set(COLUMNS)  # dropped columns are still listed
        assert plan.legal_basis == BASES[purpose]


def test_hash_key_stays_out_of_plan_repr(guard: Guard) -> None:
    plan = plan_for(guard, "analytics", "analyst")
    key = purpose_key(MASTER, "analytics").key
    assert key.hex() not in repr(plan)
    assert repr(key) not in repr(plan)


def test_sync_egress_audit_records_hold_no_key_material(platform: Platform) -> None:
    from tidegate.egress.sync import run_sync

    report = run_sync(platform, "fraud_feed")
    assert report.status == "ok", report.errors
    assert report.added == len(ACCOUNTS)  # fraud is legitimate interest; nobody objected
    master = load_master_key(platform.state_dir)
    secrets = [master, *(purpose_key(master, p).key for p in BASES)]
    bodies = [r.body for r in platform.meta.audit_records()]
    syncs = [json.loads(b) for b in bodies if json.loads(b)["action"] == "sync"]
    assert syncs
    assert syncs[-1]["columns"]["email"] == "hash"
    for body in bodies:
        for secret in secrets:
            assert secret.hex() not in body.lower()
            assert repr(secret) not in body
            if secret.isascii():
                assert secret.decode() not in body
    assert platform.audit.verify() == []
