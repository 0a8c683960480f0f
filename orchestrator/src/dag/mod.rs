//! The DAG model: what a compiled DAG file is.
//!
//! DAG files are loaded and checked by [`compile`]; the result is a [`Dag`] whose tasks are in
//! a topological order (declaration order where the dependencies allow) with their upstream
//! and downstream indices precomputed for the executor.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
use crate::task::CompiledTask;
use crate::yaml::Pos;

pub mod compile;

pub use compile::{DagSet, Diagnostic, compile_dir, compile_file, compile_source};

/// A compiled DAG.
#[derive(Debug)]
pub struct Dag {
    /// Unique id.
    pub id: String,
    /// What it is for.
    pub description: String,
    /// The file it came from.
    pub file: PathBuf,
    /// When it runs.
    pub schedule: Schedule,
    /// The timezone of the schedule and of `{{ ds }}`.
    pub timezone: Tz,
    /// The first interval starts at or after this instant.
    pub start_date: Option<DateTime<Utc>>,
    /// No interval starts at or after this instant.
    pub end_date: Option<DateTime<Utc>>,
    /// Whether the scheduler creates runs for every missed interval.
    pub catchup: bool,
    /// How many runs of this DAG may be active at once.
    pub max_active_runs: u32,
    /// How many tasks of one run may run at once.
    pub max_active_tasks: u32,
    /// Parameters, usable as `{{ params.NAME }}` (their defaults).
    pub params: BTreeMap<String, String>,
    /// The declared type of each param that has one (`-p` values are checked against it).
    pub param_types: BTreeMap<String, ParamType>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Who is told what (`notify:`): every task's failures, retries, failed checks and missed
    /// deadlines, and the run's success and missed deadline.
    pub notify: Vec<crate::notify::Rule>,
    /// The run must have succeeded this long after its interval's end (`deadline:`), or
    /// `deadline_miss` is raised.
    pub deadline: Option<Duration>,
    /// Tasks in topological order.
    pub tasks: Vec<Task>,
}

impl Dag {
    /// Its schedule, with its id and timezone.
    pub fn scheduled(&self) -> crate::schedule::Scheduled<'_> {
        crate::schedule::Scheduled { id: &self.id, schedule: &self.schedule, timezone: self.timezone }
    }

    /// The index of a task.
    pub fn task_index(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }

    /// The tasks `ids` and, with `downstream`, everything downstream of them.
    pub fn select(&self, ids: &[String], downstream: bool) -> Result<Vec<bool>, String> {
        let mut selected = vec![false; self.tasks.len()];
        for id in ids {
            let i = self.task_index(id).ok_or_else(|| {
                let hint = crate::yaml::hint(id, self.tasks.iter().map(|t| t.id.as_str()));
                format!("DAG `{}` has no task `{id}`{hint}", self.id)
            })?;
            selected[i] = true;
        }
        if downstream {
            // Tasks are in topological order: one forward pass closes the set.
            for i in 0..self.tasks.len() {
                if selected[i] {
                    for &d in &self.tasks[i].downstream {
                        selected[d] = true;
                    }
                }
            }
        }
        Ok(selected)
    }
}

/// One task of a DAG.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique id within the DAG.
    pub id: String,
    /// The kind's compiled config.
    pub config: Arc<dyn CompiledTask>,
    /// Indices of the tasks this one depends on.
    pub upstream: Vec<usize>,
    /// Indices of the tasks that depend on this one.
    pub downstream: Vec<usize>,
    /// When the task may run, given its upstream states.
    pub trigger_rule: TriggerRule,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// The pool whose slots the task takes.
    pub pool: Option<String>,
    /// Who is told what about this task (`notify:`), besides the DAG's rules.
    pub notify: Vec<crate::notify::Rule>,
    /// The task must have succeeded this long after the interval's end (`deadline:`).
    pub deadline: Option<Duration>,
    /// Whether the task runs for every interval or, in a backfill, once (`refresh:`).
    pub refresh: Refresh,
    /// Data checks on the task's staged output (`checks:`), run before it is published.
    pub checks: Arc<[crate::checks::Check]>,
    /// Where the task is declared.
    pub pos: Pos,
}

/// How often a task runs within a backfill (`refresh:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// For every interval (default).
    #[default]
    Every,
    /// The task summarises all intervals (a full-history table, a dashboard): within a
    /// backfill it runs once, in the backfill's last run, which starts after every other run
    /// of the backfill has ended; in the other runs it is skipped. A run outside a backfill
    /// (`run`, the scheduler) runs it as usual.
    Latest,
}

impl Task {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }
}

/// When a task may run, given the states of its upstream tasks (Airflow's trigger rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded (default). A failed upstream makes the task
    /// `upstream_failed`; a skipped one makes it `skipped`.
    #[default]
    AllSuccess,
    /// Every upstream is finished, whatever its state.
    AllDone,
    /// Every upstream failed (or is upstream_failed); otherwise `skipped`.
    AllFailed,
    /// At least one upstream succeeded: runs as soon as one does; `upstream_failed` if none did.
    OneSuccess,
    /// At least one upstream failed: runs as soon as one does; `skipped` if none did.
    OneFailed,
    /// No upstream failed (success or skipped); otherwise `upstream_failed`.
    NoneFailed,
}

