"""The DuckDB peer of the lake benchmark: the same compact + clean + enrich work on the same raw
files, one partition at a time, writing zstd Parquet like cartflow does.

usage: python lake_duckdb.py LAKE DATE... ; prints key=value lines (seconds, compact, clean,
enrich, clean_rows, peak_mib).
"""

import os
import resource
import sys
import time

import duckdb

# Peak memory of this process only: Linux carries the parent's high-water mark across fork and
# exec, so reset it (VmHWM) first and read it at the end, as the Rust side does.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass


def peak_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


lake, dates = sys.argv[1], sys.argv[2:]
out = os.path.join(lake, "duckdb")
os.makedirs(out, exist_ok=True)
con = duckdb.connect()

COLS = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id", "user_session"]
columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in COLS) + "}"


def t(f):
    s = time.perf_counter()
    f()
    return time.perf_counter() - s


totals = {"compact": 0.0, "clean": 0.0, "enrich": 0.0}
clean_rows = 0
start = time.perf_counter()
for d in dates:
    raw = os.path.join(lake, "raw/events", f"dt={d}", "*", "*.json.gz")
    staged = os.path.join(out, f"staged-{d}.parquet")
    clean = os.path.join(out, f"clean-{d}.parquet")
    quarantine = os.path.join(out, f"quarantine-{d}.parquet")
    enriched = os.path.join(out, f"enriched-{d}.parquet")
    totals["compact"] += t(lambda: con.execute(f"""
        COPY (SELECT *, filename AS _source FROM read_json('{raw}', format = 'newline_delimited',
              columns = {columns}, filename = true))
        TO '{staged}' (FORMAT parquet, COMPRESSION zstd)"""))

    def do_clean():
        con.execute(f"""
        CREATE OR REPLACE TEMP TABLE v AS
        WITH s AS (
          SELECT nullif(trim(event_time), '') AS et, nullif(trim(event_type), '') AS ety,
                 nullif(trim(product_id), '') AS pid, nullif(trim(category_id), '') AS cid,
                 nullif(trim(category_code), '') AS code, nullif(trim(brand), '') AS brand,
                 nullif(trim(price), '') AS price, nullif(trim(user_id), '') AS uid,
                 nullif(trim(user_session), '') AS sess, _source
          FROM '{staged}'),
        p AS (
          SELECT *, try_strptime(regexp_replace(et, ' UTC$', ''), '%Y-%m-%d %H:%M:%S') AS ts,
                 try_cast(pid AS BIGINT) AS pid_i, try_cast(cid AS BIGINT) AS cid_i,
                 try_cast(uid AS BIGINT) AS uid_i, try_cast(price AS DOUBLE) AS price_d
          FROM s)
        SELECT *, CASE
            WHEN et IS NULL THEN 'missing_event_time'
            WHEN ts IS NULL THEN 'bad_event_time'
            WHEN abs(date_diff('day', DATE '{d}', CAST(ts AS DATE))) > 1 THEN 'implausible_event_time'
            WHEN ety IS NULL THEN 'missing_event_type'
            WHEN ety NOT IN ('view', 'cart', 'remove_from_cart', 'purchase') THEN 'unknown_event_type'
            WHEN pid IS NULL THEN 'missing_product_id' WHEN pid_i IS NULL THEN 'bad_product_id'
            WHEN cid IS NULL THEN 'missing_category_id' WHEN cid_i IS NULL THEN 'bad_category_id'
            WHEN uid IS NULL THEN 'missing_user_id' WHEN uid_i IS NULL THEN 'bad_user_id'
            WHEN price IS NULL THEN 'missing_price' WHEN price_d IS NULL THEN 'bad_price'
            WHEN price_d < 0 THEN 'negative_price'
          END AS reason
        FROM p""")
        con.execute(f"""
        COPY (SELECT DISTINCT ts AS event_time, ety AS event_type, pid_i AS product_id, cid_i AS category_id,
                     code AS category_code, brand, price_d AS price, uid_i AS user_id, sess AS user_session
              FROM v WHERE reason IS NULL)
        TO '{clean}' (FORMAT parquet, COMPRESSION zstd)""")
        con.execute(f"""
        COPY (SELECT et AS event_time, ety AS event_type, pid AS product_id, cid AS category_id,
                     code AS category_code, brand, price, uid AS user_id, sess AS user_session, _source, reason
              FROM v WHERE reason IS NOT NULL)
        TO '{quarantine}' (FORMAT parquet, COMPRESSION zstd)""")

    totals["clean"] += t(do_clean)
    clean_rows += con.execute(f"SELECT count(*) FROM '{clean}'").fetchone()[0]
    totals["enrich"] += t(lambda: con.execute(f"""
        COPY (SELECT event_time, event_type, product_id, category_id, category_code, lower(brand) AS brand, price,
                     user_id, user_session,
                     nullif(regexp_extract(category_code, '^([^.]*)', 1), '') AS category_main,
                     CASE WHEN category_code LIKE '%.%' THEN regexp_extract(category_code, '^[^.]*\\.([^.]*)', 1) END AS category_sub,
                     CASE WHEN category_code LIKE '%.%.%' THEN regexp_extract(category_code, '^[^.]*\\.[^.]*\\.(.*)$', 1) END AS category_leaf,
                     CAST(hour(event_time) AS INTEGER) AS event_hour, CAST(isodow(event_time) AS INTEGER) AS event_weekday
              FROM '{clean}' WHERE NOT coalesce(price < 0, false))
        TO '{enriched}' (FORMAT parquet, COMPRESSION zstd)"""))

total = time.perf_counter() - start
print(f"seconds={total:.3f}")
for k, v in totals.items():
    print(f"{k}={v:.3f}")
print(f"clean_rows={clean_rows}")
print(f"peak_mib={peak_mib():.0f}")
