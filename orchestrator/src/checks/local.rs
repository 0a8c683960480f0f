//! Data checks on the local backend: DataFusion over the staged Parquet, beside the catalog's
//! tables (an `sql:` check may join them).

use std::path::Path;

use cartflow_jobs::sql::{SqlEngine, SqlError};
use chrono::{DateTime, Utc};

use super::run::{Engine, Names};
use super::{Check, CheckResult, PREVIOUS, Staged, THIS};
use crate::template;

/// The table the staged quarantine is registered as.
const QUARANTINE: &str = "cartflow_quarantine";

struct Local(SqlEngine);

impl Engine for Local {
    async fn rows(&self, sql: &str, limit: usize) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), String> {
        let r = self.0.query_text(sql, limit, None).await.map_err(|e| e.to_string())?;
        Ok((r.columns, r.rows))
    }
}

/// Runs `checks` on the staged output, in order (see [`super::run`]); only a staged output that
/// cannot be read at all is an error.
pub async fn run(
    lake: &Path,
    catalog: &Path,
    checks: &[Check],
    staged: &Staged,
    template: &template::Context,
    interval_end: DateTime<Utc>,
) -> Result<Vec<CheckResult>, SqlError> {
    let engine = SqlEngine::open(lake, catalog).await?;
    let partition = staged.partition.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
    if !engine.register_dir(THIS, &staged.dir, partition).await? {
        return Err(SqlError::Query(format!("the staged output at {} has no Parquet file", staged.dir.display())));
    }
    // The previous partition with its partition column, like the staged rows.
    let mut previous = None;
    if let Some(p) = &staged.previous {
        let label = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let constant = label.split_once('=').filter(|(k, _)| staged.partition.as_ref().is_some_and(|(sk, _)| sk == k));
        if engine.register_dir(PREVIOUS, p, constant).await? {
            let label = if constant.is_some() { label.clone() } else { "the published version".to_string() };
            previous = Some((PREVIOUS.to_string(), label));
        }
    }
    if previous.is_none() {
        engine.register_view(PREVIOUS, &format!("SELECT * FROM {THIS} WHERE false")).await?;
    }
    let quarantine = match &staged.quarantine {
        Some(q) if engine.register_dir(QUARANTINE, q, None).await? => Some(QUARANTINE.to_string()),
        _ => None,
    };
    let names = Names { this: THIS.to_string(), previous, quarantine, previous_or_empty: PREVIOUS.to_string() };
    Ok(super::run::run(&Local(engine), checks, &names, template, interval_end).await)
}
