"""Athena that executes: each statement parsed as Trino SQL (sqlglot), the SELECT transpiled to
DuckDB and run over the objects the Glue tables point at, CTAS output written back to S3 as real
Parquet and registered in the Glue catalog.

What is modelled (the text of each error is Athena's error name, then the message):

- Parsing: the statement is parsed with sqlglot's Trino dialect; what it cannot parse is
  `SYNTAX_ERROR: line L:C: ...`; so is what sqlglot's Trino dialect accepts but Trino does not
  have (PostgreSQL's `x::int` cast, ILIKE). Other syntax sqlglot is laxer about than Trino is
  not modelled. One statement per query; a CTAS or a query (SELECT / WITH /
  UNION); anything else is `NOT_SUPPORTED` (the emulator does not run DDL or DML).
- Functions: every name called as a function must be one of Trino's (the list below, Trino's
  documented functions): a DuckDB- or Spark-only function (`strftime`, `list_value`, `ifnull`)
  is `FUNCTION_NOT_FOUND: line L:C: Function 'strftime' not registered`, as Athena says.
- Tables: each `db.table` of the query must be in the Glue catalog (else `TABLE_NOT_FOUND`). A
  table is its Glue columns (by name, cast to their Glue types; a column missing from a file is
  NULL) over the Parquet or JSON objects under its location; a partitioned table reads its
  registered partitions only (each partition's location), the partition keys as columns.
  Objects with a path segment starting with `_` or `.` are skipped. A `key = 'literal'`
  predicate on a partition key in the WHERE of a SELECT reading only that table prunes the other
  partitions (their objects are not read).
- Execution: DuckDB runs the transpiled query (time zone UTC); its errors become Athena's
  (`COLUMN_NOT_FOUND`, `TYPE_MISMATCH`, `FUNCTION_NOT_FOUND`, `INVALID_CAST_ARGUMENT`, else
  `GENERIC_USER_ERROR` with DuckDB's message); an operator over types it does not take is
  `TYPE_MISMATCH: Cannot apply operator`; a cast DuckDB cannot do is `INVALID_CAST_ARGUMENT`, even
  where Trino says `NUMERIC_VALUE_OUT_OF_RANGE` (an out-of-range integer cast). The mapping reads
  DuckDB's message texts, which a DuckDB upgrade may change (the test then goes red). DataScannedInBytes is the size of the objects
  read (Athena counts the bytes its readers fetch, often less: column pruning is not modelled).
- CTAS: `WITH (format = 'PARQUET' | 'JSON', write_compression, external_location,
  partitioned_by = ARRAY[...])`. The target table must not exist (`TABLE_ALREADY_EXISTS`) and
  its location must be empty (`HIVE_PATH_ALREADY_EXISTS`); the partition columns must be the
  SELECT's last columns, in `partitioned_by` order (`HIVE_COLUMN_ORDER_MISMATCH`); at most 100
  partitions (`HIVE_TOO_MANY_OPEN_PARTITIONS`). A CTAS whose location's bucket does not exist is
  `HIVE_PATH_NOT_FOUND` here (the emulator's choice: what Athena answers was not verified). The output is written when the query ends:
  objects named like Trino's (`<query id>_<uuid>`, no extension) under the location (and
  `k=v/` folders), the Glue table (Glue type names: bigint, double, string, boolean, ...) and
  one Glue partition per partition written; nothing is written for a failed or cancelled
  query, and an empty result writes no object.

- Plain queries: the result set is kept (at most 10 000 rows) and GetQueryResults returns it in
  one page when no result was seeded through moto's static results: the header row of column
  names first, then each value as text (`VarCharValue`; timestamps `2019-10-01 23:00:00.000`,
  booleans `true`/`false`), a NULL as a datum without a value.

Not modelled: Trino's type rules where DuckDB is laxer (implicit casts between varchar and
numbers, integer division of integer columns, division by zero), `varchar(n)` column types (a
string column is registered as `string`), bucketing, ORC/Avro/text formats, result pages
(`NextToken`) and result files in the output location, views, Iceberg.
"""

import gzip
import os
import random
import re
import shutil
import string
import tempfile
import time
import uuid

