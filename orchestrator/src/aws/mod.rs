//! The `aws` backend: the real services through the official AWS SDK for Rust.
//!
//! Configuration comes only from the standard AWS chain — environment, shared profiles
//! (`AWS_PROFILE`), `credential_process`, container and instance roles — with the region from
//! the same chain and the endpoint from `AWS_ENDPOINT_URL` (how the tests point the SDK at an
//! emulator). Credentials never appear in DAG files. Requests use the SDK's adaptive retry
//! mode, which backs off on throttling. AWS SDK types stay inside this module.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

pub mod athena;
pub mod databrew;
pub mod eventbridge;
pub mod glue;
pub mod jobs;
pub mod lake;
pub mod s3;
pub mod streaming;

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

/// The aws backend's settings: `aws:` in `cartflow.yaml`. Where the lake lives and how often
/// to poll; never credentials (those come from the standard chain).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The lake root, `s3://bucket/` or `s3://bucket/prefix/`.
    #[serde(default)]
    pub lake: Option<String>,
    /// A bucket (or prefix) per zone: the first folder of a lake path (`raw`, `staged`,
    /// `clean`, `enriched`, `curated`) maps here, without that folder.
    #[serde(default)]
    pub zones: std::collections::BTreeMap<String, String>,
    /// The Athena workgroup of the insight queries.
    #[serde(default = "default_workgroup")]
    pub athena_workgroup: String,
    /// Where Athena writes query results (`s3://…`); default: the workgroup's setting.
    #[serde(default)]
    pub athena_output: Option<String>,
    /// First delay between two polls of an AWS job; it grows by half each poll.
    #[serde(default = "default_poll")]
    pub poll: crate::dag::HumanDuration,
    /// The longest delay between two polls.
    #[serde(default = "default_max_poll")]
    pub max_poll: crate::dag::HumanDuration,
    /// S3 path-style addressing; default: on when `AWS_ENDPOINT_URL` points at an emulator.
    #[serde(default)]
    pub s3_path_style: Option<bool>,
    /// The real-time stage's resources (the `streaming_stage` kind).
    #[serde(default)]
    pub streaming: StreamingSettings,
}

/// The real-time stage on AWS: names (from one prefix, as `infra/` names them), the roles the
/// services assume, and the code bundles.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingSettings {
    /// Name prefix: `{prefix}stream1`, `{prefix}stream2`, `{prefix}alerts` (table and topic),
    /// `{prefix}archive` (Firehose), `{prefix}detector` (Flink), `{prefix}alert-handler`
    /// (Lambda). Default `cartflow-`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The role Managed Flink assumes (read stream1, write stream2, read the bundle).
    #[serde(default)]
    pub flink_role_arn: Option<String>,
    /// The role Firehose assumes (read stream1, write the raw zone).
    #[serde(default)]
    pub firehose_role_arn: Option<String>,
    /// The role of the alert handler (read stream2, write the table, publish to the topic).
    #[serde(default)]
    pub lambda_role_arn: Option<String>,
    /// The alert handler's deployment package: a zip with `bootstrap` (e.g. from
    /// `cargo lambda build --release -p cartflow-streaming --features lambda --output-format zip`),
    /// or the `cartflow-alert-handler` binary itself (cartflow zips it as `bootstrap`).
    #[serde(default)]
    pub lambda_package: Option<std::path::PathBuf>,
    /// The Kinesis SQL connector jar bundled with the Flink application (`lib/`); Managed
    /// Flink needs it to read and write Kinesis.
    #[serde(default)]
    pub flink_connector_jar: Option<std::path::PathBuf>,
    /// Where the Flink application bundle is uploaded (`s3://…/`); default `{lake}/_code/`.
    #[serde(default)]
    pub code: Option<String>,
    /// The Managed Flink runtime, default `FLINK-1_20`.
    #[serde(default)]
    pub flink_runtime: Option<String>,
}

impl StreamingSettings {
    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("cartflow-")
    }

    /// `{prefix}{what}`.
    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix())
    }
}

fn default_workgroup() -> String {
    "primary".into()
}
fn default_poll() -> crate::dag::HumanDuration {
    crate::dag::HumanDuration(std::time::Duration::from_secs(10))
}
fn default_max_poll() -> crate::dag::HumanDuration {
    crate::dag::HumanDuration(std::time::Duration::from_secs(60))
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            lake: None,
            zones: Default::default(),
            athena_workgroup: default_workgroup(),
            athena_output: None,
            poll: default_poll(),
            max_poll: default_max_poll(),
            s3_path_style: None,
            streaming: StreamingSettings::default(),
        }
    }
}

