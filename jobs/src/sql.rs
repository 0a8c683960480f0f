//! The local SQL engine, Athena's twin: Apache DataFusion over the catalog's tables, with the
//! Trino functions that DataFusion lacks added as scalar UDFs, so the same SQL file runs on
//! Athena and locally.
//!
//! Every catalog table is registered as `database.table` (a Parquet listing table at its
//! location under the lake); partition keys are Hive folders (`dt=…`) and a filter on them
//! prunes whole folders.
//!
//! Trino functions added (all on timestamps or dates, returning `bigint` like Trino):
//! `year`, `quarter`, `month`, `week` / `week_of_year` (ISO), `day` / `day_of_month`,
//! `day_of_week` / `dow` (ISO: 1 = Monday … 7 = Sunday), `day_of_year` / `doy`, `hour`,
//! `minute`, `second`; `date_format(timestamp, format)` with MySQL-style specifiers as Trino
//! documents them (`%Y %m %d %H %i %s %W %a %M %b %p %T %j %y %e %c %f %%`);
//! `from_iso8601_timestamp(varchar)` and `from_iso8601_date(varchar)`.
//! DataFusion already has what Athena users write most: `date_trunc`, `approx_distinct`,
//! `count(*) FILTER (WHERE …)`, window functions (including over aggregates), `EXISTS`,
//! `regexp_like`, `split_part`, `coalesce`, `nullif`, `CAST`, `TRY_CAST`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::kernels::temporal::{DatePart, date_part};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, LogicalPlan, LogicalPlanBuilder, ScalarUDF, Signature, SimpleScalarUDF, SubqueryAlias,
    TypeSignature, Volatility,
};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::catalog::{Catalog, Column, Table};

/// Arrow, as the engine's results are typed.
pub use datafusion::arrow;

/// Errors of the SQL engine.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query is wrong (SQL, planning, schema): running it again will not help.
    #[error("{0}")]
    Query(String),
    /// The query failed while running (files changing underneath, I/O): a retry may succeed.
    #[error("{0}")]
    Execution(String),
    /// The catalog.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// Files.
    #[error("{path}: {message}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        message: String,
    },
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => SqlError::Query(e.to_string()),
            _ => SqlError::Execution(e.to_string()),
        }
    }
}

/// The timestamp and date types a Trino date function accepts (any unit, with or without UTC).
fn temporal_types() -> Vec<DataType> {
    let mut v = vec![DataType::Date32];
    for unit in [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond] {
        v.push(DataType::Timestamp(unit, None));
        v.push(DataType::Timestamp(unit, Some("UTC".into())));
    }
    v
}

fn udf(
    name: &str,
    signature: Signature,
    ret: DataType,
    f: datafusion::logical_expr::ScalarFunctionImplementation,
) -> ScalarUDF {
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(name, signature, ret, f))
}

/// `hour`, `minute`, `second` and the weekday of a UTC (or zone-less) timestamp straight from
/// its integer value: no calendar is needed for those. The general `date_part` kernel converts
/// every value to a calendar date first: grouping 7M events by the hour and weekday of their
/// time took 0.50 s through it, 0.39 s this way. `None` for the other parts and types, which go
/// through `date_part`.
fn clock_part(a: &dyn Array, part: DatePart, iso_dow: bool) -> Option<ArrayRef> {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let DataType::Timestamp(unit, tz) = a.data_type() else { return None };
    if tz.as_deref().is_some_and(|tz| !matches!(tz, "UTC" | "+00:00" | "Z")) {
        return None;
    }
    // part = ((value / (unit per second * seconds per step)) + shift) mod m, plus 1 for the ISO
    // weekday; 1970-01-01 was a Thursday. The constants are generic parameters so that the
    // compiler turns each division into a multiplication (with runtime divisors, the parts were
    // 13% of the profile of a query grouping 7M events by `hour` and `day_of_week`).
    fn parts<T, const STEP: i64, const SHIFT: i64, const M: i64>(a: &dyn Array, plus: i64) -> Int64Array
    where
        T: datafusion::arrow::datatypes::ArrowPrimitiveType<Native = i64>,
    {
        a.as_primitive::<T>().unary(|v| (v.div_euclid(STEP) + SHIFT).rem_euclid(M) + plus)
    }
    macro_rules! by_unit {
        ($per_second:literal, $t:ty) => {
            match part {
                DatePart::Hour => parts::<$t, { 3_600 * $per_second }, 0, 24>(a, 0),
                DatePart::Minute => parts::<$t, { 60 * $per_second }, 0, 60>(a, 0),
                DatePart::Second => parts::<$t, { $per_second }, 0, 60>(a, 0),
                DatePart::DayOfWeekMonday0 => parts::<$t, { 86_400 * $per_second }, 3, 7>(a, i64::from(iso_dow)),
                _ => return None,
            }
        };
    }
    let out: Int64Array = match unit {
        TimeUnit::Second => by_unit!(1, TimestampSecondType),
        TimeUnit::Millisecond => by_unit!(1_000, TimestampMillisecondType),
        TimeUnit::Microsecond => by_unit!(1_000_000, TimestampMicrosecondType),
        TimeUnit::Nanosecond => by_unit!(1_000_000_000, TimestampNanosecondType),
    };
    Some(Arc::new(out))
}

