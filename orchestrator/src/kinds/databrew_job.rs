//! `databrew_job`: a DataBrew recipe job. Local: the same recipe JSON (`glue-scripts/databrew/`)
//! interpreted with Polars over the interval's partition (see `cartflow_jobs::recipe` for the
//! supported operations). AWS: StartJobRun / DescribeJobRun on the recipe job, its run id saved
//! before polling so that a retry re-attaches; cancelling stops the run.
//!
//! The recipe is read and checked when the DAG compiles: an operation the local interpreter
//! does not run is a compile error naming the step.

use std::path::PathBuf;

use cartflow_jobs::recipe::Recipe;
use serde::{Deserialize, Serialize};

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, Publishes, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `databrew_job` kind.
#[derive(Debug)]
pub struct DatabrewJob;

/// Config of a `databrew_job` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabrewJobConfig {
    /// The DataBrew recipe job's name on AWS.
    pub job_name: String,
    /// The recipe JSON, relative to the project folder.
    pub recipe: PathBuf,
    /// The input dataset's prefix under the lake (partitioned by `dt=`).
    pub input: String,
    /// The output prefix under the lake.
    pub output: String,
    /// The partition date, `YYYY-MM-DD` (default `{{ ds }}`).
    #[serde(default = "default_date")]
    pub date: Template,
}

fn default_date() -> Template {
    Template::from("{{ ds }}")
}

/// A rendered `databrew_job`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedDatabrewJob {
    /// Job name.
    pub job_name: String,
    /// Recipe file.
    pub recipe: PathBuf,
    /// Input prefix.
    pub input: String,
    /// Output prefix.
    pub output: String,
    /// Partition.
    pub date: String,
}

fn check_prefix(name: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|s| s == ".." || s.is_empty()) {
        return Err(format!("`{name}` must be a relative prefix under the lake like `clean/events`, found `{p}`"));
    }
    Ok(())
}

impl Kind for DatabrewJob {
    const NAME: &'static str = "databrew_job";
    const ABOUT: &'static str = "a DataBrew recipe job (locally: the recipe JSON interpreted with Polars)";
    type Config = DatabrewJobConfig;
    type Rendered = RenderedDatabrewJob;
    const PUBLISHES: Publishes = Publishes::Table;

    fn validate(c: &DatabrewJobConfig, env: &CompileEnv) -> Result<(), String> {
        check_prefix("input", &c.input)?;
        check_prefix("output", &c.output)?;
        let path = env.resolve(&c.recipe);
        if !path.exists() {
            return Err(format!("recipe file {} does not exist", path.display()));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("recipe file {}: {e}", path.display()))?;
        Recipe::parse(&c.recipe.display().to_string(), &text).map(|_| ()).map_err(|e| format!("recipe: {e}"))
    }

    fn render(c: &DatabrewJobConfig, ctx: &template::Context) -> Result<RenderedDatabrewJob, TemplateError> {
        Ok(RenderedDatabrewJob {
            job_name: c.job_name.clone(),
            recipe: c.recipe.clone(),
            input: c.input.clone(),
            output: c.output.clone(),
            date: ctx.render(&c.date, Escaping::Path)?,
        })
    }

    async fn run(r: RenderedDatabrewJob, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        if chrono::NaiveDate::parse_from_str(&r.date, "%Y-%m-%d").is_err() {
            return Err(TaskFailure::permanent(format!("`date` must be YYYY-MM-DD, got `{}`", r.date)));
        }
        let (summary, checks_failed) = match &ctx.env {
            Env::Local(local) => run_local(r, local, &ctx).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => (aws::run(&r, aws, &ctx).await?, None),
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), checks_failed, ..TaskOutput::default() })
    }
}

