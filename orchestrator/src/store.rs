//! The run store: DAG runs, task instances and every attempt, in SQLite.
//!
//! One database file (default `.cartflow/state.db`) in WAL mode, with versioned migrations
//! (`PRAGMA user_version`). A run is claimed by one process at a time: the claim records the
//! owner (pid and process start time) and is refused while that owner is alive, so two
//! processes can never run the same (dag, logical date) at once; a dead owner's run is taken
//! over, its running attempts recorded as interrupted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::process;
use crate::schedule::DataInterval;
use crate::state::{RunState, TaskState, Trigger};

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
        /// The owner's pid.
        pid: String,
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
    /// A stored value cannot be read back.
    #[error("run store {path}: corrupt row: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What.
        what: String,
    },
}

const MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE dag_runs (
        run_id         TEXT PRIMARY KEY,
        dag_id         TEXT NOT NULL,
        logical_date   TEXT NOT NULL,
        interval_start TEXT NOT NULL,
        interval_end   TEXT NOT NULL,
        state          TEXT NOT NULL,
        run_trigger    TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        started_at     TEXT,
        ended_at       TEXT,
        owner          TEXT,
        heartbeat_at   TEXT,
        UNIQUE (dag_id, logical_date)
    );
    CREATE INDEX dag_runs_by_dag ON dag_runs (dag_id, logical_date);
    CREATE TABLE task_instances (
        run_id     TEXT NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
        task_id    TEXT NOT NULL,
        state      TEXT NOT NULL,
        state_json TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id)
    );
    CREATE TABLE task_attempts (
        run_id     TEXT NOT NULL,
        task_id    TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        state      TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        error      TEXT,
        exit_code  INTEGER,
        summary    TEXT,
        log_path   TEXT,
        PRIMARY KEY (run_id, task_id, attempt),
        FOREIGN KEY (run_id, task_id) REFERENCES task_instances (run_id, task_id) ON DELETE CASCADE
    );
    "#,
    // v2: small key/value facts a task saves while it runs (an AWS job run id saved before
    // polling, so that a retry re-attaches instead of starting a second job).
    r#"
    CREATE TABLE task_facts (
        run_id  TEXT NOT NULL,
        task_id TEXT NOT NULL,
        key     TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, key)
    );
    "#,
    // v3: backfill jobs, so that re-running a backfill command after a crash continues the
    // same job instead of starting over.
    r#"
    CREATE TABLE backfills (
        backfill_id TEXT PRIMARY KEY,
        dag_id      TEXT NOT NULL,
        request     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX backfills_open ON backfills (request) WHERE finished_at IS NULL;
    CREATE TABLE backfill_runs (
        backfill_id TEXT NOT NULL REFERENCES backfills (backfill_id) ON DELETE CASCADE,
        run_id      TEXT NOT NULL,
        position    INTEGER NOT NULL,
        action      TEXT NOT NULL,
        state       TEXT,
        PRIMARY KEY (backfill_id, run_id)
    );
    "#,
];

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
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

/// This process's owner token.
pub fn my_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let pid = std::process::id() as i32;
        process::process_token(pid).unwrap_or_else(|| format!("{pid}:?"))
    })
}

fn owner_alive(token: &str, heartbeat: Option<DateTime<Utc>>) -> bool {
    let pid: i32 = token.split(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match process::process_token(pid) {
        Some(live) if live == token => true,
        Some(live) if live.ends_with(":?") || token.ends_with(":?") => {
            heartbeat.is_some_and(|h| Utc::now() - h < chrono::Duration::seconds(60))
        }
        _ => false,
    }
}

/// A run of a backfill job: (run id, planned action, final state once it finished).
pub type BackfillRunRow = (String, String, Option<String>);

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Op {
    /// A task's new state (and how many attempts it has started so far).
    Task {
        /// The task.
        task_id: String,
        /// Its state.
        state: TaskState,
        /// Attempts started so far.
        attempts: u32,
    },
    /// An attempt started.
    AttemptStarted {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// When.
        started_at: DateTime<Utc>,
    },
    /// An attempt ended.
    AttemptEnded {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// `success`, `failed`, `skipped`, `cancelled`, `timed_out` or `interrupted`.
        outcome: &'static str,
        /// When.
        ended_at: DateTime<Utc>,
        /// Why it failed.
        error: Option<String>,
        /// The process exit code.
        exit_code: Option<i32>,
        /// A one-line summary.
        summary: Option<String>,
        /// The attempt's log, if one was written.
        log_path: Option<String>,
    },
}

/// How to claim a run.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The DAG.
    pub dag_id: &'a str,
    /// The interval.
    pub interval: DataInterval,
    /// Who asks.
    pub trigger: Trigger,
    /// Every task of the DAG, and whether it is selected for this execution.
    pub tasks: &'a [(&'a str, bool)],
    /// Clear selected tasks even when they succeeded.
    pub rerun: bool,
    /// Refuse when the run does not exist yet.
    pub require_existing: bool,
}

