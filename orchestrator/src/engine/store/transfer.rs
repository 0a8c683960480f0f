//! Moving history between run stores (`cartflow state export` / `cartflow state import`): a
//! store-neutral file of JSON lines — a header, then one line per run (with its task
//! instances, attempts, facts and notifications) and one per backfill job — that any store
//! writes and any store reads back, so that a team moving from one machine's SQLite file to
//! the DynamoDB table keeps its runs: `nothing is due` for the days already run, resumes, the
//! saved job run ids, `cartflow runs` and the web UI's history.
//!
//! Import adds what the store does not have and never changes what it has: a run (or backfill
//! job) already there is left as it is and counted. One import run again after it was cut off
//! finishes the runs it had not written.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::engine::state::{AttemptState, RunState, TaskState, Trigger};
use crate::notify::Notification;

/// The `format` of the header line.
pub const FORMAT: &str = "cartflow-state";
/// The version of the file this cartflow writes and reads.
pub const VERSION: u32 = 1;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what the file is and where it came from.
    Header {
        /// [`FORMAT`].
        format: String,
        /// [`VERSION`].
        version: u32,
        /// The store it was exported from.
        from: String,
        /// When.
        exported_at: String,
    },
    /// A run with everything recorded under it.
    Run(Box<RunRecord>),
    /// A backfill job and its planned runs.
    Backfill(BackfillRecord),
}

/// A run as exported. Timestamps as the stores keep them (RFC 3339, UTC, milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// Interval start.
    pub interval_start: String,
    /// Interval end.
    pub interval_end: String,
    /// `success`, `failed`, `running` (a run whose owner died), ...
    pub state: String,
    /// How it came to be.
    pub trigger: String,
    /// When it was first claimed.
    pub created_at: String,
    /// When its last execution started.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Its task instances, in the DAG's order.
    pub tasks: Vec<TaskRecord>,
    /// Every attempt, by task and number.
    pub attempts: Vec<AttemptRecord>,
    /// The facts its tasks saved (job run ids, ...).
    pub facts: Vec<FactRecord>,
    /// Its notifications and how their delivery went.
    pub notifications: Vec<NotificationRecord>,
}

/// A task instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub task_id: String,
    /// Its state, as the stores keep it (the engine's `TaskState` in JSON).
    pub state_json: String,
    /// Attempts started.
    pub attempts: u32,
    /// Failed attempts of its current execution (the retry budget used).
    pub failures: u32,
    /// Last change.
    pub updated_at: String,
}

/// An attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The task.
    pub task_id: String,
    /// 1-based.
    pub attempt: u32,
    /// `running`, `success`, `failed`, `interrupted`, ...
    pub state: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub ended_at: Option<String>,
    /// Error message.
    pub error: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Summary.
    pub summary: Option<String>,
    /// Where its log is, as the exporting store recorded it (a file, or `s3://…`).
    pub log_path: Option<String>,
}

/// A fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactRecord {
    /// The task.
    pub task_id: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// A notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// `run/task/attempt/event`.
    pub dedupe_key: String,
    /// The target's name.
    pub target: String,
    /// The event.
    pub event: String,
    /// The target, resolved (JSON).
    pub spec: String,
    /// The notification (JSON).
    pub body: String,
    /// `pending`, `sending`, `sent`, `failed`.
    pub state: String,
    /// Delivery tries.
    pub tries: u32,
    /// The last delivery error.
    pub error: Option<String>,
    /// When it was raised.
    pub created_at: String,
    /// When it was delivered.
    pub sent_at: Option<String>,
}

/// A backfill job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRecord {
    /// Its id.
    pub backfill_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The request it was made for (what continues it).
    pub request: String,
    /// When.
    pub created_at: String,
    /// When it was closed (`None`: open, the same command continues it).
    pub finished_at: Option<String>,
    /// Its runs in order: (run id, action, how it ended).
    pub runs: Vec<(String, String, Option<String>)>,
}

/// A timestamp exactly as the stores write it (`2019-10-01T00:00:00.000Z`): their range
/// queries compare the text, so another spelling of the same instant would be misfiled.
fn stamp(v: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    match super::parse_ts(v) {
        Some(t) if super::ts(t) == v => Ok(t),
        Some(t) => Err(format!("`{v}` is not written as the stores write it (`{}`)", super::ts(t))),
        None => Err(format!("`{v}` is not a timestamp")),
    }
}