fn timestamp_part(name: &'static str, part: DatePart, iso_dow: bool) -> ScalarUDF {
    let f = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        if let Some(out) = clock_part(arrays[0].as_ref(), part, iso_dow) {
            return Ok(ColumnarValue::Array(out));
        }
        let parts = date_part(arrays[0].as_ref(), part)?;
        let mut out = cast(&parts, &DataType::Int64)?;
        if iso_dow {
            let a = out.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            out = Arc::new(a.iter().map(|v| v.map(|d| d + 1)).collect::<Int64Array>());
        }
        Ok(ColumnarValue::Array(out))
    };
    udf(name, Signature::uniform(1, temporal_types(), Volatility::Immutable), DataType::Int64, Arc::new(f))
}

/// Trino's `date_format` specifiers as chrono's.
pub fn mysql_to_chrono(fmt: &str) -> String {
    let mut out = String::with_capacity(fmt.len() + 8);
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(s) = it.next() else {
            out.push_str("%%");
            break;
        };
        out.push_str(match s {
            'Y' => "%Y",
            'y' => "%y",
            'm' => "%m",
            'c' => "%-m",
            'd' => "%d",
            'e' => "%-d",
            'H' => "%H",
            'k' => "%-H",
            'h' | 'I' => "%I",
            'l' => "%-I",
            'i' => "%M",
            's' | 'S' => "%S",
            'f' => "%6f",
            'p' => "%p",
            'T' => "%H:%M:%S",
            'r' => "%I:%M:%S %p",
            'W' => "%A",
            'a' => "%a",
            'M' => "%B",
            'b' => "%b",
            'j' => "%j",
            '%' => "%%",
            other => {
                out.push(other);
                continue;
            }
        });
    }
    out
}

fn date_format_udf() -> ScalarUDF {
    let f = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let ts = cast(&arrays[0], &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let ts = ts.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let fmts = cast(&arrays[1], &DataType::Utf8)?;
        let fmts = fmts.as_string::<i32>();
        let out: StringArray = (0..ts.len())
            .map(|i| {
                if ts.is_null(i) || fmts.is_null(i) {
                    return None;
                }
                let t = chrono::DateTime::from_timestamp_micros(ts.value(i))?.naive_utc();
                Some(t.format(&mysql_to_chrono(fmts.value(i))).to_string())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    };
    let sigs = temporal_types()
        .into_iter()
        .flat_map(|t| {
            [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8]
                .into_iter()
                .map(move |s| TypeSignature::Exact(vec![t.clone(), s]))
        })
        .collect();
    udf("date_format", Signature::one_of(sigs, Volatility::Immutable), DataType::Utf8, Arc::new(f))
}

fn from_iso8601_udf(name: &str, date: bool) -> ScalarUDF {
    let f = move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let s = cast(&arrays[0], &DataType::Utf8)?;
        let s = s.as_string::<i32>();
        let out: ArrayRef = if date {
            let a: Date32Array = s
                .iter()
                .map(|v| {
                    let d = chrono::NaiveDate::parse_from_str(v?.trim(), "%Y-%m-%d").ok()?;
                    Some((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
                })
                .collect();
            Arc::new(a)
        } else {
            let a: TimestampMicrosecondArray = s
                .iter()
                .map(|v| {
                    let v = v?.trim();
                    chrono::DateTime::parse_from_rfc3339(v)
                        .map(|t| t.timestamp_micros())
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
                                .map(|t| t.and_utc().timestamp_micros())
                        })
                        .or_else(|_| {
                            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros())
                        })
                        .ok()
                })
                .collect();
            Arc::new(a)
        };
        Ok(ColumnarValue::Array(out))
    };
    let ret = if date { DataType::Date32 } else { DataType::Timestamp(TimeUnit::Microsecond, None) };
    let sig =
        Signature::uniform(1, vec![DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8], Volatility::Immutable);
    udf(name, sig, ret, Arc::new(f))
}

