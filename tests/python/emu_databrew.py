"""DataBrew recipe job runs that run the recipe: an interpreter of a subset of DataBrew's recipe
actions, in plain Python over pyarrow (independent of cartflow's Polars interpreter), reading
the job's dataset from the emulator's S3 and writing the job's outputs back.

What is modelled:

- The dataset: `Input.S3InputDefinition` (Bucket, Key). A Key ending in `/` is a folder: every
  Parquet object under it (sub-folders too) is read. A Key with `{name}` parts is a dynamic
  dataset (`clean/events/dt={dt}/`): each `{name}` matches one path segment, and a path parameter
  of `PathOptions.Parameters` with `CreateColumn: true` becomes a string column. Objects whose
  name starts with `_` or `.` are skipped. Only Parquet is read (`Format` PARQUET, the
  default here).
- The recipe: the job's RecipeReference (its RecipeVersion, else the latest published, else the
  working version). Steps run in order; `Parameters` names are DataBrew's (`sourceColumn`; the
  CloudFormation spelling `SourceColumn` is accepted too). Actions:
  LOWER_CASE, UPPER_CASE, TRIM, FILL_WITH_EMPTY, FILL_WITH_CUSTOM (value), RENAME, DELETE
  (sourceColumns, a JSON list), DUPLICATE, SPLIT_COLUMN_SINGLE_DELIMITER (pattern, limit,
  includeInSplit false: columns `<source>_1` ... `<source>_<limit+1>`, the last holding the rest,
  the source column kept), HOUR, DAY, MONTH, YEAR, WEEK_DAY (1 = Monday ... 7 = Sunday; DataBrew's
  documentation does not give the numbering), REMOVE_MISSING, REMOVE_VALUES with
  ConditionExpressions (IS, IS_NOT, LESS_THAN, LESS_THAN_EQUAL, GREATER_THAN, GREATER_THAN_EQUAL;
  a row is removed when every condition holds; a missing value matches none).
  Any other action fails the run: `Recipe step N: unsupported operation X`.
- The outputs: each of the job's `Outputs` (Location Bucket/Key, Format PARQUET, Overwrite,
  PartitionColumns). Overwrite deletes what is under the location first; PartitionColumns write
  `col=value/` folders without the column in the files. Objects are named
  `<job>_<timestamp>_part00000.parquet` like DataBrew's. The outputs appear when the run ends.

Not modelled: CSV/JSON/Excel datasets, dataset filters and file limits (PathOptions other than
parameters), sampling, recipe actions outside the list, conditions other than the list, data
types DataBrew would infer for string columns (types are the Parquet files'), output
compression settings (snappy), MaxCapacity, encryption, database and Data Catalog outputs.
"""

import datetime as dt_mod
import io
import json
import re
import time

import emu_common
from emu_common import EmulatedFailure


def _param(step, name, default=None):
    p = (step.get("Action") or {}).get("Parameters") or {}
    for k in (name, name[0].upper() + name[1:]):
        if k in p:
            return p[k]
    return default


