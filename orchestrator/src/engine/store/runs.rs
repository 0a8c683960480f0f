//! Runs and their task instances: claiming a run (creating it, or taking over a dead owner's,
//! killing what its running attempts left of their process groups), persisting batches of
//! state changes, heartbeats, and the end of an execution.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tracing::warn;

use super::notify::NewNotification;
use super::owner::{describe, lease_end, my_token, owner_alive};
use super::{SqliteStore, StoreError, parse_ts, run_id, ts};
use crate::engine::state::{AttemptOutcome, RunState, TaskState, Trigger};
use crate::process::{self, Leftover};

/// Forgets a task's facts when it is queued afresh, but the `leftover.` ones: what an earlier
/// execution began and must still clean up (a CTAS's temporary table), which the next
/// execution reads and clears itself.
const FORGET_FACTS: &str = "DELETE FROM task_facts WHERE run_id = ?1 AND task_id = ?2 AND key NOT LIKE 'leftover.%'";

/// Whether a fact survives its task being queued afresh (see [`FORGET_FACTS`]).
pub fn survives_requeue(key: &str) -> bool {
    key.starts_with("leftover.")
}
use crate::schedule::DataInterval;

/// How long a takeover waits for the killed processes of a crashed attempt to end.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// The process group attempt `attempt` of `task` recorded, if it recorded one.
fn recorded_group(
    tx: &rusqlite::Transaction,
    run_id: &str,
    task: &str,
    attempt: u32,
) -> rusqlite::Result<Option<process::Group>> {
    tx.query_row(
        "SELECT pgid, leader_start, boot_id FROM task_attempts
         WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3 AND pgid IS NOT NULL",
        params![run_id, task, attempt],
        |r| Ok(process::Group { pgid: r.get(0)?, leader_start: r.get(1)?, boot_id: r.get(2)? }),
    )
    .optional()
}

/// Waits (a few seconds at most) for the process groups a takeover killed to be gone, so that
/// the next attempt starts once the old one really ended.
pub(crate) fn wait_killed(run_id: &str, killed: &[i32]) {
    if !killed.is_empty() && !process::wait_gone(killed, LEFTOVER_WAIT) {
        warn!(run = %run_id, groups = ?killed, "processes of a crashed attempt still run {LEFTOVER_WAIT:?} after SIGKILL");
    }
}

/// Kills what attempt `attempt` of `task` left of its process group when its owner died;
/// whether anything was still running.
pub(crate) fn kill_leftover(run_id: &str, task: &str, attempt: u32, group: &process::Group) -> bool {
    let vars = process::attempt_env(run_id, task, attempt);
    let pgid = group.pgid;
    match process::kill_leftover(group, &vars) {
        Leftover::Killed => {
            warn!(run = %run_id, task = %task, attempt, pgid, "killed the process group a crashed attempt left running");
            true
        }
        Leftover::Gone | Leftover::Recycled => false,
        Leftover::OtherBoot => {
            warn!(
                run = %run_id, task = %task, attempt, pgid,
                "the crashed attempt ran on another host or before a reboot; its processes are not checked"
            );
            false
        }
    }
}

/// Who holds `run_id` when this process does not: `Ok(None)` while it does, else the run's
/// owner now ([`describe`]d; `None` inside: released, or no such run).
fn not_mine(conn: &rusqlite::Connection, run_id: &str) -> rusqlite::Result<Option<Option<String>>> {
    let owner: Option<Option<String>> =
        conn.query_row("SELECT owner FROM dag_runs WHERE run_id = ?1", [run_id], |r| r.get(0)).optional()?;
    Ok(match owner.flatten() {
        Some(o) if o == my_token() => None,
        other => Some(other.as_deref().map(describe)),
    })
}

/// The error an attempt that was running when its process died is recorded with.
pub(crate) const INTERRUPTED: &str = "the cartflow process running this attempt died";

/// What [`INTERRUPTED`] gets when the attempt's process group was killed by the takeover.
pub(crate) fn killed_note(pgid: i32) -> String {
    format!("; its process group {pgid} was still running and was killed")
}

/// What a claim does to one task instance (every store decides it here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnClaim {
    /// Its state for this execution.
    pub state: TaskState,
    /// Failed attempts counted against its retry budget.
    pub failures: u32,
    /// The attempt that was running when an earlier process died: recorded as interrupted.
    pub interrupted: Option<u32>,
    /// A fresh start of a finished task: what its attempts saved (a finished AWS job run to
    /// re-attach to) belongs to the previous execution and is forgotten.
    pub fresh: bool,
}

