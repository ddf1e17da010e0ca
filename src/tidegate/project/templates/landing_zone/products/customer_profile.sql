SELECT
  customer_id,
  email,
  country,
  date_diff('day', signed_up, current_date) AS tenure_days
FROM customers
