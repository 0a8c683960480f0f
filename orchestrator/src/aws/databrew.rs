//! DataBrew: recipe job runs, started once per task and re-attached to on retry.

use aws_sdk_databrew::Client;

use super::jobs::{JobOps, Started};
use super::{AwsError, Phase};
use crate::kinds::{TaskContext, TaskFailure};

async fn run_phase(client: &Client, job: &str, id: &str) -> Result<Phase, AwsError> {
    let out = client
        .describe_job_run()
        .name(job)
        .run_id(id)
        .send()
        .await
        .map_err(|e| AwsError::new("databrew:DescribeJobRun", format!("{job} run {id}"), e))?;
    let state = out.state().map(|s| s.as_str()).unwrap_or("STARTING");
    Ok(Phase::databrew_job_run(state, out.error_message()))
}

/// The newest run of `job` that is still going.
async fn running(client: &Client, job: &str) -> Result<Option<String>, AwsError> {
    let out =
        client.list_job_runs().name(job).send().await.map_err(|e| AwsError::new("databrew:ListJobRuns", job, e))?;
    Ok(out
        .job_runs()
        .iter()
        .find(|r| !Phase::databrew_job_run(r.state().map(|s| s.as_str()).unwrap_or(""), None).is_terminal())
        .and_then(|r| r.run_id().map(str::to_string)))
}

/// Runs a DataBrew job to its end. DataBrew job runs take no parameters: the job's dataset
/// and recipe (deployed by infra/) decide what it reads. The run id is saved before polling;
/// a retry re-attaches; a start refused because the job is already running (a run of an
/// earlier attempt whose id was not saved yet) attaches to that run.
pub async fn run_job(client: &Client, job: &str, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let (c1, c2, c3) = (client.clone(), client.clone(), client.clone());
    let (j1, j2, j3) = (job.to_string(), job.to_string(), job.to_string());
    let ops = JobOps {
        what: format!("DataBrew job {job}"),
        fact: "databrew_run_id",
        describe: Box::new(move |id| {
            let (c, j) = (c1.clone(), j1.clone());
            Box::pin(async move { run_phase(&c, &j, &id).await })
        }),
        start: Box::new(move || {
            let (c, j) = (c2.clone(), j2.clone());
            Box::pin(async move {
                match c.start_job_run().name(&j).send().await {
                    Ok(out) => Ok(Started::New(out.run_id().to_string())),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conflict_exception() || s.is_service_quota_exceeded_exception()) =>
                    {
                        match running(&c, &j).await? {
                            Some(id) => Ok(Started::Existing(id)),
                            None => Err(AwsError::new("databrew:StartJobRun", &j, e)),
                        }
                    }
                    Err(e) => Err(AwsError::new("databrew:StartJobRun", &j, e)),
                }
            })
        }),
        stop: Box::new(move |id| {
            let (c, j) = (c3.clone(), j3.clone());
            Box::pin(async move {
                c.stop_job_run()
                    .name(&j)
                    .run_id(&id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::new("databrew:StopJobRun", format!("{j} run {id}"), e))
            })
        }),
    };
    super::jobs::run(ops, ctx).await
}
