//! `athena_ctas`, locally: materialize a query into a catalog table, dbt-athena style.
//!
//! - **Partitioned** (`partition = Some(("dt", "2019-10-01"))`): the query must produce that one
//!   partition (its `dt` column equal to the value on every row); the rows replace exactly that
//!   partition (insert-overwrite): written to a fresh hidden folder, then swapped in by renames.
//!   Other partitions are untouched.
//! - **Full refresh**: the rows go to a fresh versioned folder `<location>/version-<stamp>`, then the
//!   catalog's table location is swapped to it in one SQLite transaction; the newest
//!   `keep_versions` folders are kept and older ones deleted.
//!
//! Either way a query that fails, or a process killed mid-write, leaves the previous table
//! readable and unchanged, and a re-run gives the same rows.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use crate::catalog::{Catalog, Column, Partition, Table};
use crate::sql::{SqlEngine, SqlError, columns_of, normalize, write_parquet};

/// What to materialize.
#[derive(Debug, Clone)]
pub struct CtasSpec {
    /// The database.
    pub database: String,
    /// The table.
    pub table: String,
    /// The query (templates already rendered).
    pub sql: String,
    /// For a partitioned table: the partition key and the run's value.
    pub partition: Option<(String, String)>,
    /// The table's root under the lake.
    pub location: String,
    /// Full refresh: how many versions to keep (the current one included).
    pub keep_versions: usize,
}

/// What a materialization did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtasReport {
    /// Rows written.
    pub rows: u64,
    /// Where they are, under the lake.
    pub location: String,
    /// The catalog version of the table after the swap.
    pub version: i64,
    /// Old version folders deleted.
    pub removed: Vec<String>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SqlError + '_ {
    move |e| SqlError::Io { path: path.to_path_buf(), message: e.to_string() }
}

fn as_strings(a: &ArrayRef) -> Result<Vec<Option<String>>, SqlError> {
    let s = cast(a, &DataType::Utf8).map_err(|e| SqlError::Query(e.to_string()))?;
    let s = s
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .ok_or_else(|| SqlError::Query("the partition column could not be read as text".into()))?;
    Ok(s.iter().map(|v| v.map(str::to_string)).collect())
}

/// Why a table location cannot be used (defined with the SQL engine, which also refuses to
/// register a table outside the lake).
pub use crate::sql::location_problem;

/// Why a partition value cannot name a partition folder (`key=value`), if it cannot: it must
/// be one plain value — ASCII letters, digits and `_ . : + -` (a date, a timestamp, a name),
/// without `..`, at most 200 characters.
pub fn partition_value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("it is empty");
    }
    if value.len() > 200 {
        return Some("it is longer than 200 characters");
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || "_.:+-".contains(c)) {
        return Some("only letters, digits and `_ . : + -` are allowed (a date, a timestamp or a plain name)");
    }
    if value.contains("..") {
        return Some("`..` is not allowed");
    }
    None
}

/// Why `value` is not a value of the partition column's type `dt` as the engine writes it as
/// text, if it is not. Text columns take any value ([`partition_value_problem`] still applies).
pub fn partition_value_type_problem(value: &str, dt: &DataType) -> Option<String> {
    if matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return None;
    }
    let text: ArrayRef = std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec![value]));
    let strict = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
    let typed = match datafusion::arrow::compute::cast_with_options(&text, dt, &strict) {
        Ok(t) if t.null_count() == 0 => t,
        _ => return Some(format!("it is not a {}", crate::sql::glue_type(dt))),
    };
    match as_strings(&typed).ok().and_then(|v| v.into_iter().next().flatten()) {
        Some(back) if back == value => None,
        Some(back) => Some(format!("a {} is written `{back}`, not `{value}`", crate::sql::glue_type(dt))),
        None => Some(format!("it is not a {}", crate::sql::glue_type(dt))),
    }
}

/// Runs the query and publishes its rows. The location and the partition value are checked
/// first: nothing outside the lake is ever written or deleted.
pub async fn ctas(lake: &Path, catalog_path: &Path, spec: &CtasSpec) -> Result<CtasReport, SqlError> {
    stage(lake, catalog_path, spec).await?.publish()
}

