//! Owning one long-running AWS job per task: start it once, save its id in the run store
//! before polling, and on a retry or a resumed run re-attach to it instead of starting a
//! second one. Shared by Glue job runs and DataBrew job runs (Athena keeps its own, richer
//! record: see `athena`).

use super::{AwsError, Phase, WatchEnd, watch};
use crate::kinds::{BoxFuture, TaskContext, TaskFailure};

/// How a start request went.
#[derive(Debug)]
pub enum Started {
    /// A new job run with this id.
    New(String),
    /// The service already runs one for us (found by its arguments, or the only running one
    /// of a job that allows one): attach to it.
    Existing(String),
}

/// The service calls of one kind of job.
pub struct JobOps {
    /// What the log calls it, e.g. "Glue job ecommerce-clean-events".
    pub what: String,
    /// The run store key of the job run id.
    pub fact: &'static str,
    /// Where a job run stands.
    pub describe: Box<dyn Fn(String) -> BoxFuture<'static, Result<Phase, AwsError>> + Send + Sync>,
    /// Starts one (or finds the one already running for this task).
    pub start: Box<dyn Fn() -> BoxFuture<'static, Result<Started, AwsError>> + Send + Sync>,
    /// Stops one.
    pub stop: Box<dyn Fn(String) -> BoxFuture<'static, Result<(), AwsError>> + Send + Sync>,
}

impl std::fmt::Debug for JobOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOps").field("what", &self.what).field("fact", &self.fact).finish_non_exhaustive()
    }
}

/// Runs the job to its end: attach or start, then poll. Returns the run id on success; a
/// failed or stopped run becomes a (retryable) task failure carrying the service's message.
pub async fn run(ops: JobOps, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let log = &ctx.log;
    let mut attached = None;
    if let Some(id) = ctx.facts.get(ops.fact)? {
        match (ops.describe)(id.clone()).await {
            Ok(Phase::Running(state)) => {
                log.line(format_args!(
                    "{}: re-attaching to run {id} ({state}), started by an earlier attempt",
                    ops.what
                ));
                attached = Some(id);
            }
            Ok(Phase::Succeeded) => {
                log.line(format_args!(
                    "{}: run {id}, started by an earlier attempt, already SUCCEEDED; not starting another",
                    ops.what
                ));
                return Ok(id);
            }
            Ok(other) => {
                log.line(format_args!(
                    "{}: the earlier attempt's run {id} ended ({other:?}); starting a new run",
                    ops.what
                ));
                ctx.facts.clear(ops.fact)?;
            }
            Err(e) => return Err(TaskFailure::new(e.to_string())),
        }
    }
    let id = match attached {
        Some(id) => id,
        None => {
            let id = match (ops.start)().await.map_err(|e| TaskFailure::new(e.to_string()))? {
                Started::New(id) => {
                    log.line(format_args!("{}: started run {id}", ops.what));
                    id
                }
                Started::Existing(id) => {
                    log.line(format_args!("{}: attaching to run {id}, already running for this task", ops.what));
                    id
                }
            };
            // Saved before polling: whatever happens next, a retry finds this run.
            ctx.facts.set(ops.fact, &id)?;
            id
        }
    };
    let describe = &ops.describe;
    let what = format!("{} run {id}", ops.what);
    match watch(&what, ctx.aws.backoff(), log, &ctx.cancel, || describe(id.clone())).await {
        Ok(Phase::Succeeded) => Ok(id),
        Ok(Phase::Failed(msg)) => Err(TaskFailure::new(format!("{what} failed: {msg}"))),
        Ok(Phase::Stopped(msg)) => Err(TaskFailure::new(format!("{what} was stopped: {msg}"))),
        Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
        Err(WatchEnd::Cancelled) => {
            log.line(format_args!("{what}: task cancelled; stopping the run"));
            match (ops.stop)(id.clone()).await {
                Ok(()) => log.line(format_args!("{what}: stop requested")),
                Err(e) => log.line(format_args!("{what}: could not stop it: {e}")),
            }
            Err(TaskFailure::new(format!("cancelled; {what} was asked to stop")))
        }
        Err(WatchEnd::Unreachable(e)) => Err(TaskFailure::new(format!("lost track of {what}: {e}"))),
    }
}