/// The Trino-compatibility functions, by name.
pub fn trino_functions() -> Vec<ScalarUDF> {
    let parts: &[(&'static str, DatePart, bool)] = &[
        ("year", DatePart::Year, false),
        ("quarter", DatePart::Quarter, false),
        ("month", DatePart::Month, false),
        ("week", DatePart::WeekISO, false),
        ("week_of_year", DatePart::WeekISO, false),
        ("day", DatePart::Day, false),
        ("day_of_month", DatePart::Day, false),
        ("day_of_week", DatePart::DayOfWeekMonday0, true),
        ("dow", DatePart::DayOfWeekMonday0, true),
        ("day_of_year", DatePart::DayOfYear, false),
        ("doy", DatePart::DayOfYear, false),
        ("hour", DatePart::Hour, false),
        ("minute", DatePart::Minute, false),
        ("second", DatePart::Second, false),
    ];
    let mut out: Vec<ScalarUDF> = parts.iter().map(|(n, p, iso)| timestamp_part(n, *p, *iso)).collect();
    out.push(date_format_udf());
    out.push(from_iso8601_udf("from_iso8601_timestamp", false));
    out.push(from_iso8601_udf("from_iso8601_date", true));
    out
}

/// The Glue type name of an Arrow type.
pub fn glue_type(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        _ => "string".into(),
    }
}

/// A SQL session over the lake's catalog.
pub struct SqlEngine {
    ctx: SessionContext,
    lake: PathBuf,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine").field("lake", &self.lake).finish_non_exhaustive()
    }
}

/// The folder of a catalog location: always under the lake (an absolute location, or one with
/// `..`, names none).
fn table_dir(lake: &Path, location: &str) -> Option<PathBuf> {
    location_problem(location).is_none().then(|| lake.join(location))
}

/// What a query may do: read. DDL (`CREATE`, `DROP`), DML (`INSERT`, `COPY … TO`) and
/// statements (`SET`, transactions) are refused before anything runs.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Why a table location cannot be used, if it cannot: it must be a relative path under the
/// lake without `..` components (`/` and `\` both separate) or control characters.
pub fn location_problem(location: &str) -> Option<&'static str> {
    if location.trim().is_empty() {
        return Some("it is empty");
    }
    if location.chars().any(char::is_control) {
        return Some("it has control characters");
    }
    if location.starts_with(['/', '\\']) {
        return Some("absolute paths are not allowed (it must stay inside the lake)");
    }
    if location.split(['/', '\\']).any(|seg| seg == "..") {
        return Some("`..` components are not allowed (it must stay inside the lake)");
    }
    None
}

impl SqlEngine {
    /// A session over the catalog at `catalog_path` (see [`SqlEngine::new`]).
    pub async fn open(lake: &Path, catalog_path: &Path) -> Result<SqlEngine, SqlError> {
        let tables = Catalog::open(catalog_path)?.tables()?;
        SqlEngine::new(lake, tables).await
    }

