//! Deadlines: a run that has not succeeded by its interval's end plus the DAG's `deadline:`
//! (or a task with its own `deadline:` that has not succeeded by then) raises `deadline_miss`,
//! once. The scheduler decides each deadline the first time it looks after it passed, records
//! the decision (met or missed) in the run store with the notifications of a miss, and never
//! decides it again — another tick, a second `scheduler --once`, a restart, a second scheduler.
//!
//! What is checked: the runs of the DAG whose deadline passed within the last
//! [`LOOKBACK`] (so a backfill of old dates raises nothing) and not while the DAG was paused,
//! and the intervals that are due but have no run yet (the scheduler was down, or
//! `max_active_runs` held them back). A run meets
//! its deadline when it is `success` and its last execution ended at or before the deadline; a
//! task, when its instance is `success` and ended by then.

use chrono::{DateTime, Utc};

use crate::dag::Dag;
use crate::duration::humanize;
use crate::engine::state::{RunState, TaskState};
use crate::engine::store::{self, DeadlineRow, NewNotification, RunRow, RunStore, StoreError};
use crate::notify::{self, Event, Happened, Notification};
use crate::schedule::DataInterval;

/// How far back the scheduler looks for deadlines it has not decided: 7 days.
pub const LOOKBACK: chrono::Duration = chrono::Duration::days(7);

/// The deadlines of `dag` that passed by `now` and are not decided yet, decided, each with
/// the notifications of its miss. `due` are the intervals the scheduler finds due now (they
/// may have no run yet).
pub fn decide(
    store: &RunStore,
    dag: &Dag,
    now: DateTime<Utc>,
    due: &[DataInterval],
    settings: &notify::Settings,
) -> Result<Vec<(DeadlineRow, Vec<NewNotification>)>, StoreError> {
    let mut specs: Vec<(Option<usize>, chrono::Duration)> = Vec::new();
    if let Some(d) = dag.deadline {
        specs.push((None, chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)));
    }
    for (i, t) in dag.tasks.iter().enumerate() {
        if let Some(d) = t.deadline {
            specs.push((Some(i), chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)));
        }
    }
    let Some(longest) = specs.iter().map(|(_, d)| *d).max() else {
        return Ok(Vec::new());
    };
    let oldest = now.checked_sub_signed(LOOKBACK).unwrap_or(now);
    let from = oldest.checked_sub_signed(longest).unwrap_or(oldest);
    let runs = store.runs_ending_between(&dag.id, from, now)?;
    let decided = store.decided_deadlines(&dag.id, oldest)?;
    // A deadline that passed while the DAG was paused (its last pause) is not raised: the
    // scheduler made no runs then (with `catchup`, it makes them all at once after), and a pause
    // is deliberate.
    let pause = store.last_pause(&dag.id)?;
    let in_pause = |d: DateTime<Utc>| pause.is_some_and(|(from, to)| d <= to && from.is_none_or(|f| d >= f));
    let mut candidates: Vec<(DataInterval, Option<&RunRow>)> = runs
        .iter()
        .map(|r| (DataInterval { start: r.interval_start, end: r.interval_end, tz: dag.timezone }, Some(r)))
        .collect();
    for i in due {
        if !runs.iter().any(|r| r.interval_start == i.start) {
            candidates.push((*i, None));
        }
    }
    let mut out = Vec::new();
    for (interval, run) in candidates {
        let run_id = store::run_id(&dag.id, interval.start);
        let mut task_states: Option<Vec<store::TaskRow>> = None;
        for &(task, d) in &specs {
            let Some(deadline) = interval.end.checked_add_signed(d) else {
                continue;
            };
            let task_id = task.map(|i| dag.tasks[i].id.as_str());
            if deadline > now
                || deadline < oldest
                || in_pause(deadline)
                || decided.contains(&(run_id.clone(), task_id.unwrap_or("").to_string()))
            {
                continue;
            }
            let missed = match (run, task_id) {
                (None, _) => Some("no run had started".to_string()),
                (Some(r), None) => run_missed(r, deadline),
                (Some(_), Some(t)) => {
                    if task_states.is_none() {
                        task_states = Some(store.tasks(&run_id)?);
                    }
                    let states = task_states.as_deref().unwrap_or_default();
                    task_missed(states.iter().find(|s| s.task_id == t).map(|s| &s.state), deadline)
                }
            };
            let reason = missed.map(|why| {
                let what = task_id.map_or("the run".to_string(), |t| format!("task `{t}`"));
                format!(
                    "{what} had not succeeded by {} ({} after the interval's end): {why}",
                    deadline.format("%Y-%m-%dT%H:%M:%SZ"),
                    humanize(d.to_std().unwrap_or_default())
                )
            });
            let notes = match &reason {
                Some(reason) => notifications(dag, task, &run_id, &interval, reason, now, settings),
                None => Vec::new(),
            };
            let row = DeadlineRow {
                run_id: run_id.clone(),
                dag_id: dag.id.clone(),
                task_id: task_id.map(str::to_string),
                deadline_at: deadline,
                missed: reason.is_some(),
                reason,
                decided_at: now,
            };
            out.push((row, notes));
        }
    }
    Ok(out)
}

/// Why the run `r` missed `deadline`, or `None` if it met it.
fn run_missed(r: &RunRow, deadline: DateTime<Utc>) -> Option<String> {
    match (r.state, r.ended_at) {
        (RunState::Success, Some(end)) if end <= deadline => None,
        (RunState::Success, Some(end)) => Some(format!("it succeeded later, at {}", end.format("%Y-%m-%dT%H:%M:%SZ"))),
        (RunState::Running, _) => Some("it was still running".into()),
        (RunState::Failed, _) => Some("it had failed".into()),
        (RunState::Cancelled, _) => Some("it was cancelled".into()),
        (RunState::Success, None) => Some("it has no end time".into()),
    }
}

/// Why a task in state `state` missed `deadline`, or `None` if it met it.
fn task_missed(state: Option<&TaskState>, deadline: DateTime<Utc>) -> Option<String> {
    match state {
        Some(TaskState::Success { ended_at, .. }) if *ended_at <= deadline => None,
        Some(TaskState::Success { ended_at, .. }) => {
            Some(format!("it succeeded later, at {}", ended_at.format("%Y-%m-%dT%H:%M:%SZ")))
        }
        Some(s) => Some(format!("it was {}", s.name())),
        None => Some("it had not started".into()),
    }
}

fn notifications(
    dag: &Dag,
    task: Option<usize>,
    run_id: &str,
    interval: &DataInterval,
    reason: &str,
    now: DateTime<Utc>,
    settings: &notify::Settings,
) -> Vec<NewNotification> {
    let t = task.map(|i| &dag.tasks[i]);
    let targets = notify::targets_for(&dag.notify, t.map(|t| t.notify.as_slice()), t.is_some(), Event::DeadlineMiss);
    let note = Notification::new(
        &Happened {
            event: Event::DeadlineMiss,
            dag_id: &dag.id,
            run_id,
            interval,
            task: t.map(|t| t.id.as_str()),
            attempt: 0,
            error: Some(reason),
            at: now,
        },
        &settings.base_url,
    );
    targets
        .into_iter()
        .filter_map(|t| settings.resolve(t).map(|spec| NewNotification { target: t.name(), spec, note: note.clone() }))
        .collect()
}

#[cfg(test)]
mod tests;