import emu_common
from emu_common import EmulatedFailure

# Trino's functions (trino.io/docs, "List of functions and operators"), lower case.
TRINO_FUNCTIONS = set("""
abs acos all_match any_match any_value approx_distinct approx_most_frequent approx_percentile approx_set
arbitrary array_agg array_distinct array_except array_intersect array_join array_max array_min
array_position array_remove array_sort array_union arrays_overlap asin at_timezone atan atan2 avg
beta_cdf bing_tile bit_count bitwise_and bitwise_and_agg bitwise_left_shift bitwise_not bitwise_or
bitwise_or_agg bitwise_right_shift bitwise_right_shift_arithmetic bitwise_xor bitwise_xor_agg bool_and
bool_or cardinality cast cbrt ceil ceiling char2hexint checksum chr classify codepoint coalesce
color combinations concat concat_ws contains contains_sequence corr cos cosh cosine_similarity
count count_if covar_pop covar_samp crc32 cume_dist current_catalog current_date current_groups
current_schema current_time current_timestamp current_timezone current_user date date_add date_diff
date_format date_parse date_trunc day day_of_month day_of_week day_of_year degrees dense_rank dow
doy e element_at empty_approx_set evaluate_classifier_predictions every exp extract features
filter first_value flatten floor format format_datetime format_number from_base from_base32
from_base64 from_base64url from_big_endian_32 from_big_endian_64 from_encoded_polyline
from_geojson_geometry from_hex from_ieee754_32 from_ieee754_64 from_iso8601_date
from_iso8601_timestamp from_iso8601_timestamp_nanos from_unixtime from_unixtime_nanos from_utf8
geometric_mean greatest grouping hamming_distance hash_counts histogram hmac_md5 hmac_sha1
hmac_sha256 hmac_sha512 hour human_readable_seconds if index infinity intersection_cardinality
inverse_beta_cdf inverse_normal_cdf is_finite is_infinite is_json_scalar is_nan jaccard_index
json_array json_array_contains json_array_get json_array_length json_exists json_extract
json_extract_scalar json_format json_object json_parse json_query json_size json_value kurtosis lag
last_day_of_month last_value lead learn_classifier learn_libsvm_classifier learn_libsvm_regressor
learn_regressor least length levenshtein_distance line_interpolate_point listagg ln localtime
localtimestamp log log10 log2 lower lpad ltrim luhn_check make_set_digest map map_agg map_concat
map_entries map_filter map_from_entries map_keys map_union map_values map_zip_with max max_by md5
merge merge_set_digest millisecond min min_by minute mod month multimap_agg multimap_from_entries
murmur3 nan ngrams none_match normal_cdf normalize now nth_value ntile nullif numeric_histogram
objectid parse_data_size parse_datetime parse_duration percent_rank pi position pow power qdigest_agg
quarter radians rand random rank reduce reduce_agg regexp_count regexp_extract regexp_extract_all
regexp_like regexp_position regexp_replace regexp_split regr_intercept regr_slope regress render
repeat replace reverse rgb round row row_number rpad rtrim second sequence sha1 sha256 sha512
shuffle sign simplify_geometry sin sinh skewness slice soundex spatial_partitioning split
split_part split_to_map split_to_multimap spooky_hash_v2_32 spooky_hash_v2_64 sqrt starts_with
stddev stddev_pop stddev_samp strpos substr substring sum tan tanh tdigest_agg timestamp_objectid
timezone_hour timezone_minute to_base to_base32 to_base64 to_base64url to_big_endian_32
to_big_endian_64 to_char to_date to_encoded_polyline to_geojson_geometry to_hex to_ieee754_32
to_ieee754_64 to_iso8601 to_milliseconds to_timestamp to_unixtime to_utf8 transform transform_keys
transform_values translate trim trim_array truncate try try_cast typeof upper url_decode
url_encode url_extract_fragment url_extract_host url_extract_parameter url_extract_path
url_extract_port url_extract_protocol url_extract_query uuid value_at_quantile values_at_quantiles
var_pop var_samp variance week week_of_year width_bucket wilson_interval_lower
wilson_interval_upper with_timezone word_stem xxhash64 year year_of_week yow zip zip_with
""".split())

