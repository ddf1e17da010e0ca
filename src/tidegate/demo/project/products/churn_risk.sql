-- A transparent churn rule, so that anyone can check a score by hand:
--   inactivity  : no activity for 180+ days = 60 points, 90+ days = 40, 30+ days = 20
--   complaints  : 15 points per ticket rated 1 or 2 (at most 30)
--   few orders  : no order yet = 10 points, a single order = 5
--   churn_score = the sum, at most 100; risk_band high >= 60, medium >= 30, else low.
-- Inactivity is measured against the latest activity anywhere in the data, not now(),
-- so the same data always gives the same scores.
WITH as_of AS (
  SELECT max(last_activity_at) AS latest FROM customer_360
),
complaints AS (
  SELECT customer_id, count(*) AS low_satisfaction_tickets
  FROM tickets
  WHERE satisfaction <= 2
  GROUP BY customer_id
),
facts AS (
  SELECT
    c.customer_id,
    c.order_count,
    CAST(
      floor((epoch(a.latest) - epoch(coalesce(c.last_activity_at, c.signed_up_at))) / 86400)
      AS INTEGER
    ) AS days_inactive,
    coalesce(l.low_satisfaction_tickets, 0) AS low_satisfaction_tickets
  FROM customer_360 AS c
  CROSS JOIN as_of AS a
  LEFT JOIN complaints AS l ON l.customer_id = c.customer_id
),
points AS (
  SELECT
    customer_id,
    order_count,
    days_inactive,
    low_satisfaction_tickets,
    CASE
      WHEN days_inactive >= 180 THEN 60
      WHEN days_inactive >= 90 THEN 40
      WHEN days_inactive >= 30 THEN 20
      ELSE 0
    END AS inactivity_points,
    least(30, 15 * low_satisfaction_tickets) AS complaint_points,
    CASE WHEN order_count = 0 THEN 10 WHEN order_count = 1 THEN 5 ELSE 0 END AS order_points
  FROM facts
)
SELECT
  customer_id,
  CAST(least(100, inactivity_points + complaint_points + order_points) AS INTEGER)
    AS churn_score,
  CASE
    WHEN inactivity_points + complaint_points + order_points >= 60 THEN 'high'
    WHEN inactivity_points + complaint_points + order_points >= 30 THEN 'medium'
    ELSE 'low'
  END AS risk_band,
  coalesce(
    nullif(
      concat_ws(
        '; ',
        CASE WHEN inactivity_points > 0
          THEN format('inactive for {} days (+{})', days_inactive, inactivity_points)
        END,
        CASE WHEN complaint_points > 0
          THEN format('tickets rated 1-2: {} (+{})', low_satisfaction_tickets, complaint_points)
        END,
        CASE order_count
          WHEN 0 THEN 'no orders yet (+10)'
          WHEN 1 THEN 'only one order (+5)'
        END
      ),
      ''
    ),
    'active and happy: no rule fired'
  ) AS reason,
  days_inactive,
  low_satisfaction_tickets,
  order_count
FROM points
