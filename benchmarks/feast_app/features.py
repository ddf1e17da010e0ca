"""Feast definitions for the `serve` benchmark: customer_360 as one feature view.

Copied into a temporary feature repo by `benchmarks/serve.py`, which replaces
`__PARQUET__` with the Parquet export of tidegate's built `customer_360` product (the
same rows tidegate serves). Runs in the Feast venv (`benchmarks/.venvs/feast`) only.

One entity (`customer_id`), one feature view with every other column of the product
(numbers as Int64/Float64, timestamps as UnixTimestamp, text and the birth date as
String), no TTL (the demo's rows do not expire), online. One feature view is what Feast's
tuning guide advises for latency: each extra view is one more online-store read.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String, UnixTimestamp

PARQUET = "__PARQUET__"

customer = Entity(name="customer_id", join_keys=["customer_id"], value_type=ValueType.INT64)

source = FileSource(name="customer_360_source", path=PARQUET, timestamp_field="event_timestamp")

customer_360 = FeatureView(
    name="customer_360",
    entities=[customer],
    ttl=timedelta(0),
    online=True,
    source=source,
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="first_name", dtype=String),
        Field(name="last_name", dtype=String),
        Field(name="email", dtype=String),
        Field(name="phone", dtype=String),
        Field(name="birth_date", dtype=String),
        Field(name="postal_code", dtype=String),
        Field(name="city", dtype=String),
        Field(name="country", dtype=String),
        Field(name="signed_up_at", dtype=UnixTimestamp),
        Field(name="order_count", dtype=Int64),
        Field(name="lifetime_value", dtype=Float64),
        Field(name="last_order_at", dtype=UnixTimestamp),
        Field(name="web_event_count", dtype=Int64),
        Field(name="last_activity_at", dtype=UnixTimestamp),
        Field(name="open_tickets", dtype=Int64),
    ],
)

customer_360_service = FeatureService(name="customer_360_service", features=[customer_360])
