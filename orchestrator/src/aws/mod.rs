//! The `aws` backend: the real services through the official AWS SDK for Rust.
//!
//! Configuration comes only from the standard AWS chain — environment, shared profiles
//! (`AWS_PROFILE`), `credential_process`, container and instance roles — with the region from
//! the same chain and the endpoint from `AWS_ENDPOINT_URL` (how the tests point the SDK at an
//! emulator). Credentials never appear in DAG files. Requests use the SDK's adaptive retry
//! mode, which backs off on throttling.
//!
//! This module is the shared plumbing of the aws halves of the task kinds (`kinds/*`, under the
//! `aws` cargo feature): the clients, loaded once per process into an [`AwsEnv`]; errors; the
//! poll loop ([`watch`]) and its [`Backoff`]; S3 listings and transfers ([`s3`], [`lake`]);
//! the Glue catalog calls ([`glue`]); EventBridge rules; the real-time stage's data on AWS
//! ([`realtime`]); SNS publishes of the batch runs' notifications ([`sns`]). It knows nothing
//! of the engine or of the kinds. AWS SDK types stay in here and in the kinds' aws halves.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

pub mod athena_query;
pub mod eventbridge;
pub mod glue;
pub mod lake;
pub mod realtime;
pub mod s3;
pub mod sns;

pub use crate::config::aws::{AwsSettings, S3Loc, StreamingSettings};

/// An AWS call that failed: which call, on which resource, and what AWS said.
#[derive(Debug, thiserror::Error)]
#[error("AWS {call} on {resource} failed: {message}")]
pub struct AwsError {
    /// The API operation, e.g. `events:PutRule`.
    pub call: &'static str,
    /// The resource it was about.
    pub resource: String,
    /// What AWS (or the network) said.
    pub message: String,
}

impl AwsError {
    /// Wraps an SDK error with its full context.
    pub fn new<E: std::error::Error + 'static>(call: &'static str, resource: impl Into<String>, err: E) -> Self {
        let message = aws_smithy_message(&err);
        AwsError { call, resource: resource.into(), message }
    }
}

fn aws_smithy_message(err: &(dyn std::error::Error + 'static)) -> String {
    // The SDK's Display is terse ("service error"); walk the sources for what AWS said.
    let mut parts = vec![err.to_string()];
    let mut src = err.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// Loads the shared SDK configuration from the standard chain, with adaptive retries.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive().with_max_attempts(5))
        .load()
        .await
}

/// Delays between polls of a long-running AWS job: exponential (×1.5) with jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    /// Starts at `initial`, never above `max`.
    pub fn new(initial: std::time::Duration, max: std::time::Duration) -> Self {
        Backoff { next: initial.min(max), max }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let base = self.next;
        self.next = self.next.mul_f64(1.5).min(self.max);
        base.mul_f64(0.9 + fastrand::f64() * 0.2).min(self.max)
    }
}

/// Where an AWS job (Glue job run, crawl, DataBrew job run, Athena query) stands, mapped from
/// its service's state names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Queued, starting or running.
    Running(String),
    /// Finished well.
    Succeeded,
    /// Finished badly, with what the service said.
    Failed(String),
    /// Stopped or cancelled before finishing.
    Stopped(String),
}

