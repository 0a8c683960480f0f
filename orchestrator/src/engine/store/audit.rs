//! What people do by hand, and the log of it: a task instance marked success or skipped (the
//! web UI's "mark", `cartflow mark`), a DAG paused or unpaused, and every action the web UI
//! starts, each with who and when (the `audit` table).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::owner::{describe, owner_alive};
use super::{SqliteStore, StoreError, parse_ts, ts, ts_column};
use crate::engine::state::{RunState, TaskState};

/// Who is at this machine: `$USER` (or `$LOGNAME`), as the audit log names a person.
pub fn local_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "unknown user".into())
}

/// A pause that ended: (when it began, if the log knows, when it ended).
pub type PauseSpan = (Option<DateTime<Utc>>, DateTime<Utc>);

/// The paused DAGs: id -> (since when, by whom).
pub type Paused = std::collections::BTreeMap<String, (Option<DateTime<Utc>>, String)>;

/// What a task instance can be marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// As if it had succeeded: its downstream tasks may run on the next execution.
    Success,
    /// Skipped: it stays skipped on the run's later executions, even when an upstream task runs
    /// again then (a skip the task or its trigger rule decided is decided again; one a person
    /// decided, not), and its `all_success` downstream tasks are skipped too; the mark itself
    /// changes only this task.
    Skipped,
}

impl Mark {
    /// `success` or `skipped`.
    pub fn name(self) -> &'static str {
        match self {
            Mark::Success => "success",
            Mark::Skipped => "skipped",
        }
    }
}

/// Why a mark was refused.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such task in the run.
    #[error("run {run_id} has no task `{task_id}`")]
    NoSuchTask {
        /// The run.
        run_id: String,
        /// The task.
        task_id: String,
    },
    /// The task is still queued, running or waiting for a retry.
    #[error("task `{task_id}` of run {run_id} is {state}: only a finished task can be marked")]
    NotFinished {
        /// The run.
        run_id: String,
        /// The task.
        task_id: String,
        /// Its state.
        state: &'static str,
    },
}

impl MarkError {
    /// Whether this is the user's to fix (exit 2 / HTTP 400).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            MarkError::NoSuchTask { .. }
                | MarkError::NotFinished { .. }
                | MarkError::Store(StoreError::NoSuchRun { .. } | StoreError::RunBusy { .. })
        )
    }
}

/// Why a cancel was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// The store (or no such run).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run is not running.
    #[error("run {run_id} is {state}: only a running run can be cancelled")]
    NotRunning {
        /// The run.
        run_id: String,
        /// Its state.
        state: String,
    },
    /// The run is `running` in the store, but the process that ran it is gone.
    #[error(
        "run {run_id} is `running` in the store, but no live process runs it (the one that did died): there is nothing to stop. `cartflow run` resumes it; `cartflow mark` marks its tasks"
    )]
    Orphaned {
        /// The run.
        run_id: String,
    },
}

impl CancelError {
    /// Whether this is the user's to fix (exit 2 / HTTP 400).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            CancelError::Store(StoreError::Sqlite { .. } | StoreError::Corrupt { .. } | StoreError::Remote { .. })
        )
    }
}

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequested {
    /// The process that runs the run (it stops the run at its next heartbeat, within
    /// [`CANCEL_LATENCY`]).
    pub pid: String,
    /// Who had asked already, if someone had (this request changed nothing).
    pub already_by: Option<String>,
}

/// How long the process that runs a run takes at most to see a cancel asked for elsewhere: it
/// reads the request with its heartbeat.
pub const CANCEL_LATENCY: std::time::Duration = std::time::Duration::from_secs(5);

/// What a mark changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The task's state before.
    pub from: &'static str,
    /// The run's state after (recomputed from its tasks).
    pub run_state: RunState,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its number (in order).
    pub id: i64,
    /// When.
    pub at: Option<DateTime<Utc>>,
    /// Who.
    pub who: String,
    /// What (`mark_success`, `run`, `rerun`, `backfill`, `cancel`, ...).
    pub action: String,
    /// The DAG, if one.
    pub dag_id: String,
    /// The run, if one.
    pub run_id: String,
    /// The task, if one.
    pub task_id: String,
    /// The rest, in words.
    pub detail: String,
}

