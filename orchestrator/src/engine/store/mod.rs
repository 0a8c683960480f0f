//! The run store: DAG runs, task instances and every attempt, in SQLite.
//!
//! One database file (default `.cartflow/state.db`) in WAL mode, with versioned migrations
//! (`PRAGMA user_version`). A run is claimed by one process at a time: the claim records the
//! owner (pid, process start time, host) with a lease its heartbeat renews, and is refused
//! while that owner holds it (see `owner.rs`), so two processes can never run the same (dag,
//! logical date) at once; a dead owner's run is taken over, its running attempts recorded as
//! interrupted and what they left of their process groups (recorded with each attempt) killed
//! before anything starts again. Every write of an execution checks that its process still owns
//! the run: one that lost it writes nothing more.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::engine::state::RunState;

mod api;
mod audit;
mod backfills;
mod facts;
mod notify;
mod overview;
mod owner;
mod query;
mod runs;
mod schema;
pub mod transfer;

pub use api::{RemoteStore, Store, StoreAt};
pub use audit::{
    AuditRow, CANCEL_LATENCY, CancelError, CancelRequested, Mark, MarkError, Marked, NewAudit, PauseSpan, Paused,
    local_user,
};
pub use backfills::BackfillRunRow;
pub use facts::AttemptFacts;
pub use notify::{DeadlineRow, Delivery, DeliveryState, NewNotification, NotificationRow};
pub use overview::{BackfillRow, GridQuery, GridRun, TaskSuccess, attempt_log};
pub use owner::{LEASE, SELF_STOP, describe as describe_owner, host, my_token};
pub use query::{AttemptRow, RunRow, TaskRow};
pub use runs::{Claim, ClaimedRun, Op, survives_requeue};

/// What another store's implementation shares with SQLite's, so that both decide the same way:
/// the owner ids and their lease, what a claim does to each task, what an interrupted attempt
/// is recorded with, killing what a dead owner's attempt left running, timestamps as stored.
#[cfg(feature = "aws")]
pub(crate) mod kit {
    pub(crate) use super::audit::apply_mark;
    pub(crate) use super::owner::{lease_end, owner_alive};
    pub(crate) use super::runs::{INTERRUPTED, kill_leftover, killed_note, on_claim, wait_killed};
    pub(crate) use super::{parse_ts, ts};
}

/// Errors of the run store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("run store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The folder for the database cannot be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another live process is running this run.
    #[error(
        "run {run_id} is being executed by another cartflow process (pid {pid}); wait for it to finish or stop it first"
    )]
    RunBusy {
        /// The run.
        run_id: String,
        /// The owner's pid, and its host when that is another ([`owner::describe`]).
        pid: String,
    },
    /// This process no longer holds the run: its lease expired (the store did not answer its
    /// heartbeats, the process was stopped) and another process took the run over, or the run
    /// was released. Nothing more of this execution is written.
    #[error(
        "run {run_id} is no longer held by this process: {}; this process stops its tasks and writes nothing more of the run",
        match owner { Some(o) => format!("cartflow process {o} took it over after this process's lease expired"), None => "it was released".to_string() }
    )]
    LeaseLost {
        /// The run.
        run_id: String,
        /// Who holds it now ([`owner::describe`]).
        owner: Option<String>,
    },
    /// An attempt that is not running in the store asked to record its process group.
    #[error("attempt {attempt} of task {task_id} in run {run_id} is not running in the run store")]
    NotRunning {
        /// The run.
        run_id: String,
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// `--resume` was asked but there is nothing to resume.
    #[error("there is no run {run_id} to resume")]
    NoSuchRun {
        /// The run.
        run_id: String,
    },
    /// The database was written by a newer cartflow.
    #[error(
        "run store {path} has schema version {found}, newer than this cartflow understands ({known}); upgrade cartflow"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// This store does not offer the operation (yet).
    #[error("the run store {store} does not offer {what} (the SQLite store does)")]
    Unsupported {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
    },
    /// The store answered an error (a remote store: the service, the network).
    #[error("run store {store}: {message}")]
    Remote {
        /// The store.
        store: String,
        /// What it said.
        message: String,
    },
    /// A stored value cannot be read back.
    #[error("run store {path}: corrupt row: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What.
        what: String,
    },
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

