//! `cartflow plan`: the tasks of one interval in order, with their rendered configs.

use std::process::ExitCode;

use cartflow::duration::humanize;
use cartflow::flows::{interval_for, merged_params};
use cartflow::project::Project;
use cartflow::template;

use super::{ParamArgs, pick_dag, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DAG id (or the path of its file).
    dag: String,
    /// The logical date: YYYY-MM-DD, YYYY-MM-DDTHH:MM, or RFC 3339.
    #[arg(long)]
    date: String,
    #[command(flatten)]
    params: ParamArgs,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let dag = pick_dag(p, &a.dag)?;
    let interval = interval_for(&dag, &a.date)?;
    let params = merged_params(&dag, &a.params.params)?;
    let run_id = cartflow::engine::store::run_id(&dag.id, interval.start);
    let ctx = template::Context::new(&dag.id, &run_id, &interval, &params);
    println!("DAG {} ({} tasks) · schedule {} · timezone {}", dag.id, dag.tasks.len(), dag.schedule, dag.timezone);
    println!(
        "interval [{}, {}) · ds {} · run {}",
        interval.start_rfc3339(),
        interval.end_rfc3339(),
        interval.ds(),
        run_id
    );
    let mut refused = Vec::new();
    for (n, t) in dag.tasks.iter().enumerate() {
        let ups: Vec<&str> = t.upstream.iter().map(|&u| dag.tasks[u].id.as_str()).collect();
        println!();
        println!(
            "{}. {} [{}] after: {} · trigger: {} · retries: {} · timeout: {} · pool: {}",
            n + 1,
            t.id,
            t.kind(),
            if ups.is_empty() { "-".to_string() } else { ups.join(", ") },
            t.trigger_rule,
            t.retry.retries,
            t.timeout.map(humanize).unwrap_or_else(|| "-".into()),
            t.pool.as_deref().unwrap_or("-"),
        );
        match t.config.render_json(&ctx.for_task(&t.id)) {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                for line in text.lines() {
                    println!("   {line}");
                }
            }
            Err(e) => {
                println!("   cannot render: {e}");
                refused.push(format!("task `{}`: {e}", t.id));
            }
        }
    }
    // What `run` would refuse before anything runs is the same usage error here (exit 2): a
    // plan whose tasks cannot render is not a plan that runs.
    if !refused.is_empty() {
        return Err(usage(refused.join("\n")));
    }
    Ok(ExitCode::SUCCESS)
}
