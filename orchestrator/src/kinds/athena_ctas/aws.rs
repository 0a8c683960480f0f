//! Athena CTAS the dbt-athena way: the query writes a temporary table at a fresh S3 location,
//! then the target table (or, for a partitioned table, the partitions the query wrote) is
//! pointed at it through Glue, the temporary table is dropped and old locations beyond
//! `keep_versions` are deleted. A failed query leaves the target untouched.
//!
//! Exactly-once: the token, temporary table and location are chosen once per materialization
//! and saved in the task's facts before the query starts, and the query id right after; a
//! retry or a resumed run re-attaches to the same query (the ClientRequestToken makes a
//! repeated start return it too) and a crash mid-swap is finished by the next attempt.

use aws_sdk_athena::types::{QueryExecutionContext, ResultConfiguration};
use serde::{Deserialize, Serialize};

use super::RenderedCtas;
use crate::aws::{AwsEnv, AwsError, Clients, Phase, S3Loc, WatchEnd, glue, s3, watch};
use crate::task::{TaskContext, TaskFailure};

/// What to materialize.
#[derive(Debug, Clone)]
pub struct Ctas {
    /// The Glue database.
    pub database: String,
    /// The target table.
    pub table: String,
    /// The rendered SELECT.
    pub select: String,
    /// `(column, value)` of the run's partition, for a partitioned table.
    pub partition: Option<(String, String)>,
    /// The table's base location.
    pub base: S3Loc,
    /// How many locations to keep (the live one included).
    pub keep_versions: usize,
}

/// The task's record of its materialization, saved before the query starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The ClientRequestToken.
    pub token: String,
    /// The temporary table.
    pub tmp: String,
    /// The version folder name (sortable: it starts with the UTC time).
    pub version: String,
    /// Where the query writes, `s3://…/`.
    pub location: String,
    /// The query execution, once started.
    pub query_id: Option<String>,
}

const FACT: &str = "athena_ctas";

/// The materializations begun and not yet finished or discarded, newest last. A `leftover.`
/// fact survives the task being queued afresh (`--rerun`, `--reprocess`), which forgets
/// [`FACT`]: the next execution drops what they left (the temporary table, and the location
/// unless the target points at it) instead of leaking it.
const LEFTOVERS: &str = "leftover.athena_ctas";

fn leftovers(ctx: &TaskContext) -> Result<Vec<Record>, TaskFailure> {
    Ok(ctx.facts.get(LEFTOVERS)?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default())
}

fn keep_leftovers(ctx: &TaskContext, list: &[Record]) -> Result<(), TaskFailure> {
    if list.is_empty() {
        ctx.facts.clear(LEFTOVERS)
    } else {
        ctx.facts.set(LEFTOVERS, &serde_json::to_string(list).unwrap_or_default())
    }
}

/// Records `r` as begun (before its query can start).
fn begun(ctx: &TaskContext, r: &Record) -> Result<(), TaskFailure> {
    let mut list = leftovers(ctx)?;
    if !list.iter().any(|l| l.tmp == r.tmp) {
        list.push(r.clone());
    }
    keep_leftovers(ctx, &list)
}

/// Records `r` as finished or discarded.
fn ended(ctx: &TaskContext, r: &Record) -> Result<(), TaskFailure> {
    let mut list = leftovers(ctx)?;
    let before = list.len();
    list.retain(|l| l.tmp != r.tmp);
    if list.len() == before { Ok(()) } else { keep_leftovers(ctx, &list) }
}

/// Whether the target table (or one of its partitions) points into `location`.
async fn target_points_at(clients: &Clients, c: &Ctas, location: &str) -> Result<bool, AwsError> {
    let g = &clients.glue;
    let Some(target) = glue::get_table(g, &c.database, &c.table).await? else { return Ok(false) };
    if target.location().is_some_and(|l| l.starts_with(location)) {
        return Ok(true);
    }
    if c.partition.is_some() {
        return Ok(glue::partitions(g, &c.database, &c.table).await?.iter().any(|p| p.location.starts_with(location)));
    }
    Ok(false)
}