/// A nullable timestamp column; text that is not a timestamp is a conversion failure (which
/// [`RunStore`] reports as [`StoreError::Corrupt`]), never a guess.
fn ts_column(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => parse_ts(&s).map(Some).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                format!("`{s}` is not a timestamp").into(),
            )
        }),
    }
}

/// The id of the run of `dag_id` for the interval starting at `start`.
pub fn run_id(dag_id: &str, start: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Hand-rolled: backfill planning formats one id per interval (tens of thousands).
    fn push(s: &mut String, v: u32, width: usize) {
        let mut buf = [b'0'; 4];
        let mut v = v;
        for i in (0..width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        s.extend(buf[..width].iter().map(|b| *b as char));
    }
    let mut s = String::with_capacity(dag_id.len() + 21);
    s.push_str(dag_id);
    s.push('@');
    push(&mut s, start.year().clamp(0, 9999) as u32, 4);
    s.push('-');
    push(&mut s, start.month(), 2);
    s.push('-');
    push(&mut s, start.day(), 2);
    s.push('T');
    push(&mut s, start.hour(), 2);
    s.push(':');
    push(&mut s, start.minute(), 2);
    s.push(':');
    push(&mut s, start.second(), 2);
    s.push('Z');
    s
}

/// A connection to the run store, whichever it is ([`Store`]'s methods, through `Deref`).
#[derive(Debug)]
pub struct RunStore {
    inner: Box<dyn Store>,
    at: StoreAt,
}

impl std::ops::Deref for RunStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.inner
    }
}

impl std::ops::DerefMut for RunStore {
    fn deref_mut(&mut self) -> &mut (dyn Store + 'static) {
        &mut *self.inner
    }
}

impl From<&StoreAt> for StoreAt {
    fn from(at: &StoreAt) -> Self {
        at.clone()
    }
}

impl RunStore {
    /// Opens the store at `at` (a SQLite file is created and migrated).
    pub fn open(at: impl Into<StoreAt>) -> Result<RunStore, StoreError> {
        let at = at.into();
        let inner: Box<dyn Store> = match &at {
            StoreAt::File(p) => Box::new(SqliteStore::open(p)?),
            StoreAt::Remote(r) => r.open()?,
        };
        Ok(RunStore { inner, at })
    }

    /// Opens the store for writes that must survive a power loss once they return (a fact a
    /// retry re-attaches by): a SQLite file syncs each commit to disk.
    pub fn open_durable(at: impl Into<StoreAt>) -> Result<RunStore, StoreError> {
        let store = RunStore::open(at)?;
        if let Some(s) = store.inner.as_sqlite() {
            s.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(|source| StoreError::Sqlite { path: s.path.clone(), source })?;
        }
        Ok(store)
    }

    /// Where the store is.
    pub fn at(&self) -> &StoreAt {
        &self.at
    }

    /// Records the end of an execution and releases the run.
    pub fn finish(&mut self, run_id: &str, state: RunState) -> Result<(), StoreError> {
        self.inner.finish_with(run_id, state, &[])
    }
}

