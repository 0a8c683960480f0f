-- Insight 4: brands that need more marketing (full refresh over all days).
-- Per brand: views, carts, purchases, revenue and conversions. A brand's category is the
-- category_main it is viewed most in (ties: the first name). The flags:
--   high_attention_low_conversion: views at least the average of the brands of its category, and
--     view->purchase conversion below half of its category's;
--   revenue_falling: revenue of the last 7 days (up to the newest day in the data) below 80% of
--     the 7 days before, which had revenue.
-- needs_marketing is either flag. Events without a brand are left out. Columns: docs/insights.md.
-- The events are read once: everything is derived from their counts per brand, category and day.
WITH daily AS (
  SELECT brand, category_main, CAST(dt AS date) AS day,
         count(*) FILTER (WHERE event_type = 'view') AS views,
         count(*) FILTER (WHERE event_type = 'cart') AS carts,
         count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
         sum(price) FILTER (WHERE event_type = 'purchase') AS revenue
  FROM ecommerce.enriched_events
  GROUP BY brand, category_main, dt
),
bounds AS (
  SELECT max(day) AS last_day FROM daily WHERE brand IS NOT NULL
),
brand_totals AS (
  SELECT
    d.brand,
    CAST(sum(d.views) AS bigint) AS views,
    CAST(sum(d.carts) AS bigint) AS carts,
    CAST(sum(d.purchases) AS bigint) AS purchases,
    round(coalesce(sum(d.revenue), 0), 2) AS revenue,
    round(coalesce(sum(d.revenue) FILTER (WHERE d.day > b.last_day - INTERVAL '7' DAY), 0), 2) AS revenue_last_7d,
    round(coalesce(sum(d.revenue) FILTER (
      WHERE d.day <= b.last_day - INTERVAL '7' DAY AND d.day > b.last_day - INTERVAL '14' DAY), 0), 2)
      AS revenue_prev_7d
  FROM daily d CROSS JOIN bounds b
  WHERE d.brand IS NOT NULL
  GROUP BY d.brand
),
brand_category AS (
  SELECT brand, category_main
  FROM (
    SELECT brand, category_main,
           row_number() OVER (PARTITION BY brand ORDER BY sum(views) DESC, category_main) AS rn
    FROM daily
    WHERE brand IS NOT NULL AND category_main IS NOT NULL AND views > 0
    GROUP BY brand, category_main
  ) t
  WHERE rn = 1
),
category_conversion AS (
  SELECT category_main,
         CAST(sum(purchases) AS double) / nullif(sum(views), 0) AS view_to_purchase
  FROM daily
  WHERE category_main IS NOT NULL
  GROUP BY category_main
),
category_attention AS (
  SELECT bc.category_main, avg(bt.views) AS avg_brand_views
  FROM brand_category bc
  JOIN brand_totals bt ON bt.brand = bc.brand
  GROUP BY bc.category_main
),
scored AS (
  SELECT
    bt.brand,
    bc.category_main,
    bt.views,
    bt.carts,
    bt.purchases,
    bt.revenue,
    round(CAST(bt.purchases AS double) / nullif(bt.views, 0), 4) AS view_to_purchase,
    round(CAST(bt.purchases AS double) / nullif(bt.carts, 0), 4) AS cart_to_purchase,
    round(cc.view_to_purchase, 4) AS category_view_to_purchase,
    bt.revenue_last_7d,
    bt.revenue_prev_7d,
    coalesce(bt.views >= ca.avg_brand_views
      AND CAST(bt.purchases AS double) / nullif(bt.views, 0) < 0.5 * cc.view_to_purchase, false)
      AS high_attention_low_conversion,
    (bt.revenue_prev_7d > 0 AND bt.revenue_last_7d < 0.8 * bt.revenue_prev_7d) AS revenue_falling
  FROM brand_totals bt
  LEFT JOIN brand_category bc ON bc.brand = bt.brand
  LEFT JOIN category_conversion cc ON cc.category_main = bc.category_main
  LEFT JOIN category_attention ca ON ca.category_main = bc.category_main
)
SELECT brand, category_main, views, carts, purchases, revenue, view_to_purchase, cart_to_purchase,
       category_view_to_purchase, revenue_last_7d, revenue_prev_7d, high_attention_low_conversion,
       revenue_falling, high_attention_low_conversion OR revenue_falling AS needs_marketing
FROM scored
