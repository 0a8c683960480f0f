//! Stopping a job between two pieces of its work: the engine requests it (the task was
//! cancelled or timed out) and the job checks it before each input file, slice or batch, so a
//! job running on a blocking thread ends within one piece of work instead of running on, and
//! a job that stops publishes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop request shared by the engine and one job. `Stop::default()` is never requested.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

/// The job ended early because it was asked to stop; nothing was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped on request before {0}; nothing was published")]
pub struct Stopped(pub &'static str);

impl Stop {
    /// A stop not yet requested.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the job to stop at its next check.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Stopped(what))` once a stop was requested: what the job was about to do next.
    pub fn check(&self, what: &'static str) -> Result<(), Stopped> {
        if self.requested() { Err(Stopped(what)) } else { Ok(()) }
    }
}