/// A new entry of the audit log.
#[derive(Debug, Clone, Default)]
pub struct NewAudit<'a> {
    /// Who.
    pub who: &'a str,
    /// What.
    pub action: &'a str,
    /// The DAG.
    pub dag_id: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The task.
    pub task_id: &'a str,
    /// The rest.
    pub detail: &'a str,
}

fn insert(tx: &rusqlite::Connection, a: &NewAudit<'_>, at: &str) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO audit (at, who, action, dag_id, run_id, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![at, a.who, a.action, a.dag_id, a.run_id, a.task_id, a.detail],
    )
}

/// What a mark does to a run's task states (`states`: task, state, attempts), the same on
/// every store: the marked task's index, its state before (as named) and after, and the run's
/// state decided from its tasks' (`None`: tasks a stopped run never got to, it stays as it
/// ended). Refused for a task the run does not have or one that has not finished.
pub(crate) fn apply_mark(
    run_id: &str,
    task_id: &str,
    mark: Mark,
    states: &mut [(String, TaskState, u32)],
    now: DateTime<Utc>,
) -> Result<(usize, &'static str, TaskState, Option<RunState>), MarkError> {
    let Some(i) = states.iter().position(|(t, _, _)| t == task_id) else {
        return Err(MarkError::NoSuchTask { run_id: run_id.to_string(), task_id: task_id.to_string() });
    };
    let from = states[i].1.name();
    if !states[i].1.is_terminal() {
        return Err(MarkError::NotFinished { run_id: run_id.to_string(), task_id: task_id.to_string(), state: from });
    }
    let new = match mark {
        Mark::Success => TaskState::Success { attempt: states[i].2, started_at: now, ended_at: now },
        Mark::Skipped => TaskState::Skipped,
    };
    states[i].1 = new.clone();
    let decided = if states.iter().all(|(_, s, _)| matches!(s, TaskState::Success { .. } | TaskState::Skipped)) {
        Some(RunState::Success)
    } else if states.iter().any(|(_, s, _)| s.counts_as_failed()) {
        Some(RunState::Failed)
    } else {
        None
    };
    Ok((i, from, new, decided))
}

impl SqliteStore {
    /// Marks a finished task instance `mark` by hand, in a run no live process executes, and
    /// sets the run's state from its tasks' (success once every task succeeded or was skipped);
    /// the change and the audit entry are one transaction. No attempt is recorded: nothing ran.
    pub fn mark(&mut self, run_id: &str, task_id: &str, mark: Mark, who: &str) -> Result<Marked, MarkError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = Utc::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let run: Option<(String, Option<String>, Option<String>, String)> = tx
            .query_row("SELECT dag_id, owner, lease_until, state FROM dag_runs WHERE run_id = ?1", [run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(&e)?;
        let Some((dag_id, owner, lease, current)) = run else {
            return Err(StoreError::NoSuchRun { run_id: run_id.to_string() }.into());
        };
        if let Some(owner) = &owner
            && owner_alive(owner, lease.as_deref().and_then(parse_ts))
        {
            return Err(StoreError::RunBusy { run_id: run_id.to_string(), pid: describe(owner) }.into());
        }
        let corrupt = |what: String| StoreError::Corrupt { path: self.path.clone(), what };
        let mut states: Vec<(String, TaskState, u32)> = Vec::new();
        {
            let mut stmt =
                tx.prepare("SELECT task_id, state_json, attempts FROM task_instances WHERE run_id = ?1").map_err(&e)?;
            let rows = stmt
                .query_map([run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?)))
                .map_err(&e)?;
            for row in rows {
                let (task, json, attempts) = row.map_err(&e)?;
                let state: TaskState =
                    serde_json::from_str(&json).map_err(|err| corrupt(format!("task {task} of {run_id}: {err}")))?;
                states.push((task, state, attempts));
            }
        }
        let (_, from, new, decided) = apply_mark(run_id, task_id, mark, &mut states, now)?;
        tx.execute(
            "UPDATE task_instances SET state = ?3, state_json = ?4, updated_at = ?5 WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id, new.name(), serde_json::to_string(&new).unwrap_or_default(), ts(now)],
        )
        .map_err(&e)?;
        let run_state = match decided {
            Some(state) if Some(state) != RunState::parse(&current) => {
                tx.execute(
                    "UPDATE dag_runs SET state = ?2, ended_at = ?3 WHERE run_id = ?1",
                    params![run_id, state.name(), ts(now)],
                )
                .map_err(&e)?;
                state
            }
            _ => {
                RunState::parse(&current).ok_or_else(|| corrupt(format!("run {run_id}: unknown state `{current}`")))?
            }
        };
        let detail = format!("{from} -> {}", mark.name());
        let action = format!("mark_{}", mark.name());
        let entry = NewAudit { who, action: &action, dag_id: &dag_id, run_id, task_id, detail: &detail };
        insert(&tx, &entry, &ts(now)).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(Marked { from, run_state })
    }