    /// A session with these catalog tables registered (tables whose folder is missing or
    /// empty are skipped) and the Trino functions.
    pub async fn new(lake: &Path, tables: Vec<Table>) -> Result<SqlEngine, SqlError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true)
            // Measured on the insight benchmark (scripts/bench-insights): 32k-row batches and
            // filters evaluated after decoding (not pushed into the Parquet reader) are each
            // faster on every insight; docs/insights.md has the numbers.
            .with_batch_size(32 * 1024)
            .set_bool("datafusion.execution.parquet.pushdown_filters", false);
        let ctx = SessionContext::new_with_config(config);
        for f in trino_functions() {
            ctx.register_udf(f);
        }
        ctx.register_udaf(crate::sql_distinct::count_udaf());
        let engine = SqlEngine { ctx, lake: lake.to_path_buf() };
        let mut databases = std::collections::BTreeSet::new();
        for t in tables {
            if databases.insert(t.database.clone()) {
                engine.ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", t.database)).await?;
            }
            // A table whose files are being swapped by another run right now is left out of
            // this session; a query that needs it fails and is retried.
            if let Err(e) = engine.register(&t).await {
                tracing::warn!("table {}.{} not registered: {e}", t.database, t.name);
            }
        }
        Ok(engine)
    }

    /// Registers (or re-registers) one catalog table.
    pub async fn register(&self, t: &Table) -> Result<bool, SqlError> {
        if t.format != "parquet" {
            return Ok(false);
        }
        let Some(dir) = table_dir(&self.lake, &t.location) else {
            tracing::warn!(
                "table {}.{} not registered: its location {:?} is not under the lake",
                t.database,
                t.name,
                t.location
            );
            return Ok(false);
        };
        if !has_parquet(&dir) {
            return Ok(false);
        }
        let url = format!("{}/", dir.display());
        let table_url = ListingTableUrl::parse(&url)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            // String views, like the files' own strings: a value of up to 12 bytes (`2019-10-01`)
            // sits in the view, so grouping and comparing by `dt` compares integers.
            .with_table_partition_cols(t.partition_keys.iter().map(|k| (k.name.clone(), DataType::Utf8View)).collect());
        let state = self.ctx.state();
        let config = ListingTableConfig::new(table_url).with_listing_options(options).infer_schema(&state).await?;
        let provider = ListingTable::try_new(config)?;
        let name = datafusion::common::TableReference::partial(t.database.as_str(), t.name.as_str());
        let _ = self.ctx.deregister_table(name.clone());
        self.ctx.register_table(name, Arc::new(provider))?;
        Ok(true)
    }

    /// Runs a query and collects its result. The query may only read: a plan that would
    /// define, change or write anything (`CREATE`, `DROP`, `INSERT`, `COPY … TO`, `SET`) is
    /// refused before it runs, as the same check as [`SessionContext::sql_with_options`] with
    /// DDL, DML and statements disallowed. Shared aggregated CTEs are computed once first (see
    /// [`shared_subplans`]).
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        read_only().verify_plan(&plan).map_err(|e| {
            SqlError::Query(format!("a query only reads (SELECT); this one would not: {}", e.strip_backtrace()))
        })?;
        self.run_plan(plan).await
    }

    /// Runs SQL of cartflow's own (session settings for a benchmark): any statement, with no
    /// read-only check. Never with SQL from a DAG or a user.
    pub async fn execute_trusted(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        self.run_plan(plan).await
    }

    async fn run_plan(&self, plan: LogicalPlan) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
        let plan = self.materialize_shared(plan).await?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Computes each subplan of [`shared_subplans`] once, into memory, and points every use of
    /// it at that result; innermost first, until none is left. DataFusion (like Trino) would
    /// otherwise plan a CTE once per reference and scan its input again each time.
    async fn materialize_shared(&self, mut plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
        if matches!(
            plan,
            LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Dml(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::Statement(_)
        ) {
            return Ok(plan);
        }
        let mut n = 0;
        loop {
            let shared = shared_subplans(&plan);
            if shared.is_empty() {
                return Ok(plan);
            }
            for sub in shared {
                let LogicalPlan::SubqueryAlias(alias) = &sub else { continue };
                n += 1;
                let scan = self.compute_once(alias, n).await?;
                let replaced = plan.transform_up_with_subqueries(|p| {
                    Ok(if p == sub { Transformed::yes(scan.clone()) } else { Transformed::no(p) })
                })?;
                if !replaced.transformed {
                    // Found but not replaceable: stop here rather than find it again forever.
                    return Ok(replaced.data);
                }
                plan = replaced.data;
            }
        }
    }

    /// Runs the input of a shared subquery and returns a scan of its result under the same
    /// alias (and so the same qualified schema).
    async fn compute_once(&self, alias: &SubqueryAlias, n: usize) -> Result<LogicalPlan, SqlError> {
        let df = self.ctx.execute_logical_plan(alias.input.as_ref().clone()).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut parts = df.collect_partitioned().await?;
        for part in &mut parts {
            for b in part.iter_mut() {
                // The logical schema (names, nullability) the rest of the plan was built on.
                *b = RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                    .map_err(|e| SqlError::Execution(e.to_string()))?;
            }
        }
        let table = MemTable::try_new(schema, parts)?;
        let scan =
            LogicalPlanBuilder::scan(format!("__cartflow_shared_{n}"), provider_as_source(Arc::new(table)), None)?
                .alias(alias.alias.clone())?
                .build()?;
        Ok(scan)
    }
}