/// Decides what a claim does to a task instance in `state` with `failures` spent, selected or
/// not for this execution, with or without a rerun.
pub(crate) fn on_claim(
    state: &TaskState,
    failures: u32,
    selected: bool,
    rerun: bool,
) -> Result<OnClaim, crate::engine::state::IllegalTransition> {
    let mut interrupted = None;
    let new_state = match state {
        TaskState::Running { attempt, .. } => {
            interrupted = Some(*attempt);
            state.interrupt()?
        }
        // Named to run again: a fresh start, whatever it was waiting for.
        TaskState::UpForRetry { .. } if selected && rerun => state.interrupt()?,
        // A retry waiting when the process died keeps its time and its budget.
        TaskState::UpForRetry { .. } => state.clone(),
        TaskState::Success { .. } if selected && rerun => state.clear()?,
        TaskState::Success { .. } => state.clone(),
        // Skipped (by itself, by its trigger rule, by hand) stays skipped, as a success
        // stays done; the executor runs it again when one of its upstreams runs again.
        TaskState::Skipped if !(selected && rerun) => state.clone(),
        s if s.is_terminal() && selected => state.clear()?,
        _ => state.clone(),
    };
    let fresh = state.is_terminal() && new_state == TaskState::Queued;
    // A fresh execution has its whole retry budget; a resumed one what it had left (an
    // interrupted attempt was not the task's failure and costs none).
    // A task named to run again (`--task`, a rerun) also gets its whole budget back.
    let failures = if fresh || (selected && rerun) { 0 } else { failures };
    Ok(OnClaim { state: new_state, failures, interrupted, fresh })
}

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
        /// Failed attempts of this execution: the retry budget used (a retry's state carries
        /// when it is due).
        failures: u32,
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
        /// How it ended.
        outcome: AttemptOutcome,
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
    /// A notification to record (pending) with the changes that raised it; ignored when its
    /// dedupe key and target are already recorded.
    Notify(Box<NewNotification>),
}

impl Op {
    /// The (dedupe key, target) of a notification op.
    pub fn notification_key(&self) -> Option<(String, String)> {
        match self {
            Op::Notify(n) => Some((n.note.dedupe_key.clone(), n.target.clone())),
            _ => None,
        }
    }
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
    /// Task id → (state, attempts started so far, failed attempts of the current execution).
    /// A task that was waiting for a retry is still up for retry, at its time.
    pub tasks: HashMap<String, (TaskState, u32, u32)>,
    /// Tasks whose attempt was interrupted by the death of an earlier process.
    pub interrupted: Vec<String>,
}

