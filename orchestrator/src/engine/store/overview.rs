//! What the web UI reads at once: the grid of a DAG's runs × task states, every fact of a run,
//! the backfill jobs. Each is one query (or two), so a page over years of daily runs stays fast.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{SqliteStore, StoreError, ts, ts_column};
use crate::engine::state::RunState;

/// One column of the grid: a run and the state name of each of its task instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridRun {
    /// The run id.
    pub run_id: String,
    /// Interval start (UTC).
    pub interval_start: DateTime<Utc>,
    /// Interval end (UTC).
    pub interval_end: DateTime<Utc>,
    /// The run's state.
    pub state: RunState,
    /// (task id, state name) of every task instance, in the order they were created.
    pub tasks: Vec<(String, String)>,
}

/// Which runs a grid page shows.
#[derive(Debug, Clone, Default)]
pub struct GridQuery {
    /// Only intervals starting at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Only intervals starting before this.
    pub before: Option<DateTime<Utc>>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// At most this many runs: the newest that match.
    pub limit: usize,
}

/// A backfill job as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRow {
    /// Its id.
    pub backfill_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The request it was planned from (its key).
    pub request: String,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it finished (none while it is open).
    pub finished_at: Option<DateTime<Utc>>,
    /// Runs planned.
    pub planned: u32,
    /// Runs that ended in success.
    pub succeeded: u32,
    /// Runs that ended in any other state.
    pub failed: u32,
}

/// A run in which a task succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSuccess {
    /// The run id.
    pub run_id: String,
    /// Interval start (UTC).
    pub interval_start: DateTime<Utc>,
    /// Interval end (UTC).
    pub interval_end: DateTime<Utc>,
    /// When its successful attempt ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Where an attempt's log lives under the logs folder: the executor writes it there, and the
/// store records the path when the attempt ends (so a live tail finds it while it runs).
pub fn attempt_log(
    logs_dir: &std::path::Path,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    attempt: u32,
) -> std::path::PathBuf {
    logs_dir.join(dag_id).join(run_id).join(task_id).join(format!("attempt-{attempt}.log"))
}

