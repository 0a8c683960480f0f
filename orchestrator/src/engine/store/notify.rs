//! Notifications and deadlines in the run store.
//!
//! Notifications are an outbox: a row per dedupe key and target, inserted (`pending`, owned by
//! the process that raised it) in the transaction of the state change that raised it — a
//! second insert of the same key is ignored. Whoever delivers it first claims it (`sending`,
//! owned by that process; only one process can), then records each try and the end (`sent`
//! or `failed`). A row left `pending` or `sending` by a dead process is claimed by the next
//! process that looks (the run's next owner, or a scheduler for deadlines).
//!
//! Deadline decisions are one row per run (and per task with its own deadline): `missed` or
//! met, decided once; the notifications of a miss are inserted with its decision, and only by
//! the process whose decision was the first.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::owner::{my_token, owner_alive};
use super::{SqliteStore, StoreError, ts, ts_column};
use crate::notify::{Notification, TargetSpec};

/// A notification to record: to this target, this payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The target's name (a `cartflow.yaml` name, or an inline target's).
    pub target: String,
    /// How to reach it.
    pub spec: TargetSpec,
    /// What it gets.
    pub note: Notification,
}

/// Where a notification's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Recorded, not yet claimed by a sender.
    Pending,
    /// A process is delivering it (trying, or waiting to retry).
    Sending,
    /// The target acknowledged it.
    Sent,
    /// It could not be delivered; it is not tried again.
    Failed,
}

impl DeliveryState {
    /// The name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Sending, DeliveryState::Sent, DeliveryState::Failed]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

/// A recorded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// The target's name.
    pub target: String,
    /// How to reach it.
    pub spec: TargetSpec,
    /// The payload.
    pub note: Notification,
    /// Where its delivery stands.
    pub state: DeliveryState,
    /// Deliveries tried.
    pub tries: u32,
    /// The last try's error.
    pub error: Option<String>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When the target acknowledged it.
    pub sent_at: Option<DateTime<Utc>>,
}

/// How a delivery try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged.
    Sent,
    /// Failed; another try follows.
    Retrying(String),
    /// Failed for good.
    Failed(String),
}

/// A deadline decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineRow {
    /// The run (it may not exist yet: its interval was due and nothing ran).
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The task with its own deadline, or `None` for the run's.
    pub task_id: Option<String>,
    /// The deadline.
    pub deadline_at: DateTime<Utc>,
    /// Whether it was missed.
    pub missed: bool,
    /// What was found at the deadline (for a miss).
    pub reason: Option<String>,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
}

/// Inserts `n` as pending, owned by this process, unless its key and target are recorded.
pub(super) fn insert(tx: &rusqlite::Transaction, n: &NewNotification, now: &str) -> rusqlite::Result<usize> {
    let spec = serde_json::to_string(&n.spec).unwrap_or_default();
    let body = serde_json::to_string(&n.note).unwrap_or_default();
    tx.prepare_cached(
        "INSERT OR IGNORE INTO notifications (dedupe_key, target, run_id, task_id, attempt, event, spec, body, state, owner, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10)",
    )?
    .execute(params![
        n.note.dedupe_key,
        n.target,
        n.note.run,
        n.note.task.as_deref().unwrap_or(""),
        n.note.attempt,
        n.note.event.name(),
        spec,
        body,
        my_token(),
        now
    ])
}

impl SqliteStore {
    /// The (dedupe key, target) of every notification not yet delivered or given up — of one
    /// run, or of all raised since `since` — that a process may try to claim.
    pub fn undelivered_notifications(
        &self,
        run_id: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT dedupe_key, target FROM notifications
                 WHERE state IN ('pending', 'sending') AND (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR created_at >= ?2)
                 ORDER BY created_at, rowid",
            )
            .map_err(self.sql())?;
        let rows =
            stmt.query_map(params![run_id, since.map(ts)], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Claims a notification for delivery by this process: it must be pending (raised by this
    /// process, or by one that died) or being sent by a process that died. `None`: it is
    /// delivered, given up, or another live process has it.
    pub fn claim_notification(&mut self, key: &str, target: &str) -> Result<Option<NotificationRow>, StoreError> {
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let row: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT state, owner FROM notifications WHERE dedupe_key = ?1 AND target = ?2",
                params![key, target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&e)?;
        let Some((state, owner)) = row else {
            return Ok(None);
        };
        let ours = owner.as_deref() == Some(my_token());
        let dead = owner.as_deref().is_none_or(|o| !ours && !owner_alive(o, None));
        let claimable = match state.as_str() {
            "pending" => ours || dead,
            "sending" => dead,
            _ => false,
        };
        if !claimable {
            return Ok(None);
        }
        tx.execute(
            "UPDATE notifications SET state = 'sending', owner = ?3 WHERE dedupe_key = ?1 AND target = ?2",
            params![key, target, my_token()],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        let row = self.notification(key, target)?;
        Ok(row)
    }

    /// Records a delivery try of a notification this process claimed.
    pub fn record_delivery(&self, key: &str, target: &str, tries: u32, d: &Delivery) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        let (state, error, sent_at) = match d {
            Delivery::Sent => (DeliveryState::Sent, None, Some(now)),
            Delivery::Retrying(m) => (DeliveryState::Sending, Some(m.as_str()), None),
            Delivery::Failed(m) => (DeliveryState::Failed, Some(m.as_str()), None),
        };
        let done = !matches!(d, Delivery::Retrying(_));
        self.conn
            .execute(
                "UPDATE notifications SET state = ?3, tries = ?4, error = ?5, sent_at = ?6,
                 owner = CASE WHEN ?7 THEN NULL ELSE owner END
                 WHERE dedupe_key = ?1 AND target = ?2 AND owner = ?8",
                params![key, target, state.name(), tries, error, sent_at, done, my_token()],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    fn notification(&self, key: &str, target: &str) -> Result<Option<NotificationRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT target, spec, body, state, tries, error, created_at, sent_at FROM notifications
                 WHERE dedupe_key = ?1 AND target = ?2",
                params![key, target],
                Self::notification_row,
            )
            .optional()
            .map_err(self.sql())?
            .transpose()
            .map_err(|w| self.corrupt_note(w))
    }

    /// The notifications of a run, in the order they were raised.
    pub fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT target, spec, body, state, tries, error, created_at, sent_at FROM notifications
                 WHERE run_id = ?1 ORDER BY created_at, rowid",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map([run_id], Self::notification_row).map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(self.sql())?.map_err(|w| self.corrupt_note(w))?);
        }
        Ok(out)
    }

