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
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
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
        let summary = match &ctx.env {
            Env::Local(local) => run_local(r, local, &ctx).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws::run(&r, aws, &ctx).await?,
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}

/// Local: the recipe interpreted with Polars over the lake folder.
async fn run_local(r: RenderedDatabrewJob, local: &LocalEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
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
    let report = tokio::task::spawn_blocking(move || {
        cartflow_jobs::recipe::run_job(&lake, &recipe, &r.input, &r.output, &r.date)
    })
    .await
    .map_err(|e| TaskFailure::new(format!("the recipe job panicked: {e}")))?
    .map_err(|e| match e {
        cartflow_jobs::recipe::RecipeJobError::Recipe(e) => TaskFailure::permanent(e.to_string()),
        other => TaskFailure::new(other.to_string()),
    })?;
    Ok(format!(
        "rows in {} = out {} + removed by the recipe {}; {} columns at {}",
        report.rows_in,
        report.rows_out,
        report.removed,
        report.columns.len(),
        report.location
    ))
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
    /// dataset and recipe (deployed by infra/) decide what it reads. The run id is saved before
    /// polling; a retry re-attaches; a start refused because the job is already running (a run
    /// of an earlier attempt whose id was not saved yet) attaches to that run.
    pub async fn run(r: &RenderedDatabrewJob, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
        ctx.log.line(format_args!(
            "DataBrew job {} (its dataset and the recipe {} are deployed by infra/; the run takes no parameters)",
            r.job_name,
            r.recipe.display()
        ));
        let job = DatabrewJobRun { client: aws.clients.databrew.clone(), job: r.job_name.clone() };
        let id = aws_job::run(&job, aws, ctx).await?;
        Ok(format!("DataBrew job {} run {id} SUCCEEDED", r.job_name))
    }

    struct DatabrewJobRun {
        client: Client,
        job: String,
    }

    impl DatabrewJobRun {
        /// The newest run of the job that is still going.
        async fn running(&self) -> Result<Option<String>, AwsError> {
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
                .and_then(|r| r.run_id().map(str::to_string)))
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
                        Some(id) => Ok(Started::Existing(id)),
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
}