impl BackfillRecord {
    /// Checks what a store will write of the job.
    pub fn check(&self) -> Result<(), String> {
        let bad = |what: String| -> Result<(), String> { Err(format!("backfill job {}: {what}", self.backfill_id)) };
        if let Err(e) = stamp(&self.created_at) {
            return bad(format!("created_at {e}"));
        }
        if let Some(f) = &self.finished_at
            && let Err(e) = stamp(f)
        {
            return bad(format!("finished_at {e}"));
        }
        let mut seen = std::collections::HashSet::new();
        for (run, _, _) in &self.runs {
            if !seen.insert(run) {
                return bad(format!("run {run} twice"));
            }
        }
        Ok(())
    }
}

/// Where an export goes, one record after another.
pub type Sink<'a> = &'a mut dyn FnMut(Record) -> Result<(), StoreError>;

/// What an import did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Written.
    Added,
    /// The store has it already; left as it is.
    AlreadyThere,
}

impl RunRecord {
    /// Checks every value a store will write against what the engine reads back, so that an
    /// edited or damaged file is refused before anything of the run is written.
    pub fn check(&self) -> Result<(), String> {
        let bad = |what: String| -> Result<(), String> { Err(format!("run {}: {what}", self.run_id)) };
        let ts = |v: &str, what: &str| stamp(v).map_err(|e| format!("{what} {e}"));
        match stamp(&self.interval_start) {
            Ok(s) if super::run_id(&self.dag_id, s) == self.run_id => {}
            Ok(_) => return bad(format!("the id is not that of DAG {}'s run at {}", self.dag_id, self.interval_start)),
            Err(e) => return bad(format!("interval start {e}")),
        }
        for (v, what) in [(&self.interval_end, "interval end"), (&self.created_at, "created_at")] {
            if let Err(e) = ts(v.as_str(), what) {
                return bad(e);
            }
        }
        for (v, what) in [(&self.started_at, "started_at"), (&self.ended_at, "ended_at")] {
            if let Some(v) = v
                && let Err(e) = ts(v.as_str(), what)
            {
                return bad(e);
            }
        }
        if RunState::parse(&self.state).is_none() {
            return bad(format!("unknown state `{}`", self.state));
        }
        if Trigger::parse(&self.trigger).is_none() {
            return bad(format!("unknown trigger `{}`", self.trigger));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tasks {
            if !seen.insert(&t.task_id) {
                return bad(format!("task {} twice", t.task_id));
            }
            if serde_json::from_str::<TaskState>(&t.state_json).is_err() {
                return bad(format!("task {}: unreadable state `{}`", t.task_id, t.state_json));
            }
        }
        for a in &self.attempts {
            if !seen.contains(&a.task_id) {
                return bad(format!("attempt {} of task {}, which the run does not have", a.attempt, a.task_id));
            }
            if AttemptState::parse(&a.state).is_none() {
                return bad(format!("attempt {} of {}: unknown state `{}`", a.attempt, a.task_id, a.state));
            }
            if let Err(e) = ts(&a.started_at, "an attempt's start") {
                return bad(e);
            }
            if let Some(end) = &a.ended_at
                && let Err(e) = ts(end, "an attempt's end")
            {
                return bad(e);
            }
        }
        let mut keys = std::collections::HashSet::new();
        for a in &self.attempts {
            if !keys.insert(format!("attempt {} of {}", a.attempt, a.task_id)) {
                return bad(format!("attempt {} of {} twice", a.attempt, a.task_id));
            }
        }
        for f in &self.facts {
            if !seen.contains(&f.task_id) || !keys.insert(format!("fact {} of {}", f.key, f.task_id)) {
                return bad(format!("fact {} of task {}: twice, or of a task the run does not have", f.key, f.task_id));
            }
        }
        for n in &self.notifications {
            if !keys.insert(format!("notification {} to {}", n.dedupe_key, n.target)) {
                return bad(format!("notification {} to {} twice", n.dedupe_key, n.target));
            }
            if !matches!(n.state.as_str(), "pending" | "sending" | "sent" | "failed") {
                return bad(format!("notification {}: unknown state `{}`", n.dedupe_key, n.state));
            }
            if serde_json::from_str::<crate::notify::TargetSpec>(&n.spec).is_err() {
                return bad(format!("notification {}: unreadable target", n.dedupe_key));
            }
            if let Err(e) = ts(&n.created_at, "a notification's time") {
                return bad(e);
            }
        }
        for n in &self.notifications {
            if serde_json::from_str::<Notification>(&n.body).is_err() {
                return bad(format!("notification {}: unreadable body", n.dedupe_key));
            }
        }
        Ok(())
    }

    /// The task state of a task record (checked by [`RunRecord::check`]).
    pub fn task_state(t: &TaskRecord) -> TaskState {
        serde_json::from_str(&t.state_json).unwrap_or(TaskState::Queued)
    }
}

/// Copies attempt logs that are files here into the store's log place ([`super::Store::keep_log`]:
/// S3 for the DynamoDB store), so that `cartflow logs` reads them from the new store; a log
/// that is not a file here (already on S3, or gone) keeps its recorded path.
pub fn carry_logs(store: &dyn super::Store, r: &mut RunRecord) -> Result<usize, StoreError> {
    let mut carried = 0;
    for a in &mut r.attempts {
        let Some(path) = a.log_path.clone() else { continue };
        let local = std::path::Path::new(&path);
        if !local.is_file() {
            continue;
        }
        let kept = store.keep_log(&r.run_id, &a.task_id, a.attempt, local)?;
        if kept != path {
            carried += 1;
        }
        a.log_path = Some(kept);
    }
    Ok(carried)
}

type RunHead = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl super::SqliteStore {
    /// Every run and backfill job, oldest interval first; a run a live process holds is
    /// refused ([`StoreError::RunBusy`]): its state is still changing.
    pub fn export(&self, out: Sink<'_>) -> Result<(), StoreError> {
        let heads: Vec<RunHead> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, created_at, started_at, ended_at, owner, lease_until
                     FROM dag_runs ORDER BY interval_start, dag_id",
                )
                .map_err(self.sql())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ))
                })
                .map_err(self.sql())?;
            rows.collect::<Result<_, _>>().map_err(self.sql())?
        };
        for (
            run_id,
            dag_id,
            interval_start,
            interval_end,
            state,
            trigger,
            created_at,
            started_at,
            ended_at,
            owner,
            lease,
        ) in heads
        {
            if state == RunState::Running.name()
                && let Some(o) = &owner
                && super::owner::owner_alive(o, lease.as_deref().and_then(super::parse_ts))
            {
                return Err(StoreError::RunBusy { run_id, pid: super::describe_owner(o) });
            }
            let record = RunRecord {
                tasks: self.export_rows(
                    "SELECT task_id, state_json, attempts, failures, updated_at FROM task_instances WHERE run_id = ?1 ORDER BY rowid",
                    &run_id,
                    |r| {
                        Ok(TaskRecord {
                            task_id: r.get(0)?,
                            state_json: r.get(1)?,
                            attempts: r.get(2)?,
                            failures: r.get(3)?,
                            updated_at: r.get(4)?,
                        })
                    },
                )?,
                attempts: self.export_rows(
                    "SELECT task_id, attempt, state, started_at, ended_at, error, exit_code, summary, log_path FROM task_attempts
                     WHERE run_id = ?1 ORDER BY task_id, attempt",
                    &run_id,
                    |r| {
                        Ok(AttemptRecord {
                            task_id: r.get(0)?,
                            attempt: r.get(1)?,
                            state: r.get(2)?,
                            started_at: r.get(3)?,
                            ended_at: r.get(4)?,
                            error: r.get(5)?,
                            exit_code: r.get(6)?,
                            summary: r.get(7)?,
                            log_path: r.get(8)?,
                        })
                    },
                )?,
                facts: self.export_rows(
                    "SELECT task_id, key, value FROM task_facts WHERE run_id = ?1 ORDER BY task_id, key",
                    &run_id,
                    |r| Ok(FactRecord { task_id: r.get(0)?, key: r.get(1)?, value: r.get(2)? }),
                )?,
                notifications: self.export_rows(
                    "SELECT dedupe_key, target, event, spec, body, state, tries, error, created_at, sent_at FROM notifications
                     WHERE run_id = ?1 ORDER BY dedupe_key, target",
                    &run_id,
                    |r| {
                        Ok(NotificationRecord {
                            dedupe_key: r.get(0)?,
                            target: r.get(1)?,
                            event: r.get(2)?,
                            spec: r.get(3)?,
                            body: r.get(4)?,
                            state: r.get(5)?,
                            tries: r.get(6)?,
                            error: r.get(7)?,
                            created_at: r.get(8)?,
                            sent_at: r.get(9)?,
                        })
                    },
                )?,
                run_id,
                dag_id,
                interval_start,
                interval_end,
                state,
                trigger,
                created_at,
                started_at,
                ended_at,
            };
            out(Record::Run(Box::new(record)))?;
        }
        let jobs: Vec<(String, String, String, String, Option<String>)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT backfill_id, dag_id, request, created_at, finished_at FROM backfills ORDER BY created_at, backfill_id")
                .map_err(self.sql())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .map_err(self.sql())?;
            rows.collect::<Result<_, _>>().map_err(self.sql())?
        };
        for (backfill_id, dag_id, request, created_at, finished_at) in jobs {
            let runs = self.export_rows(
                "SELECT run_id, action, state FROM backfill_runs WHERE backfill_id = ?1 ORDER BY position",
                &backfill_id,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            out(Record::Backfill(BackfillRecord { backfill_id, dag_id, request, created_at, finished_at, runs }))?;
        }
        Ok(())
    }

    fn export_rows<T>(
        &self,
        sql: &str,
        id: &str,
        f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.sql())?;
        let rows = stmt.query_map([id], f).map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Writes a run or backfill job the store does not have, all of it in one transaction.
    pub fn import(&mut self, r: &Record) -> Result<Imported, StoreError> {
        use rusqlite::{OptionalExtension, params};
        let path = self.path.clone();
        let e = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(&e)?;
        match r {
            Record::Header { .. } => return Ok(Imported::AlreadyThere),
            Record::Run(run) => {
                run.check().map_err(|what| StoreError::Corrupt { path: path.clone(), what })?;
                let there = tx
                    .query_row("SELECT 1 FROM dag_runs WHERE run_id = ?1", [&run.run_id], |_| Ok(()))
                    .optional()
                    .map_err(&e)?;
                if there.is_some() {
                    return Ok(Imported::AlreadyThere);
                }
                tx.execute(
                    "INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, state, run_trigger, created_at, started_at, ended_at)
                     VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        run.run_id,
                        run.dag_id,
                        run.interval_start,
                        run.interval_end,
                        run.state,
                        run.trigger,
                        run.created_at,
                        run.started_at,
                        run.ended_at
                    ],
                )
                .map_err(&e)?;
                for t in &run.tasks {
                    tx.execute(
                        "INSERT INTO task_instances (run_id, task_id, state, state_json, attempts, updated_at, failures) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            run.run_id,
                            t.task_id,
                            RunRecord::task_state(t).name(),
                            t.state_json,
                            t.attempts,
                            t.updated_at,
                            t.failures
                        ],
                    )
                    .map_err(&e)?;
                }
                for a in &run.attempts {
                    tx.execute(
                        "INSERT INTO task_attempts (run_id, task_id, attempt, state, started_at, ended_at, error, exit_code, summary, log_path)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        params![
                            run.run_id,
                            a.task_id,
                            a.attempt,
                            a.state,
                            a.started_at,
                            a.ended_at,
                            a.error,
                            a.exit_code,
                            a.summary,
                            a.log_path
                        ],
                    )
                    .map_err(&e)?;
                }
                for f in &run.facts {
                    tx.execute(
                        "INSERT INTO task_facts (run_id, task_id, key, value) VALUES (?1, ?2, ?3, ?4)",
                        params![run.run_id, f.task_id, f.key, f.value],
                    )
                    .map_err(&e)?;
                }
                for n in &run.notifications {
                    let body: Notification = serde_json::from_str(&n.body).map_err(|err| StoreError::Corrupt {
                        path: path.clone(),
                        what: format!("notification {}: {err}", n.dedupe_key),
                    })?;
                    tx.execute(
                        "INSERT INTO notifications (dedupe_key, target, run_id, task_id, attempt, event, spec, body, state, tries, error, created_at, sent_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (dedupe_key, target) DO NOTHING",
                        params![
                            n.dedupe_key,
                            n.target,
                            run.run_id,
                            body.task.unwrap_or_default(),
                            body.attempt,
                            n.event,
                            n.spec,
                            n.body,
                            n.state,
                            n.tries,
                            n.error,
                            n.created_at,
                            n.sent_at
                        ],
                    )
                    .map_err(&e)?;
                }
            }
            Record::Backfill(b) => {
                b.check().map_err(|what| StoreError::Corrupt { path: path.clone(), what })?;
                let there = tx
                    .query_row("SELECT 1 FROM backfills WHERE backfill_id = ?1", [&b.backfill_id], |_| Ok(()))
                    .optional()
                    .map_err(&e)?;
                if there.is_some() {
                    return Ok(Imported::AlreadyThere);
                }
                tx.execute(
                    "INSERT INTO backfills (backfill_id, dag_id, request, created_at, finished_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![b.backfill_id, b.dag_id, b.request, b.created_at, b.finished_at],
                )
                .map_err(&e)?;
                for (pos, (run_id, action, state)) in b.runs.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO backfill_runs (backfill_id, run_id, position, action, state) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![b.backfill_id, run_id, pos as i64, action, state],
                    )
                    .map_err(&e)?;
                }
            }
        }
        tx.commit().map_err(&e)?;
        Ok(Imported::Added)
    }
}
