"""Glue crawlers that crawl: the crawler's S3 targets are listed, the schemas of the Parquet
objects read with pyarrow (the footer of every object) and of JSON objects inferred from a sample
of their records, and the Glue table and its partitions created or updated when the crawl ends.

What is modelled:

- One table per S3 target, named as Glue names it: the crawler's TablePrefix and the target's
  last folder name (`s3://lake/staged/events/` with prefix `staged_` -> `staged_events`).
- Partitions: the folders between the target and the objects. `k=v` folders give partition
  key `k` (Hive style); other folder names give `partition_0`, `partition_1`, ... Partition keys
  are typed `string`. Every partition found is registered with its folder as location; a
  partition already in the catalog is left as it is, and one whose folder is gone stays
  (SchemaChangePolicy DeleteBehavior LOG, the platform's setting).
- Columns: the union of the objects' columns in first-seen order, with Glue's type names
  (bigint, int, smallint, tinyint, double, float, boolean, string, binary, date, timestamp,
  decimal(p,s), array<...>, struct<...>, map<...>); a column whose types differ across objects
  is widened (int -> bigint -> double) or else becomes string. A partition key is not a column.
- JSON (newline-delimited, gzip or not): up to 1,000 records per object; JSON numbers without a
  fraction are bigint, with one double, true/false boolean, objects struct, arrays array.
- An existing table is updated in place (UpdateBehavior UPDATE_IN_DATABASE).
- Objects and folders whose name starts with `_` or `.` are skipped; a target without objects
  crawls nothing. Objects at different folder depths, or neither Parquet nor JSON, fail the
  crawl with the reason (Glue would classify them as other tables or as UNKNOWN).

Not modelled: classifiers, exclusions, sampling limits of Glue (every Parquet footer is read),
CSV/Avro/ORC, table grouping across targets (CombineCompatibleSchemas), partition indexes,
recrawl policies (every crawl lists everything), Lake Formation.
"""

import gzip
import io
import json
import re

import emu_common
from emu_common import EmulatedFailure

PARQUET_MAGIC = b"PAR1"


