//! `cartflow runs`: DAG runs, newest first; and what `tasks` and `logs` share with it.

use std::process::ExitCode;

use cartflow::duration::humanize;
use cartflow::engine::store::{DeadlineRow, RunStore};
use cartflow::project::Project;

use super::{table, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this DAG.
    dag: Option<String>,
    /// How many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let (dag, limit) = (a.dag.as_deref(), a.limit);
    let store = open_store(p)?;
    let rows = store.runs(dag, limit)?;
    if rows.is_empty() {
        println!("no runs{}", dag.map(|d| format!(" of {d}")).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table::new(&["run id", "dag", "interval start", "state", "trigger", "started", "duration", "deadline"]);
    for r in rows {
        let deadline = deadline_summary(&store.deadlines(&r.run_id)?);
        t.add_row(vec![
            r.run_id,
            r.dag_id,
            fmt_ts(Some(r.interval_start)),
            r.state.to_string(),
            r.trigger.to_string(),
            fmt_ts(r.started_at),
            fmt_dur(r.started_at, r.ended_at),
            deadline,
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// The deadline column of a run: `missed 03:00` (the run's own, or `task x missed 03:00`),
/// `met`, or nothing when no deadline was decided.
pub fn deadline_summary(rows: &[DeadlineRow]) -> String {
    let hm = |d: &DeadlineRow| d.deadline_at.format("%Y-%m-%d %H:%M").to_string();
    let mut parts: Vec<String> = rows
        .iter()
        .filter(|d| d.missed)
        .map(|d| match &d.task_id {
            None => format!("missed {}", hm(d)),
            Some(t) => format!("{t} missed {}", hm(d)),
        })
        .collect();
    if parts.is_empty() && !rows.is_empty() {
        parts.push("met".into());
    }
    parts.join(", ")
}

pub fn open_store(p: &Project) -> anyhow::Result<RunStore> {
    if let Some(file) = p.state.file()
        && !file.exists()
    {
        return Err(usage(format!("no run store at {} yet: nothing has run here (use --state PATH)", file.display())));
    }
    Ok(RunStore::open(&p.state)?)
}

pub fn fmt_ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

pub fn fmt_dur(a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => humanize((b - a).to_std().unwrap_or_default()),
        _ => String::new(),
    }
}