/// Drops what earlier executions of this task began and never finished (all but `current`):
/// their temporary tables, and their locations unless the target points at one (a swap that
/// got that far). One that cannot be cleaned now stays listed for the next attempt.
async fn drop_leftovers(
    clients: &Clients,
    c: &Ctas,
    current: Option<&Record>,
    ctx: &TaskContext,
) -> Result<(), TaskFailure> {
    let list = leftovers(ctx)?;
    let mut keep = Vec::new();
    for r in list {
        if current.is_some_and(|cur| cur.tmp == r.tmp) {
            keep.push(r);
            continue;
        }
        let cleaned = async {
            glue::delete_table(&clients.glue, &c.database, &r.tmp).await?;
            let live = target_points_at(clients, c, &r.location).await?;
            let removed = match (live, S3Loc::parse(&r.location)) {
                (false, Ok(loc)) => s3::delete_prefix(&clients.s3, &loc).await?,
                _ => 0,
            };
            Ok::<_, AwsError>((live, removed))
        }
        .await;
        match cleaned {
            Ok((live, removed)) => ctx.log.line(format_args!(
                "dropped what an earlier execution left: {}.{}{}",
                c.database,
                r.tmp,
                if live {
                    format!(" (its location {} is live: kept)", r.location)
                } else {
                    format!(" and {removed} object(s) at {}", r.location)
                }
            )),
            Err(e) => {
                ctx.log.line(format_args!("could not drop what an earlier execution left ({}): {e}", r.tmp));
                keep.push(r);
            }
        }
    }
    keep_leftovers(ctx, &keep)
}

