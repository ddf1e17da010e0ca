"""A tiny project with stream sources, shared by the ingest and runtime tests.

`customer_orders` is per-customer (incremental); `top_customers` ranks everyone, so
one order can change every row (the planner must pick batch for it).
"""

from __future__ import annotations

from pathlib import Path

FILES = {
    "tidegate.yml": "name: streamshop\n",
    "data/customers.csv": "customer_id,name,email\n"
    + "".join(f"{i},Customer {i},c{i}@example.com\n" for i in range(1, 51)),
    "sources/customers.yml": """
name: customers
type: file
path: data/customers.csv
key: customer_id
subject: customer_id
columns:
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  name: {type: VARCHAR, classification: user.name}
  email: {type: VARCHAR, classification: user.contact.email}
""",
    "sources/orders.yml": """
name: orders
type: stream
event_id: order_id
event_time: ordered_at
key: order_id
subject: customer_id
columns:
  order_id: {type: BIGINT, nullable: false}
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  amount: {type: DOUBLE, nullable: false}
  status: {type: VARCHAR}
  ordered_at: {type: TIMESTAMPTZ}
""",
    "sources/clicks.yml": """
name: clicks
type: stream
event_id: event_id
subject: customer_id
max_event_bytes: 2000
columns:
  event_id: {type: VARCHAR, nullable: false}
  customer_id: {type: BIGINT, classification: user.unique_id}
  url: {type: VARCHAR}
  occurred_at: {type: TIMESTAMPTZ}
""",
    "sources/accounts.yml": """
name: accounts
type: stream
format: debezium
table: accounts
key: id
subject: customer_id
columns:
  id: {type: BIGINT, nullable: false}
  customer_id: {type: BIGINT, classification: user.unique_id}
  tier: {type: VARCHAR}
""",
    "products/customer_orders.yml": """
name: customer_orders
owner: test
key: customer_id
subject: customer_id
freshness: 1s
purposes: [support]
sql: |
  WITH o AS (
    SELECT customer_id, count(*) AS order_count, sum(amount) AS revenue,
           max(ordered_at) AS last_order_at
    FROM orders GROUP BY customer_id
  ), k AS (
    SELECT customer_id, count(*) AS click_count FROM clicks
    WHERE customer_id IS NOT NULL GROUP BY customer_id
  ), a AS (
    SELECT customer_id, max(tier) AS tier FROM accounts GROUP BY customer_id
  )
  SELECT c.customer_id, c.name, coalesce(o.order_count, 0) AS order_count,
         coalesce(o.revenue, 0.0) AS revenue, o.last_order_at,
         coalesce(k.click_count, 0) AS click_count, a.tier
  FROM customers AS c
  LEFT JOIN o ON o.customer_id = c.customer_id
  LEFT JOIN k ON k.customer_id = c.customer_id
  LEFT JOIN a ON a.customer_id = c.customer_id
columns:
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  name: {type: VARCHAR, classification: user.name}
  order_count: {type: BIGINT, classification: none}
  revenue: {type: DOUBLE, classification: none}
  last_order_at: {type: TIMESTAMPTZ, classification: none}
  click_count: {type: BIGINT, classification: none}
  tier: {type: VARCHAR, classification: none}
""",
    "products/top_customers.yml": """
name: top_customers
owner: test
key: customer_id
subject: customer_id
freshness: 1h
purposes: [support]
sql: |
  SELECT customer_id, revenue, CAST(rank() OVER (ORDER BY revenue DESC, customer_id) AS BIGINT)
         AS revenue_rank
  FROM customer_orders
columns:
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  revenue: {type: DOUBLE, classification: none}
  revenue_rank: {type: BIGINT, classification: none}
""",
    "policies/policy.yml": """
purposes:
  support: {legal_basis: contract}
roles:
  ingester: {purposes: [support], products: [], ingest: ["*"]}
  clicks_only: {purposes: [support], products: [], ingest: [clicks]}
  support_agent: {purposes: [support]}
treatments:
  "*":
    user: clear
""",
}


def write_stream_project(root: Path) -> Path:
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return root
