//! Task and run states.
//!
//! A task's state is an enum whose variants carry only the data valid in that state; moves
//! between states are methods that refuse illegal transitions, so the executor cannot, say,
//! succeed a task that never started.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state of one task instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its upstream tasks, a slot, or its turn.
    Queued,
    /// An attempt is running.
    Running {
        /// 1-based attempt number.
        attempt: u32,
        /// When the attempt started.
        started_at: DateTime<Utc>,
    },
    /// The last attempt failed; another one is due at `retry_at`.
    UpForRetry {
        /// The attempt that failed.
        attempt: u32,
        /// When the next attempt may start.
        retry_at: DateTime<Utc>,
        /// Why the attempt failed.
        error: String,
    },
    /// Finished successfully.
    Success {
        /// The attempt that succeeded.
        attempt: u32,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it ended.
        ended_at: DateTime<Utc>,
    },
    /// Failed with no retries left.
    Failed {
        /// The last attempt.
        attempt: u32,
        /// When it ended.
        ended_at: DateTime<Utc>,
        /// Why.
        error: String,
    },
    /// Not run because its upstream tasks failed (per its trigger rule).
    UpstreamFailed,
    /// Not run (trigger rule), or the task skipped itself.
    Skipped,
    /// Stopped by a cancel (Ctrl-C, SIGTERM) before it could finish.
    Cancelled {
        /// The attempt that was stopped, if one was running.
        attempt: Option<u32>,
    },
}

/// An illegal state transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition: {action} from `{from}`")]
pub struct IllegalTransition {
    /// The state the task was in.
    pub from: &'static str,
    /// What was attempted.
    pub action: &'static str,
}

