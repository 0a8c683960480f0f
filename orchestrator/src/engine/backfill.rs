//! Backfills: plan one run per complete interval of a date range, then run them with
//! bounded concurrency.
//!
//! The planner ([`plan`]) is a pure function of the intervals, the runs the store already has
//! and the reprocess mode; `cartflow reprocess` reuses it. A backfill is recorded in the run
//! store as a job before it starts, so that running the same command again after a crash
//! continues that job — finished intervals are not run again, the interrupted ones resume —
//! instead of planning afresh.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dag::Dag;
use crate::engine::executor::{self, ExecError, ExecOptions, Pools};
use crate::engine::state::{RunState, TaskState, Trigger};
use crate::engine::store::{self, RunStore, StoreAt, StoreError};
use crate::schedule::DataInterval;

/// Which intervals that already have a run are run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Reprocess {
    /// Skip every interval that already has a run.
    #[default]
    None,
    /// Run failed (and cancelled) runs again: their failed tasks, keeping what succeeded.
    Failed,
    /// Run every finished run again from scratch, successful ones included.
    Completed,
}

impl fmt::Display for Reprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reprocess::None => "none",
            Reprocess::Failed => "failed",
            Reprocess::Completed => "completed",
        })
    }
}

/// What a backfill does with one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No run yet: create one.
    Create,
    /// A run whose process died: resume it (finished tasks are kept).
    Resume,
    /// A failed or cancelled run: run its unfinished tasks again.
    RetryFailed,
    /// A finished run: run every task again.
    Rerun,
    /// Leave it alone.
    Skip(SkipReason),
}

/// Why an interval is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// It already has a run in this state (and the mode does not re-run it).
    HasRun(RunState),
    /// Another live process is running it.
    InFlight,
    /// It finished earlier in this same backfill job (before a crash).
    DoneInThisBackfill(RunState),
}

impl Action {
    /// A short name for tables and the job record.
    pub fn name(&self) -> String {
        match self {
            Action::Create => "create".into(),
            Action::Resume => "resume".into(),
            Action::RetryFailed => "retry failed".into(),
            Action::Rerun => "rerun".into(),
            Action::Skip(SkipReason::HasRun(s)) => format!("skip ({s})"),
            Action::Skip(SkipReason::InFlight) => "skip (in flight)".into(),
            Action::Skip(SkipReason::DoneInThisBackfill(s)) => {
                format!("skip (done in this backfill: {s})")
            }
        }
    }

    fn parse_stored(s: &str) -> Option<Action> {
        Some(match s {
            "create" => Action::Create,
            "resume" => Action::Resume,
            "retry failed" => Action::RetryFailed,
            "rerun" => Action::Rerun,
            _ => return None,
        })
    }

    /// Whether the interval will run.
    pub fn runs(&self) -> bool {
        !matches!(self, Action::Skip(_))
    }
}

/// One interval of a backfill plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The interval.
    pub interval: DataInterval,
    /// Its run id.
    pub run_id: String,
    /// What will happen.
    pub action: Action,
}

/// What the store knows about an interval's existing run: its state, and whether a live
/// process owns it.
pub type Existing = HashMap<DateTime<Utc>, (RunState, bool)>;

/// Plans a backfill over `intervals` given the runs that exist.
pub fn plan(dag_id: &str, intervals: &[DataInterval], existing: &Existing, mode: Reprocess) -> Vec<Planned> {
    intervals
        .iter()
        .map(|i| {
            let action = match existing.get(&i.start) {
                None => Action::Create,
                Some((RunState::Running, true)) => Action::Skip(SkipReason::InFlight),
                Some((RunState::Running, false)) => Action::Resume,
                Some((state @ RunState::Success, _)) => match mode {
                    Reprocess::Completed => Action::Rerun,
                    _ => Action::Skip(SkipReason::HasRun(*state)),
                },
                Some((state @ (RunState::Failed | RunState::Cancelled), _)) => match mode {
                    Reprocess::None => Action::Skip(SkipReason::HasRun(*state)),
                    Reprocess::Failed => Action::RetryFailed,
                    Reprocess::Completed => Action::Rerun,
                },
            };
            Planned { interval: *i, run_id: store::run_id(dag_id, i.start), action }
        })
        .collect()
}

