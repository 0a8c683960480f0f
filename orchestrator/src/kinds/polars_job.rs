//! `polars_job`: the Rust/Polars data jobs of the lake (`jobs/`), run for the task's
//! interval. Jobs: `compact` (a raw partition of many small gzip JSON objects → a few
//! Parquet files near a target size, lossless, published by a swap).
//!
//! Local: Polars on the lake folder. AWS: the same job over the partition on S3 (downloaded to
//! a scratch folder with the standard credential chain, the result uploaded back; see
//! `aws::lake`).

use serde::{Deserialize, Serialize};

use super::{Backend, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `polars_job` kind.
#[derive(Debug)]
pub struct PolarsJob;

/// Which job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobName {
    /// Raw partition → Parquet parts.
    Compact,
}

/// Config of a `polars_job` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolarsJobConfig {
    /// The job to run.
    pub job: JobName,
    /// The partition date, `YYYY-MM-DD` (default `{{ ds }}`).
    #[serde(default = "default_date")]
    pub date: Template,
    /// Target size of a Parquet part in MiB (default 128).
    #[serde(default = "default_target_mib")]
    pub target_file_mib: u64,
}

fn default_date() -> Template {
    Template::from("{{ ds }}")
}

fn default_target_mib() -> u64 {
    128
}

/// A rendered `polars_job`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedPolarsJob {
    /// The job.
    pub job: JobName,
    /// The partition.
    pub date: String,
    /// Target part size in MiB.
    pub target_file_mib: u64,
}

impl Kind for PolarsJob {
    const NAME: &'static str = "polars_job";
    const ABOUT: &'static str = "a Polars data job (compact) over the task's partition";
    type Config = PolarsJobConfig;
    type Rendered = RenderedPolarsJob;

    fn validate(c: &PolarsJobConfig, _env: &super::CompileEnv) -> Result<(), String> {
        if c.target_file_mib == 0 {
            return Err("`target_file_mib` must be at least 1".into());
        }
        Ok(())
    }

    fn render(c: &PolarsJobConfig, ctx: &template::Context) -> Result<RenderedPolarsJob, TemplateError> {
        Ok(RenderedPolarsJob {
            job: c.job,
            date: ctx.render(&c.date, Escaping::Path)?,
            target_file_mib: c.target_file_mib,
        })
    }

    async fn run(r: RenderedPolarsJob, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        if chrono::NaiveDate::parse_from_str(&r.date, "%Y-%m-%d").is_err() {
            return Err(TaskFailure::permanent(format!("`date` must be YYYY-MM-DD, got `{}`", r.date)));
        }
        let report = match (r.job, ctx.backend) {
            (JobName::Compact, Backend::Aws) => {
                let clients = crate::aws::Clients::load(&ctx.aws).await;
                crate::aws::lake::compact(&clients, &r.date, r.target_file_mib * 1024 * 1024, &ctx).await?
            }
            (JobName::Compact, Backend::Local) => {
                let cfg = cartflow_jobs::compact::CompactConfig {
                    lake: ctx.lake.clone(),
                    date: r.date.clone(),
                    target_file_bytes: r.target_file_mib * 1024 * 1024,
                };
                ctx.log.line(format_args!("compacting raw/events/dt={} in {}", r.date, ctx.lake.display()));
                tokio::task::spawn_blocking(move || cartflow_jobs::compact::compact(&cfg))
                    .await
                    .map_err(|e| TaskFailure::new(format!("compaction panicked: {e}")))?
                    .map_err(|e| TaskFailure::new(e.to_string()))?
            }
        };
        let summary = format!(
            "rows in {} = rows out {} ({} unparsable kept in _raw); {} raw object(s) -> {} part(s), {} bytes at {}",
            report.rows_in,
            report.rows_out,
            report.unparsable,
            report.files_in,
            report.files_out,
            report.bytes_out,
            report.location
        );
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}