impl Phase {
    /// Whether the job is over.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Phase::Running(_))
    }

    /// A Glue job run's `JobRunState` and `ErrorMessage`.
    pub fn glue_job_run(state: &str, error: Option<&str>) -> Phase {
        let msg = |default: &str| error.filter(|e| !e.is_empty()).unwrap_or(default).to_string();
        match state {
            "SUCCEEDED" => Phase::Succeeded,
            "FAILED" | "ERROR" => Phase::Failed(msg("the job run failed without a message")),
            "TIMEOUT" => Phase::Failed(msg("the job run hit its timeout")),
            "STOPPED" => Phase::Stopped(msg("the job run was stopped")),
            other => Phase::Running(other.to_string()),
        }
    }

    /// A DataBrew job run's `State` and `ErrorMessage`.
    pub fn databrew_job_run(state: &str, error: Option<&str>) -> Phase {
        let msg = |default: &str| error.filter(|e| !e.is_empty()).unwrap_or(default).to_string();
        match state {
            "SUCCEEDED" => Phase::Succeeded,
            "FAILED" => Phase::Failed(msg("the job run failed without a message")),
            "TIMEOUT" => Phase::Failed(msg("the job run hit its timeout")),
            "STOPPED" | "STOPPING" => Phase::Stopped(msg("the job run was stopped")),
            other => Phase::Running(other.to_string()),
        }
    }

    /// An Athena query's `State` and `StateChangeReason`.
    pub fn athena_query(state: &str, reason: Option<&str>) -> Phase {
        let msg = |default: &str| reason.filter(|e| !e.is_empty()).unwrap_or(default).to_string();
        match state {
            "SUCCEEDED" => Phase::Succeeded,
            "FAILED" => Phase::Failed(msg("the query failed without a reason")),
            "CANCELLED" => Phase::Stopped(msg("the query was cancelled")),
            other => Phase::Running(other.to_string()),
        }
    }

    /// A crawler's `State`, and its last crawl's `Status` and `ErrorMessage` once it is READY.
    pub fn crawler(state: &str, last_status: Option<&str>, error: Option<&str>) -> Phase {
        if state != "READY" {
            return Phase::Running(state.to_string());
        }
        let msg = |default: &str| error.filter(|e| !e.is_empty()).unwrap_or(default).to_string();
        match last_status {
            Some("FAILED") => Phase::Failed(msg("the crawl failed without a message")),
            Some("CANCELLED") => Phase::Stopped(msg("the crawl was cancelled")),
            _ => Phase::Succeeded,
        }
    }
}

/// Why [`watch`] returned without a terminal phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The task was cancelled (the caller stops the AWS job).
    Cancelled,
    /// Polling kept failing.
    Unreachable(String),
}

/// Polls `probe` with `backoff` until the job is over, logging every change of state. Transient
/// probe errors (beyond the SDK's own retries) are tolerated up to 5 in a row.
pub async fn watch<F, Fut>(
    what: &str,
    mut backoff: Backoff,
    log: &(dyn Fn(&str) + Sync),
    cancel: &tokio_util::sync::CancellationToken,
    mut probe: F,
) -> Result<Phase, WatchEnd>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Phase, AwsError>>,
{
    let mut last: Option<Phase> = None;
    let mut errors = 0u32;
    loop {
        match probe().await {
            Ok(phase) => {
                errors = 0;
                if last.as_ref() != Some(&phase) {
                    match &phase {
                        Phase::Running(s) => log(&format!("{what}: {s}")),
                        Phase::Succeeded => log(&format!("{what}: SUCCEEDED")),
                        Phase::Failed(m) => log(&format!("{what}: FAILED: {m}")),
                        Phase::Stopped(m) => log(&format!("{what}: STOPPED: {m}")),
                    }
                }
                if phase.is_terminal() {
                    return Ok(phase);
                }
                last = Some(phase);
            }
            Err(e) => {
                errors += 1;
                log(&format!("{what}: polling failed ({errors} in a row): {e}"));
                if errors >= 5 {
                    return Err(WatchEnd::Unreachable(e.to_string()));
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = cancel.cancelled() => return Err(WatchEnd::Cancelled),
        }
    }
}

/// The SDK clients, built once per process from one configuration of the standard chain.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Glue: crawlers, jobs, the catalog.
    pub glue: aws_sdk_glue::Client,
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// Athena.
    pub athena: aws_sdk_athena::Client,
    /// DataBrew.
    pub databrew: aws_sdk_databrew::Client,
    /// The configuration they were built from, for the other services' clients.
    pub sdk: aws_config::SdkConfig,
}

impl Clients {
    /// Builds every client from `sdk`.
    pub fn new(sdk: aws_config::SdkConfig, settings: &AwsSettings) -> Clients {
        let path_style = settings.s3_path_style.unwrap_or_else(|| {
            std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        });
        let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).build();
        Clients {
            glue: aws_sdk_glue::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            athena: aws_sdk_athena::Client::new(&sdk),
            databrew: aws_sdk_databrew::Client::new(&sdk),
            sdk,
        }
    }
}