/// A query's rows written to a fresh folder and not yet published (write-audit-publish):
/// [`StagedCtas::publish`] swaps them in and updates the catalog; dropping the value deletes
/// them and leaves the table as it was.
#[derive(Debug)]
pub struct StagedCtas {
    lake: PathBuf,
    catalog_path: PathBuf,
    spec: CtasSpec,
    rows: u64,
    columns: Vec<Column>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Insert-overwrite of one partition: the fresh folder, swapped in by `staged`.
    Partition { staged: crate::swap::Staged, key: String, value: String },
    /// Full refresh: a new version folder the catalog does not name yet (deleted on drop
    /// unless published), and the location the catalog names now.
    Full { rel: String, dir: Option<PathBuf>, current: Option<String> },
}

impl Drop for StagedCtas {
    fn drop(&mut self) {
        if let Mode::Full { dir: Some(dir), .. } = &self.mode
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!(path = %dir.display(), error = %e, "an unpublished version folder was not deleted");
        }
    }
}

impl StagedCtas {
    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The folder of the staged rows (Parquet). A partition's rows are written without their
    /// partition column (the folder's name holds it): see [`StagedCtas::partition`].
    pub fn dir(&self) -> PathBuf {
        match &self.mode {
            Mode::Partition { staged, .. } => staged.fresh(0).map(Path::to_path_buf).unwrap_or_default(),
            Mode::Full { rel, .. } => self.lake.join(rel),
        }
    }

    /// The partition key and value of an insert-overwrite.
    pub fn partition(&self) -> Option<(&str, &str)> {
        match &self.mode {
            Mode::Partition { key, value, .. } => Some((key, value)),
            Mode::Full { .. } => None,
        }
    }

    /// What the staged rows replace, to compare with: the table's previous partition (the
    /// greatest published value below this run's, see [`crate::swap::previous_partition`]),
    /// or the version of a full-refresh table the catalog names now.
    pub fn previous(&self) -> Option<PathBuf> {
        match &self.mode {
            Mode::Partition { staged, .. } => staged.live(0).and_then(crate::swap::previous_partition),
            Mode::Full { current, .. } => current
                .as_deref()
                .filter(|c| location_problem(c).is_none())
                .map(|c| self.lake.join(c))
                .filter(|p| p.is_dir()),
        }
    }

