-- One row per customer: the profile plus counters over orders, web events and tickets.
-- The live demo's version: orders and web events are the history (Parquet) plus what
-- the shop posted since (the *_live stream sources).
-- Aggregates are computed per customer in CTEs and LEFT JOINed, so customers without
-- orders, events or tickets still get a row (with zero counts).
WITH all_orders AS (
  SELECT customer_id, amount, status, ordered_at FROM orders
  UNION ALL
  SELECT customer_id, amount, status, ordered_at FROM orders_live
),
all_web_events AS (
  SELECT customer_id, occurred_at FROM web_events
  UNION ALL
  SELECT customer_id, occurred_at FROM web_events_live
),
order_stats AS (
  SELECT
    customer_id,
    count(*) AS order_count,
    round(sum(CASE WHEN status = 'paid' THEN amount ELSE 0 END), 2) AS lifetime_value,
    max(ordered_at) AS last_order_at
  FROM all_orders
  GROUP BY customer_id
),
web_stats AS (
  SELECT
    customer_id,
    count(*) AS web_event_count,
    max(occurred_at) AS last_web_event_at
  FROM all_web_events
  WHERE customer_id IS NOT NULL
  GROUP BY customer_id
),
ticket_stats AS (
  SELECT
    customer_id,
    count(*) FILTER (WHERE status = 'open') AS open_tickets,
    max(opened_at) AS last_ticket_at
  FROM tickets
  GROUP BY customer_id
)
SELECT
  c.customer_id,
  c.first_name,
  c.last_name,
  c.email,
  c.phone,
  c.birth_date,
  c.postal_code,
  c.city,
  c.country,
  c.signed_up_at,
  coalesce(o.order_count, 0) AS order_count,
  coalesce(o.lifetime_value, 0.0) AS lifetime_value,
  o.last_order_at,
  coalesce(w.web_event_count, 0) AS web_event_count,
  -- greatest() skips NULLs: null only for a customer with no activity at all
  greatest(o.last_order_at, w.last_web_event_at, t.last_ticket_at) AS last_activity_at,
  coalesce(t.open_tickets, 0) AS open_tickets
FROM customers AS c
LEFT JOIN order_stats AS o ON o.customer_id = c.customer_id
LEFT JOIN web_stats AS w ON w.customer_id = c.customer_id
LEFT JOIN ticket_stats AS t ON t.customer_id = c.customer_id