impl SqliteStore {
    /// The grid of `dag_id`: the newest `q.limit` runs that match, oldest first, each with its
    /// task states.
    pub fn grid(&self, dag_id: &str, q: &GridQuery) -> Result<Vec<GridRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT run_id, interval_start, interval_end, state FROM dag_runs
                 WHERE dag_id = ?1 AND (?2 IS NULL OR interval_start >= ?2) AND (?3 IS NULL OR interval_start < ?3)
                   AND (?4 IS NULL OR state = ?4)
                 ORDER BY interval_start DESC LIMIT ?5",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(
                params![dag_id, q.from.map(ts), q.before.map(ts), q.state.map(RunState::name), q.limit as i64],
                |r| Ok((r.get::<_, String>(0)?, ts_column(r, 1)?, ts_column(r, 2)?, r.get::<_, String>(3)?)),
            )
            .map_err(self.sql())?;
        let mut runs = Vec::new();
        for row in rows {
            let (run_id, start, end, state) = row.map_err(self.sql())?;
            let (Some(interval_start), Some(interval_end)) = (start, end) else {
                return Err(self.corrupt_row(format!("run {run_id}: an interval bound is missing")));
            };
            let state = RunState::parse(&state)
                .ok_or_else(|| self.corrupt_row(format!("run {run_id}: unknown state `{state}`")))?;
            runs.push(GridRun { run_id, interval_start, interval_end, state, tasks: Vec::new() });
        }
        runs.reverse();
        if runs.is_empty() {
            return Ok(runs);
        }
        // The task states of exactly those runs, in one query over the primary key's prefix.
        let (first, last) = (runs[0].interval_start, runs[runs.len() - 1].interval_start);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT t.run_id, t.task_id, t.state FROM dag_runs r JOIN task_instances t ON t.run_id = r.run_id
                 WHERE r.dag_id = ?1 AND r.interval_start >= ?2 AND r.interval_start <= ?3 ORDER BY t.rowid",
            )
            .map_err(self.sql())?;
        let index: std::collections::HashMap<String, usize> =
            runs.iter().enumerate().map(|(i, r)| (r.run_id.clone(), i)).collect();
        let rows = stmt
            .query_map(params![dag_id, ts(first), ts(last)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(self.sql())?;
        for row in rows {
            let (run_id, task_id, state) = row.map_err(self.sql())?;
            if let Some(&i) = index.get(&run_id) {
                runs[i].tasks.push((task_id, state));
            }
        }
        Ok(runs)
    }

    /// The ids of every DAG that has runs.
    pub fn dag_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT DISTINCT dag_id FROM dag_runs ORDER BY dag_id").map_err(self.sql())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.sql())?;
        rows.collect::<Result<Vec<String>, _>>().map_err(self.sql())
    }

    /// Every fact of a run: (task, key, value), by task and key.
    pub fn run_facts(&self, run_id: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT task_id, key, value FROM task_facts WHERE run_id = ?1 ORDER BY task_id, key")
            .map_err(self.sql())?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// The runs in which `task_id` of `dag_id` succeeded (what it wrote is theirs), oldest
    /// interval first: (run id, interval start, interval end, when the attempt ended).
    pub fn task_successes(&self, dag_id: &str, task_id: &str) -> Result<Vec<TaskSuccess>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.run_id, r.interval_start, r.interval_end, max(a.ended_at)
                 FROM dag_runs r JOIN task_attempts a ON a.run_id = r.run_id
                 WHERE r.dag_id = ?1 AND a.task_id = ?2 AND a.state = 'success'
                 GROUP BY r.run_id ORDER BY r.interval_start",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![dag_id, task_id], |r| {
                Ok((r.get::<_, String>(0)?, ts_column(r, 1)?, ts_column(r, 2)?, ts_column(r, 3)?))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, start, end, ended_at) = row.map_err(self.sql())?;
            let (Some(interval_start), Some(interval_end)) = (start, end) else {
                return Err(self.corrupt_row(format!("run {run_id}: an interval bound is missing")));
            };
            out.push(TaskSuccess { run_id, interval_start, interval_end, ended_at });
        }
        Ok(out)
    }

    /// The value of fact `key` of `task_id` in every run of `dag_id` that has it, oldest
    /// interval first: (run id, interval start, value).
    pub fn fact_history(
        &self,
        dag_id: &str,
        task_id: &str,
        key: &str,
    ) -> Result<Vec<(String, DateTime<Utc>, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.run_id, r.interval_start, f.value FROM dag_runs r JOIN task_facts f ON f.run_id = r.run_id
                 WHERE r.dag_id = ?1 AND f.task_id = ?2 AND f.key = ?3 ORDER BY r.interval_start",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![dag_id, task_id, key], |r| {
                Ok((r.get::<_, String>(0)?, ts_column(r, 1)?, r.get::<_, String>(2)?))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, start, value) = row.map_err(self.sql())?;
            let Some(start) = start else {
                return Err(self.corrupt_row(format!("run {run_id}: its interval start is missing")));
            };
            out.push((run_id, start, value));
        }
        Ok(out)
    }

    /// Backfill jobs, newest first, with how their runs ended.
    pub fn backfills(&self, limit: usize) -> Result<Vec<BackfillRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT b.backfill_id, b.dag_id, b.request, b.created_at, b.finished_at,
                        count(r.run_id), sum(r.state = 'success'), sum(r.state IS NOT NULL AND r.state != 'success')
                 FROM backfills b LEFT JOIN backfill_runs r ON r.backfill_id = b.backfill_id
                 GROUP BY b.backfill_id ORDER BY b.created_at DESC LIMIT ?1",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(BackfillRow {
                    backfill_id: r.get(0)?,
                    dag_id: r.get(1)?,
                    request: r.get(2)?,
                    created_at: ts_column(r, 3)?,
                    finished_at: ts_column(r, 4)?,
                    planned: r.get(5)?,
                    succeeded: r.get::<_, Option<u32>>(6)?.unwrap_or(0),
                    failed: r.get::<_, Option<u32>>(7)?.unwrap_or(0),
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    fn corrupt_row(&self, what: String) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::Trigger;
    use crate::engine::store::Claim;
    use crate::schedule::DataInterval;

    fn day(d: u32) -> DataInterval {
        DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, d).expect("a date"))
    }

    #[test]
    fn the_grid_holds_the_newest_runs_oldest_first_with_their_task_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("state.db")).expect("store");
        let tasks = [("a", true), ("b", true)];
        for d in 1..=5 {
            let claim = Claim {
                dag_id: "g",
                interval: day(d),
                trigger: Trigger::Manual,
                tasks: &tasks,
                rerun: false,
                require_existing: false,
            };
            let run = store.claim(&claim).expect("claim");
            store.finish(&run.run_id, if d == 3 { RunState::Failed } else { RunState::Success }).expect("finish");
        }
        let all = store.grid("g", &GridQuery { limit: 3, ..GridQuery::default() }).expect("grid");
        let starts: Vec<u32> = all.iter().map(|r| chrono::Datelike::day(&r.interval_start)).collect();
        assert_eq!(starts, vec![3, 4, 5]);
        assert!(all.iter().all(|r| r.tasks.iter().map(|t| t.0.as_str()).eq(["a", "b"])));
        let failed = store
            .grid("g", &GridQuery { state: Some(RunState::Failed), limit: 90, ..GridQuery::default() })
            .expect("grid");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].run_id, crate::engine::store::run_id("g", day(3).start));
        let older = store.grid("g", &GridQuery { before: Some(day(3).start), limit: 90, ..GridQuery::default() });
        assert_eq!(older.expect("grid").len(), 2);
        assert_eq!(store.dag_ids().expect("ids"), vec!["g".to_string()]);
    }
}
