//! The project config, `cartflow.yaml` in the project folder (optional).
//!
//! ```yaml
//! dags: dags              # where DAG files live
//! state: .cartflow/state.db
//! lake: .cartflow/lake         # the lake root of the local backend
//! catalog: .cartflow/catalog.db
//! streaming: .cartflow/streaming   # streams, alerts.db, notifications.jsonl, metrics.json
//! pools:                  # name -> slots, shared by every run of one process
//!   aws_glue: 2
//! aws:                    # the aws backend (`--backend aws`); credentials and region come
//!                         # from the standard AWS chain, never from here
//!   lake: s3://my-lake/   # the lake root: raw/, staged/, clean/, enriched/, curated/ under it
//!   zones:                # optional: a bucket per zone (the first folder of a lake path)
//!     raw: s3://my-raw-bucket/
//!   athena_workgroup: primary
//!   athena_output: s3://my-athena-results/
//!   poll: 10s             # first poll delay of AWS jobs; grows 1.5x per poll ...
//!   max_poll: 1m          # ... up to this
//! eventbridge:            # one rule per scheduled DAG (`cartflow schedules sync`)
//!   rule_prefix: cartflow-
//!   target:
//!     arn: arn:aws:lambda:eu-west-1:123456789012:function:cartflow-runner
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::yaml;

pub mod aws;

/// The project config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The DAGs folder, relative to the project folder.
    #[serde(default = "default_dags")]
    pub dags: PathBuf,
    /// The run store, relative to the project folder.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// The lake root (local backend), relative to the project folder.
    #[serde(default = "default_lake")]
    pub lake: PathBuf,
    /// The catalog database (local backend), relative to the project folder.
    #[serde(default = "default_catalog")]
    pub catalog: PathBuf,
    /// The streaming stage's folder (local backend): streams, alerts, notifications, metrics.
    #[serde(default = "default_streaming")]
    pub streaming: PathBuf,
    /// Pools: name → number of slots.
    #[serde(default)]
    pub pools: BTreeMap<String, u32>,
    /// EventBridge rules for scheduled DAGs (`cartflow schedules sync --backend aws`).
    #[serde(default)]
    pub eventbridge: Option<crate::schedule::eventbridge::EventBridgeConfig>,
    /// The aws backend's settings.
    #[serde(default)]
    pub aws: aws::AwsSettings,
}

fn default_dags() -> PathBuf {
    PathBuf::from("dags")
}

fn default_lake() -> PathBuf {
    PathBuf::from(".cartflow/lake")
}

fn default_catalog() -> PathBuf {
    PathBuf::from(".cartflow/catalog.db")
}

fn default_streaming() -> PathBuf {
    PathBuf::from(".cartflow/streaming")
}

fn default_state() -> PathBuf {
    PathBuf::from(".cartflow/state.db")
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            dags: default_dags(),
            state: default_state(),
            lake: default_lake(),
            catalog: default_catalog(),
            streaming: default_streaming(),
            pools: BTreeMap::new(),
            eventbridge: None,
            aws: aws::AwsSettings::default(),
        }
    }
}

/// A problem with `cartflow.yaml`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: error: {message}{}", hint.as_ref().map(|h| format!("\n  = hint: {h}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl ProjectConfig {
    /// Reads `cartflow.yaml` from `dir`, or the defaults when there is none.
    pub fn load(dir: &Path) -> Result<ProjectConfig, ConfigError> {
        let file = dir.join("cartflow.yaml");
        let Ok(src) = std::fs::read_to_string(&file) else {
            return Ok(ProjectConfig::default());
        };
        let err =
            |line, column, message, hint| ConfigError { file: file.display().to_string(), line, column, message, hint };
        let node = yaml::parse(&src).map_err(|e| {
            let p = e.pos.unwrap_or_default();
            err(p.line, p.column, format!("invalid YAML: {}", e.message), None)
        })?;
        if node.value == yaml::Value::Null {
            return Ok(ProjectConfig::default());
        }
        let cfg: ProjectConfig = yaml::from_node(&node).map_err(|e| {
            let p = e.pos.unwrap_or_default();
            err(p.line, p.column, e.message, e.hint)
        })?;
        if let Some((name, _)) = cfg.pools.iter().find(|(_, v)| **v == 0) {
            return Err(err(
                1,
                1,
                format!("pool `{name}` has 0 slots"),
                Some("give every pool at least 1 slot".into()),
            ));
        }
        Ok(cfg)
    }
}
