//! Owning one long-running AWS job per task: start it once, save its id in the run store
//! before polling, and on a retry or a resumed run re-attach to it instead of starting a
//! second one. Shared by the aws halves of `glue_job` and `databrew_job` (Athena keeps its own,
//! richer record: see `athena_ctas/aws.rs`).

use std::future::Future;

use crate::aws::{AwsEnv, AwsError, Phase, WatchEnd, watch};
use crate::task::{TaskContext, TaskFailure};

/// How a start request went.
#[derive(Debug)]
pub enum Started {
    /// A new job run with this id.
    New(String),
    /// The service already runs one for us (found by its arguments): attach to it.
    Existing(String),
    /// A run this task can use but may not own: it reads this task's input, and it may be
    /// another task's (a job that takes no arguments and runs one run at a time, such as a
    /// DataBrew recipe job). Attach to it (or take its success) but never stop it.
    Shared(String),
    /// The job allows one run at a time and runs one this task cannot use (it started before
    /// the task's input was ready, so it may not read it): wait for it to end, then start again.
    Busy(String),
}

/// The service calls of one kind of job run.
pub trait JobRun: Sync {
    /// The run store key of the job run id.
    const FACT: &'static str;
    /// What the log calls it, e.g. "Glue job ecommerce-clean-events".
    fn what(&self) -> String;
    /// Starts one (or finds the one already running for this task).
    fn start(&self) -> impl Future<Output = Result<Started, AwsError>> + Send;
    /// Where a job run stands.
    fn describe(&self, id: &str) -> impl Future<Output = Result<Phase, AwsError>> + Send;
    /// Stops one.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Runs of other tasks a job that allows one run at a time may keep this task waiting for.
const MAX_BUSY_WAITS: u32 = 20;

/// Runs the job to its end: attach or start, then poll. Returns the run id on success; a
/// failed or stopped run becomes a (retryable) task failure carrying the service's message.
pub async fn run<J: JobRun>(job: &J, aws: &AwsEnv, ctx: &TaskContext) -> Result<String, TaskFailure> {
    let log = &ctx.log;
    let name = job.what();
    let shared_fact = format!("{}_shared", J::FACT);
    let mut attached = None;
    let mut shared = ctx.facts.get(&shared_fact)?.is_some();
    if let Some(id) = ctx.facts.get(J::FACT)? {
        match job.describe(&id).await {
            Ok(Phase::Running(state)) => {
                log.line(format_args!("{name}: re-attaching to run {id} ({state}), started by an earlier attempt"));
                attached = Some(id);
            }
            Ok(Phase::Succeeded) => {
                log.line(format_args!(
                    "{name}: run {id}, started by an earlier attempt, already SUCCEEDED; not starting another"
                ));
                return Ok(id);
            }
            Ok(other) => {
                log.line(format_args!("{name}: the earlier attempt's run {id} ended ({other:?}); starting a new run"));
                ctx.facts.clear(J::FACT)?;
                ctx.facts.clear(&shared_fact)?;
                shared = false;
            }
            Err(e) => return Err(TaskFailure::new(e.to_string())),
        }
    }
    let id = match attached {
        Some(id) => id,
        None => {
            if shared {
                // Left by an attempt that ended before saving its run id: this start is afresh.
                ctx.facts.clear(&shared_fact)?;
                shared = false;
            }
            let mut waited = 0;
            let id = loop {
                match job.start().await.map_err(|e| TaskFailure::new(e.to_string()))? {
                    Started::New(id) if id.is_empty() => {
                        return Err(TaskFailure::new(format!("{name}: the service started a run without an id")));
                    }
                    Started::New(id) => {
                        log.line(format_args!("{name}: started run {id}"));
                        break id;
                    }
                    Started::Existing(id) => {
                        log.line(format_args!("{name}: attaching to run {id}, already started for this task"));
                        break id;
                    }
                    Started::Shared(id) => {
                        log.line(format_args!(
                            "{name}: using run {id}, which started after this task's input was ready (so it reads it); it may be another task's, so this task never stops it"
                        ));
                        shared = true;
                        break id;
                    }
                    Started::Busy(other) if waited < MAX_BUSY_WAITS => {
                        waited += 1;
                        log.line(format_args!(
                            "{name}: run {other} is running but started before this task's input was ready; waiting for it to end, then starting one"
                        ));
                        let what = format!("{name} run {other} (not this task's)");
                        let line = |l: &str| log.line(l);
                        match watch(&what, aws.backoff(), &line, &ctx.cancel, || job.describe(&other)).await {
                            Ok(_) => {}
                            Err(WatchEnd::Cancelled) => {
                                return Err(TaskFailure::new(format!(
                                    "cancelled while waiting for {what}, which is left running"
                                )));
                            }
                            Err(WatchEnd::Unreachable(e)) => {
                                return Err(TaskFailure::new(format!("lost track of {what}: {e}")));
                            }
                        }
                    }
                    Started::Busy(other) => {
                        return Err(TaskFailure::new(format!(
                            "{name}: still busy with another run ({other}) after waiting for {MAX_BUSY_WAITS} runs to end"
                        )));
                    }
                }
            };
            cartflow_jobs::crash::point("job.started");
            // Saved before polling: whatever happens next, a retry finds this run.
            if shared {
                ctx.facts.set(&shared_fact, "true")?;
            }
            ctx.facts.set(J::FACT, &id)?;
            id
        }
    };
    let what = format!("{name} run {id}");
    let id_ref = id.as_str();
    let line = |l: &str| log.line(l);
    match watch(&what, aws.backoff(), &line, &ctx.cancel, || job.describe(id_ref)).await {
        Ok(Phase::Succeeded) => Ok(id),
        Ok(Phase::Failed(msg)) => Err(TaskFailure::new(format!("{what} failed: {msg}"))),
        Ok(Phase::Stopped(msg)) => Err(TaskFailure::new(format!("{what} was stopped: {msg}"))),
        Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
        Err(WatchEnd::Cancelled) if ctx.handover.is_cancelled() => {
            log.line(format_args!("{what}: the run was taken over by another process; left running for it"));
            Err(TaskFailure::new(format!("the run was taken over by another process; {what} is left running for it")))
        }
        Err(WatchEnd::Cancelled) if shared => {
            log.line(format_args!("{what}: task cancelled; the run is not this task's own, so it is left running"));
            Err(TaskFailure::new(format!("cancelled; {what} (not this task's own) is left running")))
        }
        Err(WatchEnd::Cancelled) => {
            log.line(format_args!("{what}: task cancelled; stopping the run"));
            match job.stop(&id).await {
                Ok(()) => log.line(format_args!("{what}: stop requested")),
                Err(e) => log.line(format_args!("{what}: could not stop it: {e}")),
            }
            Err(TaskFailure::new(format!("cancelled; {what} was asked to stop")))
        }
        Err(WatchEnd::Unreachable(e)) => Err(TaskFailure::new(format!("lost track of {what}: {e}"))),
    }
}
