//! `glue_job`: a Glue ETL job. Local: the job's Rust equivalent, with the same semantics as
//! the PySpark script in `glue-scripts/` (today: `clean_events`). AWS: StartJobRun with the
//! rendered arguments and `--date`; the JobRunId is saved in the run store before polling, so
//! a retry or a resumed run re-attaches to a run that is still going; GetJobRun's
//! ErrorMessage becomes the task's error; cancelling the task stops the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, Publishes, TaskContext, TaskFailure, TaskOutput};
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
    /// `clean_events`, the one job, publishes clean events with their quarantine.
    const PUBLISHES: Publishes = Publishes::TableWithQuarantine;

    /// Every problem of the task at once.
    fn validate(c: &GlueJobConfig, _env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        if c.job_name.trim().is_empty() {
            problems.push("`job_name` is empty".to_string());
        }
        for k in c.arguments.keys().filter(|k| !k.starts_with("--")) {
            problems.push(format!("job argument `{k}` must start with `--` (Glue's convention)"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &GlueJobConfig, ctx: &template::Context) -> Result<RenderedGlueJob, TemplateError> {
        Ok(RenderedGlueJob {
            job_name: c.job_name.clone(),
            local: c.local,
            date: ctx.render(&c.date, Escaping::Date)?,
            arguments: c
                .arguments
                .iter()
                .map(|(k, v)| Ok((k.clone(), ctx.render(v, Escaping::SqlLiteral)?)))
                .collect::<Result<_, TemplateError>>()?,
        })
    }

    async fn run(r: RenderedGlueJob, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let (summary, checks_failed) = match &ctx.env {
            Env::Local(local) => run_local(&r, local, &ctx).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => (aws::run(&r, aws, &ctx).await?, None),
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), checks_failed, ..TaskOutput::default() })
    }
}

/// Local: the job's Rust equivalent, its output staged, checked (the task's `checks:`) and
/// then published. Returns the summary and the failed `warn` checks.
async fn run_local(
    r: &RenderedGlueJob,
    local: &LocalEnv,
    ctx: &TaskContext,
) -> Result<(String, Option<String>), TaskFailure> {
    match r.local {
        LocalJob::CleanEvents => {
            let lake = local.lake.clone();
            let date = r.date.clone();
            ctx.log.line(format_args!("clean_events for dt={date} (local equivalent of Glue job {})", r.job_name));
            let (report, staged) = tokio::task::spawn_blocking(move || cartflow_jobs::clean::stage(&lake, &date))
                .await
                .map_err(|e| TaskFailure::new(format!("clean_events panicked: {e}")))?
                .map_err(|e| TaskFailure::new(e.to_string()))?;
            let target = crate::checks::Staged {
                quarantine: staged.fresh(1).map(std::path::Path::to_path_buf),
                ..crate::checks::Staged::partition(&staged, 0)
            };
            // A failed check returns here: dropping `staged` deletes it, the partition stays as it was.
            let (results, checks_failed) = super::local_checks(ctx, local, target).await?;
            let live = local.lake.join(&report.location);
            tokio::task::spawn_blocking(move || staged.publish())
                .await
                .map_err(|e| TaskFailure::new(format!("clean_events panicked: {e}")))?
                .map_err(|e| TaskFailure::new(format!("publishing {}: {e}", live.display())))?;
            let reasons: Vec<String> = report.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let summary = format!(
                "rows in {} = clean {} + quarantined {} + duplicates {}{}{}",
                report.rows_in,
                report.clean,
                report.quarantined,
                report.duplicates,
                if reasons.is_empty() { String::new() } else { format!(" (quarantine: {})", reasons.join(", ")) },
                crate::checks::summary(&results)
            );
            Ok((summary, checks_failed))
        }
    }
}

/// AWS: StartJobRun with the rendered arguments, re-attached to on retry.
#[cfg(feature = "aws")]
mod aws {
    use std::collections::HashMap;

    use aws_sdk_glue::Client;