impl SqliteStore {
    /// Claims a run for this process: creates it, or takes over an existing one (resume).
    pub fn claim(&mut self, c: &Claim) -> Result<ClaimedRun, StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = Utc::now();
        let run_id = run_id(c.dag_id, c.interval.start);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let existing: Option<(Option<String>, Option<String>)> = tx
            .query_row("SELECT owner, lease_until FROM dag_runs WHERE run_id = ?1", [&run_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(&e)?;
        let existed = existing.is_some();
        // What an earlier owner's attempts left running is ours to kill; our own, not.
        let taking_over = existing.as_ref().is_some_and(|(owner, _)| owner.as_deref() != Some(my_token()));
        if let Some((Some(owner), lease)) = &existing
            && owner != my_token()
            && owner_alive(owner, lease.as_deref().and_then(parse_ts))
        {
            return Err(StoreError::RunBusy { run_id, pid: describe(owner) });
        }
        if !existed && c.require_existing {
            return Err(StoreError::NoSuchRun { run_id });
        }
        if existed {
            tx.execute(
                "UPDATE dag_runs SET state = 'running', run_trigger = ?2, started_at = ?3, ended_at = NULL, owner = ?4, heartbeat_at = ?3,
                 lease_until = ?5, cancel_requested_at = NULL, cancel_requested_by = NULL WHERE run_id = ?1",
                params![run_id, c.trigger.name(), ts(now), my_token(), ts(lease_end(now))],
            )
            .map_err(&e)?;
        } else {
            tx.execute(
                "INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, state, run_trigger, created_at, started_at, owner, heartbeat_at, lease_until)
                 VALUES (?1, ?2, ?3, ?3, ?4, 'running', ?5, ?6, ?6, ?7, ?6, ?8)",
                params![run_id, c.dag_id, ts(c.interval.start), ts(c.interval.end), c.trigger.name(), ts(now), my_token(), ts(lease_end(now))],
            )
            .map_err(&e)?;
        }
        let mut stored: HashMap<String, (TaskState, u32, u32)> = HashMap::new();
        {
            let mut stmt = tx
                .prepare("SELECT task_id, state_json, attempts, failures FROM task_instances WHERE run_id = ?1")
                .map_err(&e)?;
            let rows = stmt
                .query_map([&run_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u32>(2)?, r.get::<_, u32>(3)?))
                })
                .map_err(&e)?;
            for row in rows {
                let (task, json, attempts, failures) = row.map_err(&e)?;
                let state: TaskState = serde_json::from_str(&json).map_err(|err| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("task {task} of {run_id}: {err}"),
                })?;
                stored.insert(task, (state, attempts, failures));
            }
        }
        let mut out = HashMap::new();
        let mut interrupted = Vec::new();
        let mut killed = Vec::new();
        for &(task, selected) in c.tasks {
            let (state, attempts, failures) = stored.remove(task).unwrap_or((TaskState::Queued, 0, 0));
            let d = on_claim(&state, failures, selected, c.rerun).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("task {task} of {run_id}: {e}"),
            })?;
            if let Some(attempt) = d.interrupted {
                let mut error = String::from(INTERRUPTED);
                if taking_over
                    && let Some(group) = recorded_group(&tx, &run_id, task, attempt).map_err(&e)?
                    && kill_leftover(&run_id, task, attempt, &group)
                {
                    error.push_str(&killed_note(group.pgid));
                    killed.push(group.pgid);
                }
                tx.execute(
                    "UPDATE task_attempts SET state = ?5, ended_at = ?4, error = ?6
                     WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                    params![run_id, task, attempt, ts(now), AttemptOutcome::Interrupted.name(), error],
                )
                .map_err(&e)?;
                interrupted.push(task.to_string());
            }
            if d.fresh {
                tx.execute(FORGET_FACTS, params![run_id, task]).map_err(&e)?;
            }
            let json = serde_json::to_string(&d.state).unwrap_or_default();
            tx.execute(
                "INSERT INTO task_instances (run_id, task_id, state, state_json, attempts, updated_at, failures) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, task_id) DO UPDATE SET state = excluded.state, state_json = excluded.state_json, updated_at = excluded.updated_at, failures = excluded.failures",
                params![run_id, task, d.state.name(), json, attempts, ts(now), d.failures],
            )
            .map_err(&e)?;
            out.insert(task.to_string(), (d.state, attempts, d.failures));
        }
        tx.commit().map_err(&e)?;
        cartflow_jobs::crash::point("store.claimed");
        // SIGKILL is sent; the next attempt starts once the old one is really gone.
        wait_killed(&run_id, &killed);
        Ok(ClaimedRun { run_id, existed, tasks: out, interrupted })
    }
    /// Records the process group attempt `attempt` of `task_id` runs (see [`process::Group`]).
    pub fn record_group(
        &self,
        run_id: &str,
        task_id: &str,
        attempt: u32,
        group: &process::Group,
    ) -> Result<(), StoreError> {
        if let Some(owner) = not_mine(&self.conn, run_id).map_err(self.sql())? {
            return Err(StoreError::LeaseLost { run_id: run_id.to_string(), owner });
        }
        let n = self
            .conn
            .execute(
                "UPDATE task_attempts SET pgid = ?4, leader_start = ?5, boot_id = ?6
                 WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3 AND state = 'running'",
                params![run_id, task_id, attempt, group.pgid, group.leader_start, group.boot_id],
            )
            .map_err(self.sql())?;
        if n == 0 {
            return Err(StoreError::NotRunning { run_id: run_id.to_string(), task_id: task_id.to_string(), attempt });
        }
        Ok(())
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
        // Conditional on the owner: a process that lost the run writes none of it.
        if let Some(owner) = not_mine(&tx, run_id).map_err(&e)? {
            return Err(StoreError::LeaseLost { run_id: run_id.to_string(), owner });
        }
        {
            let mut task = tx
                .prepare_cached(
                    "UPDATE task_instances SET state = ?3, state_json = ?4, attempts = ?5, updated_at = ?6, failures = ?7 WHERE run_id = ?1 AND task_id = ?2",
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
                    Op::Task { task_id, state, attempts, failures } => {
                        let json = serde_json::to_string(state).unwrap_or_default();
                        task.execute(params![run_id, task_id, state.name(), json, attempts, now, failures])
                            .map_err(&e)?;
                    }
                    Op::AttemptStarted { task_id, attempt, started_at } => {
                        started.execute(params![run_id, task_id, attempt, ts(*started_at)]).map_err(&e)?;
                    }
                    Op::Notify(n) => {
                        super::notify::insert(&tx, n, &now).map_err(&e)?;
                    }
                    Op::AttemptEnded { task_id, attempt, outcome, ended_at, error, exit_code, summary, log_path } => {
                        ended
                            .execute(params![
                                run_id,
                                task_id,
                                attempt,
                                outcome.name(),
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
        tx.commit().map_err(&e)?;
        for op in ops {
            match op {
                Op::AttemptStarted { .. } => cartflow_jobs::crash::point("store.attempt_started"),
                Op::AttemptEnded { .. } => cartflow_jobs::crash::point("store.attempt_ended"),
                Op::Task { .. } | Op::Notify(_) => {}
            }
        }
        Ok(())
    }
    /// Queues `tasks` of `run_id` (this process's run) afresh: no retry spent, no saved facts
    /// (but the `leftover.` ones, see [`FORGET_FACTS`]) —
    /// what a claim does to a task it clears, for the skipped tasks the executor decides again.
    pub fn restart_fresh(&mut self, run_id: &str, tasks: &[String]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let json = serde_json::to_string(&TaskState::Queued).unwrap_or_default();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        if let Some(owner) = not_mine(&tx, run_id).map_err(&e)? {
            return Err(StoreError::LeaseLost { run_id: run_id.to_string(), owner });
        }
        for task in tasks {
            tx.execute(FORGET_FACTS, params![run_id, task]).map_err(&e)?;
            tx.execute(
                "UPDATE task_instances SET state = 'queued', state_json = ?3, failures = 0, updated_at = ?4 WHERE run_id = ?1 AND task_id = ?2",
                params![run_id, task, json, now],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Renews this process's lease on the run (it tells other processes its owner is alive),
    /// and returns who asked for the run to be cancelled (`cartflow cancel`, the web UI of
    /// another process), if someone did. [`StoreError::LeaseLost`] when the run is no longer
    /// this process's.
    pub fn heartbeat(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let now = Utc::now();
        let renewed = self
            .conn
            .query_row(
                "UPDATE dag_runs SET heartbeat_at = ?2, lease_until = ?4 WHERE run_id = ?1 AND owner = ?3 RETURNING cancel_requested_by",
                params![run_id, ts(now), my_token(), ts(lease_end(now))],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(self.sql())?;
        match renewed {
            Some(asked) => Ok(asked),
            None => {
                let owner = not_mine(&self.conn, run_id).map_err(self.sql())?.flatten();
                Err(StoreError::LeaseLost { run_id: run_id.to_string(), owner })
            }
        }
    }
    /// Records the end of an execution and releases the run.
    pub fn finish(&mut self, run_id: &str, state: RunState) -> Result<(), StoreError> {
        self.finish_with(run_id, state, &[])
    }
    /// Records the end of an execution, with the notifications it raises (a run's success), in
    /// one transaction, and releases the run.
    pub fn finish_with(&mut self, run_id: &str, state: RunState, notes: &[NewNotification]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let n = tx
            .execute(
                "UPDATE dag_runs SET state = ?2, ended_at = ?3, owner = NULL, lease_until = NULL, cancel_requested_at = NULL, cancel_requested_by = NULL
                 WHERE run_id = ?1 AND owner = ?4",
                params![run_id, state.name(), now, my_token()],
            )
            .map_err(&e)?;
        if n == 0 {
            let owner = not_mine(&tx, run_id).map_err(&e)?.flatten();
            return Err(StoreError::LeaseLost { run_id: run_id.to_string(), owner });
        }
        for n in notes {
            super::notify::insert(&tx, n, &now).map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        cartflow_jobs::crash::point("store.finished");
        Ok(())
    }
}