    fn corrupt_note(&self, what: String) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what }
    }

    fn notification_row(r: &rusqlite::Row) -> rusqlite::Result<Result<NotificationRow, String>> {
        let target: String = r.get(0)?;
        let (spec, body, state): (String, String, String) = (r.get(1)?, r.get(2)?, r.get(3)?);
        let Ok(spec) = serde_json::from_str::<TargetSpec>(&spec) else {
            return Ok(Err(format!("notification to {target}: unreadable target `{spec}`")));
        };
        let Ok(note) = serde_json::from_str::<Notification>(&body) else {
            return Ok(Err(format!("notification to {target}: unreadable body")));
        };
        let Some(state) = DeliveryState::parse(&state) else {
            return Ok(Err(format!("notification to {target}: unknown state `{state}`")));
        };
        Ok(Ok(NotificationRow {
            target,
            spec,
            note,
            state,
            tries: r.get(4)?,
            error: r.get(5)?,
            created_at: ts_column(r, 6)?.unwrap_or_default(),
            sent_at: ts_column(r, 7)?,
        }))
    }

    /// Records deadline decisions, each with the notifications of its miss: a decision already
    /// recorded (by this or another process) is kept, and its notifications are not raised
    /// again. Returns the decisions that were new.
    pub fn record_deadlines(
        &mut self,
        decisions: &[(DeadlineRow, Vec<NewNotification>)],
    ) -> Result<Vec<DeadlineRow>, StoreError> {
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let e = move |source| StoreError::Sqlite { path: path.clone(), source };
        let now = ts(Utc::now());
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let mut new = Vec::new();
        for (d, notes) in decisions {
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO deadlines (run_id, task_id, dag_id, deadline_at, missed, reason, decided_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        d.run_id,
                        d.task_id.as_deref().unwrap_or(""),
                        d.dag_id,
                        ts(d.deadline_at),
                        d.missed,
                        d.reason,
                        ts(d.decided_at)
                    ],
                )
                .map_err(&e)?;
            if n == 1 {
                for note in notes {
                    insert(&tx, note, &now).map_err(&e)?;
                }
                new.push(d.clone());
            }
        }
        tx.commit().map_err(&e)?;
        Ok(new)
    }

    /// The (run, task or "") deadline decisions of `dag_id` whose deadline is at or after
    /// `from`.
    pub fn decided_deadlines(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, task_id FROM deadlines WHERE dag_id = ?1 AND deadline_at >= ?2")
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![dag_id, ts(from)], |r| Ok((r.get(0)?, r.get(1)?))).map_err(self.sql())?;
        rows.collect::<Result<HashSet<_>, _>>().map_err(self.sql())
    }

    /// The deadline decisions of a run (the run's own first, then its tasks').
    pub fn deadlines(&self, run_id: &str) -> Result<Vec<DeadlineRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT run_id, dag_id, task_id, deadline_at, missed, reason, decided_at FROM deadlines
                 WHERE run_id = ?1 ORDER BY task_id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([run_id], |r| {
                let task: String = r.get(2)?;
                Ok(DeadlineRow {
                    run_id: r.get(0)?,
                    dag_id: r.get(1)?,
                    task_id: (!task.is_empty()).then_some(task),
                    deadline_at: ts_column(r, 3)?.unwrap_or_default(),
                    missed: r.get(4)?,
                    reason: r.get(5)?,
                    decided_at: ts_column(r, 6)?.unwrap_or_default(),
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// The runs of `dag_id` whose interval ends in `[from, to]`: id, interval end, state,
    /// end of the last execution, and each task's state (JSON), for deadline checks.
    pub fn runs_ending_between(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<super::RunRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT run_id, dag_id, interval_start, interval_end, state, run_trigger, started_at, ended_at FROM dag_runs
                 WHERE dag_id = ?1 AND interval_end >= ?2 AND interval_end <= ?3 ORDER BY interval_start",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map(params![dag_id, ts(from), ts(to)], Self::run_row).map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(self.sql())?.map_err(|w| self.corrupt_note(w))?);
        }
        Ok(out)
    }
}
