//! `glue_crawler`: a Glue crawler. Local: crawl the lake prefix, infer the schema with Glue
//! type names, find Hive partitions, create or update the table in the local catalog and
//! add new partitions, with Glue's schema-change policy. AWS: StartCrawler on the named
//! crawler (with the AWS batch backend).

use serde::{Deserialize, Serialize};

use super::{Backend, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};
use cartflow_jobs::crawl::SchemaChangePolicy;

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
        if ctx.backend == Backend::Aws {
            let clients = crate::aws::Clients::load(&ctx.aws).await;
            let summary = crate::aws::glue::run_crawler(&clients.glue, &r.name, &ctx).await?;
            ctx.log.line(&summary);
            return Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() });
        }
        let cfg = cartflow_jobs::crawl::CrawlConfig {
            lake: ctx.lake.clone(),
            prefix: r.path.clone(),
            database: r.database.clone(),
            table: r.table.clone(),
            schema_change: r.schema_change,
        };
        let catalog_path = ctx.catalog.clone();
        ctx.log.line(format_args!("crawling {} into {}.{}", r.path, r.database, r.table));
        let report = tokio::task::spawn_blocking(move || {
            let mut cat = cartflow_jobs::catalog::Catalog::open(&catalog_path).map_err(|e| e.to_string())?;
            cartflow_jobs::crawl::crawl(&cfg, &mut cat).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| TaskFailure::new(format!("crawler panicked: {e}")))?
        .map_err(TaskFailure::new)?;
        let summary = format!(
            "{} {}: {} column(s), {} file(s), {} new partition(s) of {}{}",
            report.table,
            if report.created { "created" } else { "updated" },
            report.columns.len(),
            report.files,
            report.partitions_added,
            report.partitions_total,
            report.schema_change.as_ref().map(|c| format!("; schema change: {c}")).unwrap_or_default()
        );
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}
