//! The store's schema: versioned migrations (`PRAGMA user_version`) and the connection's
//! settings.

use std::time::Duration;

use rusqlite::TransactionBehavior;

use super::{SqliteStore, StoreError};

pub(super) const MIGRATIONS: &[&str] = &[
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
    // v4: the process group an attempt runs (its id, its leader's start time in clock ticks
    // after boot, the boot), so that the process taking over a crashed owner's run can kill
    // what the attempt left running, and never a process that merely got a recycled pid.
    r#"
    ALTER TABLE task_attempts ADD COLUMN pgid INTEGER;
    ALTER TABLE task_attempts ADD COLUMN leader_start INTEGER;
    ALTER TABLE task_attempts ADD COLUMN boot_id TEXT;
    "#,
    // v5: the failed attempts of a task's current execution, its retry budget used, so that a
    // resumed run neither forgets the budget nor skips a retry delay.
    r#"
    ALTER TABLE task_instances ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
    "#,
    // v6: notifications as an outbox — one row per dedupe key (run, task, attempt, event) and
    // target, written in the transaction of the state change that raised it, then marked sent
    // (or failed) by whoever delivers it; and the deadline decisions, so that a missed deadline
    // is raised once.
    r#"
    CREATE TABLE notifications (
        dedupe_key TEXT NOT NULL,
        target     TEXT NOT NULL,
        run_id     TEXT NOT NULL,
        task_id    TEXT NOT NULL DEFAULT '',
        attempt    INTEGER NOT NULL,
        event      TEXT NOT NULL,
        spec       TEXT NOT NULL,
        body       TEXT NOT NULL,
        state      TEXT NOT NULL,
        tries      INTEGER NOT NULL DEFAULT 0,
        error      TEXT,
        owner      TEXT,
        created_at TEXT NOT NULL,
        sent_at    TEXT,
        PRIMARY KEY (dedupe_key, target)
    );
    CREATE INDEX notifications_by_run ON notifications (run_id);
    CREATE INDEX notifications_pending ON notifications (state) WHERE state = 'pending';
    CREATE TABLE deadlines (
        run_id      TEXT NOT NULL,
        task_id     TEXT NOT NULL DEFAULT '',
        dag_id      TEXT NOT NULL,
        deadline_at TEXT NOT NULL,
        missed      INTEGER NOT NULL,
        reason      TEXT,
        decided_at  TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id)
    );
    "#,
    // v7: the audit log of what people did by hand (from the web UI, `cartflow mark`, `pause`):
    // who, when, what, on which run and task; and the paused DAGs (the scheduler creates no runs
    // of them).
    r#"
    CREATE TABLE paused (
        dag_id TEXT PRIMARY KEY,
        at     TEXT NOT NULL,
        who    TEXT NOT NULL
    );
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      TEXT NOT NULL,
        who     TEXT NOT NULL,
        action  TEXT NOT NULL,
        dag_id  TEXT NOT NULL DEFAULT '',
        run_id  TEXT NOT NULL DEFAULT '',
        task_id TEXT NOT NULL DEFAULT '',
        detail  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_by_run ON audit (run_id);
    "#,
    // v8: a cancel asked for by another process (`cartflow cancel`, the web UI): the run's owner
    // reads it with its heartbeat and stops the run.
    r#"
    ALTER TABLE dag_runs ADD COLUMN cancel_requested_at TEXT;
    ALTER TABLE dag_runs ADD COLUMN cancel_requested_by TEXT;
    "#,
    // v9: the lease an owner holds its run with (see `owner.rs`): renewed by its heartbeat, and
    // what a process of another host goes by, where the owner's pid means nothing. A run an
    // older cartflow holds keeps the minute its heartbeat used to be good for.
    r#"
    ALTER TABLE dag_runs ADD COLUMN lease_until TEXT;
    UPDATE dag_runs SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', heartbeat_at, '+60 seconds')
     WHERE owner IS NOT NULL AND heartbeat_at IS NOT NULL;
    "#,
];

impl SqliteStore {
    pub(super) fn init(&mut self) -> Result<(), StoreError> {
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
}
