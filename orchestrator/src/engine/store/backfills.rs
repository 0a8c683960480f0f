//! Backfill jobs: a backfill's planned runs, recorded before it starts, so that the same command
//! after a crash continues the job instead of planning afresh.

use chrono::Utc;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, StoreError, ts};

/// A run of a backfill job: (run id, planned action, final state once it finished).
pub type BackfillRunRow = (String, String, Option<String>);

impl SqliteStore {
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
        cartflow_jobs::crash::point("store.backfill_created");
        Ok(id)
    }
    /// Records how one run of a backfill job ended.
    pub fn backfill_run_done(&self, backfill_id: &str, run_id: &str, state: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE backfill_runs SET state = ?3 WHERE backfill_id = ?1 AND run_id = ?2",
                params![backfill_id, run_id, state],
            )
            .map_err(self.sql())?;
        cartflow_jobs::crash::point("store.backfill_run_done");
        Ok(())
    }
    /// Closes a backfill job: the same command later plans afresh.
    pub fn finish_backfill(&self, backfill_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE backfills SET finished_at = ?2 WHERE backfill_id = ?1",
                params![backfill_id, ts(Utc::now())],
            )
            .map_err(self.sql())?;
        cartflow_jobs::crash::point("store.backfill_finished");
        Ok(())
    }
}
