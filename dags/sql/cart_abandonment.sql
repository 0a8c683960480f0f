-- Insight 2: carts without purchase, per hour of the day (partitioned by dt).
-- A (session, product) pair is carted once however many cart rows it has (the real data repeats
-- them); it is abandoned when the session has no purchase of that product that day. Its value is
-- the product's highest carted price. Columns: docs/insights.md.
-- The day's cart and purchase events are read once, grouped by pair. A cart or purchase with a
-- null user_session (the real files have some) is left out: without a session there is no pair
-- to match a purchase to (grouping would lump every such cart of a product together); those
-- events still count in daily_visitors.
WITH pairs AS (
  SELECT user_session, product_id,
         min(event_time) FILTER (WHERE event_type = 'cart') AS first_carted_at,
         max(price) FILTER (WHERE event_type = 'cart') AS price,
         count(*) FILTER (WHERE event_type = 'purchase') > 0
           AND user_session IS NOT NULL AND product_id IS NOT NULL AS purchased
  FROM ecommerce.enriched_events
  WHERE dt = '{{ ds }}' AND event_type IN ('cart', 'purchase') AND user_session IS NOT NULL
  GROUP BY user_session, product_id
)
SELECT
  hour(first_carted_at) AS hour,
  count(*) AS carted,
  count(*) FILTER (WHERE NOT purchased) AS abandoned,
  round(CAST(count(*) FILTER (WHERE NOT purchased) AS double) / count(*), 4) AS abandonment_rate,
  round(coalesce(sum(price) FILTER (WHERE NOT purchased), 0), 2) AS value_abandoned,
  '{{ ds }}' AS dt
FROM pairs
WHERE first_carted_at IS NOT NULL
GROUP BY hour(first_carted_at)