/// The existing runs of `dag` in the span of `intervals`.
pub fn existing_runs(store: &RunStore, dag_id: &str, intervals: &[DataInterval]) -> Result<Existing, StoreError> {
    let (Some(first), Some(last)) = (intervals.first(), intervals.last()) else {
        return Ok(Existing::new());
    };
    let (from, to) = (first.start.min(last.start), first.start.max(last.start) + chrono::Duration::seconds(1));
    Ok(store.runs_between(dag_id, from, to)?.into_iter().map(|(r, live)| (r.interval_start, (r.state, live))).collect())
}

/// A request to backfill, as the user typed it (its identity across a crash).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The DAG.
    pub dag: &'a Dag,
    /// Intervals starting at or after this.
    pub from: DateTime<Utc>,
    /// Intervals starting before this.
    pub to: DateTime<Utc>,
    /// The reprocess mode.
    pub mode: Reprocess,
    /// Selected tasks.
    pub tasks: &'a [String],
    /// With `tasks`: their downstream too.
    pub downstream: bool,
}

impl Request<'_> {
    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.dag.id,
            self.from.to_rfc3339(),
            self.to.to_rfc3339(),
            self.mode,
            self.tasks.join(","),
            self.downstream
        )
    }
}

/// A plan, and whether it continues a job that a crash interrupted.
#[derive(Debug, Clone)]
pub struct BackfillPlan {
    /// Intervals in the order they will run.
    pub items: Vec<Planned>,
    /// Intervals of the range that are not complete yet at `now` (not planned).
    pub incomplete: usize,
    /// The id of the unfinished job this plan continues.
    pub continues: Option<String>,
}

/// Plans a backfill: the complete intervals of the range (at `now`), against the store.
pub fn plan_request(
    store: &RunStore,
    req: &Request,
    now: DateTime<Utc>,
    reverse: bool,
) -> Result<BackfillPlan, StoreError> {
    let all = req.dag.schedule.intervals_between(req.from, req.to, req.dag.timezone);
    let complete: Vec<DataInterval> = all.iter().copied().filter(|i| i.end <= now).collect();
    let incomplete = all.len() - complete.len();
    let existing = existing_runs(store, &req.dag.id, &complete)?;
    let (mut items, continues) = match store.open_backfill(&req.key())? {
        Some((id, runs)) => {
            let by_run: HashMap<String, DataInterval> =
                complete.iter().map(|i| (store::run_id(&req.dag.id, i.start), *i)).collect();
            let corrupt = |what: String| StoreError::Corrupt { path: PathBuf::from(store.location()), what };
            let mut items = Vec::new();
            for (run_id, action, state) in runs {
                let Some(interval) = by_run.get(&run_id).copied() else { continue };
                let state =
                    match state.as_deref() {
                        None => None,
                        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
                            corrupt(format!("backfill {id}: run {run_id} ended in unknown state `{s}`"))
                        })?),
                    };
                let action = match (state, existing.get(&interval.start)) {
                    (Some(s), _) => Action::Skip(SkipReason::DoneInThisBackfill(s)),
                    (None, Some((RunState::Running, true))) => Action::Skip(SkipReason::InFlight),
                    (None, Some((RunState::Running, false))) => Action::Resume,
                    (None, _) => Action::parse_stored(&action)
                        .ok_or_else(|| corrupt(format!("backfill {id}: run {run_id} has unknown action `{action}`")))?,
                };
                items.push(Planned { interval, run_id, action });
            }
            (items, Some(id))
        }
        None => (plan(&req.dag.id, &complete, &existing, req.mode), None),
    };
    if continues.is_none() && reverse {
        items.reverse();
    }
    Ok(BackfillPlan { items, incomplete, continues })
}

/// How one interval of a backfill ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The planned interval.
    pub planned: Planned,
    /// The run's final state, if it ran.
    pub state: Option<RunState>,
    /// How long it took.
    pub elapsed: Option<Duration>,
    /// Tasks that failed (or were upstream_failed).
    pub failed_tasks: Vec<String>,
    /// An error that kept the run from executing.
    pub error: Option<String>,
}

