//! The local crawler: what a Glue crawler does, on the lake folder.
//!
//! Crawl a prefix, infer the schema of its files (Parquet from the file schema; JSON lines
//! from a sample) with the type names Glue uses (`bigint`, `double`, `string`, `timestamp`,
//! …), find the Hive partitions (`key=value` folders), create or update the table, and add the
//! partitions it has not seen. A schema that changed is handled by the policy, as Glue's
//! `SchemaChangePolicy`: `log` (keep the table as it is and report), `update` (new table
//! version with the merged schema) or `fail`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError, Column, Partition, Table};

/// What to do when the files' schema differs from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChangePolicy {
    /// Keep the table's schema; report the difference.
    Log,
    /// Update the table to the merged schema (a new version).
    #[default]
    Update,
    /// Fail the crawl.
    Fail,
}

/// What to crawl.
#[derive(Debug, Clone)]
pub struct CrawlConfig {
    /// The lake root.
    pub lake: PathBuf,
    /// The prefix under the lake, e.g. `staged/events`.
    pub prefix: String,
    /// The catalog database.
    pub database: String,
    /// The table name.
    pub table: String,
    /// What to do on a schema change.
    pub schema_change: SchemaChangePolicy,
}

/// What the crawl found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CrawlReport {
    /// `database.table`.
    pub table: String,
    /// The table was created by this crawl.
    pub created: bool,
    /// The inferred columns.
    pub columns: Vec<Column>,
    /// Partition keys found.
    pub partition_keys: Vec<String>,
    /// Data files seen.
    pub files: u64,
    /// Partitions added.
    pub partitions_added: usize,
    /// Partitions in total.
    pub partitions_total: usize,
    /// How the schema differed from the table's, if it did.
    pub schema_change: Option<String>,
}

/// Errors of the crawler.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// Reading files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file's schema could not be read.
    #[error("reading the schema of {path}: {message}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Nothing to crawl.
    #[error("no data files under {0}")]
    Empty(String),
    /// Partition folders disagree on their keys.
    #[error("inconsistent partition folders under {prefix}: {a:?} vs {b:?}")]
    Partitions {
        /// The prefix.
        prefix: String,
        /// One key list.
        a: Vec<String>,
        /// Another.
        b: Vec<String>,
    },
    /// The schema changed and the policy is `fail`.
    #[error("schema of {table} changed ({change}) and the schema-change policy is `fail`")]
    SchemaChanged {
        /// The table.
        table: String,
        /// How.
        change: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The Glue type name of a Polars type.
pub fn glue_type(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "decimal(20,0)".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::String => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Date => "date".into(),
        DataType::Datetime(_, _) => "timestamp".into(),
        DataType::List(inner) => format!("array<{}>", glue_type(inner)),
        _ => "string".into(),
    }
}

/// The wider of two Glue types (for merging the schemas of several files).
fn widen(a: &str, b: &str) -> String {
    if a == b || b.is_empty() {
        return a.to_string();
    }
    if a.is_empty() {
        return b.to_string();
    }
    let numeric = ["tinyint", "smallint", "int", "bigint", "float", "double"];
    match (numeric.iter().position(|x| *x == a), numeric.iter().position(|x| *x == b)) {
        (Some(i), Some(j)) => numeric[i.max(j)].to_string(),
        _ => "string".to_string(),
    }
}

fn json_type(v: &serde_json::Value) -> Option<&'static str> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(_) => Some("boolean"),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some("bigint"),
        serde_json::Value::Number(_) => Some("double"),
        serde_json::Value::String(_) => Some("string"),
        _ => Some("string"),
    }
}

struct Found {
    /// (partition values, data file)
    files: Vec<(Vec<String>, PathBuf)>,
    keys: Option<Vec<String>>,
}

fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn walk(dir: &Path, values: &mut Vec<(String, String)>, out: &mut Found, prefix: &str) -> Result<(), CrawlError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CrawlError::Io { path: dir.to_path_buf(), source })?;
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            if let Some((k, v)) = name.split_once('=') {
                values.push((k.to_string(), v.to_string()));
                walk(&p, values, out, prefix)?;
                values.pop();
            } else {
                walk(&p, values, out, prefix)?;
            }
        } else if name.ends_with(".parquet") || name.ends_with(".json.gz") || name.ends_with(".json") {
            let keys: Vec<String> = values.iter().map(|(k, _)| k.clone()).collect();
            match &out.keys {
                None => out.keys = Some(keys),
                Some(k) if *k != keys => {
                    return Err(CrawlError::Partitions { prefix: prefix.to_string(), a: k.clone(), b: keys });
                }
                _ => {}
            }
            out.files.push((values.iter().map(|(_, v)| v.clone()).collect(), p));
        }
    }
    Ok(())
}

