-- Insight 1: unique visitors per day (partitioned by dt; each run replaces its day).
-- Runs unchanged on Athena (Trino) and on cartflow's local engine. Columns: docs/insights.md.
-- One day is read, so there is one group: no GROUP BY (the engines then count distinct values
-- without per-group bookkeeping), and HAVING keeps a day without events out, as a GROUP BY would.
-- A null user_session (the real files have views by known users without one) is no session:
-- `sessions` counts the distinct non-null ones, while the event and its user_id count in
-- `unique_visitors`, `events` and the per-type counts.
SELECT
  count(DISTINCT user_id) AS unique_visitors,
  count(DISTINCT user_session) AS sessions,
  count(*) AS events,
  count(*) FILTER (WHERE event_type = 'view') AS views,
  count(*) FILTER (WHERE event_type = 'cart') AS carts,
  count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
  '{{ ds }}' AS dt
FROM ecommerce.enriched_events
WHERE dt = '{{ ds }}'
HAVING count(*) > 0