/// An S3 location: bucket and key prefix (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Loc {
    /// The bucket.
    pub bucket: String,
    /// The key or key prefix.
    pub key: String,
}

impl S3Loc {
    /// Parses `s3://bucket/key`.
    pub fn parse(uri: &str) -> Result<S3Loc, String> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("`{uri}` is not an s3:// URI"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{uri}` has no bucket"));
        }
        Ok(S3Loc { bucket: bucket.into(), key: key.into() })
    }

    /// This location as a folder: the key ends with `/` (or is empty).
    pub fn dir(&self) -> S3Loc {
        let mut key = self.key.clone();
        if !key.is_empty() && !key.ends_with('/') {
            key.push('/');
        }
        S3Loc { bucket: self.bucket.clone(), key }
    }

    /// A path under this folder.
    pub fn join(&self, rel: &str) -> S3Loc {
        let d = self.dir();
        S3Loc { bucket: d.bucket, key: format!("{}{}", d.key, rel.trim_start_matches('/')) }
    }

    /// `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

impl std::fmt::Display for S3Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl AwsSettings {
    /// Where a lake path (`raw/events/dt=2019-10-01`) lives on S3.
    pub fn locate(&self, rel: &str) -> Result<S3Loc, String> {
        let rel = rel.trim_matches('/');
        let (zone, rest) = rel.split_once('/').unwrap_or((rel, ""));
        if let Some(root) = self.zones.get(zone) {
            return Ok(S3Loc::parse(root)?.join(rest));
        }
        let lake = self.lake.as_deref().ok_or_else(|| {
            format!(
                "the aws backend does not know where `{rel}` lives: set `aws.lake: s3://bucket/` (or `aws.zones.{zone}`) in cartflow.yaml"
            )
        })?;
        Ok(S3Loc::parse(lake)?.join(rel))
    }

    /// The poll delays: `poll`, growing by half each time up to `max_poll`, with ±10% jitter.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.poll.0, self.max_poll.0)
    }
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
    log: &crate::kinds::TaskLog,
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
                        Phase::Running(s) => log.line(format_args!("{what}: {s}")),
                        Phase::Succeeded => log.line(format_args!("{what}: SUCCEEDED")),
                        Phase::Failed(m) => log.line(format_args!("{what}: FAILED: {m}")),
                        Phase::Stopped(m) => log.line(format_args!("{what}: STOPPED: {m}")),
                    }
                }
                if phase.is_terminal() {
                    return Ok(phase);
                }
                last = Some(phase);
            }
            Err(e) => {
                errors += 1;
                log.line(format_args!("{what}: polling failed ({errors} in a row): {e}"));
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

/// The SDK clients of the batch kinds, from the standard chain.
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
    /// Loads the configuration once and builds every client.
    pub async fn load(settings: &AwsSettings) -> Clients {
        let sdk = sdk_config().await;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn log() -> (tempfile::TempDir, crate::kinds::TaskLog) {
        let dir = tempfile::tempdir().expect("dir");
        let log = crate::kinds::TaskLog::new(dir.path().join("log"));
        (dir, log)
    }

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
    }

    fn err() -> AwsError {
        AwsError { call: "glue:GetJobRun", resource: "job".into(), message: "connection reset".into() }
    }

    #[test]
    fn watch_polls_through_transient_errors_to_the_terminal_phase_and_logs_each_change() {
        let (_d, log) = log();
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
        let text = std::fs::read_to_string(log.path()).expect("log");
        let lines: Vec<&str> = text.lines().map(|l| l.split("] ").nth(1).unwrap_or(l)).collect();
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
        let (_d, log) = log();
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

    #[test]
    fn lake_paths_map_to_the_lake_or_to_zone_buckets() {
        let mut s = AwsSettings { lake: Some("s3://lake/root".into()), ..AwsSettings::default() };
        assert_eq!(s.locate("raw/events/dt=2019-10-01").expect("loc").uri(), "s3://lake/root/raw/events/dt=2019-10-01");
        s.zones.insert("raw".into(), "s3://raw-bucket/".into());
        assert_eq!(s.locate("raw/events/dt=2019-10-01").expect("loc").uri(), "s3://raw-bucket/events/dt=2019-10-01");
        assert_eq!(s.locate("curated/top").expect("loc").uri(), "s3://lake/root/curated/top");
        let none = AwsSettings::default();
        assert!(none.locate("raw/events").expect_err("no lake").contains("aws.lake"));
        assert!(S3Loc::parse("lake/x").is_err() && S3Loc::parse("s3:///x").is_err());
    }
}
