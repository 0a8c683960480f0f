//! The `aws` backend: the real services through the official AWS SDK for Rust.
//!
//! Configuration comes only from the standard AWS chain — environment, shared profiles
//! (`AWS_PROFILE`), `credential_process`, container and instance roles — with the region from
//! the same chain and the endpoint from `AWS_ENDPOINT_URL` (how the tests point the SDK at an
//! emulator). Credentials never appear in DAG files. Requests use the SDK's adaptive retry
//! mode, which backs off on throttling. AWS SDK types stay inside this module.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

pub mod eventbridge;

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
