//! `athena_ctas`: one SQL file materialized into a catalog table, the dbt-athena way.
//!
//! Local: DataFusion runs the same file (Trino functions added) over the local catalog, writes
//! Parquet to a fresh location and publishes it by an atomic swap — the run's partition for a
//! partitioned table (insert-overwrite), the whole table otherwise, keeping `keep_versions`
//! versions. AWS: CTAS into a temporary table at a fresh S3 location with a deterministic
//! ClientRequestToken, then the same swap through Glue (`aws.rs` beside this file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

#[cfg(feature = "aws")]
mod aws;

/// The `athena_ctas` kind.
#[derive(Debug)]
pub struct AthenaCtas;

/// Config of an `athena_ctas` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AthenaCtasConfig {
    /// The SQL file (a SELECT), relative to the project folder; templates like `{{ ds }}` are
    /// filled in as SQL literals.
    pub sql: PathBuf,
    /// The target table.
    pub table: String,
    /// Its database (default `ecommerce`).
    #[serde(default = "default_database")]
    pub database: String,
    /// Partition key for insert-overwrite of the run's partition (the query's last column);
    /// without it the table is rebuilt.
    #[serde(default)]
    pub partitioned_by: Option<String>,
    /// The partition value for this run (default `{{ ds }}`).
    #[serde(default = "default_partition_value")]
    pub partition_value: Template,
    /// The table's root under the lake (default `curated/<table>`).
    #[serde(default)]
    pub location: Option<String>,
    /// Full refresh: versions kept, the current one included (default 3).
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
    /// The SQL text as read at compile time (what `plan` shows; a run reads the file again).
    #[serde(skip)]
    text: std::sync::OnceLock<String>,
}

fn default_database() -> String {
    "ecommerce".into()
}

fn default_partition_value() -> Template {
    Template::from("{{ ds }}")
}

fn default_keep() -> usize {
    3
}

/// A rendered `athena_ctas`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedCtas {
    /// `database.table`.
    pub table: String,
    /// The SQL file.
    pub sql_file: PathBuf,
    /// The rendered query.
    pub sql: String,
    /// Partition key and value.
    pub partition: Option<(String, String)>,
    /// Root under the lake.
    pub location: String,
    /// Versions kept.
    pub keep_versions: usize,
    #[serde(skip)]
    database: String,
    #[serde(skip)]
    name: String,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Kind for AthenaCtas {
    const NAME: &'static str = "athena_ctas";
    const ABOUT: &'static str =
        "materialize a SQL file into a table (Athena CTAS; locally DataFusion + a catalog swap)";
    type Config = AthenaCtasConfig;
    type Rendered = RenderedCtas;

    fn validate(c: &AthenaCtasConfig, env: &CompileEnv) -> Result<(), String> {
        for (what, v) in [("table", &c.table), ("database", &c.database)] {
            if !is_name(v) {
                return Err(format!("`{what}` must be a lower-case name (letters, digits, _), found `{v}`"));
            }
        }
        if let Some(k) = &c.partitioned_by
            && !is_name(k)
        {
            return Err(format!("`partitioned_by` must be a column name, found `{k}`"));
        }
        if c.keep_versions == 0 {
            return Err("`keep_versions` must be at least 1".into());
        }
        let path = env.project_dir.join(&c.sql);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("SQL file {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("SQL file {} is empty", path.display()));
        }
        template::parse(&text).map_err(|e| format!("SQL file {}: {e}", path.display()))?;
        let _ = c.text.set(text);
        Ok(())
    }

    fn render(c: &AthenaCtasConfig, ctx: &template::Context) -> Result<RenderedCtas, TemplateError> {
        let text = c.text.get().map(String::as_str).unwrap_or_default();
        let sql = ctx.render(&Template::from(text), Escaping::SqlLiteral)?;
        let partition = match &c.partitioned_by {
            Some(k) => Some((k.clone(), ctx.render(&c.partition_value, Escaping::SqlLiteral)?)),
            None => None,
        };
        Ok(RenderedCtas {
            table: format!("{}.{}", c.database, c.table),
            sql_file: c.sql.clone(),
            sql,
            partition,
            location: c.location.clone().unwrap_or_else(|| format!("curated/{}", c.table)),
            keep_versions: c.keep_versions,
            database: c.database.clone(),
            name: c.table.clone(),
        })
    }

    async fn run(r: RenderedCtas, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        // The file is read again here: render may have run elsewhere (plan).
        let text = std::fs::read_to_string(ctx.project_dir.join(&r.sql_file))
            .map_err(|e| TaskFailure::permanent(format!("SQL file {}: {e}", r.sql_file.display())))?;
        let sql = ctx.template.render(&Template::from(text.as_str()), Escaping::SqlLiteral)?;
        ctx.log.line(format_args!(
            "materializing {} from {} ({}{})",
            r.table,
            r.sql_file.display(),
            match &r.partition {
                Some((k, v)) => format!("insert-overwrite of {k}={v}"),
                None => "full refresh".into(),
            },
            match &ctx.env {
                Env::Local(_) => "",
                #[cfg(feature = "aws")]
                Env::Aws(_) => ", on Athena",
            }
        ));
        let summary = match &ctx.env {
            Env::Local(local) => run_local(&r, sql, local).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws::run(&r, sql, aws, &ctx).await?,
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}

/// Local: DataFusion over the local catalog, then the catalog swap.
async fn run_local(r: &RenderedCtas, sql: String, local: &LocalEnv) -> Result<String, TaskFailure> {
    let spec = cartflow_jobs::ctas::CtasSpec {
        database: r.database.clone(),
        table: r.name.clone(),
        sql,
        partition: r.partition.clone(),
        location: r.location.clone(),
        keep_versions: r.keep_versions,
    };
    let (lake, catalog) = (local.lake.clone(), local.catalog.clone());
    let report =
        cartflow_jobs::sql::run_isolated(
            move || async move { cartflow_jobs::ctas::ctas(&lake, &catalog, &spec).await },
        )
        .await
        .map_err(|e| match e {
            cartflow_jobs::sql::SqlError::Query(m) => {
                TaskFailure::permanent(format!("{} ({}): {m}", r.table, r.sql_file.display()))
            }
            other => TaskFailure::new(format!("{}: {other}", r.table)),
        })?;
    Ok(format!(
        "{} rows -> {} at {} (catalog version {}){}",
        report.rows,
        r.table,
        report.location,
        report.version,
        if report.removed.is_empty() {
            String::new()
        } else {
            format!("; removed {} old version(s)", report.removed.len())
        }
    ))
}