/// Local: the recipe interpreted with Polars over the lake folder, its output staged, checked
/// (the task's `checks:`) and then published. Returns the summary and the failed `warn` checks.
async fn run_local(
    r: RenderedDatabrewJob,
    local: &LocalEnv,
    ctx: &TaskContext,
) -> Result<(String, Option<String>), TaskFailure> {
    let path = ctx.project_dir.join(&r.recipe);
    let recipe = Recipe::load(&path).map_err(|e| TaskFailure::permanent(e.to_string()))?;
    ctx.log.line(format_args!(
        "recipe {} ({} steps) over {}/dt={} -> {} (local equivalent of DataBrew job {})",
        r.recipe.display(),
        recipe.steps.len(),
        r.input,
        r.date,
        r.output,
        r.job_name
    ));
    let lake = local.lake.clone();
    let (report, staged) = tokio::task::spawn_blocking(move || {
        cartflow_jobs::recipe::stage_job(&lake, &recipe, &r.input, &r.output, &r.date)
    })
    .await
    .map_err(|e| TaskFailure::new(format!("the recipe job panicked: {e}")))?
    .map_err(|e| match e {
        cartflow_jobs::recipe::RecipeJobError::Recipe(e) => TaskFailure::permanent(e.to_string()),
        other => TaskFailure::new(other.to_string()),
    })?;
    let mut results = Vec::new();
    let mut checks_failed = None;
    if !ctx.checks.is_empty() {
        let target = crate::checks::Staged::partition(&staged, 0);
        let (lake, catalog) = (local.lake.clone(), local.catalog.clone());
        let (checks, template, end) = (ctx.checks.clone(), ctx.template.clone(), ctx.interval.end);
        results = cartflow_jobs::sql::run_isolated(move || async move {
            crate::checks::local::run(&lake, &catalog, &checks, &target, &template, end).await
        })
        .await
        .map_err(|e| TaskFailure::new(format!("running the checks: {e}")))?;
        // Dropping `staged` on a failed check deletes it: the partition stays as it was.
        checks_failed = crate::checks::verdict(ctx, &results)?;
    }
    let live = local.lake.join(&report.location);
    tokio::task::spawn_blocking(move || staged.publish())
        .await
        .map_err(|e| TaskFailure::new(format!("the recipe job panicked: {e}")))?
        .map_err(|e| TaskFailure::new(format!("publishing {}: {e}", live.display())))?;
    let summary = format!(
        "rows in {} = out {} + removed by the recipe {}; {} columns at {}{}",
        report.rows_in,
        report.rows_out,
        report.removed,
        report.columns.len(),
        report.location,
        crate::checks::summary(&results)
    );
    Ok((summary, checks_failed))
}

/// AWS: the recipe job's runs, started once per task and re-attached to on retry.
#[cfg(feature = "aws")]
mod aws {
    use aws_sdk_databrew::Client;

    use super::RenderedDatabrewJob;
    use crate::aws::{AwsEnv, AwsError, Phase};
    use crate::kinds::aws_job::{self, JobRun, Started};
    use crate::task::{TaskContext, TaskFailure};

