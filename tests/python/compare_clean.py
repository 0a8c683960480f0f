"""Compares two outputs of clean_events (the Rust job's and the PySpark script's) row for row.

    python compare_clean.py LEFT_DIR RIGHT_DIR DATE

Each DIR holds clean/events/dt=DATE and quarantine/events/dt=DATE. Prints the counts and exits
non-zero with the first differences when the outputs differ.
"""

import sys

import duckdb


def rows(con, root, date):
    clean = con.execute(
        f"""SELECT epoch(event_time)::BIGINT, event_type, product_id, category_id, category_code, brand,
                   price, CASE WHEN price = 0 AND 1.0 / price < 0 THEN 1 ELSE 0 END, user_id, user_session
            FROM read_parquet('{root}/clean/events/dt={date}/**/*.parquet')"""
    ).fetchall()
    quarantine = con.execute(
        f"""SELECT event_time, event_type, product_id, category_id, category_code, brand, price, user_id,
                   user_session, _raw, reason
            FROM read_parquet('{root}/quarantine/events/dt={date}/**/*.parquet')"""
    ).fetchall()
    key = lambda r: tuple((x is None, str(x)) for x in r)  # noqa: E731
    return sorted(clean, key=key), sorted(quarantine, key=key)


def main():
    left, right, date = sys.argv[1], sys.argv[2], sys.argv[3]
    con = duckdb.connect()
    lc, lq = rows(con, left, date)
    rc, rq = rows(con, right, date)
    print(f"clean {len(lc)} {len(rc)} quarantine {len(lq)} {len(rq)}")
    print(f"null sessions {sum(r[-1] is None for r in lc)} {sum(r[-1] is None for r in rc)}")
    ok = True
    for name, a, b in [("clean", lc, rc), ("quarantine", lq, rq)]:
        if a != b:
            ok = False
            sa, sb = set(a), set(b)
            print(f"{name} differs; only left: {sorted(sa - sb, key=str)[:5]}; only right: {sorted(sb - sa, key=str)[:5]}")
    reasons = sorted({r[-1] for r in lq})
    print("reasons", " ".join(reasons))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
