-- Insight 3: top categories per hour of day and per weekday (full refresh over all days).
-- Events without a category_code are left out. rank() keeps ties: equal counts share a rank.
-- A row is kept when it is in the top 10 by events or by purchases. Columns: docs/insights.md.
-- The events are read once: both grains are sums of the counts per (category, hour, weekday).
-- event_hour and event_weekday are hour(event_time) and day_of_week(event_time), added by enrich.
WITH slots AS (
  SELECT category_code, event_hour AS hour_of_day, event_weekday AS weekday,
         count(*) AS events, count(*) FILTER (WHERE event_type = 'purchase') AS purchases
  FROM ecommerce.enriched_events
  WHERE category_code IS NOT NULL
  GROUP BY category_code, event_hour, event_weekday
),
by_slot AS (
  SELECT 'hour' AS grain, CAST(hour_of_day AS bigint) AS slot, category_code, CAST(sum(events) AS bigint) AS events,
         CAST(sum(purchases) AS bigint) AS purchases
  FROM slots
  GROUP BY hour_of_day, category_code
  UNION ALL
  SELECT 'weekday' AS grain, CAST(weekday AS bigint) AS slot, category_code, CAST(sum(events) AS bigint) AS events,
         CAST(sum(purchases) AS bigint) AS purchases
  FROM slots
  GROUP BY weekday, category_code
),
ranked AS (
  SELECT grain, slot, category_code, events, purchases,
         rank() OVER (PARTITION BY grain, slot ORDER BY events DESC) AS rank_by_events,
         rank() OVER (PARTITION BY grain, slot ORDER BY purchases DESC) AS rank_by_purchases
  FROM by_slot
)
SELECT grain, slot, category_code, events, purchases, rank_by_events, rank_by_purchases
FROM ranked
WHERE rank_by_events <= 10 OR rank_by_purchases <= 10
