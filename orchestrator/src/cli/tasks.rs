//! `cartflow tasks`: the task instances of a run.

use std::process::ExitCode;

use cartflow::project::Project;

use super::runs::{fmt_dur, fmt_ts, open_store};
use super::{table, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (see `cartflow runs`).
    run_id: String,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let run_id = a.run_id.as_str();
    let store = open_store(p)?;
    let run = store.run(run_id)?.ok_or_else(|| usage(format!("no run `{run_id}` (see `cartflow runs`)")))?;
    let attempts = store.attempts(run_id, None)?;
    let mut t = table::new(&["task", "state", "attempts", "started", "duration", "exit", "error / summary"]);
    for task in store.tasks(run_id)? {
        let last = attempts.iter().rfind(|a| a.task_id == task.task_id);
        t.add_row(vec![
            task.task_id.clone(),
            task.state.name().to_string(),
            task.attempts.to_string(),
            fmt_ts(last.map(|a| a.started_at)),
            fmt_dur(last.map(|a| a.started_at), last.and_then(|a| a.ended_at)),
            last.and_then(|a| a.exit_code).map(|c| c.to_string()).unwrap_or_default(),
            last.and_then(|a| a.error.as_deref().or(a.summary.as_deref()))
                .map(|e| table::clip(e, 100))
                .unwrap_or_default(),
        ]);
    }
    println!("run {} · {} · interval start {}", run.run_id, run.state, fmt_ts(Some(run.interval_start)));
    println!("{t}");
    let mut checks = table::new(&["task", "check", "severity", "result", "detail / failing rows"]);
    let mut any = false;
    for task in store.tasks(run_id)?.into_iter().map(|t| t.task_id) {
        // One fact per task: what every run store offers.
        let Some(value) = store.fact(run_id, &task, cartflow::checks::FACT)? else { continue };
        let Ok(results) = serde_json::from_str::<Vec<cartflow::checks::CheckResult>>(&value) else { continue };
        for r in results {
            any = true;
            let mut detail = r.detail.clone();
            if let Some(first) = r.sample.first() {
                detail.push_str(&format!(" — e.g. {first}"));
            }
            checks.add_row(vec![
                task.clone(),
                r.name.clone(),
                r.severity.to_string(),
                if r.passed { "passed" } else { "FAILED" }.to_string(),
                table::clip(&detail, 120),
            ]);
        }
    }
    if any {
        println!("{checks}");
    }
    for d in store.deadlines(run_id)? {
        let what = d.task_id.as_deref().map_or("run".to_string(), |t| format!("task {t}"));
        match &d.reason {
            Some(reason) => println!("deadline {} ({what}): missed — {reason}", fmt_ts(Some(d.deadline_at))),
            None => println!("deadline {} ({what}): met", fmt_ts(Some(d.deadline_at))),
        }
    }
    let notes = store.notifications(run_id)?;
    if !notes.is_empty() {
        let mut n = table::new(&["notification", "task", "attempt", "target", "delivery", "tries", "error"]);
        for row in notes {
            n.add_row(vec![
                row.note.event.to_string(),
                row.note.task.clone().unwrap_or_default(),
                row.note.attempt.to_string(),
                row.target.clone(),
                row.state.name().to_string(),
                row.tries.to_string(),
                row.error.as_deref().map(|e| table::clip(e, 80)).unwrap_or_default(),
            ]);
        }
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}
