"""Compares what the daily DAG made on the aws backend (in the emulator: the Glue catalog and the
Parquet objects it points at) with what it made on the local backend (the local catalog and lake)
over the same events. Read independently of cartflow: boto3 and sqlite3 for the catalogs, DuckDB
for the Parquet.

usage: AWS_ENDPOINT_URL=... python aws_vs_local.py LOCAL_PROJECT_DIR

Prints one line per check and ends with `N checks, N equal`; exits 1 when any differs.

- `table <insight>`: every row of the insight table (sorted; floats equal within 1e-9, integers
  of any width equal as numbers), and every object the AWS table reads is Parquet;
- `rows <zone> dt=<day>`: the row counts of the clean, quarantine and enriched partitions.
"""

import json
import math
import os
import sqlite3
import sys
import tempfile

import boto3
import duckdb

INSIGHTS = ["daily_visitors", "cart_abandonment", "top_categories", "brand_marketing"]
DB = "ecommerce"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
scratch = tempfile.mkdtemp(prefix="aws-vs-local-")


def rows_of(files, partition):
    """Rows of Parquet files, with the partition's columns added; as dicts."""
    if not files:
        return []
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    source = f"read_parquet([{listed}], union_by_name = true)"
    # A time-zone-aware timestamp (Spark writes UTC-adjusted ones) as its UTC wall time: the
    # same instant compares equal whichever engine wrote it.
    cols = [f'CAST("{n}" AS TIMESTAMP) AS "{n}"' if "WITH TIME ZONE" in t.upper() else f'"{n}"'
            for n, t, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    cur = con.execute(f"SELECT {', '.join(cols)} FROM {source}")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r), **partition) for r in cur.fetchall()]


def local(project):
    lake = os.path.join(project, ".cartflow/lake")
    cat = sqlite3.connect(os.path.join(project, ".cartflow/catalog.db"))
    tables = {}
    for name, location, keys in cat.execute(
            "SELECT name, location, partition_keys FROM tables WHERE database = ?", (DB,)):
        keys = [k["name"] if isinstance(k, dict) else k for k in json.loads(keys)]
        parts = []
        if keys:
            for vals, loc in cat.execute("SELECT vals, location FROM partitions WHERE database = ? AND "
                                         "table_name = ?", (DB, name)):
                parts.append((dict(zip(keys, json.loads(vals))), os.path.join(lake, loc)))
        else:
            parts.append(({}, os.path.join(lake, location)))
        tables[name] = parts
    return lake, tables


def parquet_under(folder):
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        out += [os.path.join(root, n) for n in names if n.endswith(".parquet") and not n.startswith(("_", "."))]
    return sorted(out)


def local_rows(parts):
    out = []
    for partition, folder in parts:
        out += rows_of(parquet_under(folder), partition)
    return out


s3 = boto3.client("s3")
glue = boto3.client("glue")


def objects(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    key = key if key.endswith("/") or not key else key + "/"
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for o in page.get("Contents", []):
            rel = o["Key"][len(key):]
            if not any(s.startswith(("_", ".")) for s in rel.split("/")):
                out.append((bucket, o["Key"]))
    return out


def download(bucket, key):
    path = os.path.join(scratch, bucket, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s3.download_file(bucket, key, path)
    with open(path, "rb") as f:
        head = f.read(4)
    return path, head == b"PAR1"


def aws_rows(table):
    t = glue.get_table(DatabaseName=DB, Name=table)["Table"]
    keys = [k["Name"] for k in t.get("PartitionKeys") or []]
    parts = []
    if keys:
        for page in glue.get_paginator("get_partitions").paginate(DatabaseName=DB, TableName=table):
            for p in page["Partitions"]:
                parts.append((dict(zip(keys, p["Values"])), p["StorageDescriptor"]["Location"]))
    else:
        parts.append(({}, t["StorageDescriptor"]["Location"]))
    out, not_parquet = [], []
    for partition, loc in parts:
        files = []
        for bucket, key in objects(loc):
            path, is_parquet = download(bucket, key)
            if not is_parquet:
                not_parquet.append(f"s3://{bucket}/{key}")
            files.append(path)
        out += rows_of(files, partition)
    return out, not_parquet


def same(a, b):
    """Equal values of the same Python type (so a bigint is not a double, a date not a string):
    floats within 1e-9."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def key(row, cols):
    return tuple((row.get(c) is None, str(round(row[c], 6)) if isinstance(row.get(c), float) else str(row.get(c)))
                 for c in cols)


def compare(name, want, got):
    cols_w = sorted({c for r in want for c in r}) if want else []
    cols_g = sorted({c for r in got for c in r}) if got else []
    if cols_w != cols_g:
        return f"columns differ: local {cols_w}, aws {cols_g}"
    if len(want) != len(got):
        return f"{len(want)} rows locally, {len(got)} on aws"
    want = sorted(want, key=lambda r: key(r, cols_w))
    got = sorted(got, key=lambda r: key(r, cols_w))
    for i, (w, g) in enumerate(zip(want, got)):
        bad = [c for c in cols_w if not same(w.get(c), g.get(c))]
        if bad:
            show = lambda r: [f"{r.get(c)!r} ({type(r.get(c)).__name__})" for c in bad]
            return f"row {i} differs in {bad}: local {show(w)}, aws {show(g)}"
    return None


def main():
    project = sys.argv[1]
    lake, tables = local(project)
    checks, failed = 0, 0

    def report(what, problem, detail=""):
        nonlocal checks, failed
        checks += 1
        if problem:
            failed += 1
            print(f"DIFFERS {what}: {problem}")
        else:
            print(f"equal {what}{detail}")

    for name in INSIGHTS:
        want = local_rows(tables.get(name, []))
        try:
            got, not_parquet = aws_rows(name)
        except glue.exceptions.EntityNotFoundException:
            report(f"table {name}", "not in the Glue catalog")
            continue
        problem = compare(name, want, got) or (f"not Parquet: {not_parquet}" if not_parquet else None)
        if not want:
            problem = problem or "no rows (the comparison would prove nothing)"
        report(f"table {name}", problem, f" ({len(got)} rows)")

    # Row counts per day of the clean, quarantine and enriched zones.
    zones = {"clean": "clean/events", "quarantine": "quarantine/events", "enriched": "enriched/events"}
    for zone, prefix in zones.items():
        days = sorted(d for d in os.listdir(os.path.join(lake, prefix)) if d.startswith("dt=")) \
            if os.path.isdir(os.path.join(lake, prefix)) else []
        if not days:
            report(f"rows {zone}", "no local partitions")
        for d in days:
            n_local = len(rows_of(parquet_under(os.path.join(lake, prefix, d)), {}))
            files = [download(b, k)[0] for b, k in objects(f"s3://lake/{prefix}/{d}/")]
            n_aws = len(rows_of(files, {}))
            problem = None if n_local == n_aws else f"{n_local} locally, {n_aws} on aws"
            if n_local == 0 and not problem:
                problem = "no rows on either side (the comparison would prove nothing)"
            report(f"rows {zone} {d}", problem, f" ({n_aws})")
    print(f"{checks} checks, {checks - failed} equal")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