/// The aws backend as a value: the settings of `cartflow.yaml` and the SDK clients, loaded once
/// per process (the credential chain is resolved here, not on every task attempt) and shared by
/// every task through the `Aws` variant of the engine's `Env`.
#[derive(Debug, Clone)]
pub struct AwsEnv {
    /// `aws:` of cartflow.yaml.
    pub settings: AwsSettings,
    /// The SDK clients.
    pub clients: Clients,
}

impl AwsEnv {
    /// Loads the SDK configuration from the standard chain and builds every client.
    pub async fn load(settings: AwsSettings) -> AwsEnv {
        let clients = Clients::new(sdk_config().await, &settings);
        AwsEnv { settings, clients }
    }

    /// The poll delays of AWS jobs: `poll`, growing by half each time up to `max_poll`, with
    /// ±10% jitter.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.poll.0, self.settings.max_poll.0)
    }

    /// Where a lake path (`raw/events/dt=2019-10-01`) lives on S3.
    pub fn locate(&self, rel: &str) -> Result<S3Loc, String> {
        self.settings.locate(rel)
    }

    /// The region of the standard chain (`us-east-1` when none is configured).
    pub fn region(&self) -> String {
        self.clients.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
    }

    fn err() -> AwsError {
        AwsError { call: "glue:GetJobRun", resource: "job".into(), message: "connection reset".into() }
    }

    #[test]
    fn watch_polls_through_transient_errors_to_the_terminal_phase_and_logs_each_change() {
        // A log that keeps its lines.
        let lines = Mutex::new(Vec::<String>::new());
        let log = |l: &str| lines.lock().expect("lock").push(l.to_string());
        let script = Mutex::new(vec![
            Ok(Phase::Running("STARTING".into())),
            Err(err()),
            Ok(Phase::Running("RUNNING".into())),
            Ok(Phase::Running("RUNNING".into())),
            Ok(Phase::Failed("boom".into())),
        ]);
        let probe = || {
            let next = script.lock().expect("lock").remove(0);
            async move { next }
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let cancel = tokio_util::sync::CancellationToken::new();
        let end = rt.block_on(watch("job run", quick(), &log, &cancel, probe));
        assert_eq!(end, Ok(Phase::Failed("boom".into())));
        let lines = lines.into_inner().expect("lines");
        assert_eq!(
            lines,
            vec![
                "job run: STARTING",
                "job run: polling failed (1 in a row): AWS glue:GetJobRun on job failed: connection reset",
                "job run: RUNNING",
                "job run: FAILED: boom"
            ],
            "one line per change, none for a repeated state"
        );
    }

    #[test]
    fn watch_gives_up_after_five_failed_polls_and_stops_when_cancelled() {
        // A log that keeps its lines.
        let lines = Mutex::new(Vec::<String>::new());
        let log = |l: &str| lines.lock().expect("lock").push(l.to_string());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let cancel = tokio_util::sync::CancellationToken::new();
        let polls = Mutex::new(0);
        let failing = || {
            *polls.lock().expect("lock") += 1;
            async { Err::<Phase, _>(err()) }
        };
        let end = rt.block_on(watch("job", quick(), &log, &cancel, failing));
        assert!(matches!(end, Err(WatchEnd::Unreachable(m)) if m.contains("connection reset")));
        assert_eq!(*polls.lock().expect("lock"), 5);

        let running = || async { Ok(Phase::Running("RUNNING".into())) };
        cancel.cancel();
        let end = rt.block_on(watch(
            "job",
            Backoff::new(Duration::from_secs(60), Duration::from_secs(60)),
            &log,
            &cancel,
            running,
        ));
        assert_eq!(end, Err(WatchEnd::Cancelled));
    }

    #[test]
    fn backoff_grows_by_half_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60));
        let delays: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        for (d, base) in delays.iter().zip([10.0, 15.0, 22.5, 33.75, 50.625, 60.0, 60.0, 60.0]) {
            assert!(*d >= base * 0.9 - 1e-9 && *d <= (base * 1.1).min(60.0) + 1e-9, "{delays:?}");
        }
    }
}
