//! Where tasks run: the backend as a value.
//!
//! An [`Env`] is built once per process from the project config (and, for AWS, the SDK's
//! standard credential chain, resolved once) and handed to every task attempt in its
//! [`TaskContext`](crate::task::TaskContext). A kind matches on it to pick its implementation;
//! the engine only passes it along. The `Aws` variant exists when cartflow is built with the
//! `aws` cargo feature (the default for the binary).

use std::path::PathBuf;

use serde::Serialize;

use crate::config::aws::AwsSettings;

/// Which backend a command asks for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded backend: a folder as the lake, SQLite, Polars, in-process streaming.
    #[default]
    Local,
    /// The real AWS services through the AWS SDK for Rust.
    Aws,
}

/// The local backend's places, resolved against the project folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEnv {
    /// The lake root.
    pub lake: PathBuf,
    /// The catalog database.
    pub catalog: PathBuf,
    /// The streaming stage's folder: streams, alerts, notifications, metrics.
    pub streaming: PathBuf,
}

/// The backend every task of this process runs on.
#[derive(Debug, Clone)]
pub enum Env {
    /// The embedded backend.
    Local(LocalEnv),
    /// AWS: the settings and the SDK clients, shared.
    #[cfg(feature = "aws")]
    Aws(std::sync::Arc<crate::aws::AwsEnv>),
}

/// The backend cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `--backend aws` on a build without the `aws` feature.
    #[error(
        "this cartflow was built without the `aws` feature, so `--backend aws` is not available; build it with `cargo build --release -p cartflow` (the feature is on by default)"
    )]
    AwsNotBuilt,
}

impl Env {
    /// The backend `backend`: the local places, or AWS with `aws`'s settings, whose SDK
    /// configuration is loaded here, once.
    pub async fn build(backend: Backend, local: LocalEnv, aws: &AwsSettings) -> Result<Env, EnvError> {
        match backend {
            Backend::Local => Ok(Env::Local(local)),
            #[cfg(feature = "aws")]
            Backend::Aws => Ok(Env::Aws(std::sync::Arc::new(crate::aws::AwsEnv::load(aws.clone()).await))),
            #[cfg(not(feature = "aws"))]
            Backend::Aws => {
                let _ = aws;
                Err(EnvError::AwsNotBuilt)
            }
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Env::Local(_) => Backend::Local,
            #[cfg(feature = "aws")]
            Env::Aws(_) => Backend::Aws,
        }
    }
}
