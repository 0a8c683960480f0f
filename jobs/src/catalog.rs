//! The local catalog: the Glue Data Catalog's equivalent in SQLite.
//!
//! Databases; tables with a location, a format, columns typed with Glue's type names
//! (`bigint`, `double`, `string`, `timestamp`, …), partition keys and parameters; every
//! change of a table kept as a numbered version; partitions with their own locations. A
//! table's (or a partition's) location is swapped atomically — the publish step of every job
//! that writes a fresh location.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed.
    #[error("catalog {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// A table does not exist.
    #[error("no table `{0}` in the catalog (see `cartflow catalog ls`)")]
    NoSuchTable(String),
    /// A stored value is unreadable.
    #[error("catalog: corrupt entry for `{0}`")]
    Corrupt(String),
}

/// A column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Glue type name.
    #[serde(rename = "type")]
    pub glue_type: String,
}

impl Column {
    /// A column.
    pub fn new(name: &str, glue_type: &str) -> Self {
        Column { name: name.to_string(), glue_type: glue_type.to_string() }
    }
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Database.
    pub database: String,
    /// Name.
    pub name: String,
    /// Where its data is (a folder of the lake, or `s3://…`).
    pub location: String,
    /// `parquet`, `json`, `csv`.
    pub format: String,
    /// Data columns.
    pub columns: Vec<Column>,
    /// Partition columns (Hive-style folders `key=value`).
    pub partition_keys: Vec<Column>,
    /// Free-form parameters (e.g. the crawler's record counts).
    pub parameters: std::collections::BTreeMap<String, String>,
    /// Version number, incremented by every change.
    pub version: i64,
}

impl Table {
    /// `database.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.database, self.name)
    }
}

/// A partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Values of the partition keys, in order.
    pub values: Vec<String>,
    /// Where its data is.
    pub location: String,
}

impl Partition {
    /// `dt=2019-10-01/hour=03` for the keys of `table`.
    pub fn spec(&self, keys: &[Column]) -> String {
        keys.iter().zip(&self.values).map(|(k, v)| format!("{}={v}", k.name)).collect::<Vec<_>>().join("/")
    }
}

/// The catalog database.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS databases (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS tables (
    database       TEXT NOT NULL REFERENCES databases (name),
    name           TEXT NOT NULL,
    location       TEXT NOT NULL,
    format         TEXT NOT NULL,
    columns        TEXT NOT NULL,
    partition_keys TEXT NOT NULL,
    parameters     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (database, name)
);
CREATE TABLE IF NOT EXISTS table_versions (
    database       TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        INTEGER NOT NULL,
    location       TEXT NOT NULL,
    format         TEXT NOT NULL,
    columns        TEXT NOT NULL,
    partition_keys TEXT NOT NULL,
    parameters     TEXT NOT NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (database, name, version)
);
CREATE TABLE IF NOT EXISTS partitions (
    database   TEXT NOT NULL,
    table_name TEXT NOT NULL,
    spec       TEXT NOT NULL,
    vals       TEXT NOT NULL,
    location   TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (database, table_name, spec)
);
"#;

fn split(qualified: &str, default_db: &str) -> (String, String) {
    match qualified.split_once('.') {
        Some((d, t)) => (d.to_string(), t.to_string()),
        None => (default_db.to_string(), qualified.to_string()),
    }
}