def glue_type(t):
    """A pyarrow type -> Glue's type name."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return glue_type(t.value_type)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t):
        return "tinyint"
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "int"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{glue_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{glue_type(f.type)}" for f in t) + ">"
    if pa.types.is_map(t):
        return f"map<{glue_type(t.key_type)},{glue_type(t.item_type)}>"
    if pa.types.is_null(t):
        return "string"
    return "string"


def json_type(v):
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "bigint"
    if isinstance(v, float):
        return "double"
    if isinstance(v, dict):
        return "struct<" + ",".join(f"{k}:{json_type(x)}" for k, x in v.items()) + ">"
    if isinstance(v, list):
        return f"array<{json_type(v[0]) if v else 'string'}>"
    return "string"


_WIDER = {("int", "bigint"): "bigint", ("bigint", "double"): "double", ("int", "double"): "double",
          ("float", "double"): "double", ("smallint", "int"): "int", ("smallint", "bigint"): "bigint",
          ("tinyint", "smallint"): "smallint", ("tinyint", "int"): "int", ("tinyint", "bigint"): "bigint"}


def merge_type(a, b):
    if a == b or b is None:
        return a
    if a is None:
        return b
    return _WIDER.get((a, b)) or _WIDER.get((b, a)) or "string"


def schema_of(data, key):
    """(format, [(column, glue type)]) of one object."""
    if data[:4] == PARQUET_MAGIC:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(pa.BufferReader(data))
        except Exception as e:
            raise EmulatedFailure(f"s3 object {key}: not readable as Parquet: {e}")
        return "parquet", [(f.name, glue_type(f.type)) for f in schema]
    raw, compressed = data, False
    if data[:2] == b"\x1f\x8b":
        raw, compressed = gzip.decompress(data), True
    cols = {}
    seen = 0
    for line in io.BytesIO(raw):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if seen == 0:
                raise EmulatedFailure(f"s3 object {key}: neither Parquet nor JSON (classification UNKNOWN)")
            continue  # Glue's JSON classifier tolerates a bad record among good ones
        if not isinstance(rec, dict):
            continue
        for k, v in rec.items():
            cols[k] = merge_type(cols.get(k), None if v is None else json_type(v))
        seen += 1
        if seen >= 1000:
            break
    if seen == 0:
        raise EmulatedFailure(f"s3 object {key}: neither Parquet nor JSON (classification UNKNOWN)")
    return ("json-gz" if compressed else "json"), [(k, t or "string") for k, t in cols.items()]


def table_name(prefix, path):
    last = [s for s in path.rstrip("/").split("/") if s][-1]
    return re.sub(r"[^a-z0-9_]", "_", ((prefix or "") + last).lower())


def storage(fmt, columns, location):
    if fmt == "parquet":
        return {"Columns": columns, "Location": location,
                "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                              "Parameters": {"serialization.format": "1"}},
                "Compressed": False, "StoredAsSubDirectories": False}
    return {"Columns": columns, "Location": location, "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe",
                          "Parameters": {"paths": ",".join(c["Name"] for c in columns)}},
            "Compressed": fmt == "json-gz", "StoredAsSubDirectories": False}


def crawl_target(account, crawler, path):
    """The table one S3 target describes: (name, table input, [partition inputs]), or None."""
    bucket, key = emu_common.split_s3(path)
    prefix = emu_common.folder(key)
    try:
        objs = emu_common.objects(account, bucket, prefix)
    except FileNotFoundError as e:
        raise EmulatedFailure(f"Crawler {crawler.name}: {e}")
    if not objs:
        return None
    depths = {k[len(prefix):].count("/") for k, _ in objs}
    if len(depths) != 1:
        raise EmulatedFailure(f"s3://{bucket}/{prefix}: objects at different folder depths {sorted(depths)} "
                              "(the emulator crawls one table per target)")
    depth = depths.pop()
    dirs = {}
    columns, fmt = {}, None
    for k, _ in objs:
        rel = k[len(prefix):].split("/")[:-1]
        dirs.setdefault(tuple(rel), []).append(k)
        f, cols = schema_of(emu_common.read(account, bucket, k), f"s3://{bucket}/{k}")
        fmt = fmt or f
        if f.split("-")[0] != fmt.split("-")[0]:
            raise EmulatedFailure(f"s3://{bucket}/{prefix}: both Parquet and JSON objects")
        for c, t in cols:
            columns[c] = merge_type(columns.get(c), t)
    keys = []
    for i in range(depth):
        names = {d[i].split("=", 1)[0] for d in dirs if "=" in d[i]}
        all_kv = all("=" in d[i] for d in dirs)
        keys.append(names.pop() if all_kv and len(names) == 1 else f"partition_{i}")

    def values(d):
        return [seg.split("=", 1)[1] if keys[i] != f"partition_{i}" else seg for i, seg in enumerate(d)]

    glue_cols = [{"Name": c, "Type": t} for c, t in columns.items() if c not in keys]
    location = f"s3://{bucket}/{prefix}"
    sd = storage(fmt, glue_cols, location)
    params = {"classification": fmt.split("-")[0], "typeOfData": "file", "UPDATED_BY_CRAWLER": crawler.name,
              "CrawlerSchemaSerializerVersion": "1.0", "compressionType": "gzip" if fmt == "json-gz" else "none",
              "objectCount": str(len(objs)), "averageRecordSize": "0"}
    table = {"Name": table_name(crawler.table_prefix, prefix), "TableType": "EXTERNAL_TABLE", "Parameters": params,
             "PartitionKeys": [{"Name": k, "Type": "string"} for k in keys], "StorageDescriptor": sd}
    parts = []
    if keys:
        for d in sorted(dirs):
            parts.append({"Values": values(d), "Parameters": {},
                          "StorageDescriptor": dict(sd, Location=location + "/".join(d) + "/")})
    return table, parts


def crawl(account, region, crawler):
    """The crawl's work: reads the targets now; the catalog changes when the crawl ends."""
    targets = [t["Path"] for t in (crawler.targets or {}).get("S3Targets", [])]
    found = [r for r in (crawl_target(account, crawler, p) for p in targets) if r]

    def commit():
        from moto.glue.models import glue_backends

        glue = glue_backends[account][region]
        db = crawler.database_name
        for table, parts in found:
            name = table["Name"]
            try:
                existing = glue.get_table(db, name)
            except Exception:
                existing = None
            if existing is None:
                glue.create_table(db, name, table)
            else:
                glue.update_table(db, name, table)
            t = glue.get_table(db, name)
            for p in parts:
                if str(p["Values"]) not in t.partitions:
                    glue.create_partition(db, name, p)

    return commit
