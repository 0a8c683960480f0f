//! `glue_job`: a Glue ETL job. Local: the job's Rust equivalent, with the same semantics as
//! the PySpark script in `glue-scripts/` (today: `clean_events`). AWS: StartJobRun with the
//! rendered arguments and `--date`; the JobRunId is saved in the run store before polling, so
//! a retry or a resumed run re-attaches to a run that is still going; GetJobRun's
//! ErrorMessage becomes the task's error; cancelling the task stops the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Backend, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `glue_job` kind.
#[derive(Debug)]
pub struct GlueJob;

/// The local implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalJob {
    /// Type, validate, de-duplicate and quarantine the staged events.
    CleanEvents,
}

/// Config of a `glue_job` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueJobConfig {
    /// The Glue job's name on AWS.
    pub job_name: String,
    /// Its Rust equivalent on the local backend.
    pub local: LocalJob,
    /// The partition date, `YYYY-MM-DD` (default `{{ ds }}`); passed to Glue as `--date`.
    #[serde(default = "default_date")]
    pub date: Template,
    /// More job arguments (`--name: value`), passed to Glue.
    #[serde(default)]
    pub arguments: BTreeMap<String, Template>,
}

fn default_date() -> Template {
    Template::from("{{ ds }}")
}

/// A rendered Glue job task.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedGlueJob {
    /// Job name.
    pub job_name: String,
    /// Local equivalent.
    pub local: LocalJob,
    /// Partition date.
    pub date: String,
    /// Arguments.
    pub arguments: BTreeMap<String, String>,
}

impl Kind for GlueJob {
    const NAME: &'static str = "glue_job";
    const ABOUT: &'static str = "a Glue ETL job (locally: its Rust equivalent, e.g. clean_events)";
    type Config = GlueJobConfig;
    type Rendered = RenderedGlueJob;

    fn validate(c: &GlueJobConfig, _env: &super::CompileEnv) -> Result<(), String> {
        if let Some(k) = c.arguments.keys().find(|k| !k.starts_with("--")) {
            return Err(format!("job argument `{k}` must start with `--` (Glue's convention)"));
        }
        Ok(())
    }

    fn render(c: &GlueJobConfig, ctx: &template::Context) -> Result<RenderedGlueJob, TemplateError> {
        Ok(RenderedGlueJob {
            job_name: c.job_name.clone(),
            local: c.local,
            date: ctx.render(&c.date, Escaping::Path)?,
            arguments: c
                .arguments
                .iter()
                .map(|(k, v)| Ok((k.clone(), ctx.render(v, Escaping::SqlLiteral)?)))
                .collect::<Result<_, TemplateError>>()?,
        })
    }

    async fn run(r: RenderedGlueJob, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        if ctx.backend == Backend::Aws {
            let clients = crate::aws::Clients::load(&ctx.aws).await;
            let mut args: std::collections::HashMap<String, String> = r.arguments.clone().into_iter().collect();
            args.insert("--date".into(), r.date.clone());
            let key = format!("{}/{}/{}", ctx.dag_id, ctx.run_id, ctx.task_id);
            let id = crate::aws::glue::run_job(&clients.glue, &r.job_name, args, &key, &ctx).await?;
            let summary = format!("Glue job {} run {id} SUCCEEDED for dt={}", r.job_name, r.date);
            ctx.log.line(&summary);
            return Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() });
        }
        match r.local {
            LocalJob::CleanEvents => {
                let lake = ctx.lake.clone();
                let date = r.date.clone();
                ctx.log.line(format_args!("clean_events for dt={date} (local equivalent of Glue job {})", r.job_name));
                let report = tokio::task::spawn_blocking(move || cartflow_jobs::clean::clean(&lake, &date))
                    .await
                    .map_err(|e| TaskFailure::new(format!("clean_events panicked: {e}")))?
                    .map_err(|e| TaskFailure::new(e.to_string()))?;
                let reasons: Vec<String> = report.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
                let summary = format!(
                    "rows in {} = clean {} + quarantined {} + duplicates {}{}",
                    report.rows_in,
                    report.clean,
                    report.quarantined,
                    report.duplicates,
                    if reasons.is_empty() { String::new() } else { format!(" (quarantine: {})", reasons.join(", ")) }
                );
                ctx.log.line(&summary);
                Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
            }
        }
    }
}