impl Catalog {
    /// Opens (creating) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let e = |source| CatalogError::Sqlite { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(e)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.execute_batch(SCHEMA).map_err(e)?;
        Ok(Catalog { conn, path: path.to_path_buf() })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Sqlite { path: self.path.clone(), source }
    }

    /// Creates a database if it does not exist.
    pub fn ensure_database(&self, name: &str) -> Result<(), CatalogError> {
        self.conn.execute("INSERT OR IGNORE INTO databases (name) VALUES (?1)", [name]).map(|_| ()).map_err(self.err())
    }

    /// A table by `database.name` (or `name` in `default_db`).
    pub fn table(&self, qualified: &str, default_db: &str) -> Result<Option<Table>, CatalogError> {
        let (db, name) = split(qualified, default_db);
        let row = self
            .conn
            .query_row(
                "SELECT location, format, columns, partition_keys, parameters, version FROM tables WHERE database = ?1 AND name = ?2",
                params![db, name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(self.err())?;
        let Some((location, format, cols, keys, pars, version)) = row else { return Ok(None) };
        let corrupt = || CatalogError::Corrupt(format!("{db}.{name}"));
        Ok(Some(Table {
            database: db.clone(),
            name: name.clone(),
            location,
            format,
            columns: serde_json::from_str(&cols).map_err(|_| corrupt())?,
            partition_keys: serde_json::from_str(&keys).map_err(|_| corrupt())?,
            parameters: serde_json::from_str(&pars).map_err(|_| corrupt())?,
            version,
        }))
    }

    /// Creates or replaces a table definition; returns the new version number.
    pub fn put_table(&mut self, t: &Table) -> Result<i64, CatalogError> {
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        tx.execute("INSERT OR IGNORE INTO databases (name) VALUES (?1)", [&t.database]).map_err(&e)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM tables WHERE database = ?1 AND name = ?2",
                params![t.database, t.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(&e)?;
        let version = current.unwrap_or(0) + 1;
        let (cols, keys, pars) = (
            serde_json::to_string(&t.columns).unwrap_or_default(),
            serde_json::to_string(&t.partition_keys).unwrap_or_default(),
            serde_json::to_string(&t.parameters).unwrap_or_default(),
        );
        tx.execute(
            "INSERT INTO tables (database, name, location, format, columns, partition_keys, parameters, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (database, name) DO UPDATE SET location = excluded.location, format = excluded.format,
               columns = excluded.columns, partition_keys = excluded.partition_keys, parameters = excluded.parameters,
               version = excluded.version, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            params![t.database, t.name, t.location, t.format, cols, keys, pars, version],
        )
        .map_err(&e)?;
        tx.execute(
            "INSERT INTO table_versions (database, name, version, location, format, columns, partition_keys, parameters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![t.database, t.name, version, t.location, t.format, cols, keys, pars],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(version)
    }

    /// Points a table at a new location in one transaction (a new version); returns the
    /// previous location.
    pub fn swap_location(&mut self, qualified: &str, default_db: &str, location: &str) -> Result<String, CatalogError> {
        let mut t =
            self.table(qualified, default_db)?.ok_or_else(|| CatalogError::NoSuchTable(qualified.to_string()))?;
        let old = std::mem::replace(&mut t.location, location.to_string());
        self.put_table(&t)?;
        Ok(old)
    }

    /// Adds partitions, or points existing ones at the given locations; returns how many
    /// were new.
    pub fn put_partitions(
        &mut self,
        qualified: &str,
        default_db: &str,
        parts: &[Partition],
    ) -> Result<usize, CatalogError> {
        let t = self.table(qualified, default_db)?.ok_or_else(|| CatalogError::NoSuchTable(qualified.to_string()))?;
        let path = self.path.clone();
        let e = move |source| CatalogError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let mut new = 0;
        for p in parts {
            let spec = p.spec(&t.partition_keys);
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM partitions WHERE database = ?1 AND table_name = ?2 AND spec = ?3",
                    params![t.database, t.name, spec],
                    |_| Ok(true),
                )
                .optional()
                .map_err(&e)?
                .unwrap_or(false);
            if !exists {
                new += 1;
            }
            tx.execute(
                "INSERT INTO partitions (database, table_name, spec, vals, location) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (database, table_name, spec) DO UPDATE SET location = excluded.location,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                params![t.database, t.name, spec, serde_json::to_string(&p.values).unwrap_or_default(), p.location],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(new)
    }

    /// The partitions of a table, by spec.
    pub fn partitions(&self, qualified: &str, default_db: &str) -> Result<Vec<Partition>, CatalogError> {
        let (db, name) = split(qualified, default_db);
        let mut stmt = self
            .conn
            .prepare("SELECT vals, location FROM partitions WHERE database = ?1 AND table_name = ?2 ORDER BY spec")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![db, name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (vals, location) = row.map_err(self.err())?;
            let values = serde_json::from_str(&vals).map_err(|_| CatalogError::Corrupt(format!("{db}.{name}")))?;
            out.push(Partition { values, location });
        }
        Ok(out)
    }

    /// Every table, by database and name.
    pub fn tables(&self) -> Result<Vec<Table>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT database || '.' || name FROM tables ORDER BY database, name")
            .map_err(self.err())?;
        let names: Vec<String> =
            stmt.query_map([], |r| r.get(0)).map_err(self.err())?.collect::<Result<_, _>>().map_err(self.err())?;
        let mut out = Vec::new();
        for n in names {
            if let Some(t) = self.table(&n, "")? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The stored versions of a table: (version, location).
    pub fn versions(&self, qualified: &str, default_db: &str) -> Result<Vec<(i64, String)>, CatalogError> {
        let (db, name) = split(qualified, default_db);
        let mut stmt = self
            .conn
            .prepare("SELECT version, location FROM table_versions WHERE database = ?1 AND name = ?2 ORDER BY version")
            .map_err(self.err())?;
        let rows = stmt.query_map(params![db, name], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            database: "ecommerce".into(),
            name: "events".into(),
            location: "staged/events".into(),
            format: "parquet".into(),
            columns: vec![Column::new("event_time", "timestamp"), Column::new("category_id", "bigint")],
            partition_keys: vec![Column::new("dt", "string")],
            parameters: Default::default(),
            version: 0,
        }
    }

    #[test]
    fn tables_are_versioned_and_locations_swap() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = Catalog::open(&dir.path().join("catalog.db")).expect("open");
        assert_eq!(c.put_table(&table()).expect("put"), 1);
        let t = c.table("events", "ecommerce").expect("get").expect("exists");
        assert_eq!((t.version, t.columns.len()), (1, 2));
        let old = c.swap_location("ecommerce.events", "x", "staged/events@v2").expect("swap");
        assert_eq!(old, "staged/events");
        let t = c.table("ecommerce.events", "").expect("get").expect("exists");
        assert_eq!((t.location.as_str(), t.version), ("staged/events@v2", 2));
        assert_eq!(c.versions("events", "ecommerce").expect("versions").len(), 2);
        assert!(matches!(c.swap_location("nope", "ecommerce", "x"), Err(CatalogError::NoSuchTable(_))));
    }

    #[test]
    fn partitions_are_added_once_and_can_be_repointed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = Catalog::open(&dir.path().join("catalog.db")).expect("open");
        c.put_table(&table()).expect("put");
        let p = |d: &str, loc: &str| Partition { values: vec![d.into()], location: loc.into() };
        assert_eq!(
            c.put_partitions("events", "ecommerce", &[p("2019-10-01", "a"), p("2019-10-02", "b")]).expect("add"),
            2
        );
        assert_eq!(c.put_partitions("events", "ecommerce", &[p("2019-10-02", "b2")]).expect("repoint"), 0);
        let parts = c.partitions("events", "ecommerce").expect("list");
        assert_eq!(parts, vec![p("2019-10-01", "a"), p("2019-10-02", "b2")]);
        assert_eq!(parts[0].spec(&table().partition_keys), "dt=2019-10-01");
    }
}
