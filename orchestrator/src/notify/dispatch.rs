//! Delivering recorded notifications: claim one in the run store, send it, retry with backoff,
//! record how it ended. A notification that cannot be delivered is recorded as failed and
//! logged; it never fails the run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::Settings;
use super::send::{self, SendCtx};
use crate::engine::store::{Delivery, RunStore, StoreAt, StoreError};
use crate::env::Env;

/// Sends recorded notifications in the background of one run (or one scheduler), each in a
/// task of its own; [`Dispatcher::drain`] waits for them.
#[derive(Debug)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    tasks: Mutex<JoinSet<()>>,
}

#[derive(Debug)]
struct Inner {
    settings: Arc<Settings>,
    env: Env,
    project_dir: PathBuf,
    store_at: StoreAt,
    store: Mutex<Option<RunStore>>,
}

impl Inner {
    /// Runs `f` on this dispatcher's own store connection (opened on first use).
    fn with_store<T>(&self, f: impl FnOnce(&mut RunStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = match guard.take() {
            Some(store) => store,
            None => RunStore::open(&self.store_at)?,
        };
        f(guard.insert(store))
    }
}

impl Dispatcher {
    /// A dispatcher that delivers with `settings` on `env`, recording in the store at
    /// `store_at`; file targets resolve under `project_dir`.
    pub fn new(settings: Arc<Settings>, env: Env, project_dir: &Path, store_at: &StoreAt) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                settings,
                env,
                project_dir: project_dir.to_path_buf(),
                store_at: store_at.clone(),
                store: Mutex::new(None),
            }),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Starts delivering the notifications `keys` ((dedupe key, target) pairs, recorded in
    /// the store). One that another live process is delivering, or that is delivered, is
    /// left alone.
    pub fn dispatch(&self, keys: impl IntoIterator<Item = (String, String)>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, target) in keys {
            let inner = self.inner.clone();
            tasks.spawn(async move { deliver(inner, key, target).await });
        }
    }

    /// Waits until every notification dispatched so far is delivered or given up (bounded by
    /// the delivery settings: tries × time limit plus the retry delays).
    pub async fn drain(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        while tasks.join_next().await.is_some() {}
    }
}

async fn deliver(inner: Arc<Inner>, key: String, target: String) {
    let row = match inner.with_store(|s| s.claim_notification(&key, &target)) {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            warn!(key = %key, target = %target, error = %e, "cannot claim a notification; the next run owner sends it");
            return;
        }
    };
    let note = &row.note;
    let ctx = SendCtx { env: &inner.env, project_dir: &inner.project_dir, timeout: inner.settings.timeout.0 };
    let mut tries = row.tries;
    let mut this_process = 0u32;
    loop {
        tries += 1;
        this_process += 1;
        let outcome = send::send(&row.spec, note, ctx).await;
        let (delivery, done) = match &outcome {
            Ok(()) => (Delivery::Sent, true),
            Err(e) if e.permanent || this_process > inner.settings.retries => {
                (Delivery::Failed(e.message.clone()), true)
            }
            Err(e) => (Delivery::Retrying(e.message.clone()), false),
        };
        if let Err(e) = inner.with_store(|s| s.record_delivery(&key, &target, tries, &delivery)) {
            warn!(key = %key, target = %target, error = %e, "cannot record a notification's delivery");
        }
        let task = note.task.as_deref().unwrap_or("-");
        match (&outcome, done) {
            (Ok(()), _) => {
                info!(run = %note.run, task = %task, event = %note.event, target = %target, tries, "notification sent");
                return;
            }
            (Err(e), true) => {
                warn!(run = %note.run, task = %task, event = %note.event, target = %target, tries, error = %e, "notification not delivered; giving up");
                return;
            }
            (Err(e), false) => {
                let delay = inner.settings.retry_delay_for(this_process);
                warn!(run = %note.run, task = %task, event = %note.event, target = %target, tries, error = %e, retry_in = %crate::duration::humanize(delay), "notification not delivered; will retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
