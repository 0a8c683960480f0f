//! The run-store boundary: what the executor, the scheduler, backfills, facts, notifications,
//! the CLI and the web UI ask of a run store, as one trait ([`Store`]) with two
//! implementations — SQLite ([`SqliteStore`], the local default) and the aws backend's DynamoDB
//! table (`crate::aws::state`) — and where a store is ([`StoreAt`]), a value the project builds
//! once and hands to the engine, which never learns which backend it talks to.
//!
//! Every operation is one method; a store that does not offer one yet answers
//! [`StoreError::Unsupported`] naming it (the default body), never a made-up value.

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::audit::{PauseSpan, Paused};
use super::transfer::{Imported, Record, Sink};
use super::{AttemptRow, RunRow, TaskRow};
use super::{
    AuditRow, BackfillRow, BackfillRunRow, CancelError, CancelRequested, Claim, ClaimedRun, DeadlineRow, Delivery,
    GridQuery, GridRun, Mark, MarkError, Marked, NewAudit, NewNotification, NotificationRow, Op, SqliteStore,
    StoreError, TaskSuccess,
};
use crate::engine::state::RunState;
use crate::process;

/// Declares the store's operations once: the trait [`Store`], whose default bodies answer
/// [`StoreError::Unsupported`], and SQLite's implementation, which forwards each one to
/// [`SqliteStore`]'s method of the same name.
macro_rules! store_api {
    (
        shared { $( $(#[$sm:meta])* fn $s:ident ( $( $sa:ident : $st:ty ),* ) -> $sr:ty; )* }
        exclusive { $( $(#[$xm:meta])* fn $x:ident ( $( $xa:ident : $xt:ty ),* ) -> $xr:ty; )* }
    ) => {
        /// A run store (see the module docs). Object-safe: the engine holds a `Box<dyn Store>`
        /// ([`super::RunStore`]).
        pub trait Store: Send + Debug {
            /// Where this store is, as a message names it (a file path, `dynamodb://TABLE`).
            fn location(&self) -> String;
            /// The SQLite store behind this one, if it is one (tests, SQLite-only diagnostics).
            fn as_sqlite(&self) -> Option<&SqliteStore> {
                None
            }
            /// The folder task logs are written to while an attempt runs.
            fn logs_dir(&self) -> PathBuf;
            /// Keeps an attempt's finished log where readers of this store find it, and returns
            /// what [`Op::AttemptEnded`] records as its `log_path` (the local file by default).
            fn keep_log(&self, run_id: &str, task_id: &str, attempt: u32, local: &Path) -> Result<String, StoreError> {
                let _ = (run_id, task_id, attempt);
                Ok(local.display().to_string())
            }
            /// Where attempt `attempt` of `task_id` writes its log while it runs.
            fn attempt_log_path(&self, dag_id: &str, run_id: &str, task_id: &str, attempt: u32) -> PathBuf {
                super::attempt_log(&self.logs_dir(), dag_id, run_id, task_id, attempt)
            }
            /// An attempt's log, as [`Store::keep_log`] recorded it (`None`: not there).
            fn read_log(&self, log_path: &str) -> Result<Option<Vec<u8>>, StoreError> {
                match std::fs::read(log_path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::Io { path: PathBuf::from(log_path), source }),
                }
            }
            $(
                $(#[$sm])*
                #[allow(unused_variables)]
                fn $s(&self $(, $sa: $st)*) -> $sr {
                    Err(StoreError::Unsupported { store: self.location(), what: stringify!($s) }.into())
                }
            )*
            $(
                $(#[$xm])*
                #[allow(unused_variables)]
                fn $x(&mut self $(, $xa: $xt)*) -> $xr {
                    Err(StoreError::Unsupported { store: self.location(), what: stringify!($x) }.into())
                }
            )*
        }

        impl Store for SqliteStore {
            fn location(&self) -> String {
                self.path().display().to_string()
            }
            fn as_sqlite(&self) -> Option<&SqliteStore> {
                Some(self)
            }
            fn logs_dir(&self) -> PathBuf {
                SqliteStore::logs_dir(self)
            }
            $( fn $s(&self $(, $sa: $st)*) -> $sr { SqliteStore::$s(self $(, $sa)*) } )*
            $( fn $x(&mut self $(, $xa: $xt)*) -> $xr { SqliteStore::$x(self $(, $xa)*) } )*
        }
    };
}

store_api! {
    shared {
        /// Records the process group attempt `attempt` of `task_id` runs.
        fn record_group(run_id: &str, task_id: &str, attempt: u32, group: &process::Group) -> Result<(), StoreError>;
        /// Renews this process's lease; who asked for a cancel, if someone did.
        fn heartbeat(run_id: &str) -> Result<Option<String>, StoreError>;
        /// Saves a fact of a task instance (committed when this returns).
        fn set_fact(run_id: &str, task_id: &str, key: &str, value: &str) -> Result<(), StoreError>;
        /// Forgets a fact.
        fn clear_fact(run_id: &str, task_id: &str, key: &str) -> Result<(), StoreError>;
        /// A fact.
        fn fact(run_id: &str, task_id: &str, key: &str) -> Result<Option<String>, StoreError>;
        /// The open backfill job of this request, with its runs.
        fn open_backfill(request: &str) -> Result<Option<(String, Vec<BackfillRunRow>)>, StoreError>;
        /// Records how a run of a backfill job ended.
        fn backfill_run_done(backfill_id: &str, run_id: &str, state: &str) -> Result<(), StoreError>;
        /// Closes a backfill job.
        fn finish_backfill(backfill_id: &str) -> Result<(), StoreError>;
        /// The paused DAGs.
        fn paused() -> Result<Paused, StoreError>;
        /// The last pause of a DAG.
        fn last_pause(dag_id: &str) -> Result<Option<PauseSpan>, StoreError>;
        /// The tasks of a run a person marked skipped.
        fn marked_skipped(run_id: &str) -> Result<HashSet<String>, StoreError>;
        /// Records an entry of the audit log.
        fn record_audit(a: &NewAudit<'_>) -> Result<(), StoreError>;
        /// The audit log, newest first.
        fn audit(run_id: Option<&str>, limit: usize) -> Result<Vec<AuditRow>, StoreError>;
        /// Notifications not yet delivered nor given up.
        fn undelivered_notifications(run_id: Option<&str>, since: Option<DateTime<Utc>>) -> Result<Vec<(String, String)>, StoreError>;
        /// Records a delivery try.
        fn record_delivery(key: &str, target: &str, tries: u32, d: &Delivery) -> Result<(), StoreError>;
        /// The notifications of a run.
        fn notifications(run_id: &str) -> Result<Vec<NotificationRow>, StoreError>;
        /// The (run, task) deadlines of a DAG decided since `from`.
        fn decided_deadlines(dag_id: &str, from: DateTime<Utc>) -> Result<HashSet<(String, String)>, StoreError>;
        /// The deadlines of a run.
        fn deadlines(run_id: &str) -> Result<Vec<DeadlineRow>, StoreError>;
        /// Runs of a DAG whose interval ends in `[from, to)`.
        fn runs_ending_between(dag_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<RunRow>, StoreError>;
        /// The web UI's grid.
        fn grid(dag_id: &str, q: &GridQuery) -> Result<Vec<GridRun>, StoreError>;
        /// Every DAG with a run.
        fn dag_ids() -> Result<Vec<String>, StoreError>;
        /// The facts of a run.
        fn run_facts(run_id: &str) -> Result<Vec<(String, String, String)>, StoreError>;
        /// A task's successful attempts across runs.
        fn task_successes(dag_id: &str, task_id: &str) -> Result<Vec<TaskSuccess>, StoreError>;
        /// A fact's values across runs.
        fn fact_history(dag_id: &str, task_id: &str, key: &str) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError>;
        /// Backfill jobs, newest first.
        fn backfills(limit: usize) -> Result<Vec<BackfillRow>, StoreError>;
        /// Runs of a DAG whose interval starts in `[from, to)`, and whether a live owner holds each.
        fn runs_between(dag_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<(RunRow, bool)>, StoreError>;
        /// The earliest interval start of a DAG's runs.
        fn first_run_start(dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
        /// The latest interval start of a DAG's runs.
        fn last_run_start(dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
        /// Runs of a DAG a live owner holds.
        fn live_runs(dag_id: &str) -> Result<Vec<String>, StoreError>;
        /// Runs, newest interval first.
        fn runs(dag_id: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError>;
        /// One run.
        fn run(run_id: &str) -> Result<Option<RunRow>, StoreError>;
        /// A run's task instances.
        fn tasks(run_id: &str) -> Result<Vec<TaskRow>, StoreError>;
        /// A run's attempts (of one task, or all).
        fn attempts(run_id: &str, task_id: Option<&str>) -> Result<Vec<AttemptRow>, StoreError>;
        /// The schema version.
        fn schema_version() -> Result<i64, StoreError>;
        /// Every run (with its tasks, attempts, facts, notifications) and backfill job, for
        /// `cartflow state export`; a run a live process holds is refused.
        fn export(out: Sink<'_>) -> Result<(), StoreError>;
    }
    exclusive {
        /// Claims a run for this process: creates it, or takes it over.
        fn claim(c: &Claim) -> Result<ClaimedRun, StoreError>;
        /// Persists a batch of changes of one run, together.
        fn apply(run_id: &str, ops: &[Op]) -> Result<(), StoreError>;
        /// Queues tasks afresh.
        fn restart_fresh(run_id: &str, tasks: &[String]) -> Result<(), StoreError>;
        /// Records the end of an execution with its notifications and releases the run.
        fn finish_with(run_id: &str, state: RunState, notes: &[NewNotification]) -> Result<(), StoreError>;
        /// Records a backfill job and its planned runs.
        fn create_backfill(dag_id: &str, request: &str, runs: &[(String, &str)]) -> Result<String, StoreError>;
        /// Marks a finished task by hand.
        fn mark(run_id: &str, task_id: &str, mark: Mark, who: &str) -> Result<Marked, MarkError>;
        /// Asks the run's owner to cancel it.
        fn request_cancel(run_id: &str, who: &str) -> Result<CancelRequested, CancelError>;
        /// Pauses or unpauses a DAG.
        fn set_paused(dag_id: &str, paused: bool, who: &str) -> Result<bool, StoreError>;
        /// Claims a notification for delivery.
        fn claim_notification(key: &str, target: &str) -> Result<Option<NotificationRow>, StoreError>;
        /// Records deadline decisions with their notifications.
        fn record_deadlines(decisions: &[(DeadlineRow, Vec<NewNotification>)]) -> Result<Vec<DeadlineRow>, StoreError>;
        /// Writes an exported run or backfill job the store does not have (`cartflow state
        /// import`); one it has is left as it is.
        fn import(r: &Record) -> Result<Imported, StoreError>;
    }
}

/// Opens a store that is not a file: the aws backend's table.
pub trait RemoteStore: Send + Sync + Debug {
    /// `dynamodb://TABLE`.
    fn location(&self) -> String;
    /// A connection to it.
    fn open(&self) -> Result<Box<dyn Store>, StoreError>;
}

/// Where the run store is: a SQLite file (the default, `.cartflow/state.db`), or a store the
/// aws backend opens (`state: dynamodb://TABLE` in `cartflow.yaml`). Cheap to clone.
#[derive(Debug, Clone)]
pub enum StoreAt {
    /// A SQLite database file.
    File(PathBuf),
    /// A store of another backend.
    Remote(Arc<dyn RemoteStore>),
}

impl StoreAt {
    /// The store's name in messages and keys: the file's path, or `dynamodb://TABLE`.
    pub fn location(&self) -> String {
        match self {
            StoreAt::File(p) => p.display().to_string(),
            StoreAt::Remote(r) => r.location(),
        }
    }

    /// What identifies the store across handles (the canonical path of a file).
    pub fn key(&self) -> PathBuf {
        match self {
            StoreAt::File(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            StoreAt::Remote(r) => PathBuf::from(r.location()),
        }
    }

    /// The SQLite file, if the store is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StoreAt::File(p) => Some(p),
            StoreAt::Remote(_) => None,
        }
    }
}

impl From<PathBuf> for StoreAt {
    fn from(p: PathBuf) -> Self {
        StoreAt::File(p)
    }
}

impl From<&Path> for StoreAt {
    fn from(p: &Path) -> Self {
        StoreAt::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for StoreAt {
    fn from(p: &PathBuf) -> Self {
        StoreAt::File(p.clone())
    }
}

impl std::fmt::Display for StoreAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}
