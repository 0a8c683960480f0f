//! `glue_crawler`: a Glue crawler. Local: crawl the lake prefix, infer the schema with Glue
//! type names, find Hive partitions, create or update the table in the local catalog and
//! add new partitions, with Glue's schema-change policy. AWS: StartCrawler on the named
//! crawler (a crawl already running is attached to), poll GetCrawler until READY, then the last
//! crawl's status; cancelling stops the crawl.

use serde::{Deserialize, Serialize};

use cartflow_jobs::crawl::SchemaChangePolicy;

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `glue_crawler` kind.
#[derive(Debug)]
pub struct GlueCrawler;

/// Config of a `glue_crawler` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlerConfig {
    /// The crawler's name on AWS.
    pub name: String,
    /// The catalog database.
    #[serde(default = "default_db")]
    pub database: String,
    /// The table the crawler maintains.
    pub table: String,
    /// The prefix it crawls, under the lake (e.g. `staged/events`).
    pub path: Template,
    /// What to do when the schema changed: `update` (default), `log` or `fail`.
    #[serde(default)]
    pub schema_change: SchemaChangePolicy,
}

fn default_db() -> String {
    "ecommerce".to_string()
}

/// A rendered crawler task.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedCrawler {
    /// Crawler name.
    pub name: String,
    /// Database.
    pub database: String,
    /// Table.
    pub table: String,
    /// Prefix.
    pub path: String,
    /// Policy.
    pub schema_change: SchemaChangePolicy,
}

impl Kind for GlueCrawler {
    const NAME: &'static str = "glue_crawler";
    const ABOUT: &'static str = "a Glue crawler: schema and partitions of a prefix into the catalog";
    type Config = CrawlerConfig;
    type Rendered = RenderedCrawler;

    /// Every problem of the task at once: the names the catalog and the insight SQL use.
    fn validate(c: &CrawlerConfig, _env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        if c.name.trim().is_empty() {
            problems.push("`name` is empty".to_string());
        }
        for (what, v) in [("table", &c.table), ("database", &c.database)] {
            let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                problems.push(format!("`{what}` must be a lower-case name (letters, digits, _), found `{v}`"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &CrawlerConfig, ctx: &template::Context) -> Result<RenderedCrawler, TemplateError> {
        Ok(RenderedCrawler {
            name: c.name.clone(),
            database: c.database.clone(),
            table: c.table.clone(),
            path: ctx.render(&c.path, Escaping::Path)?,
            schema_change: c.schema_change,
        })
    }

    async fn run(r: RenderedCrawler, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let summary = match &ctx.env {
            Env::Local(local) => run_local(&r, local, &ctx).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws::run(&r.name, aws, &ctx).await?,
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}

/// Local: crawl the lake prefix into the local catalog.
async fn run_local(r: &RenderedCrawler, local: &LocalEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let cfg = cartflow_jobs::crawl::CrawlConfig {
        lake: local.lake.clone(),
        prefix: r.path.clone(),
        database: r.database.clone(),
        table: r.table.clone(),
        schema_change: r.schema_change,
    };
    let catalog_path = local.catalog.clone();
    ctx.log.line(format_args!("crawling {} into {}.{}", r.path, r.database, r.table));
    let report = tokio::task::spawn_blocking(move || {
        let mut cat = cartflow_jobs::catalog::Catalog::open(&catalog_path).map_err(|e| e.to_string())?;
        cartflow_jobs::crawl::crawl(&cfg, &mut cat).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| TaskFailure::new(format!("crawler panicked: {e}")))?
    .map_err(TaskFailure::new)?;
    Ok(format!(
        "{} {}: {} column(s), {} file(s), {} new partition(s) of {}{}",
        report.table,
        if report.created { "created" } else { "updated" },
        report.columns.len(),
        report.files,
        report.partitions_added,
        report.partitions_total,
        report.schema_change.as_ref().map(|c| format!("; schema change: {c}")).unwrap_or_default()
    ))
}

/// AWS: the named crawler.
#[cfg(feature = "aws")]
mod aws {
    use aws_sdk_glue::Client;

    use crate::aws::{AwsEnv, AwsError, Phase, WatchEnd, watch};
    use crate::task::{TaskContext, TaskFailure};

    /// Where the crawl stands. With `since` (epoch seconds of our StartCrawler), a READY crawler
    /// whose last crawl began before it is still "starting": GetCrawler can show the previous
    /// crawl for a moment after StartCrawler, and its status is not ours. (60 s of clock skew
    /// are allowed.)
    async fn crawler_phase(
        client: &Client,
        name: &str,
        since: Option<i64>,
    ) -> Result<(Phase, Option<String>), AwsError> {
        let out =
            client.get_crawler().name(name).send().await.map_err(|e| AwsError::new("glue:GetCrawler", name, e))?;
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
    pub async fn run(name: &str, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
        let client = &aws.clients.glue;
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
        let line = |l: &str| log.line(l);
        match watch(&what, aws.backoff(), &line, &ctx.cancel, probe).await {
            Ok(Phase::Succeeded) => {
                let started = crawler_phase(client, name, None).await.ok().and_then(|(_, s)| s).unwrap_or_default();
                Ok(format!("crawl of {name} (started {started}) SUCCEEDED"))
            }
            Ok(Phase::Failed(m)) => Err(TaskFailure::new(format!("crawl of {name} failed: {m}"))),
            Ok(Phase::Stopped(m)) => Err(TaskFailure::new(format!("crawl of {name} was cancelled: {m}"))),
            Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
            Err(WatchEnd::Cancelled) if ctx.handover.is_cancelled() => Err(TaskFailure::new(format!(
                "the run was taken over by another process; crawler {name} is left running for it"
            ))),
            Err(WatchEnd::Cancelled) => {
                let _ = client.stop_crawler().name(name).send().await;
                log.line(format_args!("crawler {name}: task cancelled; stop requested"));
                Err(TaskFailure::new(format!("cancelled; crawler {name} was asked to stop")))
            }
            Err(WatchEnd::Unreachable(e)) => Err(TaskFailure::new(format!("lost track of crawler {name}: {e}"))),
        }
    }
}