fn file_schema(path: &Path) -> Result<Vec<Column>, CrawlError> {
    let name = path.to_string_lossy();
    let err = |message: String| CrawlError::Schema { path: path.to_path_buf(), message };
    if name.ends_with(".parquet") {
        let file = std::fs::File::open(path).map_err(|source| CrawlError::Io { path: path.to_path_buf(), source })?;
        let schema = ParquetReader::new(file).schema().map_err(|e| err(e.to_string()))?;
        return Ok(schema
            .iter()
            .map(|(n, f)| Column::new(n.as_str(), &glue_type(&DataType::from_arrow_field(f))))
            .collect());
    }
    // JSON lines: the first 1,000 records; first-seen column order.
    let file = std::fs::File::open(path).map_err(|source| CrawlError::Io { path: path.to_path_buf(), source })?;
    let reader: Box<dyn std::io::Read> =
        if name.ends_with(".gz") { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut cols: Vec<Column> = Vec::new();
    for line in BufReader::new(reader).lines().take(1000) {
        let line = line.map_err(|source| CrawlError::Io { path: path.to_path_buf(), source })?;
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        for (k, v) in map {
            let Some(t) = json_type(&v) else {
                // Only nulls so far: the type is decided by a later value (string if none).
                if !cols.iter().any(|c| c.name == k) {
                    cols.push(Column::new(&k, ""));
                }
                continue;
            };
            match cols.iter_mut().find(|c| c.name == k) {
                Some(c) => c.glue_type = widen(&c.glue_type, t),
                None => cols.push(Column::new(&k, t)),
            }
        }
    }
    for c in &mut cols {
        if c.glue_type.is_empty() {
            c.glue_type = "string".into();
        }
    }
    Ok(cols)
}

fn merge(into: &mut Vec<Column>, other: Vec<Column>) {
    for c in other {
        match into.iter_mut().find(|x| x.name == c.name) {
            Some(x) => x.glue_type = widen(&x.glue_type, &c.glue_type),
            None => into.push(c),
        }
    }
}

fn describe_change(old: &[Column], new: &[Column]) -> Option<String> {
    let mut parts = Vec::new();
    for c in new {
        match old.iter().find(|o| o.name == c.name) {
            None => parts.push(format!("added {} {}", c.name, c.glue_type)),
            Some(o) if o.glue_type != c.glue_type => {
                parts.push(format!("{} {} -> {}", c.name, o.glue_type, c.glue_type))
            }
            _ => {}
        }
    }
    for o in old {
        if !new.iter().any(|c| c.name == o.name) {
            parts.push(format!("removed {}", o.name));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Crawls a prefix into the catalog.
pub fn crawl(cfg: &CrawlConfig, catalog: &mut Catalog) -> Result<CrawlReport, CrawlError> {
    let root = cfg.lake.join(&cfg.prefix);
    let mut found = Found { files: Vec::new(), keys: None };
    if root.exists() {
        walk(&root, &mut Vec::new(), &mut found, &cfg.prefix)?;
    }
    if found.files.is_empty() {
        return Err(CrawlError::Empty(cfg.prefix.clone()));
    }
    let keys = found.keys.clone().unwrap_or_default();
    // One schema sample per partition (its first file) keeps a large table's crawl cheap.
    let mut columns: Vec<Column> = Vec::new();
    let mut partitions: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    for (values, file) in &found.files {
        if !partitions.contains_key(values) {
            merge(&mut columns, file_schema(file)?);
            let dir = file.parent().unwrap_or(&root).to_path_buf();
            let dir = if keys.is_empty() { root.clone() } else { partition_dir(&root, &keys, values).unwrap_or(dir) };
            partitions.insert(values.clone(), dir);
        }
    }
    columns.retain(|c| !keys.contains(&c.name));
    let qualified = format!("{}.{}", cfg.database, cfg.table);
    let format = if found.files[0].1.to_string_lossy().ends_with(".parquet") { "parquet" } else { "json" };
    let mut report = CrawlReport {
        table: qualified.clone(),
        columns: columns.clone(),
        partition_keys: keys.clone(),
        files: found.files.len() as u64,
        ..CrawlReport::default()
    };
    catalog.ensure_database(&cfg.database)?;
    let existing = catalog.table(&qualified, "")?;
    let mut parameters = BTreeMap::new();
    parameters.insert("classification".to_string(), format.to_string());
    parameters.insert("crawler".to_string(), "cartflow-local".to_string());
    let new_table = |cols: Vec<Column>| Table {
        database: cfg.database.clone(),
        name: cfg.table.clone(),
        location: cfg.prefix.clone(),
        format: format.to_string(),
        columns: cols,
        partition_keys: keys.iter().map(|k| Column::new(k, "string")).collect(),
        parameters: parameters.clone(),
        version: 0,
    };
    match existing {
        None => {
            catalog.put_table(&new_table(columns.clone()))?;
            crate::crash::point("crawl.table_written");
            report.created = true;
        }
        Some(t) => {
            let mut merged = t.columns.clone();
            merge(&mut merged, columns.clone());
            if let Some(change) = describe_change(&t.columns, &merged) {
                report.schema_change = Some(change.clone());
                match cfg.schema_change {
                    SchemaChangePolicy::Fail => return Err(CrawlError::SchemaChanged { table: qualified, change }),
                    SchemaChangePolicy::Log => {}
                    SchemaChangePolicy::Update => {
                        catalog.put_table(&Table { columns: merged, ..new_table(Vec::new()) })?;
                        crate::crash::point("crawl.table_written");
                    }
                }
            }
        }
    }
    if !keys.is_empty() {
        let parts: Vec<Partition> = partitions
            .iter()
            .map(|(values, dir)| Partition {
                values: values.clone(),
                location: dir.strip_prefix(&cfg.lake).unwrap_or(dir).to_string_lossy().into_owned(),
            })
            .collect();
        report.partitions_added = catalog.put_partitions(&qualified, "", &parts)?;
        crate::crash::point("crawl.partitions_written");
        report.partitions_total = catalog.partitions(&qualified, "")?.len();
    }
    Ok(report)
}

fn partition_dir(root: &Path, keys: &[String], values: &[String]) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for (k, v) in keys.iter().zip(values) {
        p.push(format!("{k}={v}"));
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_parquet(path: &Path, df: &mut DataFrame) {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        ParquetWriter::new(std::fs::File::create(path).expect("create")).finish(df).expect("write");
    }

    #[test]
    fn infers_glue_types_and_partitions_then_handles_schema_changes() {
        let lake = tempfile::tempdir().expect("tmp");
        let mut df = df!(
            "user_id" => [1i64, 2],
            "price" => [1.5f64, 2.0],
            "event_type" => ["view", "cart"],
        )
        .expect("df");
        write_parquet(&lake.path().join("clean/events/dt=2019-10-01/part-00000.parquet"), &mut df);
        write_parquet(&lake.path().join("clean/events/dt=2019-10-02/part-00000.parquet"), &mut df);
        let mut cat = Catalog::open(&lake.path().join("catalog.db")).expect("catalog");
        let cfg = CrawlConfig {
            lake: lake.path().to_path_buf(),
            prefix: "clean/events".into(),
            database: "ecommerce".into(),
            table: "clean_events".into(),
            schema_change: SchemaChangePolicy::Update,
        };
        let r = crawl(&cfg, &mut cat).expect("crawl");
        assert!(r.created);
        assert_eq!(
            r.columns,
            vec![Column::new("user_id", "bigint"), Column::new("price", "double"), Column::new("event_type", "string")]
        );
        assert_eq!((r.partition_keys.clone(), r.partitions_added), (vec!["dt".to_string()], 2));
        // A new partition with an extra column.
        let mut df2 =
            df!("user_id" => [3i64], "price" => [1.0f64], "event_type" => ["view"], "brand" => ["x"]).expect("df");
        write_parquet(&lake.path().join("clean/events/dt=2019-10-03/part-00000.parquet"), &mut df2);
        let fail = crawl(&CrawlConfig { schema_change: SchemaChangePolicy::Fail, ..cfg.clone() }, &mut cat);
        assert!(matches!(fail, Err(CrawlError::SchemaChanged { .. })), "{fail:?}");
        let log = crawl(&CrawlConfig { schema_change: SchemaChangePolicy::Log, ..cfg.clone() }, &mut cat).expect("log");
        assert_eq!(log.schema_change.as_deref(), Some("added brand string"));
        assert_eq!(
            cat.table("ecommerce.clean_events", "").expect("t").expect("t").columns.len(),
            3,
            "log keeps the schema"
        );
        let upd = crawl(&cfg, &mut cat).expect("update");
        assert_eq!(upd.partitions_added, 0, "partitions are added once");
        let t = cat.table("ecommerce.clean_events", "").expect("t").expect("t");
        assert_eq!(t.columns.len(), 4);
        assert_eq!(cat.partitions("ecommerce.clean_events", "").expect("p").len(), 3);
    }

    #[test]
    fn json_lines_are_sampled_and_widened() {
        let lake = tempfile::tempdir().expect("tmp");
        let dir = lake.path().join("raw/x/dt=2019-10-01");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("a.json"),
            "{\"a\":1,\"b\":\"x\",\"c\":null}\n{\"a\":2.5,\"b\":\"y\",\"c\":true}\nnot json\n",
        )
        .expect("w");
        let mut cat = Catalog::open(&lake.path().join("catalog.db")).expect("catalog");
        let r = crawl(
            &CrawlConfig {
                lake: lake.path().to_path_buf(),
                prefix: "raw/x".into(),
                database: "d".into(),
                table: "x".into(),
                schema_change: SchemaChangePolicy::Update,
            },
            &mut cat,
        )
        .expect("crawl");
        assert_eq!(
            r.columns,
            vec![Column::new("a", "double"), Column::new("b", "string"), Column::new("c", "boolean")]
        );
    }
}