def _cond(values, cond, value):
    """Which values satisfy one condition."""
    def num(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return None
    out = []
    for v in values:
        if v is None:
            out.append(False)
            continue
        if cond in ("IS", "IS_NOT"):
            hit = str(v) == value if not isinstance(v, (int, float)) else num(value) == v
            out.append(hit if cond == "IS" else not hit)
            continue
        a, b = (v, num(value)) if isinstance(v, (int, float)) else (str(v), value)
        if b is None:
            raise EmulatedFailure(f"condition value {value!r} is not a number")
        out.append({"LESS_THAN": a < b, "LESS_THAN_EQUAL": a <= b, "GREATER_THAN": a > b,
                    "GREATER_THAN_EQUAL": a >= b}[cond])
    return out


CONDITIONS = ("IS", "IS_NOT", "LESS_THAN", "LESS_THAN_EQUAL", "GREATER_THAN", "GREATER_THAN_EQUAL")


class Frame:
    """Columns as Python lists, in order, with the arrow type of the columns read."""

    def __init__(self, columns, types):
        self.columns = columns  # name -> list
        self.types = types  # name -> arrow type or None (inferred on write)

    def rows(self):
        return len(next(iter(self.columns.values()), []))

    def need(self, c, n):
        if c not in self.columns:
            raise EmulatedFailure(f"Recipe step {n}: column {c} not found")
        return self.columns[c]

    def set(self, c, values, typ=None):
        self.columns[c] = values
        self.types[c] = typ

    def keep(self, mask):
        for c in list(self.columns):
            self.columns[c] = [v for v, k in zip(self.columns[c], mask) if k]


def apply(frame, steps):
    import pyarrow as pa

    for n, step in enumerate(steps, 1):
        op = (step.get("Action") or {}).get("Operation")
        src = _param(step, "sourceColumn")
        target = _param(step, "targetColumn")
        if step.get("ConditionExpressions") and op != "REMOVE_VALUES":
            raise EmulatedFailure(f"Recipe step {n}: ConditionExpressions on {op} are not supported")
        if op in ("LOWER_CASE", "UPPER_CASE", "TRIM"):
            f = {"LOWER_CASE": str.lower, "UPPER_CASE": str.upper, "TRIM": str.strip}[op]
            frame.set(src, [None if v is None else f(v) for v in frame.need(src, n)], frame.types.get(src))
        elif op == "FILL_WITH_EMPTY":
            frame.set(src, ["" if v is None else v for v in frame.need(src, n)], frame.types.get(src))
        elif op == "FILL_WITH_CUSTOM":
            value = _param(step, "value", "")
            col = frame.need(src, n)
            if _param(step, "columnDataType", "string") == "number":
                value = float(value)
            frame.set(src, [value if v is None else v for v in col], frame.types.get(src))
        elif op == "RENAME":
            col = frame.need(src, n)
            typ = frame.types.get(src)
            if target in frame.columns:
                raise EmulatedFailure(f"Recipe step {n}: column {target} already exists")
            names = list(frame.columns)
            frame.columns = {target if c == src else c: (col if c == src else frame.columns[c]) for c in names}
            frame.types = {target if c == src else c: (typ if c == src else frame.types.get(c)) for c in names}
        elif op == "DELETE":
            for c in json.loads(_param(step, "sourceColumns", "[]")):
                frame.need(c, n)
                del frame.columns[c]
                frame.types.pop(c, None)
        elif op == "DUPLICATE":
            frame.set(target, list(frame.need(src, n)), frame.types.get(src))
        elif op == "SPLIT_COLUMN_SINGLE_DELIMITER":
            pattern = _param(step, "pattern")
            limit = int(_param(step, "limit", "1"))
            if str(_param(step, "includeInSplit", "false")).lower() != "false":
                raise EmulatedFailure(f"Recipe step {n}: includeInSplit true is not modelled")
            col = frame.need(src, n)
            parts = [None if v is None else v.split(pattern, limit) for v in col]
            for i in range(limit + 1):
                frame.set(f"{src}_{i + 1}", [None if p is None or i >= len(p) else p[i] for p in parts], pa.string())
        elif op in ("HOUR", "DAY", "MONTH", "YEAR", "WEEK_DAY"):
            col = frame.need(src, n)

            def part(v):
                if v is None:
                    return None
                if not isinstance(v, (dt_mod.datetime, dt_mod.date)):
                    raise EmulatedFailure(f"Recipe step {n}: column {src} is not a date")
                if op == "WEEK_DAY":
                    return v.isoweekday()
                return getattr(v, op.lower())
            frame.set(target, [part(v) for v in col], pa.int32())
        elif op == "REMOVE_MISSING":
            frame.keep([v is not None for v in frame.need(src, n)])
        elif op == "REMOVE_VALUES":
            mask = [True] * frame.rows()
            conds = step.get("ConditionExpressions") or []
            if not conds:
                raise EmulatedFailure(f"Recipe step {n}: REMOVE_VALUES needs ConditionExpressions")
            for c in conds:
                if c.get("Condition") not in CONDITIONS:
                    raise EmulatedFailure(f"Recipe step {n}: unsupported condition {c.get('Condition')}")
                hits = _cond(frame.need(c.get("TargetColumn") or src, n), c["Condition"], c.get("Value"))
                mask = [m and h for m, h in zip(mask, hits)]
            frame.keep([not m for m in mask])
        else:
            raise EmulatedFailure(f"Recipe step {n}: unsupported operation {op}")
    return frame


def _dataset_objects(account, dataset):
    s3in = (dataset.input or {}).get("S3InputDefinition") or {}
    bucket, key = s3in.get("Bucket"), s3in.get("Key", "")
    params = ((dataset.path_options or {}).get("Parameters") or {})
    fixed = key.split("{", 1)[0]
    base = fixed[: fixed.rfind("/") + 1] if "{" in key else emu_common.folder(key) if key.endswith("/") or not key else key
    names = re.findall(r"\{(\w+)\}", key)
    pattern = None
    if names:
        pattern = re.compile("^" + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)"
                                            for i, p in enumerate(re.split(r"\{(\w+)\}", key))))
    out = []
    for obj, _ in emu_common.objects(account, bucket, base):
        if pattern is None:
            if key and not key.endswith("/") and obj != key:
                continue
            out.append((bucket, obj, {}))
            continue
        m = pattern.match(obj)
        if not m:
            continue
        cols = {}
        for name in names:
            spec = params.get(name) or {}
            if spec.get("CreateColumn"):
                cols[spec.get("Name", name)] = m.group(name)
        out.append((bucket, obj, cols))
    if not out:
        raise EmulatedFailure(f"Dataset {dataset.name}: no files found at s3://{bucket}/{key}")
    return out


