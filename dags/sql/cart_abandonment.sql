-- Insight 2: carts without purchase, per hour of the day (partitioned by dt).
-- A (session, product) pair is carted once however many cart rows it has (the real data repeats
-- them); it is abandoned when the session has no purchase of that product that day. Its value is
-- the product's highest carted price. Columns: docs/insights.md.
WITH carts AS (
  SELECT user_session, product_id, min(event_time) AS first_carted_at, max(price) AS price
  FROM ecommerce.enriched_events
  WHERE dt = '{{ ds }}' AND event_type = 'cart'
  GROUP BY user_session, product_id
),
purchased AS (
  SELECT DISTINCT user_session, product_id
  FROM ecommerce.enriched_events
  WHERE dt = '{{ ds }}' AND event_type = 'purchase'
)
SELECT
  hour(c.first_carted_at) AS hour,
  count(*) AS carted,
  count(*) FILTER (WHERE p.user_session IS NULL) AS abandoned,
  round(CAST(count(*) FILTER (WHERE p.user_session IS NULL) AS double) / count(*), 4) AS abandonment_rate,
  round(coalesce(sum(c.price) FILTER (WHERE p.user_session IS NULL), 0), 2) AS value_abandoned,
  '{{ ds }}' AS dt
FROM carts c
LEFT JOIN purchased p ON p.user_session = c.user_session AND p.product_id = c.product_id
GROUP BY hour(c.first_carted_at)
