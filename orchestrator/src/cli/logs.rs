//! `cartflow logs`: the log of a task attempt.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use cartflow::project::Project;

use super::runs::{fmt_ts, open_store};
use super::{UsageError, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id.
    run_id: String,
    /// The task.
    task: String,
    /// The attempt [default: the last].
    #[arg(long)]
    attempt: Option<u32>,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let (run_id, task, attempt) = (a.run_id.as_str(), a.task.as_str(), a.attempt);
    let store = open_store(p)?;
    store.run(run_id)?.ok_or_else(|| usage(format!("no run `{run_id}` (see `cartflow runs`)")))?;
    let attempts = store.attempts(run_id, Some(task))?;
    if attempts.is_empty() {
        let known: Vec<String> = store.tasks(run_id)?.into_iter().map(|t| t.task_id).collect();
        if !known.iter().any(|k| k == task) {
            let hint = cartflow::yaml::hint(task, known.iter().map(String::as_str));
            bail!(UsageError(format!("run `{run_id}` has no task `{task}`{hint}")));
        }
        println!("task `{task}` has not started an attempt in run {run_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let a = match attempt {
        Some(n) => attempts
            .iter()
            .find(|a| a.attempt == n)
            .ok_or_else(|| usage(format!("task `{task}` has attempts 1..={}, not {n}", attempts.len())))?,
        None => attempts.last().ok_or_else(|| anyhow!("no attempts"))?,
    };
    println!("# {run_id} {task} attempt {} · {} · started {}", a.attempt, a.state, fmt_ts(Some(a.started_at)));
    match &a.log_path {
        Some(path) => {
            let bytes = store
                .read_log(path)
                .with_context(|| format!("reading the log {path}"))?
                .ok_or_else(|| anyhow!("the log {path} is gone"))?;
            print!("{}", String::from_utf8_lossy(&bytes));
        }
        None => println!("(this attempt wrote no log)"),
    }
    if let Some(e) = &a.error {
        println!("# error: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