def run(account, region, job, recipe_steps, dataset):
    """The run's work: read, apply, and write when the run ends."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for bucket, key, extra in _dataset_objects(account, dataset):
        data = emu_common.read(account, bucket, key)
        if data[:4] != b"PAR1":
            raise EmulatedFailure(f"s3://{bucket}/{key}: not a Parquet file (the emulator reads Parquet datasets)")
        t = pq.read_table(pa.BufferReader(data))
        for c, v in extra.items():
            t = t.append_column(c, pa.array([v] * t.num_rows, pa.string()))
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="default")
    frame = Frame({c: table.column(c).to_pylist() for c in table.column_names},
                  {c: table.schema.field(c).type for c in table.column_names})
    rows_in = frame.rows()
    frame = apply(frame, recipe_steps)
    arrays = {c: pa.array(v, type=frame.types.get(c)) for c, v in frame.columns.items()}
    out = pa.table(arrays)
    stamp = time.strftime("%d%b%Y_%H%M%S", time.gmtime())
    writes = []  # (bucket, key, bytes)
    clears = []  # (bucket, prefix)
    for o in job.outputs or []:
        loc = o.get("Location") or {}
        bucket, key = loc.get("Bucket"), emu_common.folder(loc.get("Key", ""))
        if (o.get("Format") or "PARQUET").upper() != "PARQUET":
            raise EmulatedFailure(f"output format {o.get('Format')} is not modelled")
        if o.get("Overwrite"):
            clears.append((bucket, key))
        parts = o.get("PartitionColumns") or []
        groups = {}
        if parts:
            for c in parts:
                if c not in out.column_names:
                    raise EmulatedFailure(f"partition column {c} is not in the output")
            keys = list(zip(*[out.column(c).to_pylist() for c in parts]))
            for i, k in enumerate(keys):
                groups.setdefault(k, []).append(i)
            data_cols = [c for c in out.column_names if c not in parts]
            for k, idx in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
                sub = out.select(data_cols).take(pa.array(idx, pa.int64()))
                folder = "".join(f"{c}={'__HIVE_DEFAULT_PARTITION__' if v is None else v}/" for c, v in zip(parts, k))
                writes.append((bucket, f"{key}{folder}{job.name}_{stamp}_part00000.parquet", _parquet(sub)))
        elif out.num_rows:
            writes.append((bucket, f"{key}{job.name}_{stamp}_part00000.parquet", _parquet(out)))

    def commit():
        for bucket, prefix in clears:
            for obj, _ in emu_common.objects(account, bucket, prefix, visible_only=False):
                emu_common.delete(account, bucket, obj)
        for bucket, key, data in writes:
            emu_common.write(account, bucket, key, data)

    commit.rows = (rows_in, out.num_rows)
    return commit


def _parquet(table):
    import pyarrow.parquet as pq

    b = io.BytesIO()
    pq.write_table(table, b, compression="snappy")
    return b.getvalue()
