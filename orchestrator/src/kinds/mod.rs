//! Task kinds: one module per kind, each with its config struct and both of its
//! implementations side by side — the local one and, under the `aws` cargo feature, the AWS
//! one (in `<kind>/aws.rs` where it is long). A kind implements
//! [`Kind`](crate::task::Kind) and matches on the [`Env`](crate::env::Env) its context carries.
//!
//! Adding a kind: its module here, and one line in [`REGISTRY`] (plus its SDK crate if its AWS
//! half calls a new service). `docs/dags.md`'s kind reference is generated from this registry
//! and the config structs' doc comments (a test fails when it is stale).

use crate::task::{KindEntry, entry};

pub mod athena_ctas;
#[cfg(feature = "aws")]
mod aws_job;
pub mod command;
pub mod dashboard;
pub mod databrew_job;
pub mod glue_crawler;
pub mod glue_job;
pub mod noop;
pub mod polars_job;
pub mod streaming_stage;
pub mod wait_for_partition;

#[cfg(test)]
mod docs;
#[cfg(test)]
mod problems_tests;

/// Every task kind cartflow knows.
pub const REGISTRY: &[KindEntry] = &[
    entry::<noop::Noop>(),
    entry::<command::Command>(),
    entry::<polars_job::PolarsJob>(),
    entry::<glue_crawler::GlueCrawler>(),
    entry::<glue_job::GlueJob>(),
    entry::<databrew_job::DatabrewJob>(),
    entry::<athena_ctas::AthenaCtas>(),
    entry::<dashboard::Dashboard>(),
    entry::<wait_for_partition::WaitForPartition>(),
    entry::<streaming_stage::StreamingStage>(),
];

/// Looks a kind up by name.
pub fn lookup(name: &str) -> Option<&'static KindEntry> {
    REGISTRY.iter().find(|k| k.name == name)
}

/// Runs an in-process job (Polars, on a blocking thread) for a task: when the task is
/// cancelled or times out, the job's [`Stop`](cartflow_jobs::stop::Stop) is requested and the
/// attempt waits for the job to end at its next check (within one input file), so that no job
/// runs on, or publishes, after its attempt has ended. `what` names the job in messages.
pub(crate) async fn in_process<T, F>(
    ctx: &crate::task::TaskContext,
    what: &str,
    stop: cartflow_jobs::stop::Stop,
    job: F,
) -> Result<T, crate::task::TaskFailure>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use crate::task::TaskFailure;
    let mut handle = tokio::task::spawn_blocking(job);
    let panicked = |e: tokio::task::JoinError| TaskFailure::new(format!("{what} panicked: {e}"));
    tokio::select! {
        done = &mut handle => done.map_err(panicked),
        () = ctx.cancel.cancelled() => {
            stop.request();
            ctx.log.line(format_args!("{what}: asked to stop; waiting for it to end at its next check"));
            let _ = handle.await.map_err(panicked)?;
            Err(TaskFailure::new(format!("cancelled; {what} was asked to stop and has ended")))
        }
    }
}

/// The checks' verdict, after they ran: the results are saved (fact [`FACT`]) and logged; a
/// failing `error` check fails the task (not retryable: the output was discarded), and the
/// failing `warn` checks are returned, to raise `check_failed` with the task's success.
pub(crate) fn check_verdict(
    ctx: &crate::task::TaskContext,
    results: &[crate::checks::CheckResult],
) -> Result<Option<String>, crate::task::TaskFailure> {
    use crate::checks::{CheckResult, FACT, Severity};
    use crate::task::TaskFailure;
    let json = serde_json::to_string(results).unwrap_or_else(|_| "[]".into());
    ctx.facts.set(FACT, &json)?;
    for r in results {
        ctx.log.line(r.line());
    }
    let failed = |sev: Severity| -> Vec<String> {
        results.iter().filter(|r| !r.passed && r.severity == sev).map(CheckResult::line).collect()
    };
    let errors = failed(Severity::Error);
    if !errors.is_empty() {
        let text = errors.join("; ");
        ctx.log.line("the staged output was discarded: the published table is unchanged");
        return Err(TaskFailure {
            checks_failed: Some(text.clone()),
            ..TaskFailure::permanent(format!(
                "{text}; the staged output was discarded (the published table is unchanged)"
            ))
        });
    }
    let warns = failed(Severity::Warn);
    Ok((!warns.is_empty()).then(|| warns.join("; ")))
}

/// Runs a task's data checks (if it has any) on its staged output `target` on the local
/// backend, and gives their results and verdict: a failing `error` check is an `Err` (the
/// caller drops the staged output, so the partition stays as it was), failing `warn` checks the
/// `Some` text to raise `check_failed` with.
pub(crate) async fn local_checks(
    ctx: &crate::task::TaskContext,
    local: &crate::env::LocalEnv,
    target: crate::checks::Staged,
) -> Result<(Vec<crate::checks::CheckResult>, Option<String>), crate::task::TaskFailure> {
    if ctx.checks.is_empty() {
        return Ok((Vec::new(), None));
    }
    let (lake, catalog) = (local.lake.clone(), local.catalog.clone());
    let (checks, template, end) = (ctx.checks.clone(), ctx.template.clone(), ctx.interval.end);
    let results = cartflow_jobs::sql::run_isolated(move || async move {
        crate::checks::local::run(&lake, &catalog, &checks, &target, &template, end).await
    })
    .await
    .map_err(|e| crate::task::TaskFailure::new(format!("running the checks: {e}")))?;
    let warned = check_verdict(ctx, &results)?;
    Ok((results, warned))
}