impl fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::NoneFailed => "none_failed",
        };
        f.write_str(s)
    }
}

/// How the delay grows between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Constant,
    /// `retry_delay * 2^(n-1)` before retry n, capped at `max_retry_delay`.
    #[default]
    Exponential,
}

/// Retries of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a failed attempt is retried.
    pub retries: u32,
    /// The delay before the first retry.
    pub delay: Duration,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The longest delay: no delay is longer, also when `delay` is (the compile step refuses
    /// a `max_retry_delay` shorter than `retry_delay`).
    pub max_delay: Duration,
    /// Whether to randomize delays ("equal jitter": half fixed, half random).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            delay: Duration::from_secs(10),
            backoff: Backoff::Exponential,
            max_delay: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `n` (1-based), before jitter: never longer than
    /// `max_delay`, whatever `n` (the exponent stops growing once the cap is reached, so no
    /// retry number overflows it).
    pub fn base_delay(&self, n: u32) -> Duration {
        let d = match self.backoff {
            Backoff::Constant => self.delay,
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(n.saturating_sub(1).min(30));
                self.delay.saturating_mul(factor)
            }
        };
        d.min(self.max_delay)
    }

    /// The delay before retry number `n`, with jitter applied when enabled: a value in
    /// `[base/2, base]`, so that retries of many tasks spread out but never come early by
    /// more than half.
    pub fn delay_for(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay(n);
        if !self.jitter || base.is_zero() {
            return base;
        }
        let half = base / 2;
        let extra = rng.u64(0..=half.as_millis().min(u64::MAX as u128) as u64);
        half + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_and_caps() {
        let p = RetryPolicy {
            retries: 5,
            delay: Duration::from_secs(1),
            backoff: Backoff::Exponential,
            max_delay: Duration::from_secs(5),
            jitter: false,
        };
        let delays: Vec<u64> = (1..=5).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
        let c = RetryPolicy { backoff: Backoff::Constant, ..p };
        assert_eq!(c.base_delay(4), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let p = RetryPolicy { delay: Duration::from_secs(8), jitter: true, ..RetryPolicy::default() };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.delay_for(1, &mut rng);
            assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8), "{d:?}");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 50, "jitter must actually vary the delay");
    }

    #[test]
    fn delays_never_exceed_the_cap_whatever_the_retry_number() {
        let mut rng = fastrand::Rng::with_seed(3);
        let year = Duration::from_secs(365 * 86_400);
        for (delay, max_delay) in [
            (Duration::from_secs(1), Duration::from_secs(5)),
            (year, year),
            (Duration::from_millis(1), year),
            (Duration::from_secs(20), Duration::from_secs(10)),
            (Duration::MAX, Duration::from_secs(600)),
        ] {
            for backoff in [Backoff::Exponential, Backoff::Constant] {
                for jitter in [false, true] {
                    let p = RetryPolicy { retries: u32::MAX, delay, backoff, max_delay, jitter };
                    for n in [0, 1, 2, 31, 32, 33, 64, 100, u32::MAX - 1, u32::MAX] {
                        let d = p.delay_for(n, &mut rng);
                        assert!(d <= max_delay, "{p:?} retry {n}: {d:?}");
                        assert!(p.base_delay(n) <= max_delay, "{p:?} retry {n}");
                    }
                }
            }
        }
    }
}

/// The type a param may declare (`params: {n: {type: int, default: 7}}`): a `-p` value (and the
/// default) must be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    /// Any text (as an undeclared param).
    String,
    /// A whole number (`-12`, `0`, `42`).
    Int,
    /// A date, `YYYY-MM-DD` (years 0001 to 9999).
    Date,
    /// A relative path that stays inside its root: not absolute, no `..` component, no control
    /// characters, at most 1,024 bytes ([`crate::template::path_problem`]). Where the value goes
    /// the rendered path is checked again, with the DAG's text around it.
    Path,
    /// One of these values.
    Enum(Vec<String>),
}

impl ParamType {
    /// Why `v` is not of this type, if it is not.
    pub fn problem(&self, v: &str) -> Option<String> {
        match self {
            ParamType::String => None,
            ParamType::Int => (v.parse::<i64>().is_err()).then(|| format!("`{v}` is not a whole number")),
            ParamType::Date => crate::schedule::parse_ymd(v)
                .filter(|_| v.len() == 10)
                .is_none()
                .then(|| format!("`{v}` is not a date (YYYY-MM-DD)")),
            ParamType::Path => {
                let why = if v.is_empty() {
                    Some("it is empty")
                } else if v.len() > 1024 {
                    Some("it is longer than 1,024 bytes")
                } else {
                    crate::template::path_problem(v)
                };
                why.map(|why| format!("{} is not a path inside its root: {why}", crate::template::clip(v)))
            }
            ParamType::Enum(values) => (!values.iter().any(|x| x == v)).then(|| {
                format!(
                    "`{v}` is not one of {}",
                    values.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
                )
            }),
        }
    }

    /// `string`, `int`, `date`, `path` or `enum`.
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Date => "date",
            ParamType::Path => "path",
            ParamType::Enum(_) => "enum",
        }
    }
}
