//! Glue: crawlers, job runs, and the catalog operations of the Athena swap.

use std::collections::HashMap;

use aws_sdk_glue::Client;
use aws_sdk_glue::types::{PartitionInput, Table, TableInput};

use super::jobs::{JobOps, Started};
use super::{AwsError, Phase, WatchEnd, watch};
use crate::kinds::{TaskContext, TaskFailure};

/// The job argument that names the task instance a Glue job run belongs to, so that a run
/// started just before a crash (its id not yet saved) is still found and attached to.
pub const RUN_KEY_ARG: &str = "--cartflow-task";

/// Where the crawl stands. With `since` (epoch seconds of our StartCrawler), a READY crawler
/// whose last crawl began before it is still "starting": GetCrawler can show the previous
/// crawl for a moment after StartCrawler, and its status is not ours. (60 s of clock skew
/// are allowed.)
async fn crawler_phase(client: &Client, name: &str, since: Option<i64>) -> Result<(Phase, Option<String>), AwsError> {
    let out = client.get_crawler().name(name).send().await.map_err(|e| AwsError::new("glue:GetCrawler", name, e))?;
    let c = out.crawler();
    let state = c.and_then(|c| c.state()).map(|s| s.as_str().to_string()).unwrap_or_else(|| "READY".into());
    let last = c.and_then(|c| c.last_crawl());
    let start = last.and_then(|l| l.start_time());
    let last_start = start.map(|t| t.secs());
    let phase = match since {
        Some(t) if state == "READY" && last_start.is_none_or(|s| s < t - 60) => {
            Phase::Running("READY (our crawl has not appeared yet)".into())
        }
        _ => Phase::crawler(
            &state,
            last.and_then(|l| l.status()).map(|s| s.as_str()),
            last.and_then(|l| l.error_message()),
        ),
    };
    Ok((phase, start.map(|t| t.to_string())))
}

