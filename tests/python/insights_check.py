"""Checks cartflow's insight tables against DuckDB running the same SQL files on the same
enriched Parquet: row for row, exactly (floats compared at 6 decimals).

usage: python insights_check.py LAKE CATALOG_DB SQL_DIR DATE...
Exits 1 with a diff when a table differs.
"""

import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lake_duckdb  # noqa: E402

lake, catalog_db, sql_dir, dates = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
con = lake_duckdb.connect(lake)

cat = sqlite3.connect(catalog_db)


def norm(v):
    if isinstance(v, float):
        return f"{v:.6f}"
    if v is None:
        return "NULL"
    return str(v)


def rows(cur):
    names = [d[0] for d in cur.description]
    return names, sorted(tuple(norm(v) for v in r) for r in cur.fetchall())


failed = False
for table, partitioned in [("daily_visitors", True), ("cart_abandonment", True),
                           ("top_categories", False), ("brand_marketing", False)]:
    sql = open(os.path.join(sql_dir, f"{table}.sql")).read()
    if partitioned:
        parts = [sql.replace("{{ ds }}", d) for d in dates]
        expected = con.execute(" UNION ALL ".join(f"SELECT * FROM ({p})" for p in parts))
    else:
        expected = con.execute(sql)
    en, er = rows(expected)
    (location,) = cat.execute(
        "SELECT location FROM tables WHERE database = 'ecommerce' AND name = ?", (table,)).fetchone()
    if partitioned:
        ours = con.execute(f"""SELECT * FROM read_parquet('{lake}/{location}/*/*.parquet', hive_partitioning = true,
                                  hive_types = {{'dt': 'VARCHAR'}})""")
    else:
        ours = con.execute(f"SELECT * FROM read_parquet('{lake}/{location}/*.parquet')")
    on, orows = rows(ours)
    if sorted(on) != sorted(en):
        print(f"{table}: columns differ: cartflow {on} vs duckdb {en}")
        failed = True
        continue
    # Same column order for the comparison.
    idx = [on.index(n) for n in en]
    orows = sorted(tuple(r[i] for i in idx) for r in orows)
    if orows != er:
        failed = True
        missing = [r for r in er if r not in orows][:5]
        extra = [r for r in orows if r not in er][:5]
        print(f"{table}: {len(orows)} rows vs duckdb {len(er)}; only duckdb: {missing}; only cartflow: {extra}")
    else:
        print(f"{table}: {len(orows)} rows identical")
sys.exit(1 if failed else 0)