impl TaskState {
    /// The state's name as stored and printed.
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running { .. } => "running",
            TaskState::UpForRetry { .. } => "up_for_retry",
            TaskState::Success { .. } => "success",
            TaskState::Failed { .. } => "failed",
            TaskState::UpstreamFailed => "upstream_failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled { .. } => "cancelled",
        }
    }

    /// Whether nothing more will happen to the task in this run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Success { .. }
                | TaskState::Failed { .. }
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Cancelled { .. }
        )
    }

    /// Whether the task counts as failed for its downstream tasks.
    pub fn counts_as_failed(&self) -> bool {
        matches!(self, TaskState::Failed { .. } | TaskState::UpstreamFailed | TaskState::Cancelled { .. })
    }

    fn illegal<T>(&self, action: &'static str) -> Result<T, IllegalTransition> {
        Err(IllegalTransition { from: self.name(), action })
    }

    /// Starts attempt `attempt`: from `queued` or `up_for_retry`.
    pub fn start(&self, attempt: u32, now: DateTime<Utc>) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Queued | TaskState::UpForRetry { .. } => Ok(TaskState::Running { attempt, started_at: now }),
            _ => self.illegal("start"),
        }
    }

    /// The running attempt succeeded.
    pub fn succeed(&self, now: DateTime<Utc>) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Running { attempt, started_at } => {
                Ok(TaskState::Success { attempt: *attempt, started_at: *started_at, ended_at: now })
            }
            _ => self.illegal("succeed"),
        }
    }

    /// The running attempt skipped itself.
    pub fn skip_self(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Running { .. } => Ok(TaskState::Skipped),
            _ => self.illegal("skip itself"),
        }
    }

    /// The running attempt failed; with `retry_at`, another attempt is due then.
    pub fn fail(
        &self,
        error: String,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<TaskState, IllegalTransition> {
        match (self, retry_at) {
            (TaskState::Running { attempt, .. }, Some(retry_at)) => {
                Ok(TaskState::UpForRetry { attempt: *attempt, retry_at, error })
            }
            (TaskState::Running { attempt, .. }, None) => {
                Ok(TaskState::Failed { attempt: *attempt, ended_at: now, error })
            }
            _ => self.illegal("fail"),
        }
    }

    /// Its trigger rule says it will not run.
    pub fn skip(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Queued => Ok(TaskState::Skipped),
            _ => self.illegal("skip"),
        }
    }

    /// Its upstream failed.
    pub fn upstream_failed(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Queued => Ok(TaskState::UpstreamFailed),
            _ => self.illegal("mark upstream_failed"),
        }
    }

    /// The run is being cancelled.
    pub fn cancel(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Queued | TaskState::UpForRetry { .. } => Ok(TaskState::Cancelled { attempt: None }),
            TaskState::Running { attempt, .. } => Ok(TaskState::Cancelled { attempt: Some(*attempt) }),
            _ => self.illegal("cancel"),
        }
    }

    /// The process that ran the attempt died (crash, SIGKILL): the task goes back to the
    /// queue and the attempt is recorded as interrupted.
    pub fn interrupt(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            TaskState::Running { .. } | TaskState::UpForRetry { .. } => Ok(TaskState::Queued),
            _ => self.illegal("interrupt"),
        }
    }

    /// Clears a finished task so that it runs again (rerun, resume of a failed run).
    pub fn clear(&self) -> Result<TaskState, IllegalTransition> {
        match self {
            s if s.is_terminal() => Ok(TaskState::Queued),
            TaskState::Queued => Ok(TaskState::Queued),
            _ => self.illegal("clear"),
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of a DAG run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created or being executed.
    Running,
    /// Every task succeeded or was skipped.
    Success,
    /// At least one task failed.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

impl RunState {
    /// The name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a run came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `cartflow run`.
    Manual,
    /// The scheduler.
    Scheduled,
    /// `cartflow backfill`.
    Backfill,
}

impl Trigger {
    /// The name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
            Trigger::Backfill => "backfill",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Trigger> {
        Some(match s {
            "manual" => Trigger::Manual,
            "scheduled" => Trigger::Scheduled,
            "backfill" => Trigger::Backfill,
            _ => return None,
        })
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one attempt of a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It succeeded.
    Success,
    /// It failed.
    Failed,
    /// It ran past the task's timeout and was stopped.
    TimedOut,
    /// The task skipped itself (`skip_exit_code`).
    Skipped,
    /// The run was cancelled while it ran.
    Cancelled,
    /// The process running it died (crash, SIGKILL); the task ran again after.
    Interrupted,
}

impl AttemptOutcome {
    /// The name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Skipped => "skipped",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<AttemptOutcome> {
        Some(match s {
            "success" => AttemptOutcome::Success,
            "failed" => AttemptOutcome::Failed,
            "timed_out" => AttemptOutcome::TimedOut,
            "skipped" => AttemptOutcome::Skipped,
            "cancelled" => AttemptOutcome::Cancelled,
            "interrupted" => AttemptOutcome::Interrupted,
            _ => return None,
        })
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one attempt stands: running, or ended with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Still running (or its process died and no one has claimed the run since).
    Running,
    /// Over.
    Ended(AttemptOutcome),
}

impl AttemptState {
    /// Parses a stored name (`running` or an outcome).
    pub fn parse(s: &str) -> Option<AttemptState> {
        match s {
            "running" => Some(AttemptState::Running),
            other => AttemptOutcome::parse(other).map(AttemptState::Ended),
        }
    }

    /// The name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Ended(o) => o.name(),
        }
    }
}

impl fmt::Display for AttemptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for AttemptState {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("ts")
    }

    #[test]
    fn happy_path() {
        let q = TaskState::Queued;
        let r = q.start(1, now()).expect("start");
        assert_eq!(r, TaskState::Running { attempt: 1, started_at: now() });
        let s = r.succeed(now()).expect("succeed");
        assert!(matches!(s, TaskState::Success { attempt: 1, .. }));
        assert!(s.is_terminal());
    }

    #[test]
    fn retry_then_fail() {
        let r = TaskState::Queued.start(1, now()).expect("start");
        let u = r.fail("boom".into(), now(), Some(now())).expect("fail");
        assert!(matches!(u, TaskState::UpForRetry { attempt: 1, .. }));
        assert!(!u.is_terminal());
        let r2 = u.start(2, now()).expect("retry");
        let f = r2.fail("boom".into(), now(), None).expect("fail");
        assert!(matches!(f, TaskState::Failed { attempt: 2, .. }));
        assert!(f.counts_as_failed());
    }

    #[test]
    fn illegal_moves_are_refused() {
        let q = TaskState::Queued;
        assert_eq!(q.succeed(now()), Err(IllegalTransition { from: "queued", action: "succeed" }));
        assert!(q.fail("x".into(), now(), None).is_err());
        let s = TaskState::Skipped;
        assert!(s.start(1, now()).is_err());
        assert!(s.cancel().is_err());
        let r = TaskState::Queued.start(1, now()).expect("start");
        assert!(r.skip().is_err());
        assert!(r.upstream_failed().is_err());
        assert!(r.clear().is_err());
        let done = r.succeed(now()).expect("ok");
        assert!(done.start(2, now()).is_err());
        assert!(done.succeed(now()).is_err());
        assert!(done.interrupt().is_err());
    }

    #[test]
    fn cancel_and_interrupt() {
        let r = TaskState::Queued.start(3, now()).expect("start");
        assert_eq!(r.cancel(), Ok(TaskState::Cancelled { attempt: Some(3) }));
        assert_eq!(TaskState::Queued.cancel(), Ok(TaskState::Cancelled { attempt: None }));
        assert_eq!(r.interrupt(), Ok(TaskState::Queued));
        let c = r.cancel().expect("cancel");
        assert_eq!(c.clear(), Ok(TaskState::Queued));
    }

    #[test]
    fn stored_names_parse_back() {
        for t in [Trigger::Manual, Trigger::Scheduled, Trigger::Backfill] {
            assert_eq!(Trigger::parse(t.name()), Some(t));
        }
        for o in [
            AttemptOutcome::Success,
            AttemptOutcome::Failed,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Skipped,
            AttemptOutcome::Cancelled,
            AttemptOutcome::Interrupted,
        ] {
            assert_eq!(AttemptState::parse(o.name()), Some(AttemptState::Ended(o)));
        }
        assert_eq!(AttemptState::parse("running"), Some(AttemptState::Running));
        assert_eq!(AttemptState::parse("exploded"), None);
        assert_eq!(Trigger::parse("cron"), None);
    }

    #[test]
    fn states_round_trip_through_json() {
        for s in [
            TaskState::Queued,
            TaskState::Running { attempt: 2, started_at: now() },
            TaskState::UpForRetry { attempt: 1, retry_at: now(), error: "e".into() },
            TaskState::Failed { attempt: 1, ended_at: now(), error: "e".into() },
            TaskState::Cancelled { attempt: None },
        ] {
            let j = serde_json::to_string(&s).expect("json");
            assert_eq!(serde_json::from_str::<TaskState>(&j).expect("back"), s);
        }
    }
}
