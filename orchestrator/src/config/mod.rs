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
//! notify:                 # notifications of batch runs (see docs/dags.md, "Notifications")
//!   base_url: http://127.0.0.1:8787   # the web UI, for the log link of each notification
//!   timeout: 10s          # one delivery: connect, send, answer
//!   retries: 3            # of a failed delivery, 1s, 2s, 4s apart
//!   targets:              # named targets; DAGs say `to: oncall`
//!     oncall:
//!       webhook: {url_env: ONCALL_WEBHOOK_URL}   # URLs are secrets: only from the environment
//!     team:
//!       slack: {url_env: SLACK_WEBHOOK_URL}
//!     audit:
//!       file: {path: .cartflow/notifications.jsonl}
//!     ops:
//!       sns: {topic_arn: "arn:aws:sns:eu-west-1:123456789012:cartflow-ops"}
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
    /// Notifications of batch runs: named targets and delivery settings.
    #[serde(default)]
    pub notify: crate::notify::Settings,
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
            notify: crate::notify::Settings::default(),
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
        if let Some(name) = cfg.notify.targets.keys().find(|n| !crate::task::valid_id(n)) {
            let p = key_pos(&node, &["notify", "targets", name]).unwrap_or_default();
            return Err(err(
                p.line,
                p.column,
                format!("invalid notify target name `{name}`"),
                Some("names may use letters, digits, `_`, `-` and `.`".into()),
            ));
        }
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

/// Where the key at `path` (a chain of mapping keys) is.
fn key_pos(node: &yaml::Node, path: &[&str]) -> Option<yaml::Pos> {
    let (first, rest) = path.split_first()?;
    let yaml::Value::Map(entries) = &node.value else {
        return None;
    };
    let (k, v) = entries.iter().find(|(k, _)| k.as_str() == Some(first))?;
    if rest.is_empty() { Some(k.pos) } else { key_pos(v, rest) }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<ProjectConfig, String> {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("cartflow.yaml"), src).expect("write");
        ProjectConfig::load(dir.path()).map_err(|e| e.to_string().replace(&dir.path().display().to_string(), "DIR"))
    }

    #[test]
    fn notify_targets_are_read_and_their_problems_have_positions() {
        let cfg =
            load("notify:\n  retries: 0\n  targets:\n    oncall:\n      webhook: {url_env: ONCALL}\n").expect("ok");
        assert_eq!(cfg.notify.retries, 0);
        assert!(cfg.notify.targets.contains_key("oncall"));
        let problems = [
            load("notify:\n  targets:\n    oncall:\n      webhook: {url: 'http://x/secret'}\n"),
            load("notify:\n  targets:\n    'on call':\n      file: {path: x}\n"),
            load("notify:\n  targets:\n    a:\n      webhook: {url_env: A}\n      slack: {url_env: B}\n"),
            load("notify:\n  timeout: 0s\n"),
        ];
        let text: Vec<String> = problems.into_iter().map(|r| r.expect_err("refused")).collect();
        insta::assert_snapshot!(text.join("\n"));
        assert!(!text[0].contains("http://x"), "the URL is not repeated");
    }
}