MAX_PARTITIONS = 100

GLUE_TO_DUCKDB = {
    "string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "integer": "INTEGER", "smallint": "SMALLINT",
    "tinyint": "TINYINT", "double": "DOUBLE", "float": "FLOAT", "boolean": "BOOLEAN", "date": "DATE",
    "timestamp": "TIMESTAMP", "binary": "BLOB",
}


def glue_to_duckdb(t):
    t = (t or "string").strip().lower()
    if t in GLUE_TO_DUCKDB:
        return GLUE_TO_DUCKDB[t]
    if t.startswith(("varchar", "char")):
        return "VARCHAR"
    if t.startswith("decimal"):
        return t.upper()
    return None  # complex types: read as the file has them


def duckdb_to_glue(t):
    """A DuckDB result type -> the Glue type Athena registers for it."""
    u = t.upper()
    simple = {
        "BIGINT": "bigint", "HUGEINT": "bigint", "UBIGINT": "bigint", "UINTEGER": "bigint", "INTEGER": "int",
        "USMALLINT": "int", "SMALLINT": "smallint", "UTINYINT": "smallint", "TINYINT": "tinyint",
        "DOUBLE": "double", "FLOAT": "float", "VARCHAR": "string", "BOOLEAN": "boolean", "DATE": "date",
        "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamp", "TIMESTAMP_NS": "timestamp",
        "TIMESTAMP_MS": "timestamp", "BLOB": "binary",
    }
    if u in simple:
        return simple[u]
    if u.startswith("DECIMAL"):
        return u.lower()
    if u.endswith("[]"):
        return f"array<{duckdb_to_glue(u[:-2])}>"
    return u.lower()


def _query_id():
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime()) + "_%05d_" % random.randint(0, 99999) + "".join(
        random.choice(string.ascii_lowercase) for _ in range(5))


def _err(code, msg):
    return EmulatedFailure(f"{code}: {msg}")


def _position(sql, pattern):
    """line:col (1-based) of the first match of `pattern` in `sql`, or 1:1."""
    m = re.search(pattern, sql)
    if not m:
        return "1:1"
    before = sql[:m.start()]
    return f"{before.count(chr(10)) + 1}:{m.start() - (before.rfind(chr(10)) + 1) + 1}"


def check_functions(sql):
    """FUNCTION_NOT_FOUND for a name called as a function that Trino does not have."""
    import sqlglot
    from sqlglot.tokens import TokenType

    tokens = sqlglot.Dialect.get_or_raise("trino").tokenize(sql)
    for i, t in enumerate(tokens):
        if t.token_type != TokenType.VAR or i + 1 >= len(tokens) or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        prev = tokens[i - 1].token_type if i else None
        if prev in (TokenType.ALIAS, TokenType.DOT, TokenType.R_PAREN, TokenType.VAR):
            continue  # a type after AS, a qualified name, a table alias's column list
        # A CTE's column list: `name (a, b) AS (`.
        depth, j = 0, i + 1
        while j < len(tokens):
            if tokens[j].token_type == TokenType.L_PAREN:
                depth += 1
            elif tokens[j].token_type == TokenType.R_PAREN:
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if (j + 2 < len(tokens) and tokens[j + 1].token_type == TokenType.ALIAS
                and tokens[j + 2].token_type == TokenType.L_PAREN):
            continue
        if t.text.lower() not in TRINO_FUNCTIONS:
            col = t.col - len(t.text) + 1
            raise _err("FUNCTION_NOT_FOUND", f"line {t.line}:{col}: Function '{t.text.lower()}' not registered")


# What sqlglot's Trino dialect accepts but Trino's parser rejects: PostgreSQL's `::` cast and
# ILIKE (Trino has neither).
_NOT_TRINO = {"DCOLON", "ILIKE"}


def check_syntax(sql):
    """SYNTAX_ERROR for the tokens Trino does not have, at their line and column."""
    import sqlglot

    try:
        tokens = sqlglot.tokenize(sql, read="trino")
    except Exception:
        return  # the parser below reports it
    for t in tokens:
        if t.token_type.name in _NOT_TRINO:
            col = t.col - len(t.text) + 1
            raise _err("SYNTAX_ERROR", f"line {t.line}:{col}: mismatched input '{t.text}'")


