"""Deterministic data for the demo shop: customers, orders, web events, tickets, consent.

Why generated, and why this way:

* **Deterministic.** Same `seed`, `anchor` and `size` give the same table contents, so
  the demo tour, docs and tests can name concrete rows. Each table draws from its own
  child stream of the seed (`SeedSequence.spawn`), so changing one table's size does
  not reshuffle the others.
* **Anchored.** `anchor` is "now" for the data (default: today 00:00 UTC). Every
  timestamp lies in the two years before it, never after it, and activity leans
  recent, as in a growing shop. Customer ids follow sign-up order. About a tenth of
  customers never order; about a third stop all activity at some point (churn).
* **Obviously fake.** Names come from short built-in lists; emails use reserved example
  domains (RFC 2606); phone numbers use ranges regulators keep for fiction (North
  American 555-01xx, French ARCEP 06 39 98 xx xx, and UK Ofcom 07700 900xxx for every
  other country); IP addresses are in the documentation ranges (RFC 5737).
* **Fast.** Vectorised numpy; strings are taken from small pools by index with Arrow, so
  the default size (1M web events) is written in a couple of seconds.

Fixed rows the demo tour relies on (the same for every seed and size):

* **Customer 1, Ada Lovelace** (GB, ``ada.lovelace1@example.com``, the oldest account):
  grants ``marketing.email`` and ``analytics`` at sign-up and never revokes. Six paid
  orders, two closed tickets (the later one rated 2, unhappy), two web sessions; her
  last activity is about 200 days before the anchor, so ``churn_risk`` rates her
  ``high`` and she is in ``marketing_audience`` (and, having consented, reaches the CRM
  sync).
* **Customer 2, Grace Hopper** (US, ``grace.hopper2@example.com``): grants
  ``marketing.email`` at sign-up and revokes it 150 days before the anchor; grants
  ``analytics`` and keeps it. Three orders (the last refunded), one closed ticket rated
  1, one web session; last activity about 160 days before the anchor, so
  ``churn_risk`` rates her ``medium``. She is in ``marketing_audience``'s SQL output,
  but the guard removes her at egress under ``marketing.email``: the revocation at work.

Neither of them appears in the randomly generated orders, tickets or web sessions, so
their histories above are complete. (The churn ratings assume others were active near
the anchor, which holds from `SMALL` up: churn_risk measures inactivity against the
latest activity in the data.) The ``support`` purpose rests on contract, so the
consent ledger has no rows for it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Progress = Callable[[str, int, int], None]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

DAY = 86_400
HISTORY_DAYS = 730
WEB_CHUNK_ROWS = 200_000
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class ShopSize:
    """Rows per table; the default is big enough that DuckDB timings mean something."""

    customers: int = 10_000
    orders: int = 100_000
    web_events: int = 1_000_000
    tickets: int = 20_000


#: A few hundred customers: enough for every code path, fast enough for unit tests.
SMALL = ShopSize(customers=300, orders=3_000, web_events=30_000, tickets=600)

#: The smallest shop that still holds the fixed rows of customers 1 and 2.
MINIMUM = ShopSize(customers=10, orders=20, web_events=50, tickets=10)


def generate_shop(
    out_dir: Path,
    *,
    seed: int = 7,
    size: ShopSize = ShopSize(),
    anchor: datetime | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write the shop's Parquet files into `out_dir`; return rows written per table."""
    now = _anchor_seconds(anchor)
    _check_size(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = [
        np.random.Generator(np.random.PCG64(child))
        for child in np.random.SeedSequence(seed).spawn(5)
    ]
    report = progress or _no_progress
    counts: dict[str, int] = {}

    people = _customers(streams[0], now, size.customers)
    counts["customers"] = _write(out_dir, "customers", people.table, report)
    orders = _orders(streams[1], now, size.orders, people)
    counts["orders"] = _write(out_dir, "orders", orders.table, report)
    counts["web_events"] = _write_web_events(
        out_dir, streams[2], now, size.web_events, people, report
    )
    counts["tickets"] = _write(
        out_dir, "tickets", _tickets(streams[3], now, size.tickets, orders), report
    )
    counts["consent_events"] = _write(
        out_dir, "consent_events", _consent_events(streams[4], now, people), report
    )
    return counts


# ---------------------------------------------------------------- reference data

FIRST_NAMES = (
    "Adam", "Aisha", "Alba", "Amara", "Ana", "Arjun", "Ben", "Carla", "Chen", "Chloe",
    "Daniel", "Elif", "Emma", "Eva", "Felix", "Freya", "Hana", "Hugo", "Ines", "Isaac",
    "Jonas", "Kai", "Lara", "Leo", "Lina", "Luca", "Maya", "Mei", "Mila", "Noah",
    "Nora", "Olga", "Omar", "Priya", "Rosa", "Sami", "Sofia", "Theo", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Achebe", "Bauer", "Berg", "Byrne", "Costa", "Dubois", "Evans", "Fischer", "Garcia",
    "Hansen", "Ito", "Jansen", "Kaur", "Khan", "Kowalski", "Larsen", "Lopez", "Martin",
    "Meyer", "Moreau", "Murphy", "Nguyen", "Novak", "Okafor", "Patel", "Peters", "Rossi",
    "Santos", "Schmidt", "Silva", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor",
    "Visser", "Walsh", "Wang", "Weber", "Wilson",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "inbox.example")

# country -> (weight, phone style, [(city, postal prefixes)])
COUNTRIES: dict[str, tuple[float, str, list[tuple[str, tuple[str, ...]]]]] = {
    "GB": (0.30, "gb", [("London", ("SW", "SE", "N", "E", "W", "NW", "EC")),
                        ("Manchester", ("M",)), ("Bristol", ("BS",)), ("Leeds", ("LS",)),
                        ("Edinburgh", ("EH",)), ("Glasgow", ("G",))]),
    "US": (0.20, "nanp", [("New York", ("100", "101")), ("Chicago", ("606",)),
                          ("Seattle", ("981",)), ("Austin", ("787",)), ("Boston", ("021",))]),
    "DE": (0.12, "gb", [("Berlin", ("10", "12")), ("Hamburg", ("20", "22")),
                        ("Munich", ("80", "81")), ("Cologne", ("50",))]),
    "FR": (0.10, "fr", [("Paris", ("750",)), ("Lyon", ("690",)), ("Marseille", ("130",)),
                        ("Lille", ("590",))]),
    "NL": (0.08, "gb", [("Amsterdam", ("10",)), ("Rotterdam", ("30",)), ("Utrecht", ("35",))]),
    "IE": (0.07, "gb", [("Dublin", ("D02", "D04", "D08")), ("Cork", ("T12",)),
                        ("Galway", ("H91",))]),
    "ES": (0.07, "gb", [("Madrid", ("280",)), ("Barcelona", ("080",)), ("Valencia", ("460",))]),
    "CA": (0.06, "nanp", [("Toronto", ("M",)), ("Vancouver", ("V",)), ("Montreal", ("H",))]),
}  # fmt: skip
COUNTRY_CODES = tuple(COUNTRIES)
NANP_AREAS = {"US": ("212", "312", "206", "512", "617"), "CA": ("416", "604", "514")}
LETTERS = "ABCDEFGHJKLMNPRSTUVWXY"  # no I, O, Q, Z: they confuse people in postcodes

EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout")
EVENT_WEIGHTS = (0.55, 0.30, 0.10, 0.05)
PAGES = (
    "/", "/about", "/delivery", "/returns", "/sale", "/search", "/account",
    "/account/orders", "/contact", "/category/kitchen", "/category/garden",
    "/category/bath", "/category/textiles", "/category/gifts",
)  # fmt: skip
PRODUCTS = tuple(
    f"/products/{adjective}-{noun}"
    for adjective in ("linen", "oak", "copper", "wool", "stone", "bamboo", "glass", "clay")
    for noun in ("apron", "bowl", "lamp", "mug", "planter", "rug", "throw", "tray", "vase")
)
URLS = (*PAGES, *PRODUCTS, "/cart", "/checkout")
URL_CART = len(PAGES) + len(PRODUCTS)
URL_CHECKOUT = URL_CART + 1
IP_ADDRESSES = tuple(
    f"{net}.{host}" for net in ("192.0.2", "198.51.100", "203.0.113") for host in range(1, 255)
)

ORDER_STATUSES = ("paid", "refunded", "cancelled")
TICKET_CHANNELS = ("email", "chat", "phone")
TICKET_TOPICS = ("delivery", "refund", "account", "product")
PURPOSES = ("marketing.email", "analytics")
SOURCES = ("signup_form", "preference_center", "cookie_banner")


# ---------------------------------------------------------------- customers


@dataclass(frozen=True)
class _Customers:
    table: pa.Table
    signup: IntArray  # seconds since the epoch, index = customer_id - 1
    active_until: IntArray  # churned customers do nothing after this; the rest: `now`
    order_weight: FloatArray  # relative chance of each random order being theirs
    web_weight: FloatArray  # relative chance of each web session being theirs


def _customers(rng: np.random.Generator, now: int, n: int) -> _Customers:
    ids = np.arange(1, n + 1, dtype=np.int64)
    # A growing shop: recent sign-ups are more common. Sorted so ids follow sign-up order;
    # customers 1 and 2 are the two oldest accounts.
    ages = np.sort(1 + (HISTORY_DAYS - 42) * rng.random(n - 2) ** 1.6)[::-1]
    signup = np.concatenate(
        [
            np.array([now - 720 * DAY + 34_320, now - 712 * DAY + 50_700], dtype=np.int64),
            (now - ages * DAY).astype(np.int64),
        ]
    )
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    country = rng.choice(
        len(COUNTRY_CODES), n, p=_normalised([w for w, _, _ in COUNTRIES.values()])
    )
    city_pick = rng.random(n)
    digits = rng.integers(0, 10, (n, 6))
    letters = rng.integers(0, len(LETTERS), (n, 4))
    domains = rng.choice(len(EMAIL_DOMAINS), n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    age_years = np.clip(rng.normal(41, 13, n), 18, 85)
    birth_days = (now // DAY - age_years * 365.25).astype(np.int32)

    first_names = [FIRST_NAMES[i] for i in first]
    last_names = [LAST_NAMES[i] for i in last]
    first_names[:2], last_names[:2] = ["Ada", "Grace"], ["Lovelace", "Hopper"]
    country[:2] = [COUNTRY_CODES.index("GB"), COUNTRY_CODES.index("US")]
    domains[:2] = 0
    countries, cities, postal_codes, phones, emails = [], [], [], [], []
    for i in range(n):
        code = COUNTRY_CODES[country[i]]
        _, phone_style, places = COUNTRIES[code]
        city, prefixes = places[int(city_pick[i] * len(places))]
        d, ltr = digits[i], letters[i]
        countries.append(code)
        cities.append(city)
        postal_codes.append(_postal_code(code, prefixes[d[5] % len(prefixes)], d, ltr))
        phones.append(_phone(code, phone_style, d))
        emails.append(
            f"{first_names[i]}.{last_names[i]}{i + 1}@{EMAIL_DOMAINS[domains[i]]}".lower()
        )

    raw = rng.lognormal(0.0, 1.0, n)
    tenure = np.sqrt((now - signup) / (HISTORY_DAYS * DAY))
    order_weight = raw * (0.2 + tenure)
    order_weight[rng.random(n) < 0.10] = 0.0  # about one in ten never orders
    web_weight = 0.5 + raw
    # About a third of customers drift away at some point after signing up: without
    # them every customer would be active last week and churn_risk would have no work.
    churned = rng.random(n) < 0.3
    active_until = np.where(
        churned, signup + ((now - signup) * rng.random(n)).astype(np.int64), now
    ).astype(np.int64)
    active_until = np.maximum(active_until, signup + 3_600)
    # Customers 1 and 2 get only their fixed, documented history.
    order_weight[:2] = 0.0
    web_weight[:2] = 0.0

    table = pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "first_name": pa.array(first_names, pa.string()),
            "last_name": pa.array(last_names, pa.string()),
            "email": pa.array(emails, pa.string()),
            "phone": pa.array(phones, pa.string()),
            "birth_date": pa.array(birth_days, pa.date32()),
            "postal_code": pa.array(postal_codes, pa.string()),
            "city": pa.array(cities, pa.string()),
            "country": pa.array(countries, pa.string()),
            "signed_up_at": _timestamps(signup),
        }
    )
    return _Customers(table, signup, active_until, order_weight, web_weight)


def _postal_code(country: str, prefix: str, d: Sequence[Any], ltr: Sequence[Any]) -> str:
    """A code in the country's format and the city's area; plausible, not validated."""
    letter = [LETTERS[i] for i in ltr]
    if country == "GB":
        return f"{prefix}{d[0] + 1} {d[1]}{letter[0]}{letter[1]}"
    if country == "NL":
        return f"{prefix}{d[0]}{d[1]} {letter[0]}{letter[1]}"
    if country == "IE":
        return f"{prefix} {letter[0]}{d[0]}{d[1]}{letter[1]}"
    if country == "CA":
        return f"{prefix}{d[0]}{letter[0]} {d[1]}{letter[1]}{d[2]}"
    tail = "".join(str(x) for x in d[: 5 - len(prefix)])
    if country == "FR" and prefix == "750":  # Paris arrondissements: 75001 .. 75019
        tail = f"{d[0] % 2}{d[1] if d[0] % 2 else max(d[1], 1)}"
    return prefix + tail


def _phone(country: str, style: str, d: Sequence[Any]) -> str:
    if style == "nanp":
        area = NANP_AREAS[country][d[4] % len(NANP_AREAS[country])]
        return f"+1 {area} 555 01{d[0]}{d[1]}"
    if style == "fr":
        return f"+33 6 39 98 {d[0]}{d[1]} {d[2]}{d[3]}"
    return f"+44 7700 900{d[0]}{d[1]}{d[2]}"


# ---------------------------------------------------------------- orders

# (customer, days before anchor, seconds into that day, amount, status)
FIXED_ORDERS = (
    (1, 700, 40_000, 84.50, "paid"),
    (1, 610, 61_200, 129.00, "paid"),
    (1, 480, 35_100, 42.75, "paid"),
    (1, 390, 70_000, 215.30, "paid"),
    (1, 300, 45_500, 67.90, "paid"),
    (1, 205, 52_000, 158.20, "paid"),
    (2, 690, 55_000, 39.99, "paid"),
    (2, 400, 66_600, 74.50, "paid"),
    (2, 170, 43_000, 120.00, "refunded"),
)


@dataclass(frozen=True)
class _Orders:
    table: pa.Table
    random_customer: IntArray  # the randomly generated orders, for tickets to refer to
    random_time: IntArray


def _orders(rng: np.random.Generator, now: int, n: int, people: _Customers) -> _Orders:
    count = n - len(FIXED_ORDERS)
    # Everyone who ever orders gets one order first (when there are enough), so that the
    # share of customers who never order is the one chosen above, not a side effect of
    # low weights; the rest follow the skewed weights.
    buyers = np.flatnonzero(people.order_weight > 0).astype(np.int64)
    first_orders = buyers if count >= 2 * len(buyers) else buyers[:0]
    repeat = rng.choice(
        len(people.signup), count - len(first_orders), p=_normalised(people.order_weight)
    )
    customer = np.concatenate([first_orders, repeat]).astype(np.int64) + 1
    signup = people.signup[customer - 1]
    until = np.minimum(people.active_until[customer - 1], now - 60)
    # While the customer is active, leaning toward the end of that time (a growing shop).
    time = signup + 60 + ((until - 60 - signup) * np.sqrt(rng.random(count))).astype(np.int64)
    amount = np.round(np.clip(rng.lognormal(np.log(40.0), 0.75, count), 5.0, 500.0), 2)
    status = rng.choice(len(ORDER_STATUSES), count, p=[0.90, 0.06, 0.04])

    all_customer = np.concatenate([customer, [c for c, *_ in FIXED_ORDERS]]).astype(np.int64)
    all_time = np.concatenate(
        [time, [now - days * DAY + sec for _, days, sec, _, _ in FIXED_ORDERS]]
    ).astype(np.int64)
    all_amount = np.concatenate([amount, [a for *_, a, _ in FIXED_ORDERS]])
    all_status = np.concatenate(
        [status, [ORDER_STATUSES.index(s) for *_, s in FIXED_ORDERS]]
    ).astype(np.int64)
    order = np.lexsort((all_customer, all_time))  # ids follow time, as in a real database
    table = pa.table(
        {
            "order_id": pa.array(np.arange(1, n + 1, dtype=np.int64), pa.int64()),
            "customer_id": pa.array(all_customer[order], pa.int64()),
            "ordered_at": _timestamps(all_time[order]),
            "amount": pa.array(all_amount[order], pa.float64()),
            "status": _take(ORDER_STATUSES, all_status[order]),
        }
    )
    return _Orders(table, customer.astype(np.int64), time.astype(np.int64))


# ---------------------------------------------------------------- web events

# (customer, days before anchor, seconds into that day, [(event type, url)])
FIXED_SESSIONS = (
    (1, 400, 68_000, [("page_view", "/"), ("product_view", "/products/linen-apron"),
                      ("add_to_cart", "/cart"), ("checkout", "/checkout")]),
    (1, 200, 71_500, [("page_view", "/"), ("product_view", "/products/copper-lamp"),
                      ("product_view", "/products/oak-tray")]),
    (2, 160, 30_200, [("page_view", "/sale"), ("product_view", "/products/wool-throw"),
                      ("add_to_cart", "/cart")]),
)  # fmt: skip
SESSION_ID_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so (i * m) mod 2^64 is a bijection


def _write_web_events(
    out_dir: Path,
    rng: np.random.Generator,
    now: int,
    total: int,
    people: _Customers,
    report: Progress,
) -> int:
    """Written chunk by chunk so memory stays flat and the progress bar moves."""
    salt = np.uint64(rng.integers(0, 2**63))
    home_ip = rng.integers(0, len(IP_ADDRESSES), len(people.signup))
    web_p = _normalised(people.web_weight)
    target = out_dir / "web_events.parquet"
    temporary = target.with_suffix(".parquet.tmp")
    done = sessions_so_far = 0
    with pq.ParquetWriter(temporary, _WEB_SCHEMA, compression="zstd") as writer:
        while done < total:
            rows = min(WEB_CHUNK_ROWS, total - done)
            chunk, sessions = _web_chunk(
                rng, now, rows, people, web_p, home_ip, first=done == 0,
                first_id=done + 1, first_session=sessions_so_far, salt=salt,
            )  # fmt: skip
            writer.write_table(chunk)
            done += rows
            sessions_so_far += sessions
            report("web_events", done, total)
    os.replace(temporary, target)
    if total == 0:
        report("web_events", 0, 0)
    return done


_WEB_SCHEMA = pa.schema(
    [
        ("event_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("session_id", pa.string()),
        ("event_type", pa.string()),
        ("url", pa.string()),
        ("occurred_at", TIMESTAMP),
        ("ip_address", pa.string()),
    ]
)


def _web_chunk(
    rng: np.random.Generator,
    now: int,
    rows: int,
    people: _Customers,
    web_p: FloatArray,
    home_ip: IntArray,
    *,
    first: bool,
    first_id: int,
    first_session: int,
    salt: np.uint64,
) -> tuple[pa.Table, int]:
    fixed = FIXED_SESSIONS if first else ()
    count = rows - sum(len(events) for *_, events in fixed)

    # Sessions of geometric length (mean 4 events); the last one is cut to fit the chunk.
    lengths = np.zeros(0, dtype=np.int64)
    while lengths.sum() < count:
        more = rng.geometric(0.25, max(16, count // 3)).astype(np.int64)
        lengths = np.concatenate([lengths, more])
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, count)) + 1 if count else 0
    lengths = lengths[:n_sessions]
    if n_sessions:
        lengths[-1] -= int(ends[n_sessions - 1]) - count

    # Who: 85% a known customer, the rest anonymous (customer 0 here, null in the file).
    known = rng.random(n_sessions) < 0.85
    customer = np.where(known, rng.choice(len(web_p), n_sessions, p=web_p) + 1, 0)
    # When: most sessions in the last 90 days; a known customer's only while they are
    # active (redrawn within that time when the first draw falls outside it).
    recent = rng.random(n_sessions) < 0.6
    age = np.where(recent, 90 * DAY, HISTORY_DAYS * DAY) * rng.random(n_sessions)
    start = now - age.astype(np.int64)
    index = np.maximum(customer, 1) - 1
    signup, until = people.signup[index], people.active_until[index]
    outside = known & ((start < signup) | (start > until))
    redraw = signup + ((until - signup) * np.sqrt(rng.random(n_sessions))).astype(np.int64)
    start = np.where(outside, redraw, start)
    ip = np.where(
        known & (rng.random(n_sessions) < 0.7),
        home_ip[index],
        rng.integers(0, len(IP_ADDRESSES), n_sessions),
    )

    # Events: a session's events are seconds to minutes apart.
    session = np.repeat(np.arange(n_sessions), lengths)
    gaps = 1 + rng.exponential(45.0, count).astype(np.int64)
    elapsed = np.cumsum(gaps)
    first_in_session = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    offset = elapsed - (elapsed[first_in_session] - gaps[first_in_session])[session]
    time = np.minimum(start[session] + offset, now - 1)
    event_type = rng.choice(len(EVENT_TYPES), count, p=EVENT_WEIGHTS)
    url = np.select(
        [event_type == 0, event_type == 1, event_type == 2],
        [
            rng.integers(0, len(PAGES), count),
            len(PAGES) + rng.integers(0, len(PRODUCTS), count),
            np.full(count, URL_CART),
        ],
        URL_CHECKOUT,
    )

    # Append the documented sessions of customers 1 and 2.
    f_session, f_customer, f_time, f_type, f_url = [], [], [], [], []
    for number, (who, days, second, events) in enumerate(fixed):
        for step, (kind, path) in enumerate(events):
            f_session.append(n_sessions + number)
            f_customer.append(who)
            f_time.append(now - days * DAY + second + 37 * step)
            f_type.append(EVENT_TYPES.index(kind))
            f_url.append(URLS.index(path))
    session_count = n_sessions + len(fixed)
    session_customer = np.concatenate([customer, [who for who, *_ in fixed]]).astype(np.int64)
    session_ip = np.concatenate([ip, home_ip[[who - 1 for who, *_ in fixed]]]).astype(np.int64)
    all_session = np.concatenate([session, f_session]).astype(np.int64)
    all_time = np.concatenate([time, f_time]).astype(np.int64)
    all_type = np.concatenate([event_type, f_type]).astype(np.int64)
    all_url = np.concatenate([url, f_url]).astype(np.int64)

    global_session = np.arange(first_session, first_session + session_count, dtype=np.uint64)
    scrambled = ((global_session + np.uint64(1)) * SESSION_ID_MULTIPLIER) ^ salt
    session_ids = [f"{value:016x}" for value in scrambled.tolist()]

    order = np.lexsort((all_session, all_time))
    sessions_sorted = all_session[order]
    customer_sorted = session_customer[sessions_sorted]
    table = pa.table(
        {
            "event_id": pa.array(np.arange(first_id, first_id + rows, dtype=np.int64)),
            "customer_id": pa.array(customer_sorted, pa.int64(), mask=customer_sorted == 0),
            "session_id": _take(session_ids, sessions_sorted),
            "event_type": _take(EVENT_TYPES, all_type[order]),
            "url": _take(URLS, all_url[order]),
            "occurred_at": _timestamps(all_time[order]),
            "ip_address": _take(IP_ADDRESSES, session_ip[sessions_sorted]),
        },
        schema=_WEB_SCHEMA,
    )
    return table, session_count


# ---------------------------------------------------------------- tickets

# (customer, days before anchor, seconds into that day, channel, topic, satisfaction)
FIXED_TICKETS = (
    (1, 598, 36_000, "email", "delivery", 4),
    (1, 203, 40_000, "chat", "refund", 2),
    (2, 165, 58_000, "phone", "product", 1),
)


def _tickets(rng: np.random.Generator, now: int, n: int, orders: _Orders) -> pa.Table:
    """Tickets follow orders: each is opened within two weeks after one of them."""
    count = n - len(FIXED_TICKETS)
    about = rng.integers(0, len(orders.random_customer), count)
    customer = orders.random_customer[about]
    opened = orders.random_time[about] + rng.integers(1_800, 14 * DAY, count)
    opened = np.minimum(opened, now - 60)
    channel = rng.choice(len(TICKET_CHANNELS), count, p=[0.45, 0.35, 0.20])
    topic = rng.choice(len(TICKET_TOPICS), count, p=[0.40, 0.20, 0.15, 0.25])
    # Recent tickets are often still open; old ones almost never.
    open_chance = np.where(now - opened < 7 * DAY, 0.5, 0.02)
    is_open = rng.random(count) < open_chance
    satisfaction = rng.choice(5, count, p=[0.08, 0.10, 0.17, 0.30, 0.35]) + 1

    all_customer = np.concatenate([customer, [c for c, *_ in FIXED_TICKETS]]).astype(np.int64)
    all_opened = np.concatenate(
        [opened, [now - days * DAY + sec for _, days, sec, *_ in FIXED_TICKETS]]
    ).astype(np.int64)
    all_channel = np.concatenate(
        [channel, [TICKET_CHANNELS.index(t[3]) for t in FIXED_TICKETS]]
    ).astype(np.int64)
    all_topic = np.concatenate([topic, [TICKET_TOPICS.index(t[4]) for t in FIXED_TICKETS]]).astype(
        np.int64
    )
    all_open = np.concatenate([is_open, np.zeros(len(FIXED_TICKETS), dtype=bool)])
    all_satisfaction = np.concatenate([satisfaction, [t[5] for t in FIXED_TICKETS]]).astype(np.int8)
    order = np.lexsort((all_customer, all_opened))
    is_open_sorted = all_open[order]
    return pa.table(
        {
            "ticket_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "customer_id": pa.array(all_customer[order], pa.int64()),
            "opened_at": _timestamps(all_opened[order]),
            "channel": _take(TICKET_CHANNELS, all_channel[order]),
            "topic": _take(TICKET_TOPICS, all_topic[order]),
            "status": _take(("closed", "open"), is_open_sorted.astype(np.int64)),
            "satisfaction": pa.array(all_satisfaction[order], pa.int8(), mask=is_open_sorted),
        }
    )


# ---------------------------------------------------------------- consent


def _consent_events(rng: np.random.Generator, now: int, people: _Customers) -> pa.Table:
    """Per customer and consent purpose: 60% grant, a fifth of those later revoke."""
    n = len(people.signup)
    subject = np.tile(np.arange(1, n + 1, dtype=np.int64), 2)
    purpose = np.repeat(np.arange(2, dtype=np.int64), n)  # 0 marketing.email, 1 analytics
    signup = np.tile(people.signup, 2)
    granted = rng.random(2 * n) < 0.6
    revoked = granted & (rng.random(2 * n) < 0.2)

    # marketing.email: mostly ticked on the sign-up form, else later in the preference
    # centre. analytics: the cookie banner on the first visit after signing up.
    on_form = (purpose == 0) & (rng.random(2 * n) < 0.7)
    later = (purpose == 0) & ~on_form
    grant_source = np.where(purpose == 1, 2, np.where(on_form, 0, 1))
    soon = rng.integers(5, 600, 2 * n)
    grant_time = np.where(
        later, signup + ((now - 7_200 - signup) * rng.random(2 * n)).astype(np.int64), signup + soon
    )
    revoke_time = grant_time + 60 + ((now - 120 - grant_time) * rng.random(2 * n)).astype(np.int64)
    revoke_source = np.where(purpose == 1, 2, 1)

    # Customers 1 and 2 (rows 0, 1 for marketing.email; n, n + 1 for analytics).
    granted[[0, 1, n, n + 1]] = True
    revoked[[0, n, n + 1]] = False
    revoked[1] = True
    grant_source[[0, 1]] = 0
    grant_time[[0, 1, n, n + 1]] = signup[[0, 1, n, n + 1]] + [30, 40, 45, 50]
    revoke_time[1] = now - 150 * DAY + 41_000

    rows_subject = np.concatenate([subject[granted], subject[revoked]])
    rows_purpose = np.concatenate([purpose[granted], purpose[revoked]])
    rows_action = np.concatenate(
        [np.zeros(int(granted.sum()), np.int64), np.ones(int(revoked.sum()), np.int64)]
    )
    rows_time = np.concatenate([grant_time[granted], revoke_time[revoked]]).astype(np.int64)
    rows_source = np.concatenate([grant_source[granted], revoke_source[revoked]]).astype(np.int64)
    order = np.lexsort((rows_action, rows_purpose, rows_subject, rows_time))
    rows_source = rows_source[order]
    rows_time = rows_time[order]
    # Evidence names the version of the form or banner the person saw.
    redesign = now - 300 * DAY
    evidence = np.where(
        rows_source == 1, 0, np.where(rows_source == 0, 1, 3) + (rows_time >= redesign)
    )
    return pa.table(
        {
            "subject": pc.cast(pa.array(rows_subject[order], pa.int64()), pa.string()),
            "purpose": _take(PURPOSES, rows_purpose[order]),
            "action": _take(("grant", "revoke"), rows_action[order]),
            "occurred_at": _timestamps(rows_time),
            "source": _take(SOURCES, rows_source),
            "evidence": _take(
                ("prefs:v1", "form:v2", "form:v3", "banner:v1", "banner:v2"), evidence
            ),
        }
    )


# ---------------------------------------------------------------- helpers


def _anchor_seconds(anchor: datetime | None) -> int:
    if anchor is None:
        anchor = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if anchor.tzinfo is None or anchor.utcoffset() is None:
        raise ValueError("anchor must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return math.floor(anchor.timestamp())


def _check_size(size: ShopSize) -> None:
    for field in ("customers", "orders", "web_events", "tickets"):
        if getattr(size, field) < getattr(MINIMUM, field):
            raise ValueError(
                f"ShopSize.{field} must be at least {getattr(MINIMUM, field)} "
                "to hold the fixed rows of customers 1 and 2"
            )


def _normalised(weights: Sequence[float] | FloatArray) -> FloatArray:
    array = np.asarray(weights, dtype=np.float64)
    return np.asarray(array / array.sum(), dtype=np.float64)


def _timestamps(seconds: IntArray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * 1_000_000, TIMESTAMP)


def _take(pool: Sequence[str], indices: npt.NDArray[Any]) -> pa.Array:
    """Strings by index from a small pool: much faster than building a million strs."""
    return pa.array(pool, pa.string()).take(pa.array(np.asarray(indices, dtype=np.int64)))


def _write(out_dir: Path, name: str, table: pa.Table, report: Progress) -> int:
    """Write beside the target and rename, so a reader never sees a half-written file."""
    target = out_dir / f"{name}.parquet"
    temporary = target.with_suffix(".parquet.tmp")
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, target)
    report(name, table.num_rows, table.num_rows)
    return int(table.num_rows)


def _no_progress(table: str, done: int, total: int) -> None:
    return None