fn fnv(seed: u64, parts: &[&str]) -> u64 {
    let mut h = seed;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

impl Record {
    /// A fresh record for (dag, task, interval) at time `stamp`: the token and names derive
    /// from those, so the same materialization always has the same token.
    pub fn new(c: &Ctas, dag: &str, task: &str, interval: &str, stamp: &str) -> Record {
        let key = [dag, task, interval, stamp];
        let (h1, h2) = (fnv(0xcbf2_9ce4_8422_2325, &key), fnv(0x8422_2325_cbf2_9ce4, &key));
        let version = format!("{stamp}-{:08x}", h1 as u32);
        let dir = match &c.partition {
            Some((k, v)) => c.base.join(&format!("{k}={v}/{version}/")),
            None => c.base.join(&format!("{version}/")),
        };
        Record {
            token: format!("cartflow-{h1:016x}{h2:016x}"),
            tmp: format!("{}__ctas_{:08x}", c.table, h1 as u32),
            version,
            location: dir.uri(),
            query_id: None,
        }
    }
}

/// The CTAS statement: a comment saying what it is for, then the temporary table at the
/// fresh location around the SELECT.
pub fn statement(c: &Ctas, r: &Record, label: &str) -> String {
    let select = c.select.trim().trim_end_matches(';').trim_end();
    let mut props = vec!["format = 'PARQUET'".to_string(), "write_compression = 'ZSTD'".to_string()];
    props.push(format!("external_location = '{}'", r.location));
    let what = match &c.partition {
        Some((k, v)) => {
            props.push(format!("partitioned_by = ARRAY['{k}']"));
            format!("insert-overwrite of {k}={v}")
        }
        None => "full refresh".to_string(),
    };
    format!(
        "-- cartflow: {label} -> {}.{}, {what}\nCREATE TABLE \"{}\".\"{}\"\nWITH ({})\nAS\n{select}",
        c.database,
        c.table,
        c.database,
        r.tmp,
        props.join(", ")
    )
}

/// Whether a folder name is one of our version folders (`YYYYMMDDTHHMMSSZ-xxxxxxxx/`).
fn is_version(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 17 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T'
}

/// The versions to delete: all version folders but the newest `keep` (by name, i.e. time),
/// never `live`.
pub fn to_remove(mut folders: Vec<String>, live: &str, keep: usize) -> Vec<String> {
    folders.retain(|f| is_version(f.trim_end_matches('/').rsplit('/').next().unwrap_or("")));
    folders.sort();
    folders.reverse();
    let mut kept = 0;
    let mut out = Vec::new();
    for f in folders {
        if f.trim_end_matches('/') == live.trim_end_matches('/') {
            continue;
        }
        kept += 1;
        if kept >= keep {
            out.push(f);
        }
    }
    out
}

struct QueryEnd {
    phase: Phase,
    user_error: bool,
    scanned: i64,
}

async fn query_state(clients: &Clients, id: &str) -> Result<QueryEnd, AwsError> {
    let out = clients
        .athena
        .get_query_execution()
        .query_execution_id(id)
        .send()
        .await
        .map_err(|e| AwsError::new("athena:GetQueryExecution", id, e))?;
    let q = out.query_execution();
    let status = q.and_then(|q| q.status());
    let state = status.and_then(|s| s.state()).map(|s| s.as_str()).unwrap_or("QUEUED");
    let phase = Phase::athena_query(state, status.and_then(|s| s.state_change_reason()));
    let user_error = status.and_then(|s| s.athena_error()).and_then(|e| e.error_category()) == Some(2);
    let scanned = q.and_then(|q| q.statistics()).and_then(|s| s.data_scanned_in_bytes()).unwrap_or(0);
    Ok(QueryEnd { phase, user_error, scanned })
}

/// Removes what a failed or cancelled query left: the temporary table and its location.
async fn discard(clients: &Clients, c: &Ctas, r: &Record, ctx: &TaskContext) {
    if let Err(e) = glue::delete_table(&clients.glue, &c.database, &r.tmp).await {
        ctx.log.line(format_args!("could not drop {}.{}: {e}", c.database, r.tmp));
    }
    if let Ok(loc) = S3Loc::parse(&r.location) {
        match s3::delete_prefix(&clients.s3, &loc).await {
            Ok(n) if n > 0 => ctx.log.line(format_args!("removed {n} object(s) the query left at {}", r.location)),
            Ok(_) => {}
            Err(e) => ctx.log.line(format_args!("could not clean {}: {e}", r.location)),
        }
    }
}

/// Materializes the rendered task on Athena: the CTAS at a fresh location, the task's checks
/// on its temporary table, then the swap. Returns the summary and the failed `warn` checks.
pub async fn run(
    r: &RenderedCtas,
    select: String,
    aws: &AwsEnv,
    ctx: &TaskContext,
) -> Result<(String, Option<String>), TaskFailure> {
    let base = aws.locate(&r.location).map_err(TaskFailure::permanent)?;
    let spec = Ctas {
        database: r.database.clone(),
        table: r.name.clone(),
        select,
        partition: r.partition.clone(),
        base,
        keep_versions: r.keep_versions,
    };
    let label = format!("{}.{} {}", ctx.dag_id, ctx.task_id, ctx.interval.start.format("%Y-%m-%d"));
    materialize(aws, &spec, &label, ctx).await
}

/// Runs the CTAS, the checks and the swap. `label` says which DAG, task and interval it is for.
async fn materialize(
    aws: &AwsEnv,
    c: &Ctas,
    label: &str,
    ctx: &TaskContext,
) -> Result<(String, Option<String>), TaskFailure> {
    let clients = &aws.clients;
    let log = &ctx.log;
    let fail = |e: AwsError| TaskFailure::new(e.to_string());
    let saved = ctx.facts.get(FACT)?.and_then(|s| serde_json::from_str::<Record>(&s).ok());
    drop_leftovers(clients, c, saved.as_ref(), ctx).await?;
    let mut rec = match saved {
        Some(r) => {
            log.line(format_args!(
                "resuming the materialization an earlier attempt began (query {}, location {})",
                r.query_id.as_deref().unwrap_or("not started"),
                r.location
            ));
            r
        }
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
            let interval = ctx.interval.start.to_rfc3339();
            let r = Record::new(c, &ctx.dag_id, &ctx.task_id, &interval, &stamp);
            begun(ctx, &r)?;
            ctx.facts.set(FACT, &serde_json::to_string(&r).unwrap_or_default())?;
            r
        }
    };
    let id = match rec.query_id.clone() {
        Some(id) => id,
        None => {
            let sql = statement(c, &rec, label);
            let mut req = clients
                .athena
                .start_query_execution()
                .query_string(&sql)
                .client_request_token(&rec.token)
                .query_execution_context(QueryExecutionContext::builder().database(&c.database).build())
                .work_group(&aws.settings.athena_workgroup);
            if let Some(out) = &aws.settings.athena_output {
                req = req.result_configuration(ResultConfiguration::builder().output_location(out).build());
            }
            let out = req.send().await.map_err(|e| {
                fail(AwsError::new("athena:StartQueryExecution", format!("CTAS of {}.{}", c.database, c.table), e))
            })?;
            let id = out.query_execution_id().unwrap_or_default().to_string();
            if id.is_empty() {
                // Never saved: a saved empty id would be "re-attached to" by every retry.
                return Err(TaskFailure::new(format!(
                    "athena:StartQueryExecution for {}.{} answered without a query id",
                    c.database, c.table
                )));
            }
            rec.query_id = Some(id.clone());
            ctx.facts.set(FACT, &serde_json::to_string(&rec).unwrap_or_default())?;
            log.line(format_args!("started Athena query {id}: CTAS {}.{} at {}", c.database, rec.tmp, rec.location));
            id
        }
    };
    let what = format!("Athena query {id}");
    // The last answer is kept: its error category and scanned bytes are read after the end.
    let last: std::sync::Mutex<Option<QueryEnd>> = std::sync::Mutex::new(None);
    let probe = || async {
        let q = query_state(clients, &id).await?;
        let phase = q.phase.clone();
        *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(q);
        Ok(phase)
    };
    let line = |l: &str| log.line(l);
    let phase = watch(&what, aws.backoff(), &line, &ctx.cancel, probe).await;
    let end = last.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    match phase {
        Ok(Phase::Succeeded) => {}
        Ok(Phase::Failed(reason)) | Ok(Phase::Stopped(reason)) => {
            discard(clients, c, &rec, ctx).await;
            ctx.facts.clear(FACT)?;
            ended(ctx, &rec)?;
            let msg = format!(
                "{what} (CTAS for {}.{}) failed: {reason}; {}.{} is unchanged",
                c.database, c.table, c.database, c.table
            );
            return Err(if end.as_ref().is_some_and(|e| e.user_error) {
                TaskFailure::permanent(msg)
            } else {
                TaskFailure::new(msg)
            });
        }
        Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
        Err(WatchEnd::Cancelled) if ctx.handover.is_cancelled() => {
            log.line(format_args!("{what}: the run was taken over by another process; left running for it"));
            return Err(TaskFailure::new(format!(
                "the run was taken over by another process; {what} is left running for it"
            )));
        }
        Err(WatchEnd::Cancelled) => {
            let _ = clients.athena.stop_query_execution().query_execution_id(&id).send().await;
            log.line(format_args!("{what}: task cancelled; query stopped"));
            discard(clients, c, &rec, ctx).await;
            ctx.facts.clear(FACT)?;
            ended(ctx, &rec)?;
            return Err(TaskFailure::new(format!("cancelled; {what} was stopped")));
        }
        Err(WatchEnd::Unreachable(e)) => return Err(TaskFailure::new(format!("lost track of {what}: {e}"))),
    }
    let scanned = end.map_or(0, |q| q.scanned);
    let mut results = Vec::new();
    let mut checks_failed = None;
    if !ctx.checks.is_empty() {
        // Write-audit-publish: the temporary table is the staged output.
        let log = |l: &str| ctx.log.line(l);
        let on = crate::checks::aws::On {
            log: &log,
            cancel: &ctx.cancel,
            template: &ctx.template,
            interval_end: ctx.interval.end,
        };
        results = crate::checks::aws::run(aws, &c.database, &rec.tmp, &c.table, c.partition.as_ref(), &ctx.checks, &on)
            .await
            .map_err(fail)?;
        match crate::kinds::check_verdict(ctx, &results) {
            Ok(warned) => checks_failed = warned,
            Err(f) => {
                discard(clients, c, &rec, ctx).await;
                ctx.facts.clear(FACT)?;
                ended(ctx, &rec)?;
                return Err(f);
            }
        }
    }
    let summary = swap(clients, c, &rec, ctx).await.map_err(fail)?;
    ctx.facts.clear(FACT)?;
    ended(ctx, &rec)?;
    Ok((format!("{summary} (query {id}, {scanned} bytes scanned){}", crate::checks::summary(&results)), checks_failed))
}

