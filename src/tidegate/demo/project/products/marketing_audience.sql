-- Customers worth a win-back email: they have bought before and are at medium or high
-- risk of leaving. Consent is deliberately not filtered here: the privacy guard removes
-- everyone without a marketing.email grant on every way out (API, syncs, exports), so
-- a revocation takes effect without rebuilding this product.
SELECT
  c.customer_id,
  c.email,
  c.first_name,
  c.country,
  r.risk_band,
  c.lifetime_value
FROM customer_360 AS c
JOIN churn_risk AS r ON r.customer_id = c.customer_id
WHERE r.risk_band IN ('medium', 'high')
  AND c.lifetime_value > 0
  AND c.email IS NOT NULL