    use super::RenderedGlueJob;
    use crate::aws::{AwsEnv, AwsError, Phase};
    use crate::kinds::aws_job::{self, JobRun, Started};
    use crate::task::{TaskContext, TaskFailure};

    /// The job argument that names the task instance a Glue job run belongs to, so that a run
    /// started just before a crash (its id not yet saved) is still found and attached to, by
    /// this process or by the one on another host that takes the run over.
    pub const RUN_KEY_ARG: &str = "--cartflow-task";

    /// The fact holding this task instance's run key: saved before the first StartJobRun and
    /// cleared with the other facts when the task is run afresh (`--rerun`, `--task`), so that
    /// a rerun starts a new job run instead of finding the one that succeeded before.
    const RUN_KEY_FACT: &str = "glue_run_key";

    /// At most this many pages of GetJobRuns (200 runs each) are looked through for our run.
    const MAX_PAGES: usize = 50;

    pub async fn run(r: &RenderedGlueJob, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
        let mut arguments: HashMap<String, String> = r.arguments.clone().into_iter().collect();
        arguments.insert("--date".into(), r.date.clone());
        let run_key = match ctx.facts.get(RUN_KEY_FACT)? {
            Some(key) => key,
            None => {
                let nonce = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
                let key = format!("{}/{}/{}/{nonce:x}", ctx.dag_id, ctx.run_id, ctx.task_id);
                ctx.facts.set(RUN_KEY_FACT, &key)?;
                key
            }
        };
        arguments.insert(RUN_KEY_ARG.into(), run_key.clone());
        let job = GlueJobRun { client: aws.clients.glue.clone(), job: r.job_name.clone(), arguments, run_key };
        let id = aws_job::run(&job, aws, ctx).await?;
        Ok(format!("Glue job {} run {id} SUCCEEDED for dt={}", r.job_name, r.date))
    }

    /// One Glue job of one task instance: its arguments carry [`RUN_KEY_ARG`] = `run_key`.
    struct GlueJobRun {
        client: Client,
        job: String,
        arguments: HashMap<String, String>,
        run_key: String,
    }

    impl JobRun for GlueJobRun {
        const FACT: &'static str = "glue_job_run_id";

        fn what(&self) -> String {
            format!("Glue job {}", self.job)
        }

        async fn describe(&self, id: &str) -> Result<Phase, AwsError> {
            let (c, job) = (&self.client, &self.job);
            let out = c
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

        async fn start(&self) -> Result<Started, AwsError> {
            let (c, j) = (&self.client, &self.job);
            // A run of this task started before a crash, before its id was saved, is attached
            // to, not duplicated: one still going, or one that succeeded (the task's success).
            // A run of it that failed or was stopped is an attempt that ended; a new one starts.
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let page = c
                    .get_job_runs()
                    .job_name(j)
                    .max_results(200)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::new("glue:GetJobRuns", j, e))?;
                let ours = page.job_runs().iter().find(|r| {
                    let phase = Phase::glue_job_run(r.job_run_state().map(|s| s.as_str()).unwrap_or(""), None);
                    r.arguments().and_then(|a| a.get(RUN_KEY_ARG)).is_some_and(|k| *k == self.run_key)
                        && (!phase.is_terminal() || phase == Phase::Succeeded)
                });
                if let Some(id) = ours.and_then(|r| r.id()).filter(|id| !id.is_empty()) {
                    return Ok(Started::Existing(id.to_string()));
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
            let out = c
                .start_job_run()
                .job_name(j)
                .set_arguments(Some(self.arguments.clone()))
                .send()
                .await
                .map_err(|e| AwsError::new("glue:StartJobRun", j, e))?;
            Ok(Started::New(out.job_run_id().unwrap_or_default().to_string()))
        }

        async fn stop(&self, id: &str) -> Result<(), AwsError> {
            let (c, j) = (&self.client, &self.job);
            let out = c
                .batch_stop_job_run()
                .job_name(j)
                .job_run_ids(id)
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
        }
    }
}