/// Runs a crawler to its end: StartCrawler (a crawl already running is attached to), poll
/// GetCrawler until READY, then the last crawl's status. Cancelling stops the crawl.
pub async fn run_crawler(client: &Client, name: &str, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let log = &ctx.log;
    let now = chrono::Utc::now().timestamp();
    let since = match client.start_crawler().name(name).send().await {
        Ok(_) => {
            log.line(format_args!("crawler {name}: started"));
            Some(now)
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_crawler_running_exception()) => {
            log.line(format_args!("crawler {name}: a crawl is already running; attaching to it"));
            None
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => {
            return Err(TaskFailure::permanent(format!(
                "AWS glue:StartCrawler on {name} failed: no such crawler (infra/ creates the platform's crawlers)"
            )));
        }
        Err(e) => return Err(TaskFailure::new(AwsError::new("glue:StartCrawler", name, e).to_string())),
    };
    let what = format!("crawler {name}");
    let c = client.clone();
    let n = name.to_string();
    let probe = move || {
        let (c, n) = (c.clone(), n.clone());
        async move { crawler_phase(&c, &n, since).await.map(|(p, _)| p) }
    };
    match watch(&what, ctx.aws.backoff(), log, &ctx.cancel, probe).await {
        Ok(Phase::Succeeded) => {
            let started = crawler_phase(client, name, None).await.ok().and_then(|(_, s)| s).unwrap_or_default();
            Ok(format!("crawl of {name} (started {started}) SUCCEEDED"))
        }
        Ok(Phase::Failed(m)) => Err(TaskFailure::new(format!("crawl of {name} failed: {m}"))),
        Ok(Phase::Stopped(m)) => Err(TaskFailure::new(format!("crawl of {name} was cancelled: {m}"))),
        Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
        Err(WatchEnd::Cancelled) => {
            let _ = client.stop_crawler().name(name).send().await;
            log.line(format_args!("crawler {name}: task cancelled; stop requested"));
            Err(TaskFailure::new(format!("cancelled; crawler {name} was asked to stop")))
        }
        Err(WatchEnd::Unreachable(e)) => Err(TaskFailure::new(format!("lost track of crawler {name}: {e}"))),
    }
}

async fn job_run_phase(client: &Client, job: &str, id: &str) -> Result<Phase, AwsError> {
    let out = client
        .get_job_run()
        .job_name(job)
        .run_id(id)
        .send()
        .await
        .map_err(|e| AwsError::new("glue:GetJobRun", format!("{job} run {id}"), e))?;
    let run = out.job_run();
    let state = run.and_then(|r| r.job_run_state()).map(|s| s.as_str()).unwrap_or("STARTING");
    Ok(Phase::glue_job_run(state, run.and_then(|r| r.error_message())))
}

/// Runs a Glue job to its end with `arguments` (plus [`RUN_KEY_ARG`] = `run_key`): the run id
/// is saved before polling; a retry re-attaches; cancelling stops the run (BatchStopJobRun).
pub async fn run_job(
    client: &Client,
    job: &str,
    arguments: HashMap<String, String>,
    run_key: &str,
    ctx: &TaskContext,
) -> Result<String, TaskFailure> {
    let mut arguments = arguments;
    arguments.insert(RUN_KEY_ARG.into(), run_key.into());
    let (c1, c2, c3) = (client.clone(), client.clone(), client.clone());
    let (j1, j2, j3) = (job.to_string(), job.to_string(), job.to_string());
    let key = run_key.to_string();
    let ops = JobOps {
        what: format!("Glue job {job}"),
        fact: "glue_job_run_id",
        describe: Box::new(move |id| {
            let (c, j) = (c1.clone(), j1.clone());
            Box::pin(async move { job_run_phase(&c, &j, &id).await })
        }),
        start: Box::new(move || {
            let (c, j, key, args) = (c2.clone(), j2.clone(), key.clone(), arguments.clone());
            Box::pin(async move {
                // A run of this task that is still going (started right before a crash,
                // before its id was saved) is attached to, not duplicated.
                let runs = c
                    .get_job_runs()
                    .job_name(&j)
                    .max_results(50)
                    .send()
                    .await
                    .map_err(|e| AwsError::new("glue:GetJobRuns", &j, e))?;
                if let Some(r) = runs.job_runs().iter().find(|r| {
                    r.arguments().and_then(|a| a.get(RUN_KEY_ARG)).is_some_and(|k| *k == key)
                        && !Phase::glue_job_run(r.job_run_state().map(|s| s.as_str()).unwrap_or(""), None).is_terminal()
                }) {
                    return Ok(Started::Existing(r.id().unwrap_or_default().to_string()));
                }
                let out = c
                    .start_job_run()
                    .job_name(&j)
                    .set_arguments(Some(args))
                    .send()
                    .await
                    .map_err(|e| AwsError::new("glue:StartJobRun", &j, e))?;
                Ok(Started::New(out.job_run_id().unwrap_or_default().to_string()))
            })
        }),
        stop: Box::new(move |id| {
            let (c, j) = (c3.clone(), j3.clone());
            Box::pin(async move {
                let out = c
                    .batch_stop_job_run()
                    .job_name(&j)
                    .job_run_ids(&id)
                    .send()
                    .await
                    .map_err(|e| AwsError::new("glue:BatchStopJobRun", format!("{j} run {id}"), e))?;
                match out.errors().first() {
                    Some(err) => Err(AwsError {
                        call: "glue:BatchStopJobRun",
                        resource: format!("{j} run {id}"),
                        message: err.error_detail().and_then(|d| d.error_message()).unwrap_or("refused").to_string(),
                    }),
                    None => Ok(()),
                }
            })
        }),
    };
    super::jobs::run(ops, ctx).await
}

/// A catalog table, as the swap needs it.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    table: Table,
}

impl CatalogTable {
    /// Its storage location.
    pub fn location(&self) -> Option<&str> {
        self.table.storage_descriptor().and_then(|s| s.location())
    }

    /// Its partition columns.
    pub fn partition_keys(&self) -> Vec<String> {
        self.table.partition_keys().iter().map(|c| c.name().to_string()).collect()
    }

    /// Its data columns, `name type`.
    pub fn columns(&self) -> Vec<String> {
        self.column_pairs().into_iter().map(|(n, t)| format!("{n} {t}")).collect()
    }