    /// Asks the process that runs `run_id` to cancel it (`cartflow cancel`, the web UI): the
    /// request is stored with who asked, the owner reads it with its heartbeat and stops the
    /// run as a Ctrl-C would (no new task starts, running ones are stopped, the run ends
    /// `cancelled`). Recorded in the audit log in the same transaction; a second request
    /// changes nothing.
    pub fn request_cancel(&mut self, run_id: &str, who: &str) -> Result<CancelRequested, CancelError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        type Row = (String, Option<String>, Option<String>, String, Option<String>);
        let run: Option<Row> = tx
            .query_row(
                "SELECT dag_id, owner, lease_until, state, cancel_requested_by FROM dag_runs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(&e)?;
        let Some((dag_id, owner, lease, state, already_by)) = run else {
            return Err(StoreError::NoSuchRun { run_id: run_id.to_string() }.into());
        };
        if state != RunState::Running.name() {
            return Err(CancelError::NotRunning { run_id: run_id.to_string(), state });
        }
        let Some(owner) = owner.filter(|o| owner_alive(o, lease.as_deref().and_then(parse_ts))) else {
            return Err(CancelError::Orphaned { run_id: run_id.to_string() });
        };
        let pid = describe(&owner);
        if already_by.is_none() {
            tx.execute(
                "UPDATE dag_runs SET cancel_requested_at = ?2, cancel_requested_by = ?3 WHERE run_id = ?1",
                params![run_id, now, who],
            )
            .map_err(&e)?;
            let detail = format!("asked process {pid} to stop the run");
            insert(
                &tx,
                &NewAudit { who, action: "cancel", dag_id: &dag_id, run_id, detail: &detail, ..NewAudit::default() },
                &now,
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(CancelRequested { pid, already_by })
    }

    /// Pauses (`paused`) or unpauses a DAG: the scheduler creates no runs of a paused DAG (runs
    /// started by hand still run). Recorded in the audit log with its change, in one
    /// transaction; returns whether anything changed.
    pub fn set_paused(&mut self, dag_id: &str, paused: bool, who: &str) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let changed = if paused {
            tx.execute("INSERT OR IGNORE INTO paused (dag_id, at, who) VALUES (?1, ?2, ?3)", params![dag_id, now, who])
        } else {
            tx.execute("DELETE FROM paused WHERE dag_id = ?1", [dag_id])
        }
        .map_err(&e)?
            > 0;
        if changed {
            let action = if paused { "pause" } else { "unpause" };
            insert(&tx, &NewAudit { who, action, dag_id, ..NewAudit::default() }, &now).map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(changed)
    }

    /// The paused DAGs: id -> (since when, by whom).
    pub fn paused(&self) -> Result<Paused, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT dag_id, at, who FROM paused").map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, (ts_column(r, 1)?, r.get::<_, String>(2)?))))
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// The DAG's last pause that ended: (when it was paused, when unpaused), from the audit log
    /// (the newest `unpause` and the `pause` before it; an unpause with no pause before it, from
    /// a store older than the log, has no start). The deadlines that passed in it are not raised.
    pub fn last_pause(&self, dag_id: &str) -> Result<Option<PauseSpan>, StoreError> {
        let read = |sql: &str, arg: i64| -> Result<Option<(i64, String)>, StoreError> {
            self.conn
                .query_row(sql, params![dag_id, arg], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(self.sql())
        };
        let parse = |s: &str| {
            parse_ts(s)
                .ok_or_else(|| StoreError::Corrupt { path: self.path.clone(), what: format!("audit time `{s}`") })
        };
        let Some((id, unpaused)) = read(
            "SELECT id, at FROM audit WHERE dag_id = ?1 AND action = 'unpause' AND id < ?2 ORDER BY id DESC LIMIT 1",
            i64::MAX,
        )?
        else {
            return Ok(None);
        };
        let paused = read(
            "SELECT id, at FROM audit WHERE dag_id = ?1 AND action = 'pause' AND id < ?2 ORDER BY id DESC LIMIT 1",
            id,
        )?;
        Ok(Some((paused.map(|(_, at)| parse(&at)).transpose()?, parse(&unpaused)?)))
    }

    /// The tasks of `run_id` whose last mark by hand is `skipped` (the executor keeps those
    /// skipped even when an upstream runs again: a person decided it).
    pub fn marked_skipped(&self, run_id: &str) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task_id, action FROM audit WHERE run_id = ?1 AND action LIKE 'mark\\_%' ESCAPE '\\' ORDER BY id",
            )
            .map_err(self.sql())?;
        let rows =
            stmt.query_map([run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(self.sql())?;
        let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for row in rows {
            let (task, action) = row.map_err(self.sql())?;
            last.insert(task, action);
        }
        Ok(last.into_iter().filter(|(_, a)| a == "mark_skipped").map(|(t, _)| t).collect())
    }

    /// Records what someone did (an action started from the web UI).
    pub fn record_audit(&self, a: &NewAudit<'_>) -> Result<(), StoreError> {
        insert(&self.conn, a, &ts(Utc::now())).map(|_| ()).map_err(self.sql())
    }

    /// The audit log, newest first (of one run, or all).
    pub fn audit(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at, who, action, dag_id, run_id, task_id, detail FROM audit
                 WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![run_id, limit as i64], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: ts_column(r, 1)?,
                    who: r.get(2)?,
                    action: r.get(3)?,
                    dag_id: r.get(4)?,
                    run_id: r.get(5)?,
                    task_id: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::Trigger;
    use crate::engine::store::{Claim, Op};
    use crate::schedule::DataInterval;

    fn failed_run(store: &mut SqliteStore) -> String {
        let tasks = [("a", true), ("b", true)];
        let claim = Claim {
            dag_id: "m",
            interval: DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("day")),
            trigger: Trigger::Manual,
            tasks: &tasks,
            rerun: false,
            require_existing: false,
        };
        let run = store.claim(&claim).expect("claim");
        let now = Utc::now();
        store
            .apply(
                &run.run_id,
                &[
                    Op::Task {
                        task_id: "a".into(),
                        state: TaskState::Failed { attempt: 1, ended_at: now, error: "boom".into() },
                        attempts: 1,
                        failures: 1,
                    },
                    Op::Task { task_id: "b".into(), state: TaskState::UpstreamFailed, attempts: 0, failures: 0 },
                ],
            )
            .expect("apply");
        run.run_id
    }

    #[test]
    fn a_finished_task_is_marked_with_who_and_when_and_the_run_follows() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(&dir.path().join("state.db")).expect("store");
        let run_id = failed_run(&mut store);
        // The run is ours (running) until it is finished: no mark while it executes.
        assert!(matches!(
            store.mark(&run_id, "a", Mark::Success, "ann"),
            Err(MarkError::Store(StoreError::RunBusy { .. }))
        ));
        store.finish(&run_id, RunState::Failed).expect("finish");
        assert!(matches!(store.mark(&run_id, "nope", Mark::Success, "ann"), Err(MarkError::NoSuchTask { .. })));
        assert!(matches!(
            store.mark("m@2019-10-09T00:00:00Z", "a", Mark::Success, "ann"),
            Err(MarkError::Store(StoreError::NoSuchRun { .. }))
        ));
        // Another live process owning the run: busy too.
        let mut other = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let token = crate::process::process_token(other.id() as i32).expect("its token");
        store.conn.execute("UPDATE dag_runs SET owner = ?2 WHERE run_id = ?1", params![run_id, token]).expect("own");
        let busy = store.mark(&run_id, "a", Mark::Success, "ann");
        let _ = other.kill();
        let _ = other.wait();
        assert!(matches!(busy, Err(MarkError::Store(StoreError::RunBusy { .. }))), "{busy:?}");
        // Gone, it owns nothing.
        let ended = store.run(&run_id).expect("run").expect("a run").ended_at;
        let m = store.mark(&run_id, "a", Mark::Success, "ann").expect("mark a");
        assert_eq!(m, Marked { from: "failed", run_state: RunState::Failed }, "b is still upstream_failed");
        assert_eq!(store.run(&run_id).expect("run").expect("a run").ended_at, ended, "still failed: its end stays");
        let m = store.mark(&run_id, "b", Mark::Skipped, "bob").expect("mark b");
        assert_eq!(m, Marked { from: "upstream_failed", run_state: RunState::Success });
        let states: Vec<(String, String)> =
            store.tasks(&run_id).expect("tasks").into_iter().map(|t| (t.task_id, t.state.name().to_string())).collect();
        assert_eq!(states, vec![("a".into(), "success".into()), ("b".into(), "skipped".into())]);
        assert_eq!(store.run(&run_id).expect("run").expect("a run").state, RunState::Success);
        assert!(store.attempts(&run_id, Some("b")).expect("attempts").is_empty(), "a mark runs nothing");
        let log = store.audit(Some(&run_id), 10).expect("audit");
        let got: Vec<(&str, &str, &str, &str)> =
            log.iter().map(|a| (a.who.as_str(), a.action.as_str(), a.task_id.as_str(), a.detail.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("bob", "mark_skipped", "b", "upstream_failed -> skipped"),
                ("ann", "mark_success", "a", "failed -> success")
            ]
        );
        assert!(log.iter().all(|a| a.at.is_some() && a.dag_id == "m"));
        store
            .record_audit(&NewAudit { who: "cy", action: "rerun", run_id: &run_id, ..NewAudit::default() })
            .expect("audit");
        assert!(store.set_paused("m", true, "dee").expect("pause"));
        assert!(!store.set_paused("m", true, "dee").expect("again"), "already paused: no change, no entry");
        assert_eq!(store.paused().expect("paused").get("m").map(|p| p.1.as_str()), Some("dee"));
        assert!(store.set_paused("m", false, "eve").expect("unpause"));
        assert!(store.paused().expect("paused").is_empty());
        let actions: Vec<String> =
            store.audit(None, 3).expect("audit").into_iter().map(|a| format!("{} {}", a.who, a.action)).collect();
        assert_eq!(actions, ["eve unpause", "dee pause", "cy rerun"]);
    }
    #[test]
    fn a_cancel_is_asked_for_once_read_by_the_heartbeat_and_gone_with_the_execution() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        let tasks = [("a", true)];
        let claim = Claim {
            dag_id: "m",
            interval: DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("day")),
            trigger: Trigger::Manual,
            tasks: &tasks,
            rerun: false,
            require_existing: false,
        };
        let run = store.claim(&claim).expect("claim").run_id;
        assert!(matches!(
            store.request_cancel("m@2019-10-09T00:00:00Z", "eve"),
            Err(CancelError::Store(StoreError::NoSuchRun { .. }))
        ));
        assert_eq!(store.heartbeat(&run).expect("beat"), None, "nobody asked");
        let asked = store.request_cancel(&run, "eve").expect("asked");
        assert_eq!(asked, CancelRequested { pid: std::process::id().to_string(), already_by: None });
        assert_eq!(store.heartbeat(&run).expect("beat").as_deref(), Some("eve"), "the owner reads who asked");
        let again = store.request_cancel(&run, "fay").expect("asked again");
        assert_eq!(again.already_by.as_deref(), Some("eve"));
        let log: Vec<String> =
            store.audit(None, 10).expect("log").into_iter().map(|a| format!("{} {}", a.who, a.action)).collect();
        assert_eq!(log, ["eve cancel"], "one request, one entry");
        store.finish(&run, RunState::Cancelled).expect("finish");
        assert!(matches!(store.request_cancel(&run, "eve"), Err(CancelError::NotRunning { .. })));
        // Resumed: the old request does not stop the new execution.
        store.claim(&claim).expect("resume");
        assert_eq!(store.heartbeat(&run).expect("beat"), None);
        // Owned by a process that is gone (no pid is that high): nothing to stop.
        store.conn.execute("UPDATE dag_runs SET owner = '4194305:1'", []).expect("owner");
        let orphaned = store.request_cancel(&run, "eve");
        assert!(matches!(orphaned, Err(CancelError::Orphaned { .. })), "{orphaned:?}");
        assert!(orphaned.expect_err("refused").is_usage());
    }
}