/// The subqueries a plan computes more than once that are worth computing once: identical
/// `SubqueryAlias` subtrees (a CTE referenced twice is planned as two copies) that aggregate,
/// rank or de-duplicate (so their result is usually much smaller than their input; the rule
/// DuckDB uses to materialize CTEs), and that stand alone (no reference to an enclosing query,
/// not part of a recursive CTE). Only the innermost ones: the others are found again once
/// these are replaced.
fn shared_subplans(plan: &LogicalPlan) -> Vec<LogicalPlan> {
    let mut recursive = false;
    let mut seen: std::collections::HashMap<LogicalPlan, usize> = std::collections::HashMap::new();
    let _ = plan.apply_with_subqueries(|p| {
        match p {
            LogicalPlan::RecursiveQuery(_) => recursive = true,
            LogicalPlan::SubqueryAlias(_) => *seen.entry(p.clone()).or_default() += 1,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if recursive {
        return Vec::new();
    }
    let candidates: Vec<&LogicalPlan> =
        seen.iter().filter(|(p, n)| **n >= 2 && worth_computing_once(p)).map(|(p, _)| p).collect();
    candidates
        .iter()
        .filter(|c| !candidates.iter().any(|o| !std::ptr::eq(*o, **c) && contains(c, o)))
        .map(|c| (*c).clone())
        .collect()
}

fn worth_computing_once(p: &LogicalPlan) -> bool {
    let mut reduces = false;
    let mut standalone = true;
    let _ = p.apply_with_subqueries(|n| {
        if matches!(n, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_)) {
            reduces = true;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let _ = p.apply(|n| {
        if n.contains_outer_reference() {
            standalone = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    reduces && standalone
}

/// Whether `outer` has `inner` as a subtree (subqueries included), `outer` itself excluded.
fn contains(outer: &LogicalPlan, inner: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = outer.apply_with_subqueries(|n| {
        if !std::ptr::eq(n, outer) && n == inner {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn has_parquet(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    rd.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(['.', '_']) {
            return false;
        }
        let p = e.path();
        if p.is_dir() { has_parquet(&p) } else { name.ends_with(".parquet") }
    })
}

/// Runs a SQL-engine future to completion on a runtime of its own, on a blocking thread of the
/// caller's runtime. DataFusion's work and the catalog's SQLite calls then never occupy the
/// worker threads of the engine that schedules tasks (which would stall it on a small machine).
pub async fn run_isolated<T, F>(make: impl FnOnce() -> F + Send + 'static) -> Result<T, SqlError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, SqlError>>,
{
    tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cartflow-sql")
            .enable_all()
            .build()
            .map_err(|e| SqlError::Query(format!("starting the SQL runtime: {e}")))?;
        rt.block_on(make())
    })
    .await
    .map_err(|e| SqlError::Query(format!("the SQL engine panicked: {e}")))?
}

/// Writes batches as one zstd Parquet file.
pub fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<(), SqlError> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let io = |e: &dyn std::fmt::Display| SqlError::Io { path: path.to_path_buf(), message: e.to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| io(&e))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| io(&e))?;
    for b in batches {
        w.write(b).map_err(|e| io(&e))?;
    }
    w.close().map_err(|e| io(&e))?;
    Ok(())
}

/// Catalog columns of an Arrow schema.
pub fn columns_of(schema: &Schema) -> Vec<Column> {
    schema.fields().iter().map(|f: &Arc<Field>| Column::new(f.name(), &glue_type(f.data_type()))).collect()
}

/// Timestamps with a time zone become naive UTC microseconds, and string views plain strings,
/// so that what is written reads back the same in Athena, DuckDB and Polars.
pub fn normalize(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let target = |dt: &DataType| match dt {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::UInt64 | DataType::UInt32 => DataType::Int64,
        other => other.clone(),
    };
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| Field::new(f.name(), target(f.data_type()), true)).collect();
    let out_schema = Arc::new(Schema::new(fields));
    let opts = CastOptions::default();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .zip(out_schema.fields())
            .map(|(c, f)| cast_with_options(c, f.data_type(), &opts))
            .collect::<Result<_, _>>()
            .map_err(|e| SqlError::Query(e.to_string()))?;
        out.push(RecordBatch::try_new(out_schema.clone(), cols).map_err(|e| SqlError::Query(e.to_string()))?);
    }
    Ok((out_schema, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format_specifiers_follow_trino() {
        assert_eq!(mysql_to_chrono("%Y-%m-%d %H:%i:%s"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(mysql_to_chrono("%W %M %e, %Y"), "%A %B %-d, %Y");
        assert_eq!(mysql_to_chrono("100%%"), "100%%");
    }

    async fn rows(e: &SqlEngine, sql: &str) -> String {
        let (_, b) = e.query(sql).await.expect("query");
        datafusion::arrow::util::pretty::pretty_format_batches(&b).expect("fmt").to_string()
    }

    async fn shared(e: &SqlEngine, sql: &str) -> usize {
        shared_subplans(&e.ctx.state().create_logical_plan(sql).await.expect("plan")).len()
    }

    #[tokio::test]
    async fn shared_aggregates_are_computed_once_with_the_same_answer() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = SqlEngine::open(dir.path(), &dir.path().join("c.db")).await.expect("engine");
        // An aggregated CTE used twice (self-join), and one built on it used twice again.
        let sql = "WITH t AS (SELECT x, count(*) AS c FROM (VALUES (1), (1), (2), (3)) v(x) GROUP BY x),
                        u AS (SELECT max(c) AS m FROM t)
                   SELECT a.x, b.c, (SELECT m FROM u) AS m, (SELECT m + 1 FROM u) AS m1
                   FROM t a JOIN t b ON a.x = b.x ORDER BY a.x";
        assert_eq!(shared(&e, sql).await, 1, "the innermost shared CTE first");
        let out = rows(&e, sql).await;
        for row in ["| 1 | 2 | 2 | 3  |", "| 2 | 1 | 2 | 3  |", "| 3 | 1 | 2 | 3  |"] {
            assert!(out.contains(row), "{out}");
        }
        // Used once, or not aggregating: planned as written.
        assert_eq!(shared(&e, "WITH t AS (SELECT count(*) AS c FROM (VALUES (1)) v(x)) SELECT c FROM t").await, 0);
        assert_eq!(
            shared(&e, "WITH t AS (SELECT x FROM (VALUES (1)) v(x)) SELECT a.x FROM t a JOIN t b ON a.x = b.x").await,
            0
        );
        // Correlated to the enclosing query: it cannot be computed on its own.
        let correlated = "SELECT x FROM (VALUES (1), (2)) o(x)
                          WHERE (SELECT count(*) FROM (SELECT DISTINCT y FROM (VALUES (1), (1)) i(y) WHERE i.y = o.x) s) > 0
                            AND (SELECT count(*) FROM (SELECT DISTINCT y FROM (VALUES (1), (1)) i(y) WHERE i.y = o.x) s) > 0";
        assert_eq!(shared(&e, correlated).await, 0);
        assert!(rows(&e, correlated).await.contains("| 1 |"));
        // Recursive CTEs are left to DataFusion.
        let recursive = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3)
                         SELECT count(*) AS c FROM r a JOIN r b ON a.n = b.n";
        assert_eq!(shared(&e, recursive).await, 0);
        assert!(rows(&e, recursive).await.contains("| 3 |"));
    }

    #[tokio::test]
    async fn a_query_may_only_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = SqlEngine::open(dir.path(), &dir.path().join("c.db")).await.expect("engine");
        let out = dir.path().join("x.csv");
        let loc = dir.path().join("ext");
        std::fs::create_dir_all(&loc).expect("mkdir");
        for sql in [
            format!("COPY (SELECT 1 AS a) TO '{}'", out.display()),
            format!("CREATE EXTERNAL TABLE x (a INT) STORED AS CSV LOCATION '{}'", loc.display()),
            "CREATE TABLE m AS SELECT 1 AS a".to_string(),
            "CREATE VIEW v AS SELECT 1 AS a".to_string(),
            "DROP TABLE IF EXISTS m".to_string(),
            "SET datafusion.execution.batch_size = 1".to_string(),
            format!("EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{}'", out.display()),
        ] {
            let err = e.query(&sql).await.expect_err(&sql).to_string();
            assert!(err.contains("only reads"), "{sql}: {err}");
        }
        assert!(!out.exists(), "COPY wrote nothing");
        assert!(e.query("SELECT * FROM m").await.is_err() && e.query("SELECT * FROM x").await.is_err());
        e.query("CREATE TABLE m AS SELECT 1 AS a").await.expect_err("still refused");
        assert!(rows(&e, "SELECT 1 AS a").await.contains("| 1 |"));
    }

    #[test]
    fn clock_parts_equal_the_calendar_kernel() {
        use datafusion::arrow::array::{TimestampNanosecondArray, TimestampSecondArray};
        // Seconds from 1900 to 2100 in uneven steps, before and after 1970, with nulls.
        let secs: Vec<Option<i64>> = (0..20_000i64)
            .map(|i| if i % 997 == 0 { None } else { Some(-2_208_988_800 + i * 315_569 + i * i % 86_400) })
            .collect();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampSecondArray::from(secs.clone())),
            Arc::new(
                TimestampMicrosecondArray::from(
                    secs.iter().map(|s| s.map(|s| s * 1_000_000 + 999_999)).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(TimestampNanosecondArray::from(
                secs.iter().map(|s| s.map(|s| s * 1_000_000_000 - 1)).collect::<Vec<_>>(),
            )),
        ];
        for a in &arrays {
            for (part, iso) in [
                (DatePart::Hour, false),
                (DatePart::Minute, false),
                (DatePart::Second, false),
                (DatePart::DayOfWeekMonday0, true),
            ] {
                let fast = clock_part(a.as_ref(), part, iso).expect("a clock part");
                let slow = cast(&date_part(a.as_ref(), part).expect("kernel"), &DataType::Int64).expect("cast");
                let slow: Int64Array = slow
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .iter()
                    .map(|v| v.map(|v| v + i64::from(iso)))
                    .collect();
                assert_eq!(fast.as_ref(), &slow as &dyn Array, "{part:?} of {:?}", a.data_type());
            }
        }
        // Other zones and parts take the calendar path.
        let berlin = TimestampSecondArray::from(vec![0]).with_timezone("Europe/Berlin");
        assert!(clock_part(&berlin, DatePart::Hour, false).is_none());
        assert!(clock_part(arrays[0].as_ref(), DatePart::Year, false).is_none());
    }

    #[tokio::test]
    async fn trino_functions_answer_like_trino() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = SqlEngine::open(dir.path(), &dir.path().join("c.db")).await.expect("engine");
        // 2019-10-06 was a Sunday.
        let row = rows(
            &e,
            "SELECT hour(t) AS h, day_of_week(t) AS dow, day_of_year(t) AS doy, month(t) AS m, year(t) AS y,
                        date_format(t, '%Y-%m-%d %H:%i') AS f, week(t) AS w,
                        hour(from_iso8601_timestamp('2019-10-01T05:06:07Z')) AS h2,
                        date_trunc('day', t) = from_iso8601_timestamp('2019-10-06') AS truncated,
                        (SELECT approx_distinct(x) FROM (VALUES (1), (2), (2)) v(x)) AS n
                 FROM (SELECT CAST('2019-10-06 23:59:58' AS TIMESTAMP) AS t)",
        )
        .await;
        assert!(row.contains("| 23 | 7   | 279 | 10 | 2019 | 2019-10-06 23:59 | 40 | 5  | true      | 2 |"), "{row}");
    }
}