/// Points the target at the query's output and drops the temporary table; then retention.
async fn swap(clients: &Clients, c: &Ctas, r: &Record, ctx: &TaskContext) -> Result<String, AwsError> {
    let (g, db) = (&clients.glue, c.database.as_str());
    let log = &ctx.log;
    let tmp = glue::get_table(g, db, &r.tmp).await?;
    let target = glue::get_table(g, db, &c.table).await?;
    let Some(tmp) = tmp else {
        // A crash after the temporary table was dropped: the swap is done if the target
        // already points here.
        let live = match (&c.partition, &target) {
            (Some((_, v)), Some(_)) => glue::partitions(g, db, &c.table)
                .await?
                .into_iter()
                .any(|p| p.values == [v.clone()] && p.location.starts_with(&r.location)),
            (None, Some(t)) => t.location() == Some(r.location.as_str()),
            _ => false,
        };
        if live {
            return Ok(format!("{db}.{} already points at {}", c.table, r.location));
        }
        return Err(AwsError {
            call: "glue:GetTable",
            resource: format!("{db}.{}", r.tmp),
            message: "the CTAS succeeded but its table is missing from the catalog".into(),
        });
    };
    let summary = match &c.partition {
        Some((k, v)) => {
            if let Some(t) = &target
                && t.partition_keys() != [k.clone()]
            {
                return Err(AwsError {
                    call: "glue:GetTable",
                    resource: format!("{db}.{}", c.table),
                    message: format!(
                        "the table is partitioned by {:?}, the task by [{k}]; drop the table or fix `partitioned_by`",
                        t.partition_keys()
                    ),
                });
            }
            let base =
                target.as_ref().and_then(|t| t.location().map(str::to_string)).unwrap_or_else(|| c.base.dir().uri());
            // Create the table, or bring its columns up to date, at its base location.
            let schema_changed = target.as_ref().is_some_and(|t| t.columns() != tmp.columns());
            if target.is_none() || schema_changed {
                glue::put_table(g, db, &c.table, &tmp, &base, target.is_some()).await?;
                if schema_changed {
                    log.line(format_args!("{db}.{}: columns updated to {}", c.table, tmp.columns().join(", ")));
                }
            }
            let target = glue::get_table(g, db, &c.table).await?.ok_or_else(|| AwsError {
                call: "glue:GetTable",
                resource: format!("{db}.{}", c.table),
                message: "the table vanished during the swap".into(),
            })?;
            let parts = glue::partitions(g, db, &r.tmp).await?;
            if parts.is_empty() {
                log.line(format_args!("the query wrote no rows for {k}={v}"));
            }
            let mut swapped = Vec::new();
            for p in &parts {
                let prev = glue::put_partition(g, db, &target, &p.values, &p.location).await?;
                log.line(format_args!(
                    "{db}.{} partition {k}={}: {} -> {}",
                    c.table,
                    p.values.join("/"),
                    prev.as_deref().unwrap_or("(new)"),
                    p.location
                ));
                swapped.push(p.values.join("/"));
            }
            if parts.iter().any(|p| p.values != [v.clone()]) {
                log.line(format_args!("note: the query wrote partitions other than {k}={v}: {}", swapped.join(", ")));
            }
            format!("{db}.{} partition(s) {k}={} -> {}", c.table, swapped.join(","), r.location)
        }
        None => {
            glue::put_table(g, db, &c.table, &tmp, &r.location, target.is_some()).await?;
            log.line(format_args!(
                "{db}.{}: {} -> {}",
                c.table,
                target.as_ref().and_then(|t| t.location()).unwrap_or("(new)"),
                r.location
            ));
            format!("{db}.{} -> {}", c.table, r.location)
        }
    };
    glue::delete_table(g, db, &r.tmp).await?;
    // Retention: the live version and the newest keep_versions - 1 before it.
    let versions = match &c.partition {
        Some((k, v)) => c.base.join(&format!("{k}={v}/")),
        None => c.base.dir(),
    };
    let live = versions.join(&format!("{}/", r.version)).key;
    let old = to_remove(s3::folders(&clients.s3, &versions).await?, &live, c.keep_versions);
    for f in &old {
        let n = s3::delete_prefix(&clients.s3, &S3Loc { bucket: versions.bucket.clone(), key: f.clone() }).await?;
        log.line(format_args!("removed old version s3://{}/{f} ({n} object(s))", versions.bucket));
    }
    Ok(if old.is_empty() { summary } else { format!("{summary}; removed {} old version(s)", old.len()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctas(partition: Option<(&str, &str)>) -> Ctas {
        Ctas {
            database: "ecommerce".into(),
            table: "daily_visitors".into(),
            select: "SELECT count(*) AS n, dt FROM t WHERE dt = '2019-10-01' GROUP BY dt;\n".into(),
            partition: partition.map(|(k, v)| (k.into(), v.into())),
            base: S3Loc::parse("s3://lake/curated/daily_visitors").expect("uri"),
            keep_versions: 3,
        }
    }

    #[test]
    fn the_same_materialization_has_the_same_token_and_location() {
        let c = ctas(Some(("dt", "2019-10-01")));
        let a = Record::new(&c, "d", "t", "2019-10-01T00:00:00+00:00", "20261126T031500Z");
        let b = Record::new(&c, "d", "t", "2019-10-01T00:00:00+00:00", "20261126T031500Z");
        assert_eq!(a, b);
        assert!((32..=128).contains(&a.token.len()), "Athena wants 32-128 characters: {}", a.token);
        assert!(a.location.starts_with("s3://lake/curated/daily_visitors/dt=2019-10-01/20261126T031500Z-"));
        assert!(a.location.ends_with('/'));
        assert!(a.tmp.starts_with("daily_visitors__ctas_"));
        // Another interval, task or time: another token, table and location.
        for other in [
            Record::new(&c, "d", "t", "2019-10-02T00:00:00+00:00", "20261126T031500Z"),
            Record::new(&c, "d", "u", "2019-10-01T00:00:00+00:00", "20261126T031500Z"),
            Record::new(&c, "d", "t", "2019-10-01T00:00:00+00:00", "20261126T031501Z"),
        ] {
            assert_ne!(other.token, a.token);
            assert_ne!(other.location, a.location);
        }
    }

    #[test]
    fn the_statement_is_a_ctas_into_the_temporary_table() {
        let c = ctas(Some(("dt", "2019-10-01")));
        let r = Record::new(&c, "d", "t", "i", "20261126T031500Z");
        let sql = statement(&c, &r, "ecommerce_daily.daily_visitors 2019-10-01");
        assert!(sql.starts_with("-- cartflow: ecommerce_daily.daily_visitors 2019-10-01 -> ecommerce.daily_visitors, insert-overwrite of dt=2019-10-01\n"), "{sql}");
        assert!(sql.contains(&format!("CREATE TABLE \"ecommerce\".\"{}\"", r.tmp)), "{sql}");
        assert!(sql.contains(&format!("external_location = '{}'", r.location)), "{sql}");
        assert!(sql.contains("partitioned_by = ARRAY['dt']") && sql.contains("format = 'PARQUET'"), "{sql}");
        assert!(sql.ends_with("GROUP BY dt"), "the trailing semicolon goes: {sql}");
        let full = statement(&ctas(None), &r, "x");
        assert!(!full.contains("partitioned_by") && full.contains("full refresh"), "{full}");
    }

    #[test]
    fn retention_keeps_the_live_version_and_the_newest_others() {
        let f = |s: &str| format!("curated/t/{s}/");
        let folders = vec![
            f("20261101T000000Z-aaaaaaaa"),
            f("20261102T000000Z-bbbbbbbb"),
            f("20261103T000000Z-cccccccc"),
            f("20261104T000000Z-dddddddd"),
            f("dt=2019-10-01"), // not a version folder: never touched
        ];
        let live = f("20261104T000000Z-dddddddd");
        assert_eq!(to_remove(folders.clone(), &live, 3), vec![f("20261101T000000Z-aaaaaaaa")]);
        assert_eq!(to_remove(folders.clone(), &live, 1).len(), 3);
        // A resumed older materialization never deletes itself.
        let old_live = f("20261101T000000Z-aaaaaaaa");
        assert!(!to_remove(folders, &old_live, 1).contains(&old_live));
    }

    #[test]
    fn phases_from_service_states() {
        assert_eq!(Phase::athena_query("RUNNING", None), Phase::Running("RUNNING".into()));
        assert_eq!(Phase::athena_query("FAILED", Some("SYNTAX_ERROR: x")), Phase::Failed("SYNTAX_ERROR: x".into()));
        assert!(matches!(Phase::athena_query("CANCELLED", None), Phase::Stopped(_)));
        assert_eq!(Phase::glue_job_run("FAILED", Some("boom")), Phase::Failed("boom".into()));
        assert!(matches!(Phase::glue_job_run("TIMEOUT", None), Phase::Failed(m) if m.contains("timeout")));
        assert!(matches!(Phase::glue_job_run("WAITING", None), Phase::Running(_)));
        assert!(matches!(Phase::glue_job_run("STOPPED", None), Phase::Stopped(_)));
        assert_eq!(Phase::crawler("RUNNING", Some("FAILED"), None), Phase::Running("RUNNING".into()));
        assert_eq!(Phase::crawler("READY", Some("FAILED"), Some("no access")), Phase::Failed("no access".into()));
        assert_eq!(Phase::crawler("READY", Some("SUCCEEDED"), None), Phase::Succeeded);
        assert_eq!(Phase::databrew_job_run("SUCCEEDED", None), Phase::Succeeded);
        assert!(matches!(Phase::databrew_job_run("FAILED", None), Phase::Failed(_)));
    }
}