def parse(sql):
    """The one statement of `sql`, parsed as Trino."""
    import sqlglot
    from sqlglot import exp

    check_syntax(sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read="trino") if s is not None]
    except sqlglot.errors.ParseError as e:
        first = (e.errors or [{}])[0]
        where = f"line {first.get('line', 1)}:{first.get('col', 1)}: "
        raise _err("SYNTAX_ERROR", where + (first.get("description") or str(e)) +
                   (f" at '{first.get('highlight')}'" if first.get("highlight") else ""))
    if len(statements) == 1 and isinstance(statements[0], exp.Command):
        _syntax_error_of_command(sql)
    if len(statements) != 1:
        raise _err("SYNTAX_ERROR", f"line 1:1: Only one sql statement is allowed, got {len(statements)}")
    stmt = statements[0]
    if isinstance(stmt, exp.Create):
        if (stmt.args.get("kind") or "").upper() != "TABLE" or not isinstance(stmt.expression, exp.Query):
            raise _err("NOT_SUPPORTED", "the emulator runs CREATE TABLE ... AS SELECT and queries only")
    elif not isinstance(stmt, exp.Query):
        if isinstance(stmt, exp.Alias):
            raise _err("SYNTAX_ERROR", f"line 1:1: mismatched input '{sql.split()[0] if sql.split() else ''}'")
        raise _err("NOT_SUPPORTED", f"the emulator runs CREATE TABLE ... AS SELECT and queries only, not {stmt.key}")
    check_functions(sql)
    return stmt


def _syntax_error_of_command(sql):
    """sqlglot parses a CREATE whose query it cannot parse as an opaque command: parse the query
    after `WITH (...) AS` alone to say where the error is, in the whole statement's lines."""
    import sqlglot

    m = re.search(r"(?is)\bCREATE\s+TABLE\b.*?\bWITH\s*\(.*?\)\s*AS\s", sql) or \
        re.search(r"(?is)\bCREATE\s+TABLE\s+\S+\s+AS\s", sql)
    if m:
        tail = sql[m.end():]
        try:
            sqlglot.parse(tail, read="trino")
        except sqlglot.errors.ParseError as e:
            first = (e.errors or [{}])[0]
            line, col = first.get("line", 1), first.get("col", 1)
            head = sql[:m.end()]
            if line == 1:
                col += len(head) - (head.rfind("\n") + 1)
            line += head.count("\n")
            raise _err("SYNTAX_ERROR", f"line {line}:{col}: {first.get('description') or e}" +
                       (f" at '{first.get('highlight')}'" if first.get("highlight") else ""))
    word = sql.split()[0] if sql.split() else ""
    raise _err("SYNTAX_ERROR", f"line 1:1: mismatched input '{word}'")


class Ctas:
    def __init__(self, stmt, default_db):
        from sqlglot import exp

        target = stmt.this if isinstance(stmt.this, exp.Table) else stmt.this.this
        self.db = (target.db or default_db).lower()
        self.table = target.name.lower()
        self.format = "PARQUET"
        self.compression = None
        self.location = None
        self.partitioned_by = []
        for p in (stmt.args.get("properties") or exp.Properties(expressions=[])).expressions:
            if isinstance(p, exp.FileFormatProperty):
                self.format = p.this.name.upper()
            elif isinstance(p, exp.PartitionedByProperty):
                self.partitioned_by = [e.name.lower() for e in p.this.expressions]
            elif isinstance(p, exp.LocationProperty):
                self.location = p.this.name
            elif isinstance(p, exp.Property):
                name = p.name.lower()
                value = p.args.get("value")
                if name == "external_location":
                    self.location = value.name
                elif name == "write_compression":
                    self.compression = value.name.upper()
                elif name == "format":
                    self.format = value.name.upper()
                elif name == "partitioned_by":
                    self.partitioned_by = [e.name.lower() for e in value.expressions]
                elif name in ("bucketed_by", "bucket_count", "orc_compression", "parquet_compression",
                              "field_delimiter", "table_type", "is_external", "vacuum_max_snapshot_age_seconds"):
                    raise _err("NOT_SUPPORTED", f"the emulator does not model the table property {name}")
                else:
                    raise _err("INVALID_TABLE_PROPERTY", f"Catalog 'awsdatacatalog' table property '{name}' does not exist")
        if self.format not in ("PARQUET", "JSON"):
            raise _err("NOT_SUPPORTED", f"the emulator writes PARQUET and JSON, not {self.format}")
        self.query = stmt.expression


