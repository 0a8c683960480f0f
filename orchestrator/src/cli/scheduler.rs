//! `cartflow scheduler`: create and run the due runs of every scheduled DAG.

use std::process::ExitCode;
use std::time::Duration;

use cartflow::engine::state::{RunState, Trigger};
use cartflow::project::Project;

use super::{BackendArg, pick_dag, table, usage, with_signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run what is due now, wait for it, and exit (for cron or an EventBridge target).
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    backend: BackendArg,
    /// How often to look for due runs and changed DAG files.
    #[arg(long, default_value = "1s", value_parser = super::parse_tick)]
    tick: Duration,
    /// Only these DAGs (repeatable; what an EventBridge rule passes).
    #[arg(long = "dag")]
    dags: Vec<String>,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    if !p.dags_dir.is_dir() {
        return Err(usage(format!("DAGs folder {} does not exist", p.dags_dir.display())));
    }
    for id in &a.dags {
        pick_dag(p, id)?;
    }
    let once = a.once;
    let summary = with_signals(|cancel| async move {
        let env = p.env(a.backend.backend).await?;
        let cfg = cartflow::engine::scheduler::Config {
            only: a.dags,
            dags_dir: p.dags_dir.clone(),
            store_at: p.state.clone(),
            exec: p.exec_options(env, Trigger::Scheduled),
            compile: p.compile_options(),
            pools: p.pools(),
            tick: a.tick,
        };
        anyhow::Ok(cartflow::engine::scheduler::run(cfg, once, cancel).await?)
    })??;
    if once {
        let mut t = table::new(&["run id", "state"]);
        for (run, state) in &summary.runs {
            t.add_row(vec![run.clone(), state.to_string()]);
        }
        for (run, e) in &summary.errors {
            t.add_row(vec![run.clone(), table::clip(e, 80)]);
        }
        if summary.runs.is_empty() && summary.errors.is_empty() {
            println!("nothing is due");
        } else {
            println!("{t}");
        }
        for d in &summary.deadline_misses {
            println!("deadline missed: {}: {}", d.run_id, d.reason.as_deref().unwrap_or_default());
        }
    }
    let ok = summary.errors.is_empty() && summary.runs.iter().all(|(_, s)| *s == RunState::Success);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
