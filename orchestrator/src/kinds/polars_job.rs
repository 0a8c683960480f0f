//! `polars_job`: the Rust/Polars data jobs of the lake (`jobs/`), run for the task's
//! interval. Jobs: `compact` (a raw partition of many small gzip JSON objects → a few
//! Parquet files near a target size, lossless, published by a swap).
//!
//! Local: Polars on the lake folder. AWS: the same job over the partition on S3: downloaded to
//! a scratch folder, compacted by the same Rust job, and uploaded back (new objects first, then
//! the previous version's objects are deleted: readers may briefly see both, never neither).

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
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

/// The largest `target_file_mib`: 1 TiB.
const MAX_TARGET_MIB: u64 = 1 << 20;

impl Kind for PolarsJob {
    const NAME: &'static str = "polars_job";
    const ABOUT: &'static str = "a Polars data job (compact) over the task's partition";
    type Config = PolarsJobConfig;
    type Rendered = RenderedPolarsJob;

    fn validate(c: &PolarsJobConfig, _env: &CompileEnv) -> Result<(), String> {
        // Bytes are MiB * 2^20: bounded so that the product fits (and means a file size).
        if c.target_file_mib == 0 || c.target_file_mib > MAX_TARGET_MIB {
            return Err(format!(
                "`target_file_mib` must be between 1 and {MAX_TARGET_MIB} (1 TiB), found {}",
                c.target_file_mib
            ));
        }
        Ok(())
    }

    fn render(c: &PolarsJobConfig, ctx: &template::Context) -> Result<RenderedPolarsJob, TemplateError> {
        Ok(RenderedPolarsJob {
            job: c.job,
            date: ctx.render(&c.date, Escaping::Date)?,
            target_file_mib: c.target_file_mib,
        })
    }

    async fn run(r: RenderedPolarsJob, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        if chrono::NaiveDate::parse_from_str(&r.date, "%Y-%m-%d").is_err() {
            return Err(TaskFailure::permanent(format!("`date` must be YYYY-MM-DD, got `{}`", r.date)));
        }
        let report = match (r.job, &ctx.env) {
            #[cfg(feature = "aws")]
            (JobName::Compact, Env::Aws(aws)) => {
                aws::compact(aws, &r.date, r.target_file_mib * 1024 * 1024, &ctx).await?
            }
            (JobName::Compact, Env::Local(local)) => {
                let stop = cartflow_jobs::stop::Stop::new();
                let cfg = cartflow_jobs::compact::CompactConfig {
                    lake: local.lake.clone(),
                    date: r.date.clone(),
                    target_file_bytes: r.target_file_mib * 1024 * 1024,
                    stop: stop.clone(),
                };
                ctx.log.line(format_args!("compacting raw/events/dt={} in {}", r.date, local.lake.display()));
                super::in_process(&ctx, "compaction", stop, move || cartflow_jobs::compact::compact(&cfg))
                    .await?
                    .map_err(|e| TaskFailure::new(e.to_string()))?
            }
        };
        let summary = format!(
            "rows in {} = rows out {} ({} unparsable kept in _raw); {} raw object(s) -> {} part(s), {} bytes at {}; {} blank line(s) skipped",
            report.rows_in,
            report.rows_out,
            report.unparsable,
            report.files_in,
            report.files_out,
            report.bytes_out,
            report.location,
            report.blank_lines
        );
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}

/// AWS: the partition on S3, through a scratch folder.
#[cfg(feature = "aws")]
mod aws {
    use crate::aws::{AwsEnv, AwsError, s3};
    use crate::task::{TaskContext, TaskFailure};

    /// Compacts `raw/events/dt=DATE` on S3 into `staged/events/dt=DATE`.
    pub async fn compact(
        aws: &AwsEnv,
        date: &str,
        target_file_bytes: u64,
        ctx: &TaskContext,
    ) -> Result<cartflow_jobs::compact::CompactReport, TaskFailure> {
        let clients = &aws.clients;
        let fail = |e: AwsError| TaskFailure::new(e.to_string());
        let rel_raw = format!("raw/events/dt={date}");
        let rel_staged = format!("{}/dt={date}", cartflow_jobs::compact::STAGED_EVENTS);
        let raw = aws.locate(&rel_raw).map_err(TaskFailure::permanent)?;
        let staged = aws.locate(&rel_staged).map_err(TaskFailure::permanent)?.dir();
        let scratch = tempfile::Builder::new()
            .prefix("cartflow-compact-")
            .tempdir()
            .map_err(|e| TaskFailure::new(format!("scratch folder: {e}")))?;
        let files = s3::download(&clients.s3, &raw, &scratch.path().join(&rel_raw)).await.map_err(fail)?;
        ctx.log.line(format_args!("downloaded {} raw object(s) from {}", files.len(), raw.dir()));
        let stop = cartflow_jobs::stop::Stop::new();
        let cfg = cartflow_jobs::compact::CompactConfig {
            lake: scratch.path().to_path_buf(),
            date: date.to_string(),
            target_file_bytes,
            stop: stop.clone(),
        };
        let report = crate::kinds::in_process(ctx, "compaction", stop, move || cartflow_jobs::compact::compact(&cfg))
            .await?
            .map_err(|e| TaskFailure::new(e.to_string()))?;
        let old: Vec<String> = s3::list(&clients.s3, &staged).await.map_err(fail)?.into_iter().map(|o| o.key).collect();
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let out_dir = scratch.path().join(&rel_staged);
        let mut parts: Vec<_> = std::fs::read_dir(&out_dir)
            .map_err(|e| TaskFailure::new(format!("{}: {e}", out_dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        parts.sort();
        let mut new = Vec::new();
        for p in &parts {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("part");
            let loc = staged.join(&format!("{stem}-{stamp}.parquet"));
            s3::upload(&clients.s3, p, &loc).await.map_err(fail)?;
            new.push(loc.key);
        }
        let stale: Vec<String> = old.into_iter().filter(|k| !new.contains(k)).collect();
        s3::delete(&clients.s3, &staged.bucket, &stale).await.map_err(fail)?;
        ctx.log.line(format_args!(
            "uploaded {} part(s) to {staged}; removed {} object(s) of the previous version",
            new.len(),
            stale.len()
        ));
        Ok(cartflow_jobs::compact::CompactReport { location: staged.uri(), ..report })
    }
}