    /// Its data columns as (name, type).
    pub fn column_pairs(&self) -> Vec<(String, String)> {
        self.table
            .storage_descriptor()
            .map(|s| {
                s.columns().iter().map(|c| (c.name().to_string(), c.r#type().unwrap_or("string").to_string())).collect()
            })
            .unwrap_or_default()
    }

    /// Its partition columns as (name, type).
    pub fn partition_key_pairs(&self) -> Vec<(String, String)> {
        self.table
            .partition_keys()
            .iter()
            .map(|c| (c.name().to_string(), c.r#type().unwrap_or("string").to_string()))
            .collect()
    }

    /// The table as input for CreateTable/UpdateTable under another name, at `location`.
    fn input(&self, name: &str, location: &str) -> Result<TableInput, AwsError> {
        let t = &self.table;
        let mut sd = t.storage_descriptor().cloned();
        if let Some(sd) = sd.as_mut() {
            sd.location = Some(location.to_string());
        }
        TableInput::builder()
            .name(name)
            .set_description(t.description().map(str::to_string))
            .set_table_type(t.table_type().map(str::to_string))
            .set_parameters(t.parameters().cloned())
            .set_storage_descriptor(sd)
            .set_partition_keys(Some(t.partition_keys().to_vec()))
            .build()
            .map_err(|e| AwsError::new("glue:TableInput", name, e))
    }
}

/// A table of the catalog, or `None` when it does not exist.
pub async fn get_table(client: &Client, db: &str, name: &str) -> Result<Option<CatalogTable>, AwsError> {
    match client.get_table().database_name(db).name(name).send().await {
        Ok(out) => Ok(out.table().cloned().map(|table| CatalogTable { table })),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(None),
        Err(e) => Err(AwsError::new("glue:GetTable", format!("{db}.{name}"), e)),
    }
}

/// Creates `db.name` like `like`, at `location`, or points the existing table there
/// (UpdateTable: atomic for readers, and Glue keeps the previous version).
pub async fn put_table(
    client: &Client,
    db: &str,
    name: &str,
    like: &CatalogTable,
    location: &str,
    exists: bool,
) -> Result<(), AwsError> {
    let input = like.input(name, location)?;
    if exists {
        client
            .update_table()
            .database_name(db)
            .table_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:UpdateTable", format!("{db}.{name}"), e))?;
    } else {
        client
            .create_table()
            .database_name(db)
            .table_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:CreateTable", format!("{db}.{name}"), e))?;
    }
    Ok(())
}

/// Drops a table from the catalog (its data stays); a missing table is fine.
pub async fn delete_table(client: &Client, db: &str, name: &str) -> Result<(), AwsError> {
    match client.delete_table().database_name(db).name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(()),
        Err(e) => Err(AwsError::new("glue:DeleteTable", format!("{db}.{name}"), e)),
    }
}

/// One partition: its values and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLoc {
    /// The partition values, in key order.
    pub values: Vec<String>,
    /// Where its data lives.
    pub location: String,
}

/// Every partition of a table.
pub async fn partitions(client: &Client, db: &str, table: &str) -> Result<Vec<PartitionLoc>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_partitions()
            .database_name(db)
            .table_name(table)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::new("glue:GetPartitions", format!("{db}.{table}"), e))?;
        for p in page.partitions() {
            out.push(PartitionLoc {
                values: p.values().to_vec(),
                location: p.storage_descriptor().and_then(|s| s.location()).unwrap_or_default().to_string(),
            });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Points partition `values` of `db.table` at `location` (creating it if needed), with the
/// table's storage format. Returns the partition's previous location.
pub async fn put_partition(
    client: &Client,
    db: &str,
    table: &CatalogTable,
    values: &[String],
    location: &str,
) -> Result<Option<String>, AwsError> {
    let name = table.table.name();
    let what = format!("{db}.{name} partition {}", values.join("/"));
    let previous = match client
        .get_partition()
        .database_name(db)
        .table_name(name)
        .set_partition_values(Some(values.to_vec()))
        .send()
        .await
    {
        Ok(out) => Some(
            out.partition().and_then(|p| p.storage_descriptor()).and_then(|s| s.location()).unwrap_or("").to_string(),
        ),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => None,
        Err(e) => return Err(AwsError::new("glue:GetPartition", what, e)),
    };
    let mut sd = table.table.storage_descriptor().cloned();
    if let Some(sd) = sd.as_mut() {
        sd.location = Some(location.to_string());
    }
    let input = PartitionInput::builder().set_values(Some(values.to_vec())).set_storage_descriptor(sd).build();
    if previous.is_some() {
        client
            .update_partition()
            .database_name(db)
            .table_name(name)
            .set_partition_value_list(Some(values.to_vec()))
            .partition_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:UpdatePartition", &what, e))?;
    } else {
        client
            .create_partition()
            .database_name(db)
            .table_name(name)
            .partition_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:CreatePartition", &what, e))?;
    }
    Ok(previous)
}
