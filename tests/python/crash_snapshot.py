"""What a reader sees of a project's lake, for the crash-point harness: read independently of
cartflow (the catalog with sqlite3, the Parquet with DuckDB, the raw zone with gzip) and printed
as one JSON object {key: value}. Two projects that ran the same DAG over the same events print
the same object, whatever crashed in between.

usage: python crash_snapshot.py PROJECT_DIR

Keys:
  catalog <db.table>             format, columns, partition keys, parameters, location
  partitions <db.table>          each partition's spec, values and location
  data <db.table>[/<spec>]       rows and a content checksum of what the catalog points at
  quarantine <dt=...>            rows and checksum of each quarantine partition
  raw <path>                     checksum of each raw-zone object, decompressed
  lake files                     every file of the lake outside the raw zone (staging included)
  cartflow files                 the files beside the lake (the dashboard; no temporary leftovers)
  dashboard                      checksum of the dashboard (its build time left out)
  notifications                  the distinct notifications sent (delivery is at least once)

Version folders (`version-<stamp>-<n>`) are named by the time they were written, so they appear
as `version-*`; a version folder the catalog does not name (one a crashed refresh left, pruned
after an hour) is not part of the lake a reader sees and is left out of `lake files`.
"""

import gzip
import hashlib
import json
import os
import re
import sqlite3
import sys

import duckdb

project = sys.argv[1]
lake = os.path.join(project, ".cartflow/lake")
out = {}
con = duckdb.connect()

VERSION = re.compile(r"version-[^/]+")


def norm(path):
    return VERSION.sub("version-*", path)


def content(folder):
    """Rows and an order-independent checksum of the Parquet files of a folder."""
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet")) \
        if os.path.isdir(folder) else []
    if not files:
        return [0, None]
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    rows, digest = con.execute(f"""
        SELECT count(*), md5(coalesce(string_agg(r, chr(10) ORDER BY r), ''))
        FROM (SELECT CAST(t AS VARCHAR) AS r FROM read_parquet([{listed}]) t)""").fetchone()
    return [rows, digest]


published = set()
cat = sqlite3.connect(os.path.join(project, ".cartflow/catalog.db"))
for db, name, location, fmt, columns, keys, params in cat.execute(
        "SELECT database, name, location, format, columns, partition_keys, parameters FROM tables "
        "ORDER BY database, name"):
    q = f"{db}.{name}"
    out[f"catalog {q}"] = {"format": fmt, "columns": json.loads(columns), "partition_keys": json.loads(keys),
                           "parameters": json.loads(params), "location": norm(location)}
    published.add(location)
    parts = cat.execute("SELECT spec, vals, location FROM partitions WHERE database = ? AND table_name = ? "
                        "ORDER BY spec", (db, name)).fetchall()
    out[f"partitions {q}"] = [[spec, json.loads(vals), norm(loc)] for spec, vals, loc in parts]
    if json.loads(keys):
        for spec, _, loc in parts:
            out[f"data {q}/{spec}"] = content(os.path.join(lake, loc))
    else:
        out[f"data {q}"] = content(os.path.join(lake, location))

qroot = os.path.join(lake, "quarantine/events")
for d in sorted(os.listdir(qroot)) if os.path.isdir(qroot) else []:
    if d.startswith("dt="):
        out[f"quarantine {d}"] = content(os.path.join(qroot, d))

files = []
for root, dirs, names in os.walk(lake):
    dirs.sort()
    rel_root = os.path.relpath(root, lake)
    for n in sorted(names):
        rel = os.path.normpath(os.path.join(rel_root, n))
        if rel.startswith("raw" + os.sep):
            with gzip.open(os.path.join(root, n)) if n.endswith(".gz") else open(os.path.join(root, n), "rb") as f:
                out[f"raw {rel}"] = hashlib.md5(f.read()).hexdigest()
            continue
        m = re.match(r"(.*?/version-[^/]+)/", rel)
        if m and m.group(1) not in published:
            continue  # never published: a crashed refresh's, not part of the lake
        files.append(norm(rel))
out["lake files"] = files

# Beside the lake: the dashboard, and nothing a crashed writer left (temporary files).
out["cartflow files"] = sorted(
    n for n in os.listdir(os.path.join(project, ".cartflow"))
    if os.path.isfile(os.path.join(project, ".cartflow", n)) and not re.match(r"(state|catalog)\.db", n))

dash = os.path.join(project, ".cartflow/dashboard.html")
if os.path.exists(dash):
    html = open(dash, encoding="utf-8").read()
    html = re.sub(r" · built [^<]*? by cartflow", " · built (time) by cartflow", html)
    out["dashboard"] = hashlib.md5(html.encode()).hexdigest()

notes = os.path.join(project, ".cartflow/streaming/notifications.jsonl")
if os.path.exists(notes):
    out["notifications"] = sorted(set(l for l in open(notes, encoding="utf-8").read().splitlines() if l.strip()))

json.dump(out, sys.stdout, sort_keys=True, indent=1)