    /// Runs the DataBrew job to its end. DataBrew job runs take no parameters: the job's
    /// dataset and recipe (deployed by infra/) decide what it reads, and DataBrew runs one run
    /// of a job at a time. The run id is saved before polling; a retry re-attaches. A start
    /// refused because the job is already running attaches to that run only when it started
    /// after this task's input was ready (recorded as the fact `databrew_ready_at` before the
    /// first start, so a run of an earlier attempt whose id was not saved is found): such a run
    /// reads the input. A run that started before (another day's, in a backfill) may not have
    /// seen it: the task waits for that run to end and starts one of its own.
    pub async fn run(r: &RenderedDatabrewJob, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
        ctx.log.line(format_args!(
            "DataBrew job {} (its dataset and the recipe {} are deployed by infra/; the run takes no parameters)",
            r.job_name,
            r.recipe.display()
        ));
        let ready_at = match ctx.facts.get(READY_AT)?.and_then(|v| v.parse::<f64>().ok()) {
            Some(t) => t,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                ctx.facts.set(READY_AT, &format!("{now:.3}"))?;
                now
            }
        };
        let job = DatabrewJobRun { client: aws.clients.databrew.clone(), job: r.job_name.clone(), ready_at };
        let id = aws_job::run(&job, aws, ctx).await?;
        Ok(format!("DataBrew job {} run {id} SUCCEEDED", r.job_name))
    }

    /// The fact: when this task's input was ready (epoch seconds, this host's clock).
    const READY_AT: &str = "databrew_ready_at";

    /// How far apart this host's clock and DataBrew's may be: a run is taken to have started
    /// after the input was ready only when its StartedOn is at least this much later.
    const CLOCK_SKEW_SECS: f64 = 15.0;

    /// Whether a run that started at `started_on` (DataBrew's clock) read an input that was
    /// ready at `ready_at` (ours).
    pub(super) fn reads_input(started_on: Option<f64>, ready_at: f64) -> bool {
        started_on.is_some_and(|t| t >= ready_at + CLOCK_SKEW_SECS)
    }

    struct DatabrewJobRun {
        client: Client,
        job: String,
        ready_at: f64,
    }

    impl DatabrewJobRun {
        /// The newest run of the job that is still going, and when it started.
        async fn running(&self) -> Result<Option<(String, Option<f64>)>, AwsError> {
            let out = self
                .client
                .list_job_runs()
                .name(&self.job)
                .send()
                .await
                .map_err(|e| AwsError::new("databrew:ListJobRuns", &self.job, e))?;
            Ok(out
                .job_runs()
                .iter()
                .find(|r| !Phase::databrew_job_run(r.state().map(|s| s.as_str()).unwrap_or(""), None).is_terminal())
                .and_then(|r| r.run_id().map(|id| (id.to_string(), r.started_on().map(|t| t.as_secs_f64())))))
        }
    }

    impl JobRun for DatabrewJobRun {
        const FACT: &'static str = "databrew_run_id";

        fn what(&self) -> String {
            format!("DataBrew job {}", self.job)
        }

        async fn describe(&self, id: &str) -> Result<Phase, AwsError> {
            let job = &self.job;
            let out = self
                .client
                .describe_job_run()
                .name(job)
                .run_id(id)
                .send()
                .await
                .map_err(|e| AwsError::new("databrew:DescribeJobRun", format!("{job} run {id}"), e))?;
            let state = out.state().map(|s| s.as_str()).unwrap_or("STARTING");
            Ok(Phase::databrew_job_run(state, out.error_message()))
        }

        async fn start(&self) -> Result<Started, AwsError> {
            let j = &self.job;
            match self.client.start_job_run().name(j).send().await {
                Ok(out) => Ok(Started::New(out.run_id().to_string())),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conflict_exception() || s.is_service_quota_exceeded_exception()) =>
                {
                    match self.running().await? {
                        Some((id, started)) if reads_input(started, self.ready_at) => Ok(Started::Existing(id)),
                        Some((id, _)) => Ok(Started::Busy(id)),
                        None => Err(AwsError::new("databrew:StartJobRun", j, e)),
                    }
                }
                Err(e) => Err(AwsError::new("databrew:StartJobRun", j, e)),
            }
        }

        async fn stop(&self, id: &str) -> Result<(), AwsError> {
            let j = &self.job;
            self.client
                .stop_job_run()
                .name(j)
                .run_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::new("databrew:StopJobRun", format!("{j} run {id}"), e))
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_running_run_reads_the_input_only_when_it_started_after_it_was_ready_beyond_the_clock_skew() {
            let ready = 1_000_000.0;
            assert!(super::reads_input(Some(ready + 16.0), ready), "started well after: it reads the input");
            assert!(!super::reads_input(Some(ready + 5.0), ready), "within the skew: maybe not");
            assert!(!super::reads_input(Some(ready - 60.0), ready), "started before: another day's run");
            assert!(!super::reads_input(None, ready), "no start time: not known to read it");
        }
    }
}
