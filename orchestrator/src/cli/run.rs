//! `cartflow run`: one interval of a DAG (resuming it if it ran before).

use std::process::ExitCode;

use cartflow::engine::executor;
use cartflow::engine::state::{RunState, Trigger};
use cartflow::flows::{check_render, check_tasks, interval_for, merged_params};
use cartflow::project::Project;

use super::progress::{Progress, print_report};
use super::{BackendArg, Global, ParamArgs, TaskSelection, pick_dag, with_signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DAG id (or the path of its file).
    dag: String,
    /// The logical date: YYYY-MM-DD, YYYY-MM-DDTHH:MM, or RFC 3339.
    #[arg(long)]
    date: String,
    #[command(flatten)]
    select: TaskSelection,
    /// Require an earlier run of this interval to resume (error if there is none).
    #[arg(long, conflicts_with = "rerun")]
    resume: bool,
    /// Run again tasks that already succeeded.
    #[arg(long)]
    rerun: bool,
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    params: ParamArgs,
}

pub fn run(p: &Project, a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let dag = pick_dag(p, &a.dag)?;
    let interval = interval_for(&dag, &a.date)?;
    let params = merged_params(&dag, &a.params.params)?;
    check_tasks(&dag, &a.select.tasks)?;
    check_render(&dag, &interval, &params)?;
    let report = with_signals(|cancel| async move {
        let env = p.env(a.backend.backend).await?;
        let mut opts = p.exec_options(env, Trigger::Manual);
        opts.params = params;
        opts.tasks = a.select.tasks;
        opts.downstream = a.select.downstream;
        opts.rerun = a.rerun;
        opts.require_existing = a.resume;
        let mut progress = Progress::new(&dag, g);
        let r =
            executor::execute(dag.clone(), interval, &p.state, p.pools(), &opts, cancel, &mut |e| progress.event(e))
                .await;
        progress.finish();
        anyhow::Ok(r?)
    })??;
    print_report(&report);
    Ok(match report.state {
        RunState::Success => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}
