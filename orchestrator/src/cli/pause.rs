//! `cartflow pause` / `cartflow unpause`: stop or resume a DAG's scheduled runs (the scheduler
//! skips a paused DAG; runs started by hand still run). Recorded in the run store's audit log.

use std::process::ExitCode;

use cartflow::engine::store::local_user;
use cartflow::project::Project;

use super::runs::open_store;
use super::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The DAG.
    dag: String,
}

pub fn run(p: &Project, a: Args, paused: bool) -> anyhow::Result<ExitCode> {
    let set = p.load()?;
    if !set.dags.contains_key(&a.dag) && !set.failed_ids.contains_key(&a.dag) {
        return Err(usage(format!("no DAG `{}` under {} (see `cartflow validate`)", a.dag, p.dags_dir.display())));
    }
    let mut store = open_store(p)?;
    let who = local_user();
    let changed = store.set_paused(&a.dag, paused, &who)?;
    let what = if paused { "paused" } else { "unpaused" };
    if changed {
        println!("{} {what} (by {who})", a.dag);
    } else {
        println!("{} was already {what}", a.dag);
    }
    Ok(ExitCode::SUCCESS)
}