    /// Swaps the rows in and updates the catalog.
    pub fn publish(mut self) -> Result<CtasReport, SqlError> {
        let spec = self.spec.clone();
        let (lake, catalog_path, rows, columns) =
            (self.lake.clone(), self.catalog_path.clone(), self.rows, std::mem::take(&mut self.columns));
        let mut catalog = Catalog::open(&catalog_path)?;
        let qualified = format!("{}.{}", spec.database, spec.table);
        let mode = std::mem::replace(&mut self.mode, Mode::Full { rel: String::new(), dir: None, current: None });
        match mode {
            Mode::Partition { staged, key, value } => {
                let part_spec = format!("{key}={value}");
                let live = staged.live(0).map(Path::to_path_buf).unwrap_or_default();
                staged.publish().map_err(|m| SqlError::Io { path: live.clone(), message: m })?;
                crate::crash::point("ctas.swapped");
                let partition_keys = vec![Column::new(&key, "string")];
                let existing = catalog.table(&qualified, &spec.database)?;
                let version = match existing {
                    Some(t)
                        if t.columns == columns
                            && t.partition_keys == partition_keys
                            && t.location == spec.location =>
                    {
                        t.version
                    }
                    Some(t) => {
                        catalog.put_table(&Table { columns, partition_keys, location: spec.location.clone(), ..t })?
                    }
                    None => catalog.put_table(&Table {
                        database: spec.database.clone(),
                        name: spec.table.clone(),
                        location: spec.location.clone(),
                        format: "parquet".into(),
                        columns,
                        partition_keys,
                        parameters: [("classification".to_string(), "parquet".to_string())].into(),
                        version: 0,
                    })?,
                };
                let location = format!("{}/{part_spec}", spec.location);
                catalog.put_partitions(
                    &qualified,
                    &spec.database,
                    &[Partition { values: vec![value.clone()], location: location.clone() }],
                )?;
                crate::crash::point("ctas.cataloged");
                Ok(CtasReport { rows, location, version, removed: Vec::new() })
            }
            Mode::Full { rel, dir, .. } => {
                // Published from here on: nothing deletes the folder.
                let dir = dir.unwrap_or_else(|| lake.join(&rel));
                // On disk before the catalog names it: a crash after the catalog's commit must
                // not leave the table pointing at a folder whose files were never flushed.
                let serr = |m: String| SqlError::Io { path: dir.clone(), message: m };
                crate::swap::sync_tree(&dir).map_err(serr)?;
                crate::swap::sync_dir(dir.parent().unwrap_or(&lake)).map_err(serr)?;
                let version = match catalog.table(&qualified, &spec.database)? {
                    Some(t) => {
                        catalog.put_table(&Table { columns, location: rel.clone(), partition_keys: Vec::new(), ..t })?
                    }
                    None => catalog.put_table(&Table {
                        database: spec.database.clone(),
                        name: spec.table.clone(),
                        location: rel.clone(),
                        format: "parquet".into(),
                        columns,
                        partition_keys: Vec::new(),
                        parameters: [("classification".to_string(), "parquet".to_string())].into(),
                        version: 0,
                    })?,
                };
                crate::crash::point("ctas.cataloged");
                let removed =
                    prune_versions(&lake, &catalog, &qualified, &spec.database, &spec.location, spec.keep_versions)?;
                crate::crash::point("ctas.pruned");
                Ok(CtasReport { rows, location: rel, version, removed })
            }
        }
    }
}

/// Runs the query and writes its rows to a fresh folder, not yet published (see
/// [`StagedCtas`]). The location and the partition value are checked first: nothing outside
/// the lake is ever written or deleted.
pub async fn stage(lake: &Path, catalog_path: &Path, spec: &CtasSpec) -> Result<StagedCtas, SqlError> {
    if let Some(why) = location_problem(&spec.location) {
        return Err(SqlError::Query(format!("table location {:?} is refused: {why}", spec.location)));
    }
    if let Some((key, value)) = &spec.partition {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SqlError::Query(format!("partition key {key:?} is not a column name")));
        }
        if let Some(why) = partition_value_problem(value) {
            return Err(SqlError::Query(format!("partition value {value:?} of `{key}` is refused: {why}")));
        }
    }
    let tables = {
        let catalog = Catalog::open(catalog_path)?;
        catalog.ensure_database(&spec.database)?;
        catalog.tables()?
    };
    let engine = SqlEngine::new(lake, tables).await?;
    let (schema, batches) = engine.query(&spec.sql).await?;
    let (schema, batches) = normalize(&schema, batches)?;
    drop(engine);
    let catalog = Catalog::open(catalog_path)?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let qualified = format!("{}.{}", spec.database, spec.table);
    let root = lake.join(&spec.location);
    crate::swap::beneath(lake, &root).map_err(|m| SqlError::Io { path: root.clone(), message: m })?;
    let base = |columns, mode| StagedCtas {
        lake: lake.to_path_buf(),
        catalog_path: catalog_path.to_path_buf(),
        spec: spec.clone(),
        rows,
        columns,
        mode,
    };
    match &spec.partition {
        Some((key, value)) => {
            let Ok(idx) = schema.index_of(key) else {
                return Err(SqlError::Query(format!(
                    "the query of partitioned table {qualified} has no `{key}` column (Athena needs the partition column last)"
                )));
            };
            // The value names the partition's folder and stands for the column's value: it must
            // be one of the column's type, written as the engine writes it (`2019-10-01` for a
            // date, `7` — not `007` — for a bigint), even when the query produced no rows.
            let column_type = schema.field(idx).data_type();
            if let Some(why) = partition_value_type_problem(value, column_type) {
                return Err(SqlError::Query(format!(
                    "partition value {value:?} of `{key}` is refused: {why} (the query's `{key}` is a {})",
                    crate::sql::glue_type(column_type)
                )));
            }
            for b in &batches {
                for v in as_strings(b.column(idx))? {
                    if v.as_deref() != Some(value.as_str()) {
                        return Err(SqlError::Query(format!(
                            "the query produced a row with {key} = {}; a run of {qualified} writes only {key}={value}",
                            v.unwrap_or_else(|| "NULL".into())
                        )));
                    }
                }
            }
            // The data columns: everything but the partition key.
            let keep: Vec<usize> = (0..schema.fields().len()).filter(|i| *i != idx).collect();
            let data_schema = std::sync::Arc::new(schema.project(&keep).map_err(|e| SqlError::Query(e.to_string()))?);
            let data: Vec<RecordBatch> = batches
                .iter()
                .map(|b| b.project(&keep).map_err(|e| SqlError::Query(e.to_string())))
                .collect::<Result<_, _>>()?;
            let live = root.join(format!("{key}={value}"));
            let serr = |m: String| SqlError::Io { path: live.clone(), message: m };
            crate::swap::guard(lake, &live).map_err(serr)?;
            crate::swap::recover(&live).map_err(serr)?;
            let fresh = crate::swap::fresh(&live).map_err(serr)?;
            let staged = crate::swap::Staged::new(vec![(fresh.clone(), live.clone())]);
            write_parquet(&fresh.join("part-00000.parquet"), data_schema.clone(), &data)?;
            crate::crash::point("ctas.written");
            let mode = Mode::Partition { staged, key: key.clone(), value: value.clone() };
            Ok(base(columns_of(&data_schema), mode))
        }
        None => {
            let current = catalog.table(&qualified, &spec.database)?.map(|t| t.location);
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
            let rel = format!("{}/version-{stamp}-{}", spec.location, fastrand::u32(..));
            let dir = lake.join(&rel);
            let staged = base(columns_of(&schema), Mode::Full { rel, dir: Some(dir.clone()), current });
            write_parquet(&dir.join("part-00000.parquet"), schema.clone(), &batches)?;
            crate::crash::point("ctas.written");
            Ok(staged)
        }
    }
}