/// A claimed run: its id and the state of each task at the start of this execution.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run id.
    pub run_id: String,
    /// Whether the run existed before.
    pub existed: bool,
    /// Task id → (state, attempts started so far).
    pub tasks: HashMap<String, (TaskState, u32)>,
    /// Tasks whose attempt was interrupted by the death of an earlier process.
    pub interrupted: Vec<String>,
}

/// A DAG run as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// The run id.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// Interval start (UTC).
    pub interval_start: DateTime<Utc>,
    /// Interval end (UTC).
    pub interval_end: DateTime<Utc>,
    /// The state.
    pub state: RunState,
    /// How it came to be.
    pub trigger: String,
    /// When it started (last execution).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A task instance as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The task.
    pub task_id: String,
    /// Its state.
    pub state: TaskState,
    /// Attempts started.
    pub attempts: u32,
}

/// An attempt as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// The task.
    pub task_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// How it ended (or `running`).
    pub state: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Error message.
    pub error: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Summary.
    pub summary: Option<String>,
    /// Log file.
    pub log_path: Option<String>,
}

/// A connection to the run store.
#[derive(Debug)]
pub struct RunStore {
    conn: Connection,
    path: PathBuf,
}

impl RunStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<RunStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite { path: path.to_path_buf(), source })?;
        let mut store = RunStore { conn, path: path.to_path_buf() };
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

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn init(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        self.conn.busy_timeout(Duration::from_secs(30)).map_err(&e)?;
        self.conn.pragma_update(None, "journal_mode", "WAL").map_err(&e)?;
        self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(&e)?;
        self.conn.pragma_update(None, "foreign_keys", "ON").map_err(&e)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&e)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { path: self.path.clone(), found: version, known });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m).map_err(&e)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(self.sql())
    }

    /// Claims a run for this process: creates it, or takes over an existing one (resume).
    pub fn claim(&mut self, c: &Claim) -> Result<ClaimedRun, StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = Utc::now();
        let run_id = run_id(c.dag_id, c.interval.start);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let existing: Option<(Option<String>, Option<String>)> = tx
            .query_row("SELECT owner, heartbeat_at FROM dag_runs WHERE run_id = ?1", [&run_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(&e)?;
        let existed = existing.is_some();
        if let Some((Some(owner), hb)) = &existing
            && owner != my_token()
            && owner_alive(owner, hb.as_deref().and_then(parse_ts))
        {
            let pid = owner.split(':').next().unwrap_or("?").to_string();
            return Err(StoreError::RunBusy { run_id, pid });
        }
        if !existed && c.require_existing {
            return Err(StoreError::NoSuchRun { run_id });
        }
        if existed {
            tx.execute(
                "UPDATE dag_runs SET state = 'running', run_trigger = ?2, started_at = ?3, ended_at = NULL, owner = ?4, heartbeat_at = ?3 WHERE run_id = ?1",
                params![run_id, c.trigger.name(), ts(now), my_token()],
            )
            .map_err(&e)?;
        } else {
            tx.execute(
                "INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, state, run_trigger, created_at, started_at, owner, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?3, ?4, 'running', ?5, ?6, ?6, ?7, ?6)",
                params![run_id, c.dag_id, ts(c.interval.start), ts(c.interval.end), c.trigger.name(), ts(now), my_token()],
            )
            .map_err(&e)?;
        }
        let mut stored: HashMap<String, (TaskState, u32)> = HashMap::new();
        {
            let mut stmt =
                tx.prepare("SELECT task_id, state_json, attempts FROM task_instances WHERE run_id = ?1").map_err(&e)?;
            let rows = stmt
                .query_map([&run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?)))
                .map_err(&e)?;
            for row in rows {
                let (task, json, attempts) = row.map_err(&e)?;
                let state: TaskState = serde_json::from_str(&json).map_err(|err| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("task {task} of {run_id}: {err}"),
                })?;
                stored.insert(task, (state, attempts));
            }
        }
        let mut out = HashMap::new();
        let mut interrupted = Vec::new();
        for &(task, selected) in c.tasks {
            let (state, attempts) = stored.remove(task).unwrap_or((TaskState::Queued, 0));
            let new_state = match &state {
                TaskState::Running { attempt, .. } => {
                    tx.execute(
                        "UPDATE task_attempts SET state = 'interrupted', ended_at = ?4, error = 'the cartflow process running this attempt died'
                         WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                        params![run_id, task, attempt, ts(now)],
                    )
                    .map_err(&e)?;
                    interrupted.push(task.to_string());
                    state.interrupt().unwrap_or(TaskState::Queued)
                }
                TaskState::UpForRetry { .. } => TaskState::Queued,
                TaskState::Success { .. } if selected && c.rerun => TaskState::Queued,
                TaskState::Success { .. } => state.clone(),
                s if s.is_terminal() && selected => TaskState::Queued,
                _ => state.clone(),
            };
            if state.is_terminal() && new_state == TaskState::Queued {
                // A fresh start of a finished task: what its attempts saved (a finished AWS
                // job run to re-attach to) belongs to the previous execution.
                tx.execute("DELETE FROM task_facts WHERE run_id = ?1 AND task_id = ?2", params![run_id, task])
                    .map_err(&e)?;
            }
            let json = serde_json::to_string(&new_state).unwrap_or_default();
            tx.execute(
                "INSERT INTO task_instances (run_id, task_id, state, state_json, attempts, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, task_id) DO UPDATE SET state = excluded.state, state_json = excluded.state_json, updated_at = excluded.updated_at",
                params![run_id, task, new_state.name(), json, attempts, ts(now)],
            )
            .map_err(&e)?;
            out.insert(task.to_string(), (new_state, attempts));
        }
        tx.commit().map_err(&e)?;
        Ok(ClaimedRun { run_id, existed, tasks: out, interrupted })
    }

    /// Persists a batch of changes of one run in one transaction.
    pub fn apply(&mut self, run_id: &str, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        {
            let mut task = tx
                .prepare_cached(
                    "UPDATE task_instances SET state = ?3, state_json = ?4, attempts = ?5, updated_at = ?6 WHERE run_id = ?1 AND task_id = ?2",
                )
                .map_err(&e)?;
            let mut started = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO task_attempts (run_id, task_id, attempt, state, started_at) VALUES (?1, ?2, ?3, 'running', ?4)",
                )
                .map_err(&e)?;
            let mut ended = tx
                .prepare_cached(
                    "UPDATE task_attempts SET state = ?4, ended_at = ?5, error = ?6, exit_code = ?7, summary = ?8, log_path = ?9
                     WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                )
                .map_err(&e)?;
            for op in ops {
                match op {
                    Op::Task { task_id, state, attempts } => {
                        let json = serde_json::to_string(state).unwrap_or_default();
                        task.execute(params![run_id, task_id, state.name(), json, attempts, now]).map_err(&e)?;
                    }
                    Op::AttemptStarted { task_id, attempt, started_at } => {
                        started.execute(params![run_id, task_id, attempt, ts(*started_at)]).map_err(&e)?;
                    }
                    Op::AttemptEnded { task_id, attempt, outcome, ended_at, error, exit_code, summary, log_path } => {
                        ended
                            .execute(params![
                                run_id,
                                task_id,
                                attempt,
                                outcome,
                                ts(*ended_at),
                                error,
                                exit_code,
                                summary,
                                log_path
                            ])
                            .map_err(&e)?;
                    }
                }
            }
        }
        tx.commit().map_err(&e)
    }

    /// Tells other processes this run's owner is alive.
    pub fn heartbeat(&self, run_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE dag_runs SET heartbeat_at = ?2 WHERE run_id = ?1 AND owner = ?3",
                params![run_id, ts(Utc::now()), my_token()],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Records the end of an execution and releases the run.
    pub fn finish(&mut self, run_id: &str, state: RunState) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE dag_runs SET state = ?2, ended_at = ?3, owner = NULL WHERE run_id = ?1",
                params![run_id, state.name(), ts(Utc::now())],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Saves a fact about a task (overwriting the previous value of `key`).
    pub fn set_fact(&self, run_id: &str, task_id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO task_facts (run_id, task_id, key, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, task_id, key) DO UPDATE SET value = excluded.value",
                params![run_id, task_id, key, value],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Forgets a fact saved by [`RunStore::set_fact`].
    pub fn clear_fact(&self, run_id: &str, task_id: &str, key: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM task_facts WHERE run_id = ?1 AND task_id = ?2 AND key = ?3",
                params![run_id, task_id, key],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Reads a fact saved by [`RunStore::set_fact`].
    pub fn fact(&self, run_id: &str, task_id: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM task_facts WHERE run_id = ?1 AND task_id = ?2 AND key = ?3",
                params![run_id, task_id, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }

    /// The runs of `dag_id` whose interval starts in `[from, to)`, with whether a live
    /// process owns them.
    pub fn runs_between(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(RunRow, bool)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at, owner, heartbeat_at FROM dag_runs
                 WHERE dag_id = ?1 AND interval_start >= ?2 AND interval_start < ?3 ORDER BY interval_start",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![dag_id, ts(from), ts(to)], |r| {
                let row = self.run_row(r)?;
                let owner: Option<String> = r.get(8)?;
                let hb: Option<String> = r.get(9)?;
                Ok((row, owner, hb))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (row, owner, hb) = row.map_err(self.sql())?;
            let live = row.state == RunState::Running
                && owner.is_some_and(|o| o == my_token() || owner_alive(&o, hb.as_deref().and_then(parse_ts)));
            out.push((row, live));
        }
        Ok(out)
    }

    /// The latest interval start of any run of `dag_id`.
    pub fn last_run_start(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row("SELECT max(interval_start) FROM dag_runs WHERE dag_id = ?1", [dag_id], |r| r.get(0))
            .map_err(self.sql())?;
        Ok(s.as_deref().and_then(parse_ts))
    }

    /// Runs of `dag_id` in state `running` whose owner is alive (another process, or us).
    pub fn live_runs(&self, dag_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, owner, heartbeat_at FROM dag_runs WHERE dag_id = ?1 AND state = 'running'")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([dag_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, owner, hb) = row.map_err(self.sql())?;
            if owner.is_some_and(|o| o == my_token() || owner_alive(&o, hb.as_deref().and_then(parse_ts))) {
                out.push(run_id);
            }
        }
        Ok(out)
    }

    /// The unfinished backfill job for `request`, if any, with its runs in order:
    /// (run id, planned action, final state if it finished).
    pub fn open_backfill(&self, request: &str) -> Result<Option<(String, Vec<BackfillRunRow>)>, StoreError> {
        let id: Option<String> = self
            .conn
            .query_row("SELECT backfill_id FROM backfills WHERE request = ?1 AND finished_at IS NULL", [request], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.sql())?;
        let Some(id) = id else { return Ok(None) };
        let mut stmt = self
            .conn
            .prepare("SELECT run_id, action, state FROM backfill_runs WHERE backfill_id = ?1 ORDER BY position")
            .map_err(self.sql())?;
        let rows = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(self.sql())?;
        let runs = rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())?;
        Ok(Some((id, runs)))
    }

    /// Records a new backfill job and its planned runs.
    pub fn create_backfill(
        &mut self,
        dag_id: &str,
        request: &str,
        runs: &[(String, &str)],
    ) -> Result<String, StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = Utc::now();
        let id = format!("{dag_id}:{}", now.format("%Y%m%dT%H%M%S%.6fZ"));
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        tx.execute(
            "INSERT INTO backfills (backfill_id, dag_id, request, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, dag_id, request, ts(now)],
        )
        .map_err(&e)?;
        for (pos, (run_id, action)) in runs.iter().enumerate() {
            tx.execute(
                "INSERT INTO backfill_runs (backfill_id, run_id, position, action) VALUES (?1, ?2, ?3, ?4)",
                params![id, run_id, pos as i64, action],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(id)
    }

    /// Records how one run of a backfill job ended.
    pub fn backfill_run_done(&self, backfill_id: &str, run_id: &str, state: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE backfill_runs SET state = ?3 WHERE backfill_id = ?1 AND run_id = ?2",
                params![backfill_id, run_id, state],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Closes a backfill job: the same command later plans afresh.
    pub fn finish_backfill(&self, backfill_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE backfills SET finished_at = ?2 WHERE backfill_id = ?1",
                params![backfill_id, ts(Utc::now())],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    fn run_row(&self, r: &rusqlite::Row) -> rusqlite::Result<RunRow> {
        let get_ts = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
            Ok(r.get::<_, Option<String>>(i)?.as_deref().and_then(parse_ts))
        };
        Ok(RunRow {
            run_id: r.get(0)?,
            dag_id: r.get(1)?,
            interval_start: get_ts(2)?.unwrap_or_default(),
            interval_end: get_ts(3)?.unwrap_or_default(),
            state: RunState::parse(&r.get::<_, String>(4)?).unwrap_or(RunState::Failed),
            trigger: r.get(5)?,
            started_at: get_ts(6)?,
            ended_at: get_ts(7)?,
        })
    }

    /// Runs, newest interval first; all DAGs or one.
    pub fn runs(&self, dag_id: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at FROM dag_runs
                 WHERE (?1 IS NULL OR dag_id = ?1) ORDER BY interval_start DESC, dag_id LIMIT ?2",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![dag_id, limit as i64], |r| self.run_row(r)).map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at FROM dag_runs WHERE run_id = ?1",
                [run_id],
                |r| self.run_row(r),
            )
            .optional()
            .map_err(self.sql())
    }

    /// The task instances of a run.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT task_id, state_json, attempts FROM task_instances WHERE run_id = ?1 ORDER BY rowid")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?)))
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (task_id, json, attempts) = row.map_err(self.sql())?;
            let state = serde_json::from_str(&json)
                .map_err(|err| StoreError::Corrupt { path: self.path.clone(), what: format!("{task_id}: {err}") })?;
            out.push(TaskRow { task_id, state, attempts });
        }
        Ok(out)
    }

    /// The attempts of a run (all tasks, or one).
    pub fn attempts(&self, run_id: &str, task_id: Option<&str>) -> Result<Vec<AttemptRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT task_id, attempt, state, started_at, ended_at, error, exit_code, summary, log_path FROM task_attempts
                 WHERE run_id = ?1 AND (?2 IS NULL OR task_id = ?2) ORDER BY task_id, attempt",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![run_id, task_id], |r| {
                Ok(AttemptRow {
                    task_id: r.get(0)?,
                    attempt: r.get(1)?,
                    state: r.get(2)?,
                    started_at: r.get::<_, String>(3).map(|s| parse_ts(&s).unwrap_or_default())?,
                    ended_at: r.get::<_, Option<String>>(4)?.as_deref().and_then(parse_ts),
                    error: r.get(5)?,
                    exit_code: r.get(6)?,
                    summary: r.get(7)?,
                    log_path: r.get(8)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval() -> DataInterval {
        DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"))
    }

    #[test]
    fn migrations_are_versioned_and_idempotent() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s/state.db");
        let s = RunStore::open(&p).expect("open");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        drop(s);
        let s = RunStore::open(&p).expect("reopen");
        assert_eq!(s.schema_version().expect("v"), MIGRATIONS.len() as i64);
        s.conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(s);
        assert!(matches!(RunStore::open(&p), Err(StoreError::TooNew { found: 99, .. })));
    }

    #[test]
    fn claim_creates_then_resumes_keeping_successes() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = RunStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true), ("b", true), ("c", true)];
        let claim = Claim {
            dag_id: "d",
            interval: interval(),
            trigger: Trigger::Manual,
            tasks: &tasks,
            rerun: false,
            require_existing: false,
        };
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
                Op::Task { task_id: "a".into(), state: ok, attempts: 1 },
                Op::AttemptStarted { task_id: "b".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "b".into(), state: running, attempts: 1 },
                Op::Task { task_id: "c".into(), state: failed, attempts: 1 },
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
        let mut s = RunStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = Claim {
            dag_id: "d",
            interval: interval(),
            trigger: Trigger::Manual,
            tasks: &tasks,
            rerun: false,
            require_existing: false,
        };
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
    fn resume_requires_an_existing_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = RunStore::open(&dir.path().join("state.db")).expect("open");
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
    fn facts_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RunStore::open(&dir.path().join("state.db")).expect("open");
        s.set_fact("r", "t", "job_run_id", "jr_1").expect("set");
        s.set_fact("r", "t", "job_run_id", "jr_2").expect("overwrite");
        assert_eq!(s.fact("r", "t", "job_run_id").expect("get").as_deref(), Some("jr_2"));
        assert_eq!(s.fact("r", "t", "nope").expect("get"), None);
    }
}