/// How the runs of a backfill execute.
#[derive(Debug, Clone)]
pub struct Execution<'a> {
    /// The run store.
    pub store_at: &'a StoreAt,
    /// Pools shared by the runs.
    pub pools: Arc<Pools>,
    /// The options of every run (the trigger and rerun flag are set per run).
    pub base: ExecOptions,
    /// Runs at once.
    pub max_active_runs: usize,
}

/// Runs a plan with at most `max_active_runs` runs at once. The plan is recorded as a job
/// first (unless it continues one), and each finished run is recorded in it.
pub async fn execute(
    dag: Arc<Dag>,
    req_key_source: &Request<'_>,
    plan: BackfillPlan,
    how: &Execution<'_>,
    cancel: CancellationToken,
    on_done: &mut (dyn FnMut(&Outcome) + Send),
) -> Result<Vec<Outcome>, ExecError> {
    let Execution { store_at, pools, base, max_active_runs } = how;
    let (store_at, max_active_runs) = (*store_at, *max_active_runs);
    let mut store = RunStore::open(store_at)?;
    let job = match &plan.continues {
        Some(id) => id.clone(),
        None => {
            let runs: Vec<(String, String)> =
                plan.items.iter().filter(|p| p.action.runs()).map(|p| (p.run_id.clone(), p.action.name())).collect();
            let refs: Vec<(String, &str)> = runs.iter().map(|(r, a)| (r.clone(), a.as_str())).collect();
            store.create_backfill(&dag.id, &req_key_source.key(), &refs)?
        }
    };
    let limit = Arc::new(Semaphore::new(max_active_runs.max(1)));
    let mut set: JoinSet<Outcome> = JoinSet::new();
    let mut outcomes = Vec::new();
    // `refresh: latest` tasks run once, in the last run (in time) of those that run; it starts
    // after all the others have ended, so that it sees every interval's data.
    let latest = last_run(&dag, &plan.items);
    let mut held: Option<Planned> = None;
    let launch = |p: Planned, permit: Option<tokio::sync::OwnedSemaphorePermit>, defer_latest: bool| {
        let opts =
            ExecOptions { trigger: Trigger::Backfill, rerun: p.action == Action::Rerun, defer_latest, ..base.clone() };
        let (dag, pools, cancel, store_at, job) =
            (dag.clone(), pools.clone(), cancel.clone(), store_at.clone(), job.clone());
        async move {
            let started = std::time::Instant::now();
            let r = executor::execute(dag, p.interval, &store_at, pools, &opts, cancel, &mut |_| {}).await;
            // Record the outcome in the job before the next run may start, so that a crash
            // after this point never runs this interval again.
            if let Ok(report) = &r {
                match RunStore::open(&store_at) {
                    Ok(store) => record(&store, &job, &p.run_id, report.state),
                    Err(e) => tracing::warn!(error = %e, "recording a backfill run"),
                }
            }
            drop(permit);
            match r {
                Ok(report) => Outcome {
                    planned: p,
                    state: Some(report.state),
                    elapsed: Some(started.elapsed()),
                    failed_tasks: report
                        .tasks
                        .iter()
                        .filter(|t| matches!(t.state, TaskState::Failed { .. }))
                        .map(|t| t.task_id.clone())
                        .collect(),
                    error: None,
                },
                Err(e) => Outcome {
                    planned: p,
                    state: None,
                    elapsed: Some(started.elapsed()),
                    failed_tasks: Vec::new(),
                    error: Some(e.to_string()),
                },
            }
        }
    };
    let not_started = |planned: Planned| Outcome {
        planned,
        state: None,
        elapsed: None,
        failed_tasks: Vec::new(),
        error: Some("not started: cancelled".into()),
    };
    for p in plan.items {
        if !p.action.runs() {
            let o = Outcome { planned: p, state: None, elapsed: None, failed_tasks: Vec::new(), error: None };
            on_done(&o);
            outcomes.push(o);
            continue;
        }
        if latest == Some(p.interval.start) {
            held = Some(p);
            continue;
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.ok(),
            () = cancel.cancelled() => None,
        };
        // Collect what finished while we waited.
        while let Some(done) = set.try_join_next() {
            if let Ok(o) = done {
                on_done(&o);
                outcomes.push(o);
            }
        }
        let Some(permit) = permit else {
            let o = not_started(p);
            on_done(&o);
            outcomes.push(o);
            continue;
        };
        set.spawn(launch(p, Some(permit), latest.is_some()));
    }
    while let Some(done) = set.join_next().await {
        if let Ok(o) = done {
            on_done(&o);
            outcomes.push(o);
        }
    }
    if let Some(p) = held {
        let o = if cancel.is_cancelled() { not_started(p) } else { launch(p, None, false).await };
        on_done(&o);
        outcomes.push(o);
    }
    let unfinished = outcomes
        .iter()
        .any(|o| o.planned.action.runs() && !matches!(o.state, Some(RunState::Success | RunState::Failed)));
    if !unfinished {
        store.finish_backfill(&job)?;
    }
    outcomes.sort_by_key(|o| o.planned.interval.start);
    Ok(outcomes)
}

