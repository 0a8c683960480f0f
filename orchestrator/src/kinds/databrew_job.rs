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

fn prefix_problem(name: &str, p: &str) -> Option<String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|s| s == ".." || s.is_empty()) {
        return Some(format!("`{name}` must be a relative prefix under the lake like `clean/events`, found `{p}`"));
    }
    None
}

impl Kind for DatabrewJob {
    const NAME: &'static str = "databrew_job";
    const ABOUT: &'static str = "a DataBrew recipe job (locally: the recipe JSON interpreted with Polars)";
    type Config = DatabrewJobConfig;
    type Rendered = RenderedDatabrewJob;
    const PUBLISHES: Publishes = Publishes::Table;

    /// Every problem of the task at once: a bad prefix does not hide a missing recipe.
    fn validate(c: &DatabrewJobConfig, env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        if c.job_name.trim().is_empty() {
            problems.push("`job_name` is empty".to_string());
        }
        problems.extend(prefix_problem("input", &c.input));
        problems.extend(prefix_problem("output", &c.output));
        let path = env.resolve(&c.recipe);
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("`recipe`: file {} does not exist", path.display()));
            }
            Err(e) => problems.push(format!("`recipe`: file {}: {e}", path.display())),
            Ok(text) => {
                if let Err(e) = Recipe::parse(&c.recipe.display().to_string(), &text) {
                    problems.push(format!("recipe: {e}"));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &DatabrewJobConfig, ctx: &template::Context) -> Result<RenderedDatabrewJob, TemplateError> {
        Ok(RenderedDatabrewJob {
            job_name: c.job_name.clone(),
            recipe: c.recipe.clone(),
            input: c.input.clone(),
            output: c.output.clone(),
            date: ctx.render(&c.date, Escaping::Date)?,
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
    // A failed check returns here: dropping `staged` deletes it, the partition stays as it was.
    let (results, checks_failed) =
        super::local_checks(ctx, local, crate::checks::Staged::partition(&staged, 0)).await?;
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
    use crate::aws::{AwsEnv, AwsError, Phase, s3};
    use crate::kinds::aws_job::{self, JobRun, Started};
    use crate::task::{TaskContext, TaskFailure};

    /// Runs the DataBrew job to its end. DataBrew job runs take no parameters: the job's
    /// dataset and recipe (deployed by infra/) decide what it reads (the dataset reads every
    /// `dt=` partition of the clean zone), and DataBrew runs one run of a job at a time. So a
    /// run reads this task's input exactly when it started after that input was written. The
    /// input's time is S3's: the newest LastModified of the data objects under
    /// `input/dt=DATE/`, compared with DataBrew's StartedOn (both AWS clocks; the host's clock
    /// plays no part).
    ///
    /// Before its first start the task records the newest run the job had (the fact
    /// `databrew_runs_before`). A start then uses, rather than starts: a run newer than that
    /// one which reads the input and is going or SUCCEEDED (this task's own, started in the
    /// instant before a crash, before its id was saved; or one another task started since), or
    /// any going run that reads the input. A going run that started before the input was
    /// written (another day's, in a backfill) is waited out, then the task starts its own. A
    /// run that ended before the task first looked is never taken: it may predate a recipe fix.
    /// The run id is saved before polling; a retry re-attaches. A run that is not known to be
    /// this task's own is never stopped.
    pub async fn run(r: &RenderedDatabrewJob, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
        ctx.log.line(format_args!(
            "DataBrew job {} (its dataset and the recipe {} are deployed by infra/; the run takes no parameters)",
            r.job_name,
            r.recipe.display()
        ));
        let part = format!("{}/dt={}", r.input, r.date);
        let loc = aws.locate(&part).map_err(TaskFailure::permanent)?;
        let dir = loc.dir();
        let objects = s3::list(&aws.clients.s3, &dir).await.map_err(|e| TaskFailure::new(e.to_string()))?;
        let ready_at = objects
            .iter()
            .filter(|o| s3::is_data(&dir.key, &o.key))
            .filter_map(|o| o.last_modified)
            .reduce(f64::max)
            .ok_or_else(|| {
                TaskFailure::new(format!(
                    "the recipe job's input {} holds no data objects: nothing to enrich",
                    dir.uri()
                ))
            })?;
        ctx.log.line(format_args!("input {} last written at {ready_at:.3} (S3's clock)", dir.uri()));
        let mut job =
            DatabrewJobRun { client: aws.clients.databrew.clone(), job: r.job_name.clone(), ready_at, seen: None };
        job.seen = match ctx.facts.get(RUNS_BEFORE)? {
            Some(id) => Some(id),
            None => {
                let newest =
                    job.runs().await.map_err(|e| TaskFailure::new(e.to_string()))?.first().map(|r| r.0.clone());
                let newest = newest.unwrap_or_default();
                ctx.facts.set(RUNS_BEFORE, &newest)?;
                Some(newest)
            }
        };
        let id = aws_job::run(&job, aws, ctx).await?;
        Ok(format!("DataBrew job {} run {id} SUCCEEDED", r.job_name))
    }

    /// The fact: the newest run the job had before this task first started one ("" for none).
    const RUNS_BEFORE: &str = "databrew_runs_before";

    /// How far apart S3's and DataBrew's clocks, and S3's whole-second LastModified, may put
    /// the two times: a run is taken to have started after the input was written only when its
    /// StartedOn is at least this much later than the input's LastModified.
    const CLOCK_SKEW_SECS: f64 = 1.0;

    /// Whether a run that started at `started_on` (DataBrew's clock) read an input that S3
    /// last wrote at `ready_at`.
    pub(super) fn reads_input(started_on: Option<f64>, ready_at: f64) -> bool {
        started_on.is_some_and(|t| t >= ready_at + CLOCK_SKEW_SECS)
    }

    struct DatabrewJobRun {
        client: Client,
        job: String,
        ready_at: f64,
        /// The newest run before this task first started one ("" for none).
        seen: Option<String>,
    }

    /// What the job's runs offer a task whose input was written at `ready_at`.
    #[derive(Debug, PartialEq)]
    pub(super) enum Offer {
        /// A run that reads the input: going, or SUCCEEDED since the task first looked.
        Reads(String),
        /// A run that is going but started before the input was written.
        Going(String),
        /// Nothing going, nothing usable.
        Nothing,
    }

    /// Chooses from runs listed newest first as (id, state, StartedOn); `seen` is the newest
    /// run before the task first started one ("" for none).
    pub(super) fn offer(runs: &[(String, String, Option<f64>)], ready_at: f64, seen: Option<&str>) -> Offer {
        let phase = |state: &str| Phase::databrew_job_run(state, None);
        let newer = match seen {
            Some(id) if !id.is_empty() => runs.iter().position(|r| r.0 == id).unwrap_or(runs.len()),
            Some(_) => runs.len(),
            None => 0,
        };
        if let Some((id, _, _)) =
            runs[..newer].iter().find(|(_, state, at)| phase(state) == Phase::Succeeded && reads_input(*at, ready_at))
        {
            return Offer::Reads(id.clone());
        }
        match runs.iter().find(|(_, state, _)| !phase(state).is_terminal()) {
            Some((id, _, at)) if reads_input(*at, ready_at) => Offer::Reads(id.clone()),
            Some((id, _, _)) => Offer::Going(id.clone()),
            None => Offer::Nothing,
        }
    }

    impl DatabrewJobRun {
        /// The job's recent runs, newest first: (id, state, StartedOn).
        async fn runs(&self) -> Result<Vec<(String, String, Option<f64>)>, AwsError> {
            let out = self
                .client
                .list_job_runs()
                .name(&self.job)
                .send()
                .await
                .map_err(|e| AwsError::new("databrew:ListJobRuns", &self.job, e))?;
            let mut runs: Vec<_> = out
                .job_runs()
                .iter()
                .filter_map(|r| {
                    let id = r.run_id()?.to_string();
                    let state = r.state().map(|s| s.as_str().to_string()).unwrap_or_default();
                    Some((id, state, r.started_on().map(|t| t.as_secs_f64())))
                })
                .collect();
            runs.sort_by(|a, b| b.2.unwrap_or(0.0).total_cmp(&a.2.unwrap_or(0.0)));
            Ok(runs)
        }

        fn offer(&self, runs: &[(String, String, Option<f64>)]) -> Offer {
            offer(runs, self.ready_at, self.seen.as_deref())
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
            if let Offer::Reads(id) = self.offer(&self.runs().await?) {
                return Ok(Started::Shared(id));
            }
            match self.client.start_job_run().name(j).send().await {
                Ok(out) => Ok(Started::New(out.run_id().to_string())),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conflict_exception() || s.is_service_quota_exceeded_exception()) =>
                {
                    // A run started between the listing and the start: look again.
                    match self.offer(&self.runs().await?) {
                        Offer::Reads(id) => Ok(Started::Shared(id)),
                        Offer::Going(id) => Ok(Started::Busy(id)),
                        Offer::Nothing => Err(AwsError::new("databrew:StartJobRun", j, e)),
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
        fn a_run_reads_the_input_only_when_it_started_after_s3_wrote_it_beyond_the_clock_skew() {
            let ready = 1_000_000.0;
            assert!(super::reads_input(Some(ready + 1.5), ready), "started after: it reads the input");
            assert!(!super::reads_input(Some(ready + 0.5), ready), "within the skew: maybe not");
            assert!(!super::reads_input(Some(ready - 60.0), ready), "started before: another day's run");
            assert!(!super::reads_input(None, ready), "no start time: not known to read it");
        }

        #[test]
        fn a_run_is_used_when_it_reads_the_input_and_is_going_or_succeeded_since_the_task_first_looked() {
            use super::{Offer, offer};
            let ready = 1_000_000.0;
            let run = |id: &str, state: &str, at: f64| (id.to_string(), state.to_string(), Some(at));
            let none = Some("");
            assert_eq!(offer(&[], ready, none), Offer::Nothing);
            // This task's own run, started in the instant before a crash: going or already done.
            assert_eq!(offer(&[run("own", "RUNNING", ready + 5.0)], ready, none), Offer::Reads("own".into()));
            assert_eq!(offer(&[run("own", "STARTING", ready + 5.0)], ready, none), Offer::Reads("own".into()));
            assert_eq!(
                offer(&[run("own", "SUCCEEDED", ready + 5.0), run("x", "SUCCEEDED", ready - 50.0)], ready, Some("x")),
                Offer::Reads("own".into())
            );
            // A success the task saw before it first started (it may predate a recipe fix) is not
            // taken, nor one that did not read the input, nor one that failed or was stopped.
            assert_eq!(offer(&[run("old", "SUCCEEDED", ready + 5.0)], ready, Some("old")), Offer::Nothing);
            assert_eq!(offer(&[run("early", "SUCCEEDED", ready - 5.0)], ready, none), Offer::Nothing);
            assert_eq!(
                offer(&[run("f", "FAILED", ready + 5.0), run("s", "STOPPED", ready + 2.0)], ready, none),
                Offer::Nothing
            );
            // A going run that reads the input is used, whoever started it.
            assert_eq!(
                offer(&[run("going", "RUNNING", ready + 5.0)], ready, Some("going")),
                Offer::Reads("going".into())
            );
            // One that is going but started before the input was written: wait it out.
            assert_eq!(
                offer(&[run("other", "RUNNING", ready - 3.0)], ready, Some("other")),
                Offer::Going("other".into())
            );
            assert_eq!(
                offer(
                    &[run("new", "SUCCEEDED", ready + 8.0), run("other", "RUNNING", ready - 3.0)],
                    ready,
                    Some("other")
                ),
                Offer::Reads("new".into())
            );
        }
    }
}