/// The SQLite run store: one connection to the database file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite { path: path.to_path_buf(), source })?;
        let mut store = SqliteStore { conn, path: path.to_path_buf() };
        store.init()?;
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder for task logs, beside the database.
    pub fn logs_dir(&self) -> PathBuf {
        self.path.parent().map(|p| p.join("logs")).unwrap_or_else(|| PathBuf::from("logs"))
    }

    /// Maps SQLite's errors; a value that does not convert (see [`ts_column`]) is corrupt.
    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| match source {
            rusqlite::Error::FromSqlConversionFailure(col, _, e) => {
                StoreError::Corrupt { path: self.path.clone(), what: format!("column {col}: {e}") }
            }
            source => StoreError::Sqlite { path: self.path.clone(), source },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use rusqlite::params;

    use super::schema::MIGRATIONS;
    use super::*;
    use crate::engine::state::{RunState, TaskState, Trigger};
    use crate::process;
    use crate::schedule::DataInterval;

    #[test]
    fn the_engine_crash_points_are_the_ones_in_the_code() {
        let used = cartflow_jobs::crash::names_in(&[
            include_str!("runs.rs"),
            include_str!("backfills.rs"),
            include_str!("facts.rs"),
            include_str!("mod.rs"),
            include_str!("../../kinds/aws_job.rs"),
            include_str!("../../stores/dynamodb.rs"),
        ]);
        let mut listed: Vec<String> = cartflow_jobs::crash::ENGINE_POINTS
            .iter()
            .chain(cartflow_jobs::crash::AWS_POINTS)
            .map(|s| s.to_string())
            .collect();
        listed.sort_unstable();
        assert_eq!(used, listed);
    }

    fn interval() -> DataInterval {
        DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"))
    }

    /// A manual claim of DAG `d`'s 2019-10-01 run with these tasks.
    fn manual_claim<'a>(tasks: &'a [(&'a str, bool)]) -> Claim<'a> {
        Claim {
            dag_id: "d",
            interval: interval(),
            trigger: Trigger::Manual,
            tasks,
            rerun: false,
            require_existing: false,
        }
    }

    #[test]
    fn migrations_are_versioned_and_idempotent() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s/state.db");
        let s = SqliteStore::open(&p).expect("open");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        drop(s);
        let s = SqliteStore::open(&p).expect("reopen");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        s.conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(s);
        assert!(matches!(SqliteStore::open(&p), Err(StoreError::TooNew { found: 99, .. })));
    }

    #[test]
    fn a_store_of_an_older_version_opens_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("state.db");
        {
            // A store as cartflow left it before attempts recorded their process group (v3).
            let conn = rusqlite::Connection::open(&p).expect("open");
            for m in &MIGRATIONS[..3] {
                conn.execute_batch(m).expect("migrate");
            }
            conn.pragma_update(None, "user_version", 3).expect("version");
            conn.execute_batch(
                "INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, state, run_trigger, created_at)
                 VALUES ('d@2019-10-01T00:00:00Z', 'd', '2019-10-01T00:00:00.000Z', '2019-10-01T00:00:00.000Z', '2019-10-02T00:00:00.000Z', 'failed', 'manual', '2019-10-02T00:00:00.000Z');
                 INSERT INTO task_instances (run_id, task_id, state, state_json, attempts, updated_at)
                 VALUES ('d@2019-10-01T00:00:00Z', 'a', 'queued', '{\"state\":\"queued\"}', 1, '2019-10-02T00:00:00.000Z');
                 INSERT INTO task_attempts (run_id, task_id, attempt, state, started_at, ended_at, error)
                 VALUES ('d@2019-10-01T00:00:00Z', 'a', 1, 'failed', '2019-10-02T00:00:00.000Z', '2019-10-02T00:00:01.000Z', 'boom');",
            )
            .expect("rows");
        }
        let s = SqliteStore::open(&p).expect("open an older store");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        assert_eq!(s.runs(None, 10).expect("runs")[0].state, RunState::Failed);
        let attempts = s.attempts("d@2019-10-01T00:00:00Z", None).expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error.as_deref(), Some("boom"));
        let pgid: Option<i64> = s.conn.query_row("SELECT pgid FROM task_attempts", [], |r| r.get(0)).expect("pgid");
        assert_eq!(pgid, None);
    }

    /// A child process, killed and reaped when the test ends, passed or not.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep 300` in its own group with the environment of attempt 1 of task `a`, and its group.
    fn attempt_process() -> (Reaped, process::Group) {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sleep")
            .arg("300")
            .envs(process::attempt_env("d@2019-10-01T00:00:00Z", "a", 1))
            .process_group(0)
            .spawn()
            .expect("sleep");
        let group = process::Group::of_leader(child.id() as i32).expect("/proc");
        (Reaped(child), group)
    }

    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    }

    #[test]
    fn taking_over_a_dead_owners_run_kills_the_process_group_its_running_attempt_recorded() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = manual_claim(&tasks);
        let start = |s: &mut SqliteStore, run_id: &str, attempt: u32| {
            let now = Utc::now();
            let running = TaskState::Queued.start(attempt, now).expect("start");
            s.apply(
                run_id,
                &[
                    Op::AttemptStarted { task_id: "a".into(), attempt, started_at: now },
                    Op::Task { task_id: "a".into(), state: running, attempts: attempt, failures: 0 },
                ],
            )
            .expect("apply");
        };
        let c = s.claim(&claim).expect("claim");
        let (_child, group) = attempt_process();
        let pid = group.pgid;
        // Not running in the store: refused, not lost.
        assert!(matches!(s.record_group(&c.run_id, "a", 1, &group), Err(StoreError::NotRunning { .. })));
        start(&mut s, &c.run_id, 1);
        s.record_group(&c.run_id, "a", 1, &group).expect("record");

        // Our own claim again: our processes are ours to manage, not killed.
        s.claim(&claim).expect("reclaim");
        assert!(running(pid), "a claim by the same process kills nothing");

        // The pid was recycled (another start time): the process is left alone.
        start(&mut s, &c.run_id, 1);
        let recycled = process::Group { leader_start: group.leader_start + 1, ..group.clone() };
        s.record_group(&c.run_id, "a", 1, &recycled).expect("record");
        s.conn.execute("UPDATE dag_runs SET owner = '999999999:1'", []).expect("dead owner");
        let c2 = s.claim(&claim).expect("takeover");
        assert_eq!(c2.interrupted, vec!["a".to_string()]);
        assert!(running(pid), "a recycled pid is never hit");
        assert_eq!(
            s.attempts(&c.run_id, Some("a")).expect("attempts")[0].error.as_deref(),
            Some("the cartflow process running this attempt died")
        );

        // The recorded group, its owner dead: killed before the claim returns.
        start(&mut s, &c.run_id, 1);
        s.record_group(&c.run_id, "a", 1, &group).expect("record");
        s.conn.execute("UPDATE dag_runs SET owner = '999999999:1'", []).expect("dead owner");
        let c3 = s.claim(&claim).expect("takeover");
        assert_eq!(c3.interrupted, vec!["a".to_string()]);
        assert!(!running(pid), "the crashed attempt's process {pid} is killed");
        let error = s.attempts(&c.run_id, Some("a")).expect("attempts")[0].error.clone().unwrap_or_default();
        assert_eq!(
            error,
            format!(
                "the cartflow process running this attempt died; its process group {pid} was still running and was killed"
            )
        );
    }

    #[test]
    fn claim_creates_then_resumes_keeping_successes() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true), ("b", true), ("c", true)];
        let claim = manual_claim(&tasks);
        let c = s.claim(&claim).expect("claim");
        assert!(!c.existed);
        assert_eq!(c.run_id, "d@2019-10-01T00:00:00Z");
        let now = Utc::now();
        let running = TaskState::Queued.start(1, now).expect("start");
        let ok = running.succeed(now).expect("ok");
        let failed = TaskState::Queued.start(1, now).expect("start").fail("x".into(), now, None).expect("fail");
        s.apply(
            &c.run_id,
            &[
                Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "a".into(), state: ok, attempts: 1, failures: 0 },
                Op::AttemptStarted { task_id: "b".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "b".into(), state: running, attempts: 1, failures: 0 },
                Op::Task { task_id: "c".into(), state: failed, attempts: 1, failures: 1 },
            ],
        )
        .expect("apply");
        // The same process may claim again (its own token); b was running: interrupted.
        let c2 = s.claim(&claim).expect("reclaim");
        assert!(c2.existed);
        assert!(matches!(c2.tasks["a"].0, TaskState::Success { .. }));
        assert_eq!(c2.tasks["b"].0, TaskState::Queued);
        assert_eq!(c2.tasks["c"].0, TaskState::Queued);
        assert_eq!(c2.interrupted, vec!["b".to_string()]);
        let attempts = s.attempts(&c.run_id, Some("b")).expect("attempts");
        assert_eq!(attempts[0].state, "interrupted");
        // A rerun clears successes too.
        let c3 = s.claim(&Claim { rerun: true, ..claim.clone() }).expect("rerun");
        assert_eq!(c3.tasks["a"].0, TaskState::Queued);
        assert_eq!(c3.tasks["a"].1, 1, "attempt numbers keep counting");
    }

    #[test]
    fn a_live_owner_blocks_a_second_claim() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = manual_claim(&tasks);
        let c = s.claim(&claim).expect("claim");
        // Pretend pid 1 (always alive: init) owns it.
        let init = process::process_token(1).unwrap_or_else(|| "1:?".into());
        s.conn
            .execute("UPDATE dag_runs SET owner = ?1, heartbeat_at = ?2", params![init, ts(Utc::now())])
            .expect("owner");
        let err = s.claim(&claim).expect_err("busy");
        assert!(matches!(err, StoreError::RunBusy { .. }), "{err}");
        // A dead owner is taken over.
        s.conn.execute("UPDATE dag_runs SET owner = '999999999:1'", []).expect("owner");
        s.claim(&claim).expect("takeover");
        s.finish(&c.run_id, RunState::Success).expect("finish");
        assert_eq!(s.run(&c.run_id).expect("run").expect("exists").state, RunState::Success);
    }

    #[test]
    fn another_hosts_run_is_held_by_its_lease_and_taken_over_once_it_expired() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true), ("b", true)];
        let claim = manual_claim(&tasks);
        let c = s.claim(&claim).expect("claim");
        let lease: String = s.conn.query_row("SELECT lease_until FROM dag_runs", [], |r| r.get(0)).expect("lease");
        let lease = parse_ts(&lease).expect("a timestamp") - Utc::now();
        assert!(lease > chrono::Duration::seconds(80) && lease <= chrono::Duration::seconds(90), "{lease}");
        let now = Utc::now();
        let running = TaskState::Queued.start(1, now).expect("start");
        s.apply(
            &c.run_id,
            &[
                Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "a".into(), state: running.clone(), attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        // A process of another host holds it (pid 1 lives here: its pid must not count).
        let init = process::process_token(1).expect("init");
        let other = format!("{init}@another-host/00000000");
        let set_owner = |s: &SqliteStore, lease_secs: i64| {
            s.conn
                .execute(
                    "UPDATE dag_runs SET owner = ?1, lease_until = ?2",
                    params![other, ts(Utc::now() + chrono::Duration::seconds(lease_secs))],
                )
                .expect("owner")
        };
        set_owner(&s, 30);
        let err = s.claim(&claim).expect_err("held");
        assert!(matches!(&err, StoreError::RunBusy { pid, .. } if pid == "1 on another-host/00000000"), "{err}");
        assert!(err.to_string().contains("(pid 1 on another-host/00000000)"), "{err}");
        // What we would still write of it is refused, and nothing is written.
        let ok = running.succeed(Utc::now()).expect("ok");
        let lost = s
            .apply(&c.run_id, &[Op::Task { task_id: "a".into(), state: ok.clone(), attempts: 1, failures: 0 }])
            .expect_err("not ours");
        assert!(
            matches!(&lost, StoreError::LeaseLost { owner: Some(o), .. } if o == "1 on another-host/00000000"),
            "{lost}"
        );
        assert!(matches!(s.heartbeat(&c.run_id), Err(StoreError::LeaseLost { .. })));
        assert!(matches!(s.restart_fresh(&c.run_id, &["b".to_string()]), Err(StoreError::LeaseLost { .. })));
        assert!(matches!(s.finish(&c.run_id, RunState::Success), Err(StoreError::LeaseLost { .. })));
        let (_child, group) = attempt_process();
        assert!(matches!(s.record_group(&c.run_id, "a", 1, &group), Err(StoreError::LeaseLost { .. })));
        assert_eq!(s.tasks(&c.run_id).expect("tasks")[0].state, running, "the refused write left no trace");
        let (state, owner): (String, String) =
            s.conn.query_row("SELECT state, owner FROM dag_runs", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("run");
        assert_eq!((state.as_str(), owner.as_str()), ("running", other.as_str()));
        assert!(s.live_runs("d").expect("live").contains(&c.run_id));
        // Its lease expired: taken over, its running attempt interrupted (its processes are on
        // its host: not ours to look for).
        set_owner(&s, -1);
        assert!(s.live_runs("d").expect("live").is_empty());
        let c2 = s.claim(&claim).expect("takeover");
        assert_eq!(c2.interrupted, vec!["a".to_string()]);
        s.heartbeat(&c.run_id).expect("ours again");
        s.finish(&c.run_id, RunState::Failed).expect("finish");
        assert!(matches!(s.heartbeat(&c.run_id), Err(StoreError::LeaseLost { owner: None, .. })), "released");
    }

    #[test]
    fn resume_requires_an_existing_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = Claim {
            dag_id: "d",
            interval: interval(),
            trigger: Trigger::Manual,
            tasks: &tasks,
            rerun: false,
            require_existing: true,
        };
        assert!(matches!(s.claim(&claim), Err(StoreError::NoSuchRun { .. })));
    }

    #[test]
    fn run_ids_name_the_interval_start_in_utc() {
        let t = DateTime::parse_from_rfc3339("2019-10-01T02:05:09+02:00").expect("ts").with_timezone(&Utc);
        assert_eq!(run_id("daily", t), "daily@2019-10-01T00:05:09Z");
    }

    #[test]
    fn a_row_that_cannot_be_read_back_is_corrupt_not_guessed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = manual_claim(&tasks);
        let c = s.claim(&claim).expect("claim");
        s.apply(&c.run_id, &[Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: Utc::now() }])
            .expect("apply");
        assert_eq!(s.attempts(&c.run_id, None).expect("attempts")[0].state, "running");
        // A state this cartflow does not know (a newer one wrote it, or the file was edited).
        s.conn.execute("UPDATE dag_runs SET state = 'exploded'", []).expect("corrupt run");
        for err in [s.runs(None, 10).expect_err("runs"), s.run(&c.run_id).expect_err("run")] {
            assert!(matches!(&err, StoreError::Corrupt { what, .. } if what.contains("exploded")), "{err}");
        }
        s.conn.execute("UPDATE dag_runs SET state = 'running', run_trigger = 'cron'", []).expect("trigger");
        assert!(matches!(s.runs(None, 10), Err(StoreError::Corrupt { what, .. }) if what.contains("cron")));
        s.conn.execute("UPDATE task_attempts SET state = 'melted'", []).expect("attempt");
        assert!(
            matches!(s.attempts(&c.run_id, None), Err(StoreError::Corrupt { what, .. }) if what.contains("melted"))
        );
    }

    #[test]
    fn a_fresh_queueing_forgets_a_tasks_facts_but_the_leftover_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let c = s.claim(&manual_claim(&tasks)).expect("claim");
        let facts =
            |s: &SqliteStore| ["athena_ctas", "leftover.athena_ctas"].map(|k| s.fact(&c.run_id, "a", k).expect("get"));
        s.set_fact(&c.run_id, "a", "athena_ctas", "{}").expect("set");
        s.set_fact(&c.run_id, "a", "leftover.athena_ctas", "[1]").expect("set");
        let ok = TaskState::Queued.start(1, Utc::now()).and_then(|r| r.succeed(Utc::now())).expect("ok");
        s.apply(&c.run_id, &[Op::Task { task_id: "a".into(), state: ok, attempts: 1, failures: 0 }]).expect("apply");
        s.finish(&c.run_id, RunState::Success).expect("finish");
        s.claim(&Claim { rerun: true, ..manual_claim(&tasks) }).expect("rerun");
        assert_eq!(facts(&s), [None, Some("[1]".to_string())], "a rerun (claim) keeps only the leftover");
        s.set_fact(&c.run_id, "a", "athena_ctas", "{}").expect("set");
        s.restart_fresh(&c.run_id, &["a".to_string()]).expect("restart");
        assert_eq!(facts(&s), [None, Some("[1]".to_string())], "so does a fresh restart");
    }

    #[test]
    fn facts_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        s.set_fact("r", "t", "job_run_id", "jr_1").expect("set");
        s.set_fact("r", "t", "job_run_id", "jr_2").expect("overwrite");
        assert_eq!(s.fact("r", "t", "job_run_id").expect("get").as_deref(), Some("jr_2"));
        assert_eq!(s.fact("r", "t", "nope").expect("get"), None);
    }
}