/// The interval whose run runs the DAG's `refresh: latest` tasks in a backfill: the last (in
/// time) of the planned runs that run. `None` when the DAG has no such task.
pub fn last_run(dag: &Dag, items: &[Planned]) -> Option<DateTime<Utc>> {
    if !dag.tasks.iter().any(|t| t.refresh == crate::dag::Refresh::Latest) {
        return None;
    }
    items.iter().filter(|p| p.action.runs()).map(|p| p.interval.start).max()
}

/// Records a finished run in its job (success or failure; a cancelled run stays open so
/// that the same command resumes it).
fn record(store: &RunStore, job: &str, run_id: &str, state: RunState) {
    if matches!(state, RunState::Success | RunState::Failed)
        && let Err(e) = store.backfill_run_done(job, run_id, state.name())
    {
        tracing::warn!(error = %e, "recording a backfill run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use chrono_tz::Tz;

    fn days(n: usize) -> Vec<DataInterval> {
        let s = Schedule::parse("@daily").expect("daily");
        let from = DateTime::parse_from_rfc3339("2019-10-01T00:00:00Z").expect("ts").with_timezone(&Utc);
        s.intervals_between(from, from + chrono::Duration::days(n as i64), Tz::UTC)
    }

    fn actions(p: &[Planned]) -> Vec<String> {
        p.iter().map(|p| p.action.name()).collect()
    }

    fn existing(i: &[DataInterval]) -> Existing {
        [
            (i[0].start, (RunState::Success, false)),
            (i[1].start, (RunState::Failed, false)),
            (i[2].start, (RunState::Cancelled, false)),
            (i[3].start, (RunState::Running, true)),
            (i[4].start, (RunState::Running, false)),
        ]
        .into()
    }

    #[test]
    fn mode_none_skips_what_has_a_run() {
        let i = days(6);
        let p = plan("d", &i, &existing(&i), Reprocess::None);
        assert_eq!(
            actions(&p),
            vec!["skip (success)", "skip (failed)", "skip (cancelled)", "skip (in flight)", "resume", "create"]
        );
        assert_eq!(p[5].run_id, "d@2019-10-06T00:00:00Z");
    }

    #[test]
    fn mode_failed_reruns_failed_and_cancelled() {
        let i = days(6);
        let p = plan("d", &i, &existing(&i), Reprocess::Failed);
        assert_eq!(
            actions(&p),
            vec!["skip (success)", "retry failed", "retry failed", "skip (in flight)", "resume", "create"]
        );
    }

    #[test]
    fn mode_completed_reruns_everything_finished_but_never_in_flight_runs() {
        let i = days(6);
        let p = plan("d", &i, &existing(&i), Reprocess::Completed);
        assert_eq!(actions(&p), vec!["rerun", "rerun", "rerun", "skip (in flight)", "resume", "create"]);
    }
}
