//! `cartflow mark`: set a finished task instance's state by hand (success or skipped), as the
//! web UI's "mark" does; recorded in the run store's audit log with who and when.

use std::process::ExitCode;

use cartflow::engine::store::{Mark, local_user};
use cartflow::project::Project;

use super::runs::open_store;
use super::usage;

/// What to mark the task.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum As {
    /// As if it had succeeded (its downstream tasks run on the next execution of the run).
    Success,
    /// Skipped.
    Skipped,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (see `cartflow runs`).
    run_id: String,
    /// The task.
    task: String,
    /// The new state.
    #[arg(long = "as", value_enum, id = "mark_as")]
    to: As,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let mut store = open_store(p)?;
    let mark = match a.to {
        As::Success => Mark::Success,
        As::Skipped => Mark::Skipped,
    };
    let who = local_user();
    let m = store
        .mark(&a.run_id, &a.task, mark, &who)
        .map_err(|e| if e.is_usage() { usage(e.to_string()) } else { e.into() })?;
    println!("{} of {}: {} -> {} (by {who}); the run is {}", a.task, a.run_id, m.from, mark.name(), m.run_state.name());
    Ok(ExitCode::SUCCESS)
}
