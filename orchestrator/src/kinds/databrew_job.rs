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

use super::{Backend, CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
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
        let path = env.project_dir.join(&c.recipe);
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
        if ctx.backend == Backend::Aws {
            let clients = crate::aws::Clients::load(&ctx.aws).await;
            ctx.log.line(format_args!(
                "DataBrew job {} (its dataset and the recipe {} are deployed by infra/; the run takes no parameters)",
                r.job_name,
                r.recipe.display()
            ));
            let id = crate::aws::databrew::run_job(&clients.databrew, &r.job_name, &ctx).await?;
            let summary = format!("DataBrew job {} run {id} SUCCEEDED", r.job_name);
            ctx.log.line(&summary);
            return Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() });
        }
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
        let lake = ctx.lake.clone();
        let report = tokio::task::spawn_blocking(move || {
            cartflow_jobs::recipe::run_job(&lake, &recipe, &r.input, &r.output, &r.date)
        })
        .await
        .map_err(|e| TaskFailure::new(format!("the recipe job panicked: {e}")))?
        .map_err(|e| match e {
            cartflow_jobs::recipe::RecipeJobError::Recipe(e) => TaskFailure::permanent(e.to_string()),
            other => TaskFailure::new(other.to_string()),
        })?;
        let summary = format!(
            "rows in {} = out {} + removed by the recipe {}; {} columns at {}",
            report.rows_in,
            report.rows_out,
            report.removed,
            report.columns.len(),
            report.location
        );
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}
