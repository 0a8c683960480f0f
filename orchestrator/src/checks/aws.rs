//! Data checks on the aws backend: Athena queries on the temporary table an `athena_ctas`
//! task's CTAS wrote, before the swap points the target at it.

use super::run::{Engine, Names};
use super::{Check, CheckResult, literal};
use crate::aws::{AwsEnv, AwsError, glue};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::template;

struct Athena<'a> {
    aws: &'a AwsEnv,
    database: &'a str,
    on: &'a On<'a>,
}

/// What the checks of one attempt run under: its log, its cancel token, its template context
/// and its interval's end (for `freshness`).
pub struct On<'a> {
    /// Writes a line to the attempt's log.
    pub log: &'a (dyn Fn(&str) + Sync),
    /// The attempt's cancel token.
    pub cancel: &'a CancellationToken,
    /// Renders the `sql:` checks.
    pub template: &'a template::Context,
    /// The interval's end.
    pub interval_end: DateTime<Utc>,
}

impl std::fmt::Debug for On<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("On").field("interval_end", &self.interval_end).finish_non_exhaustive()
    }
}

impl Engine for Athena<'_> {
    async fn rows(&self, sql: &str, limit: usize) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), String> {
        let a = crate::aws::athena_query::run(self.aws, sql, self.database, limit, self.on.log, self.on.cancel)
            .await
            .map_err(|e| e.to_string())?;
        Ok((a.columns, a.rows))
    }
}

/// Runs `checks` on the staged rows, the temporary table `tmp` of `database` (which has the
/// partition column), comparing with the target `table`'s previous partition — the greatest
/// value below this run's `partition` in the Glue catalog — or, for a full refresh, with the
/// table as it is published now.
pub async fn run(
    aws: &AwsEnv,
    database: &str,
    tmp: &str,
    table: &str,
    partition: Option<&(String, String)>,
    checks: &[Check],
    on: &On<'_>,
) -> Result<Vec<CheckResult>, AwsError> {
    let g = &aws.clients.glue;
    let q = |t: &str| format!("\"{database}\".\"{t}\"");
    let this = q(tmp);
    let published = glue::get_table(g, database, table).await?.is_some();
    let previous = match partition {
        _ if !published => None,
        Some((k, v)) => glue::partitions(g, database, table)
            .await?
            .into_iter()
            .filter_map(|p| p.values.first().cloned())
            .filter(|x| x.as_str() < v.as_str())
            .max()
            .map(|pv| (format!("(SELECT * FROM {} WHERE \"{k}\" = {})", q(table), literal(&pv)), format!("{k}={pv}"))),
        None => Some((q(table), "the published version".to_string())),
    };
    let previous_or_empty =
        previous.as_ref().map(|p| p.0.clone()).unwrap_or_else(|| format!("(SELECT * FROM {this} WHERE false)"));
    let names = Names { this, previous, quarantine: None, previous_or_empty };
    let engine = Athena { aws, database, on };
    Ok(super::run::run(&engine, checks, &names, on.template, on.interval_end).await)
}