def _tables(query, default_db):
    """The catalog tables a query reads: {(db, table): [partition filters]} where a filter is a
    dict {key: {values}} from that occurrence's WHERE, or None when it reads everything."""
    from sqlglot import exp

    ctes = {c.alias_or_name.lower() for c in query.find_all(exp.CTE)}
    out = {}
    for t in query.find_all(exp.Table):
        if not t.name:
            continue
        if not t.db and t.name.lower() in ctes:
            continue
        key = ((t.db or default_db).lower(), t.name.lower())
        out.setdefault(key, []).append(_occurrence_filter(t))
    return out


def _occurrence_filter(table):
    """{column: {literal values}} of `col = 'lit'` / `col IN ('a', 'b')` conjuncts of the WHERE
    of the SELECT that reads only this table, else {}."""
    from sqlglot import exp

    select = table.parent.parent if isinstance(table.parent, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        return {}
    where = select.args.get("where")
    if where is None:
        return {}
    filters = {}

    def conjuncts(e):
        if isinstance(e, exp.And):
            yield from conjuncts(e.left)
            yield from conjuncts(e.right)
        elif isinstance(e, exp.Paren):
            yield from conjuncts(e.this)
        else:
            yield e

    for c in conjuncts(where.this):
        if isinstance(c, exp.EQ) and isinstance(c.left, exp.Column) and isinstance(c.right, exp.Literal) \
                and c.right.is_string:
            filters.setdefault(c.left.name.lower(), set()).add(c.right.name)
        elif isinstance(c, exp.In) and isinstance(c.this, exp.Column) and c.expressions \
                and all(isinstance(v, exp.Literal) and v.is_string for v in c.expressions):
            filters.setdefault(c.this.name.lower(), set()).update(v.name for v in c.expressions)
    return filters


class Query:
    """One query execution's work."""

    def __init__(self, account, region, sql, context, output_location):
        self.account, self.region = account, region
        self.sql = sql
        self.default_db = ((context or {}).get("Database") or "default").lower()
        self.output_location = output_location
        self.scanned = 0
        self.trino_id = _query_id()
        # A plain query's result: (column names, rows of text or None).
        self.result = None

    def glue(self):
        from moto.glue.models import glue_backends

        return glue_backends[self.account][self.region]

    def run(self):
        """Plans, checks and runs the query; returns the commit (writes) for the end."""
        from sqlglot import exp

        stmt = parse(self.sql)
        ctas = Ctas(stmt, self.default_db) if isinstance(stmt, exp.Create) else None
        query = ctas.query if ctas else stmt
        glue = self.glue()
        if ctas:
            try:
                glue.get_database(ctas.db)
            except Exception:
                raise _err("SCHEMA_NOT_FOUND", f"line 1:1: Schema '{ctas.db}' does not exist")
            try:
                glue.get_table(ctas.db, ctas.table)
                raise _err("TABLE_ALREADY_EXISTS",
                           f"line 1:1: Destination table 'awsdatacatalog.{ctas.db}.{ctas.table}' already exists")
            except EmulatedFailure:
                raise
            except Exception:
                pass
            if not ctas.location:
                if not self.output_location:
                    raise _err("GENERIC_USER_ERROR", "no external_location and no query result location")
                ctas.location = emu_common.folder(self.output_location) + f"tables/{self.trino_id}/"
            bucket, key = emu_common.split_s3(ctas.location)
            try:
                existing = emu_common.objects(self.account, bucket, emu_common.folder(key), visible_only=False)
            except FileNotFoundError:
                raise _err("HIVE_PATH_NOT_FOUND", f"Bucket of {ctas.location} does not exist")
            if existing:
                raise _err("HIVE_PATH_ALREADY_EXISTS",
                           f"Target directory for table '{ctas.db}.{ctas.table}' already exists: {ctas.location}. You "
                           f"may need to manually clean the data at location '{ctas.location}' before retrying. Athena "
                           f"will not delete data in your account.")
            names = [n.lower() for n in query.named_selects]
            if ctas.partitioned_by and names[-len(ctas.partitioned_by):] != ctas.partitioned_by:
                raise _err("HIVE_COLUMN_ORDER_MISMATCH",
                           "Partition keys must be the last columns in the table and in the same order as the table "
                           f"properties: [{', '.join(ctas.partitioned_by)}]")
        work = tempfile.mkdtemp(prefix="emu-athena-")
        try:
            return self._execute(query, ctas, work)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _source(self, con, db, name, filters, work):
        """Registers `db.name` in DuckDB as a view over its objects (pruned by `filters`)."""
        glue = self.glue()
        try:
            t = glue.get_table(db, name).as_dict()
        except Exception:
            pos = _position(self.sql, r"(?i)\b" + re.escape(name) + r"\b")
            raise _err("TABLE_NOT_FOUND", f"line {pos}: Table 'awsdatacatalog.{db}.{name}' does not exist")
        sd = t.get("StorageDescriptor") or {}
        cols = [(c["Name"].lower(), c.get("Type", "string")) for c in sd.get("Columns", [])]
        keys = [(c["Name"].lower(), c.get("Type", "string")) for c in t.get("PartitionKeys") or []]
        serde = ((sd.get("SerdeInfo") or {}).get("SerializationLibrary") or "").lower()
        classification = ((t.get("Parameters") or {}).get("classification") or "").lower()
        fmt = "json" if ("json" in serde or classification == "json") else "parquet"
        if keys:
            parts = []
            for p in glue.get_table(db, name).partitions.values():
                values = p.partition_input.get("Values", [])
                loc = (p.partition_input.get("StorageDescriptor") or {}).get("Location")
                if loc and len(values) == len(keys):
                    parts.append((values, loc))
            # A partition is read when some occurrence of the table may need it.
            def needed(values):
                for f in filters:
                    if all(v in f.get(k, {v}) for (k, _), v in zip(keys, values)):
                        return True
                return False
            parts = [p for p in parts if needed(p[0])]
        else:
            if not sd.get("Location"):
                raise _err("HIVE_METASTORE_ERROR", f"Table {db}.{name} has no location")
            parts = [([], sd["Location"])]
        selects = []
        for i, (values, loc) in enumerate(parts):
            bucket, key = emu_common.split_s3(loc)
            try:
                objs = emu_common.objects(self.account, bucket, emu_common.folder(key))
            except FileNotFoundError:
                raise _err("HIVE_PATH_NOT_FOUND", f"Bucket of {loc} does not exist")
            files = []
            d = os.path.join(work, "in", f"{db}.{name}", str(i))
            os.makedirs(d, exist_ok=True)
            for n, (k, size) in enumerate(objs):
                data = emu_common.read(self.account, bucket, k)
                if fmt == "json" and k.endswith(".gz"):
                    data = gzip.decompress(data)
                path = os.path.join(d, f"{n}.{fmt}")
                with open(path, "wb") as f:
                    f.write(data)
                files.append(path)
                self.scanned += size
            if not files:
                continue
            if fmt == "parquet":
                reader = f"read_parquet({files!r}, union_by_name = true)"
            else:
                reader = f"read_json_auto({files!r}, format = 'newline_delimited', union_by_name = true)"
            have = {r[0].lower() for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
            exprs = []
            for c, ty in cols:
                dt = glue_to_duckdb(ty)
                src = f'"{c}"' if c in have else "NULL"
                exprs.append(f'CAST({src} AS {dt}) AS "{c}"' if dt else f'{src} AS "{c}"')
            for (k, ty), v in zip(keys, values):
                dt = glue_to_duckdb(ty) or "VARCHAR"
                lit = str(v).replace("'", "''")
                exprs.append(f"CAST('{lit}' AS {dt}) AS \"{k}\"")
            selects.append(f"SELECT {', '.join(exprs)} FROM {reader}")
        if not selects:  # no object: an empty relation of the table's columns
            exprs = [f'CAST(NULL AS {glue_to_duckdb(ty) or "VARCHAR"}) AS "{c}"' for c, ty in cols + keys]
            selects.append(f"SELECT {', '.join(exprs) or '1 AS _'} WHERE false")
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{db}"')
        con.execute(f'CREATE VIEW "{db}"."{name}" AS ' + " UNION ALL ".join(selects))

    def _execute(self, query, ctas, work):
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET threads = 2")
        for (db, name), filters in _tables(query, self.default_db).items():
            self._source(con, db, name, filters, work)
        # An unqualified table is the query's database's (QueryExecutionContext), as in Athena.
        from sqlglot import exp
        ctes = {c.alias_or_name.lower() for c in query.find_all(exp.CTE)}
        for t in query.find_all(exp.Table):
            if t.name and not t.db and t.name.lower() not in ctes:
                t.set("db", exp.to_identifier(self.default_db))
        duck_sql = query.sql(dialect="duckdb")
        try:
            con.execute(f"CREATE TEMP TABLE __result AS {duck_sql}")
        except duckdb.Error as e:
            raise self._athena_error(e)
        described = con.execute("DESCRIBE __result").fetchall()
        columns = [(r[0], r[1]) for r in described]
        if not ctas:  # a plain query: its result set, as GetQueryResults returns it
            rows = con.execute("SELECT * FROM __result").fetchmany(MAX_RESULT_ROWS)
            self.result = ([c for c, _ in columns], [[_text(v) for v in r] for r in rows])
            con.close()
            shutil.rmtree(work, ignore_errors=True)
            return lambda: None
        # Trino's result types: an integer sum is a bigint.
        casts = [f'CAST("{c}" AS BIGINT) AS "{c}"' if t.upper() in ("HUGEINT", "UBIGINT") else f'"{c}"'
                 for c, t in columns]
        con.execute(f"CREATE TEMP TABLE __out AS SELECT {', '.join(casts)} FROM __result")
        columns = [(r[0], r[1]) for r in con.execute("DESCRIBE __out").fetchall()]
        keys = ctas.partitioned_by
        out_dir = os.path.join(work, "out")
        os.makedirs(out_dir)
        rows = con.execute("SELECT count(*) FROM __out").fetchone()[0]
        partitions = []
        if keys:
            key_list = ", ".join(f'"{k}"' for k in keys)
            partitions = con.execute(f"SELECT DISTINCT {key_list} FROM __out ORDER BY {key_list}").fetchall()
            if len(partitions) > MAX_PARTITIONS:
                raise _err("HIVE_TOO_MANY_OPEN_PARTITIONS",
                           f"Exceeded limit of {MAX_PARTITIONS} open writers for partitions/buckets")
        compression = ctas.compression or "GZIP"  # Athena's default for both formats
        fmt = "PARQUET" if ctas.format == "PARQUET" else "JSON"
        copy_opts = f"FORMAT {fmt}, COMPRESSION {compression}"
        files = []  # (relative folder, local file)
        if rows:
            if keys:
                data_cols = ", ".join(f'"{c}"' for c, _ in columns if c.lower() not in keys)
                for values in partitions:
                    cond = " AND ".join(f'"{k}" IS NOT DISTINCT FROM ?' for k in keys)
                    rel = "/".join(f"{k}={'__HIVE_DEFAULT_PARTITION__' if v is None else v}"
                                   for k, v in zip(keys, values)) + "/"
                    path = os.path.join(out_dir, f"{len(files)}.out")
                    con.execute(f"COPY (SELECT {data_cols} FROM __out WHERE {cond}) TO '{path}' ({copy_opts})",
                                list(values))
                    files.append((rel, path, [None if v is None else str(v) for v in values]))
            else:
                path = os.path.join(out_dir, "0.out")
                con.execute(f"COPY __out TO '{path}' ({copy_opts})")
                files.append(("", path, None))
        con.close()
        glue_cols = [{"Name": c.lower(), "Type": duckdb_to_glue(t)} for c, t in columns if c.lower() not in keys]
        key_types = {c.lower(): duckdb_to_glue(t) for c, t in columns}
        glue_keys = [{"Name": k, "Type": key_types.get(k, "string")} for k in keys]
        suffix = ".gz" if fmt == "JSON" and compression == "GZIP" else ""

        def commit():
            bucket, base = emu_common.split_s3(ctas.location)
            base = emu_common.folder(base)
            for rel, path, _ in files:
                with open(path, "rb") as f:
                    emu_common.write(self.account, bucket, f"{base}{rel}{self.trino_id}_{uuid.uuid4()}{suffix}", f.read())
            sd = _storage(ctas.format, glue_cols, f"s3://{bucket}/{base}", ctas.compression)
            params = {"classification": ctas.format.lower(), "EXTERNAL": "TRUE", "has_encrypted_data": "false"}
            glue = self.glue()
            glue.create_table(ctas.db, ctas.table, {"Name": ctas.table, "TableType": "EXTERNAL_TABLE",
                                                    "Parameters": params, "PartitionKeys": glue_keys,
                                                    "StorageDescriptor": sd})
            for rel, _, values in files:
                if values is not None:
                    glue.create_partition(ctas.db, ctas.table, {
                        "Values": values, "StorageDescriptor": dict(sd, Location=f"s3://{bucket}/{base}{rel}")})
            shutil.rmtree(work, ignore_errors=True)

        return commit

    def _athena_error(self, e):
        msg = str(e)
        text = re.sub(r"^\w+ Error: ", "", msg).split("\n")[0]
        m = re.search(r'Referenced column "([^"]+)" not found', msg)
        if m:
            col = m.group(1)
            pos = _position(self.sql, r"(?i)\b" + re.escape(col) + r"\b")
            return _err("COLUMN_NOT_FOUND", f"line {pos}: Column '{col}' cannot be resolved or requester is not "
                                            f"authorized to access requested resources")
        m = re.search(r'Table with name (\S+) does not exist', msg)
        if m:
            return _err("TABLE_NOT_FOUND", f"Table '{m.group(1)}' does not exist")
        m = re.search(r"""(?:No function matches the given name and argument types|function call) ["']([-+*/%=<>!|]+)\((.*?)\)""", msg)
        if m:
            # An operator over types it does not take: Trino's "Cannot apply operator".
            return _err("TYPE_MISMATCH", f"Cannot apply operator: {m.group(1)}({m.group(2).lower()})")
        if "No function matches" in msg or "does not exist" in msg and "Function" in msg:
            return _err("FUNCTION_NOT_FOUND", text)
        if "Cannot compare values" in msg or "Cannot mix values" in msg or "type mismatch" in msg.lower():
            return _err("TYPE_MISMATCH", text)
        if type(e).__name__ in ("ConversionException", "InvalidInputException"):
            return _err("INVALID_CAST_ARGUMENT", text)
        if type(e).__name__ == "OutOfRangeException":
            return _err("NUMERIC_VALUE_OUT_OF_RANGE", text)
        return _err("GENERIC_USER_ERROR", f"{text} (DuckDB: {type(e).__name__})")


MAX_RESULT_ROWS = 10_000


def _text(v):
    """A value as Athena's GetQueryResults writes it (None for NULL)."""
    import datetime
    import decimal

    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(v, (datetime.date, decimal.Decimal)):
        return str(v)
    return str(v)


def _storage(fmt, columns, location, compression):
    if fmt == "PARQUET":
        serde = {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                 "Parameters": {"serialization.format": "1"}}
        io_fmt = ("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                  "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
    else:
        serde = {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"}
        io_fmt = ("org.apache.hadoop.mapred.TextInputFormat",
                  "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
    sd = {"Columns": columns, "Location": location, "InputFormat": io_fmt[0], "OutputFormat": io_fmt[1],
          "SerdeInfo": serde, "Compressed": bool(compression)}
    return sd


def start(account, region, sql, context, config):
    """Starts a query's work (on a thread); the Work commits when the query's state machine ends."""
    output = (config or {}).get("OutputLocation")
    q = Query(account, region, sql, context, output)
    work = emu_common.Work("athena query", q.run)
    work.query = q
    return work

