//! Facts: small key/value records a task keeps across attempts and crashes (an AWS job run
//! id saved before polling), and the process group an attempt runs.

use std::sync::{Mutex, OnceLock};

use rusqlite::{OptionalExtension, params};

use super::{RunStore, SqliteStore, StoreAt, StoreError};
use crate::process;
use crate::task::FactStore;

/// The facts of one task attempt: one connection to the store, opened on first use (most
/// attempts keep no facts and open none).
#[derive(Debug)]
pub struct AttemptFacts {
    at: StoreAt,
    store: OnceLock<Mutex<RunStore>>,
}

impl AttemptFacts {
    /// Facts in the store at `at`.
    pub fn new(at: &StoreAt) -> AttemptFacts {
        AttemptFacts { at: at.clone(), store: OnceLock::new() }
    }

    fn with<T>(&self, f: impl FnOnce(&RunStore) -> Result<T, StoreError>) -> Result<T, String> {
        let store = match self.store.get() {
            Some(s) => s,
            None => {
                // A fact is what a retry or a resumed run re-attaches by (an AWS job run id):
                // committed to disk before `set` returns, not only to the WAL in the page
                // cache (the run store's other writes are `NORMAL`: a power loss can lose their
                // last transactions, which a resume re-does).
                let opened = RunStore::open_durable(&self.at).map_err(|e| e.to_string())?;
                self.store.get_or_init(|| Mutex::new(opened))
            }
        };
        let store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&store).map_err(|e| e.to_string())
    }
}

impl FactStore for AttemptFacts {
    fn get(&self, run_id: &str, task_id: &str, key: &str) -> Result<Option<String>, String> {
        self.with(|s| s.fact(run_id, task_id, key))
    }

    fn set(&self, run_id: &str, task_id: &str, key: &str, value: &str) -> Result<(), String> {
        self.with(|s| s.set_fact(run_id, task_id, key, value))
    }

    fn clear(&self, run_id: &str, task_id: &str, key: &str) -> Result<(), String> {
        self.with(|s| s.clear_fact(run_id, task_id, key))
    }

    fn record_group(&self, run_id: &str, task_id: &str, attempt: u32, group: &process::Group) -> Result<(), String> {
        self.with(|s| s.record_group(run_id, task_id, attempt, group))
    }
}

impl SqliteStore {
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
    /// Forgets a fact saved by [`SqliteStore::set_fact`].
    pub fn clear_fact(&self, run_id: &str, task_id: &str, key: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM task_facts WHERE run_id = ?1 AND task_id = ?2 AND key = ?3",
                params![run_id, task_id, key],
            )
            .map(|_| ())
            .map_err(self.sql())
    }
    /// Reads a fact saved by [`SqliteStore::set_fact`].
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_written_with_full_sync() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path).expect("store"));
        let facts = AttemptFacts::new(&StoreAt::File(path.clone()));
        facts.set("r", "t", "k", "v").expect("set");
        let sync: i64 = facts
            .with(|s| {
                let conn = &s.as_sqlite().expect("a SQLite store").conn;
                Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma"))
            })
            .expect("with");
        assert_eq!(sync, 2, "FULL");
        assert_eq!(facts.get("r", "t", "k").expect("get").as_deref(), Some("v"));
    }
}