/// Deletes version folders of a full-refresh table beyond the newest `keep` the catalog
/// published (and, after an hour, folders it never published: a killed run's).
fn prune_versions(
    lake: &Path,
    catalog: &Catalog,
    qualified: &str,
    db: &str,
    location: &str,
    keep: usize,
) -> Result<Vec<String>, SqlError> {
    let mut kept: Vec<String> = Vec::new();
    let mut published: Vec<String> = Vec::new();
    for (_, loc) in catalog.versions(qualified, db)?.into_iter().rev() {
        if kept.len() < keep.max(1) && !kept.contains(&loc) {
            kept.push(loc.clone());
        }
        published.push(loc);
    }
    let root = lake.join(location);
    crate::swap::beneath(lake, &root).map_err(|m| SqlError::Io { path: root.clone(), message: m })?;
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(&root) else { return Ok(removed) };
    let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !name.starts_with("version-") {
            continue;
        }
        let rel = format!("{location}/{name}");
        // A folder the catalog never pointed at may be another run's, still being written:
        // only an hour-old one is a leftover.
        let stale = published.contains(&rel)
            || d.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if !kept.contains(&rel) && stale {
            std::fs::remove_dir_all(&d).map_err(io(&d))?;
            removed.push(rel);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ArrayRef};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use polars::prelude::DataFrame;

    /// The rows of a table as text, sorted: for tests and comparisons.
    async fn table_rows(
        lake: &Path,
        catalog_path: &Path,
        qualified: &str,
    ) -> Result<(Vec<String>, Vec<Vec<String>>), SqlError> {
        let engine = SqlEngine::open(lake, catalog_path).await?;
        let (schema, batches) = engine.query(&format!("SELECT * FROM {qualified}")).await?;
        Ok(rows_as_text(&schema, &batches))
    }

    /// Renders rows as text (floats with 6 decimals), sorted.
    fn rows_as_text(schema: &Schema, batches: &[RecordBatch]) -> (Vec<String>, Vec<Vec<String>>) {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut rows = Vec::new();
        let opts = FormatOptions::default().with_null("NULL");
        for b in batches {
            let fmts: Vec<_> = b
                .columns()
                .iter()
                .map(|c| {
                    if matches!(c.data_type(), DataType::Float32 | DataType::Float64) {
                        let f = cast(c, &DataType::Float64).unwrap_or_else(|_| c.clone());
                        let f = f.as_any().downcast_ref::<datafusion::arrow::array::Float64Array>().cloned();
                        match f {
                            Some(f) => std::sync::Arc::new(
                                f.iter()
                                    .map(|v| v.map(|x| format!("{x:.6}")))
                                    .collect::<datafusion::arrow::array::StringArray>(),
                            ) as ArrayRef,
                            None => c.clone(),
                        }
                    } else {
                        c.clone()
                    }
                })
                .collect();
            let formatters: Vec<_> = fmts.iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect();
            for i in 0..b.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| match f {
                            Ok(f) => f.value(i).to_string(),
                            Err(_) => "?".into(),
                        })
                        .collect(),
                );
            }
        }
        rows.sort();
        (names, rows)
    }

    /// A lake with an `ecommerce.events` table partitioned by dt (two days).
    fn lake() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        for (day, n) in [("2019-10-01", 3i64), ("2019-10-02", 5)] {
            let mut df = DataFrame::new(
                n as usize,
                vec![
                    polars::prelude::Column::new("user_id".into(), (0..n).map(|i| i % 2).collect::<Vec<i64>>()),
                    polars::prelude::Column::new("price".into(), (0..n).map(|i| i as f64 * 1.5).collect::<Vec<f64>>()),
                ],
            )
            .expect("df");
            crate::publish_parquet(&mut df, &dir.path().join(format!("events/dt={day}"))).expect("write");
        }
        let catalog_path = dir.path().join("catalog.db");
        let mut c = Catalog::open(&catalog_path).expect("catalog");
        c.ensure_database("ecommerce").expect("db");
        c.put_table(&Table {
            database: "ecommerce".into(),
            name: "events".into(),
            location: "events".into(),
            format: "parquet".into(),
            columns: vec![Column::new("user_id", "bigint"), Column::new("price", "double")],
            partition_keys: vec![Column::new("dt", "string")],
            parameters: Default::default(),
            version: 0,
        })
        .expect("table");
        (dir, catalog_path)
    }

    fn spec(sql: &str, partition: Option<&str>) -> CtasSpec {
        CtasSpec {
            database: "ecommerce".into(),
            table: "out".into(),
            sql: sql.into(),
            partition: partition.map(|d| ("dt".to_string(), d.to_string())),
            location: "curated/out".into(),
            keep_versions: 2,
        }
    }

    const PER_DAY: &str = "SELECT count(DISTINCT user_id) AS users, count(*) AS events, dt FROM ecommerce.events WHERE dt = '{D}' GROUP BY dt";

    #[tokio::test]
    async fn nothing_outside_the_lake_is_written_or_deleted() {
        let (dir, cat) = lake();
        let lake = dir.path().join("a/lake");
        std::fs::create_dir_all(&lake).expect("lake");
        // A folder beside the lake, with a file, that a hostile spec aims at.
        let victim = dir.path().join("a/victim");
        std::fs::create_dir_all(victim.join("version-1")).expect("victim");
        std::fs::write(victim.join("keep.txt"), "x").expect("write");
        let sql = |v: &str| format!("SELECT 1 AS n, '{v}' AS dt");
        // Four folders up from lake/curated/out/dt=.. is the lake's parent.
        let climb = "../../../../../victim";
        let cases = [
            CtasSpec { location: victim.display().to_string(), ..spec("SELECT 1 AS n", None) },
            CtasSpec { location: "../victim".into(), ..spec("SELECT 1 AS n", None) },
            spec(&sql(climb), Some(climb)),
            spec(&sql("a/b"), Some("a/b")),
        ];
        for s in cases {
            let err = ctas(&lake, &cat, &s).await.expect_err("refused");
            assert!(matches!(err, SqlError::Query(_)), "{err}");
            assert!(err.to_string().contains("location") || err.to_string().contains("partition value"), "{err}");
            assert!(victim.join("keep.txt").exists() && victim.join("version-1").exists(), "{err}");
            let names: Vec<_> = std::fs::read_dir(&victim).expect("ls").flatten().map(|e| e.file_name()).collect();
            assert_eq!(names.len(), 2, "nothing written beside the victim's files: {names:?}");
        }
    }

    #[tokio::test]
    async fn a_partition_value_is_of_the_partition_column_s_type_even_with_no_rows() {
        let (dir, cat) = lake();
        // No rows: the row check has nothing to compare, the type check still refuses.
        for (sql, value, why) in [
            ("SELECT 1 AS n, DATE '2019-10-01' AS dt WHERE false", "abc", "it is not a date"),
            ("SELECT 1 AS n, DATE '2019-10-01' AS dt WHERE false", "2019-13-01", "it is not a date"),
            ("SELECT 1 AS n, CAST(7 AS BIGINT) AS dt WHERE false", "007", "a bigint is written `7`, not `007`"),
            ("SELECT 1 AS n, CAST(7 AS BIGINT) AS dt WHERE false", "seven", "it is not a bigint"),
        ] {
            let e = ctas(dir.path(), &cat, &spec(sql, Some(value))).await.expect_err(value).to_string();
            assert!(e.contains(&format!("partition value {value:?} of `dt` is refused: {why}")), "{value}: {e}");
            assert!(!dir.path().join(format!("curated/out/dt={value}")).exists(), "{value}: no folder");
        }
        let ok = "SELECT 1 AS n, DATE '2019-10-03' AS dt WHERE false";
        ctas(dir.path(), &cat, &spec(ok, Some("2019-10-03"))).await.expect("a date for a date column");
        let ok = "SELECT 1 AS n, CAST(7 AS BIGINT) AS dt";
        assert_eq!(ctas(dir.path(), &cat, &spec(ok, Some("7"))).await.expect("a bigint").rows, 1);
        assert_eq!(partition_value_type_problem("anything", &DataType::Utf8), None);
    }

    #[tokio::test]
    async fn partitioned_tables_overwrite_only_their_partition_and_prune_on_dt() {
        let (dir, cat) = lake();
        for d in ["2019-10-01", "2019-10-02"] {
            let r = ctas(dir.path(), &cat, &spec(&PER_DAY.replace("{D}", d), Some(d))).await.expect("ctas");
            assert_eq!(r.rows, 1);
            assert_eq!(r.location, format!("curated/out/dt={d}"));
        }
        let (_, rows) = table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows");
        assert_eq!(rows, vec![vec!["2", "3", "2019-10-01"], vec!["2", "5", "2019-10-02"]]);
        // Re-running a day is idempotent and leaves the other day alone.
        ctas(dir.path(), &cat, &spec(&PER_DAY.replace("{D}", "2019-10-02"), Some("2019-10-02"))).await.expect("again");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows").1, rows);
        // A query writing another partition is refused before anything is written.
        let e = ctas(dir.path(), &cat, &spec(&PER_DAY.replace("{D}", "2019-10-01"), Some("2019-10-02")))
            .await
            .expect_err("wrong partition");
        assert!(e.to_string().contains("writes only dt=2019-10-02"), "{e}");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows").1, rows);
        // The filter on dt prunes folders: the plan reads one file.
        let engine = SqlEngine::open(dir.path(), &cat).await.expect("engine");
        let (_, plan) = engine
            .query("EXPLAIN SELECT sum(price) FROM ecommerce.events WHERE dt = '2019-10-02'")
            .await
            .expect("explain");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan).expect("fmt").to_string();
        assert!(text.contains("dt=2019-10-02") && !text.contains("dt=2019-10-01"), "{text}");
    }

    #[tokio::test]
    async fn a_failed_or_killed_refresh_leaves_the_previous_version_readable() {
        let (dir, cat) = lake();
        let sql = "SELECT dt, count(*) AS events, sum(price) AS revenue FROM ecommerce.events GROUP BY dt";
        let first = ctas(dir.path(), &cat, &spec(sql, None)).await.expect("first");
        let before = table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows");
        assert_eq!(before.1.len(), 2);
        // A query that fails: nothing changes.
        let e = ctas(dir.path(), &cat, &spec("SELECT no_such_column FROM ecommerce.events", None))
            .await
            .expect_err("bad query");
        assert!(matches!(e, SqlError::Query(_)), "{e}");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows"), before);
        // A run killed mid-write leaves a half-written folder the catalog never points at.
        let half = dir.path().join("curated/out/version-20991231T000000000-1");
        std::fs::create_dir_all(&half).expect("mkdir");
        std::fs::write(half.join("part-00000.parquet"), b"PAR1 truncated").expect("write");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows"), before);
        // Re-runs give the same rows; old versions beyond keep_versions are deleted.
        let mut locations = vec![first.location.clone()];
        for _ in 0..3 {
            let r = ctas(dir.path(), &cat, &spec(sql, None)).await.expect("rerun");
            assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows"), before);
            locations.push(r.location);
        }
        let on_disk: Vec<String> = std::fs::read_dir(dir.path().join("curated/out"))
            .expect("ls")
            .flatten()
            .map(|e| format!("curated/out/{}", e.file_name().to_string_lossy()))
            .collect();
        assert!(on_disk.contains(&locations[3]) && on_disk.contains(&locations[2]), "{on_disk:?}");
        assert!(!on_disk.contains(&locations[0]) && !on_disk.contains(&locations[1]), "{on_disk:?}");
        assert!(half.exists(), "a fresh unpublished folder may be another run's: kept for an hour");
    }

    #[tokio::test]
    async fn a_staged_materialization_dropped_unpublished_leaves_the_table_as_it_was() {
        let (dir, cat) = lake();
        // Full refresh: version 1 published, version 2 staged and dropped.
        let sql = "SELECT dt, count(*) AS events FROM ecommerce.events GROUP BY dt";
        let first = ctas(dir.path(), &cat, &spec(sql, None)).await.expect("first");
        let before = table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows");
        let staged = stage(dir.path(), &cat, &spec("SELECT 'x' AS dt, 0 AS events", None)).await.expect("stage");
        assert_eq!(staged.rows(), 1);
        assert!(staged.dir().join("part-00000.parquet").is_file(), "the rows are on disk, to be audited");
        assert_eq!(staged.previous(), Some(dir.path().join(&first.location)), "what it would replace");
        assert_eq!(staged.partition(), None);
        let staged_dir = staged.dir();
        drop(staged);
        assert!(!staged_dir.exists(), "the staged version is deleted");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.out").await.expect("rows"), before);
        let versions = std::fs::read_dir(dir.path().join("curated/out")).expect("ls").count();
        assert_eq!(versions, 1);

        // A partition: 2019-10-01 published, 2019-10-02 staged and dropped, then staged and published.
        let part = |d: &str| CtasSpec {
            table: "per_day".into(),
            location: "curated/per_day".into(),
            ..spec(&PER_DAY.replace("{D}", d), Some(d))
        };
        ctas(dir.path(), &cat, &part("2019-10-01")).await.expect("day 1");
        let before = table_rows(dir.path(), &cat, "ecommerce.per_day").await.expect("rows");
        let staged = stage(dir.path(), &cat, &part("2019-10-02")).await.expect("stage");
        assert_eq!(staged.partition(), Some(("dt", "2019-10-02")));
        assert_eq!(staged.previous(), Some(dir.path().join("curated/per_day/dt=2019-10-01")));
        drop(staged);
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.per_day").await.expect("rows"), before);
        assert!(!dir.path().join("curated/per_day/dt=2019-10-02").exists());
        let report = stage(dir.path(), &cat, &part("2019-10-02")).await.expect("stage").publish().expect("publish");
        assert_eq!(report.location, "curated/per_day/dt=2019-10-02");
        assert_eq!(table_rows(dir.path(), &cat, "ecommerce.per_day").await.expect("rows").1.len(), 2);
    }
}
