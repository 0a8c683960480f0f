"""The DuckDB peer of the insight benchmark: the same four SQL files on the same enriched
Parquet (partitioned insights once per day, full-refresh ones once).

usage: python insights_duckdb.py LAKE SQL_DIR NAME,NAME... DATE...; prints one line per insight and seconds=.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/python"))
import lake_duckdb  # noqa: E402

lake, sql_dir, only, dates = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
con = lake_duckdb.connect(lake)
total = 0.0
parts = []
for name, partitioned in [("daily_visitors", True), ("cart_abandonment", True),
                          ("top_categories", False), ("brand_marketing", False)]:
    if name not in only:
        continue
    sql = open(os.path.join(sql_dir, f"{name}.sql")).read()
    runs = [sql.replace("{{ ds }}", d) for d in dates] if partitioned else [sql]
    start = time.perf_counter()
    rows = 0
    for q in runs:
        rows += len(con.execute(q).fetchall())
    secs = time.perf_counter() - start
    total += secs
    parts.append(f"{name} {secs:.2f}s ({rows} rows)")
print(f"duckdb: {' + '.join(parts)} = {total:.2f}s")
print(f"seconds={total:.3f}")
