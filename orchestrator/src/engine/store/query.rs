//! Reading the store back: runs, task instances and attempts as the CLI and the planners list
//! them. A stored value that cannot be read back is [`StoreError::Corrupt`], never a guess.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::owner::owner_alive;
use super::{SqliteStore, StoreError, parse_ts, ts, ts_column};
use crate::engine::state::{AttemptState, RunState, TaskState, Trigger};

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
    pub trigger: Trigger,
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
    /// Running, or how it ended.
    pub state: AttemptState,
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

impl SqliteStore {
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
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at, owner, lease_until FROM dag_runs
                 WHERE dag_id = ?1 AND interval_start >= ?2 AND interval_start < ?3 ORDER BY interval_start",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![dag_id, ts(from), ts(to)], |r| {
                let row = Self::run_row(r)?;
                let owner: Option<String> = r.get(8)?;
                let hb: Option<String> = r.get(9)?;
                Ok((row, owner, hb))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (row, owner, hb) = row.map_err(self.sql())?;
            let row = row.map_err(|w| self.corrupt(w))?;
            let live = row.state == RunState::Running
                && owner.is_some_and(|o| owner_alive(&o, hb.as_deref().and_then(parse_ts)));
            out.push((row, live));
        }
        Ok(out)
    }
    /// The earliest interval start of any run of `dag_id`.
    pub fn first_run_start(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.conn
            .query_row("SELECT min(interval_start) FROM dag_runs WHERE dag_id = ?1", [dag_id], |r| ts_column(r, 0))
            .map_err(self.sql())
    }

    /// The latest interval start of any run of `dag_id`.
    pub fn last_run_start(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.conn
            .query_row("SELECT max(interval_start) FROM dag_runs WHERE dag_id = ?1", [dag_id], |r| ts_column(r, 0))
            .map_err(self.sql())
    }

    /// Runs of `dag_id` in state `running` whose owner is alive (another process, or us).
    pub fn live_runs(&self, dag_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, owner, lease_until FROM dag_runs WHERE dag_id = ?1 AND state = 'running'")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([dag_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, owner, hb) = row.map_err(self.sql())?;
            if owner.is_some_and(|o| owner_alive(&o, hb.as_deref().and_then(parse_ts))) {
                out.push(run_id);
            }
        }
        Ok(out)
    }
    /// A `dag_runs` row (its first eight columns as the queries select them); the inner error names a
    /// value that cannot be read back.
    pub(super) fn run_row(r: &rusqlite::Row) -> rusqlite::Result<Result<RunRow, String>> {
        let get_ts = |i: usize| ts_column(r, i);
        let run_id: String = r.get(0)?;
        let (state, trigger): (String, String) = (r.get(4)?, r.get(5)?);
        let (Some(interval_start), Some(interval_end)) = (get_ts(2)?, get_ts(3)?) else {
            return Ok(Err(format!("run {run_id}: an interval bound is not a timestamp")));
        };
        let Some(state) = RunState::parse(&state) else {
            return Ok(Err(format!("run {run_id}: unknown state `{state}`")));
        };
        let Some(trigger) = Trigger::parse(&trigger) else {
            return Ok(Err(format!("run {run_id}: unknown trigger `{trigger}`")));
        };
        Ok(Ok(RunRow {
            run_id,
            dag_id: r.get(1)?,
            interval_start,
            interval_end,
            state,
            trigger,
            started_at: get_ts(6)?,
            ended_at: get_ts(7)?,
        }))
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what }
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
        let rows = stmt.query_map(params![dag_id, limit as i64], Self::run_row).map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(self.sql())?.map_err(|w| self.corrupt(w))?);
        }
        Ok(out)
    }
    /// One run.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at FROM dag_runs WHERE run_id = ?1",
                [run_id],
                Self::run_row,
            )
            .optional()
            .map_err(self.sql())?
            .transpose()
            .map_err(|w| self.corrupt(w))
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
            let state = serde_json::from_str(&json).map_err(|err| self.corrupt(format!("{task_id}: {err}")))?;
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
                Ok((
                    AttemptRow {
                        task_id: r.get(0)?,
                        attempt: r.get(1)?,
                        state: AttemptState::Running,
                        started_at: ts_column(r, 3)?.ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(
                                3,
                                rusqlite::types::Type::Null,
                                "an attempt without a start time".into(),
                            )
                        })?,
                        ended_at: ts_column(r, 4)?,
                        error: r.get(5)?,
                        exit_code: r.get(6)?,
                        summary: r.get(7)?,
                        log_path: r.get(8)?,
                    },
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (mut a, state) = row.map_err(self.sql())?;
            a.state = AttemptState::parse(&state).ok_or_else(|| {
                self.corrupt(format!("attempt {} of {} in {run_id}: unknown state `{state}`", a.attempt, a.task_id))
            })?;
            out.push(a);
        }
        Ok(out)
    }
}
