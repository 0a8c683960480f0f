//! End-to-end tests: the real `cartflow` binary on real DAG files, a real SQLite run store
//! and real processes. One test binary; the shared context lives in `cartflow_e2e`.

#[path = "e2e/engine.rs"]
mod engine;

#[path = "e2e/time.rs"]
mod time;

#[path = "e2e/eventbridge.rs"]
mod eventbridge;

#[path = "e2e/lake.rs"]
mod lake;

#[path = "e2e/streaming.rs"]
mod streaming;

#[path = "e2e/flink.rs"]
mod flink;

#[path = "e2e/aws_alerts.rs"]
mod aws_alerts;

#[path = "e2e/aws_batch.rs"]
mod aws_batch;

#[path = "e2e/aws_platform.rs"]
mod aws_platform;

#[path = "e2e/aws_store.rs"]
mod aws_store;

#[path = "e2e/state_transfer.rs"]
mod state_transfer;

#[path = "e2e/hostile.rs"]
mod hostile;

#[path = "e2e/messages.rs"]
mod messages;

#[path = "e2e/crash.rs"]
mod crash;

#[path = "e2e/ui.rs"]
mod ui;

#[path = "e2e/notify.rs"]
mod notify;

#[path = "e2e/sql.rs"]
mod sql;

#[path = "e2e/checks.rs"]
mod checks;
