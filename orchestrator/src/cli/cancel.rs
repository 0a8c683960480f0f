//! `cartflow cancel`: stop a run that another process (the scheduler, a `cartflow run` or
//! `backfill` in another terminal, a web UI) is running; recorded in the audit log.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cartflow::engine::state::RunState;
use cartflow::engine::store::{CANCEL_LATENCY, local_user};
use cartflow::project::Project;

use super::runs::open_store;
use super::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (see `cartflow runs`).
    run_id: String,
    /// Wait until the run has stopped, and print how it ended (exit 1 if it did not stop
    /// within a minute: its tasks may be slow to stop).
    #[arg(long)]
    wait: bool,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let mut store = open_store(p)?;
    let who = local_user();
    let asked = store
        .request_cancel(&a.run_id, &who)
        .map_err(|e| if e.is_usage() { usage(e.to_string()) } else { e.into() })?;
    match &asked.already_by {
        Some(by) => println!("{}: a cancel was asked for already (by {by}); process {} stops it", a.run_id, asked.pid),
        None => println!(
            "{}: cancel asked for (by {who}); process {} stops it within {} s: no new task starts, running tasks are stopped",
            a.run_id,
            asked.pid,
            CANCEL_LATENCY.as_secs()
        ),
    }
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // The owner's heartbeat, then its tasks' grace to stop, then the run's end.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let run = store.run(&a.run_id)?;
        match run.map(|r| r.state) {
            Some(state) if state != RunState::Running => {
                println!("{}: {}", a.run_id, state.name());
                return Ok(ExitCode::SUCCESS);
            }
            None => return Err(usage(format!("run {} is gone from the store", a.run_id))),
            Some(_) if Instant::now() >= until => {
                eprintln!("{}: still running after 60 s; process {} was asked to stop it", a.run_id, asked.pid);
                return Ok(ExitCode::from(1));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
