//! `cartflow reprocess`: the flow of [`cartflow::flows::reprocess`], printed — the alerts' diff
//! per rule and day, then each DAG's backfill of what depends on the stage.

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::env::Backend;
use cartflow::flows::{self, reprocess::Replaced};
use cartflow::project::Project;
use chrono::NaiveDate;
use clap::ValueEnum;

use super::backfill::Printer;
use super::{Global, day, parse_day, table, with_signals};

/// The stage that can be reprocessed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Stage {
    /// The detector (the Flink application's rules).
    Detector,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which stage.
    #[arg(long, value_enum)]
    stage: Stage,
    /// First day.
    #[arg(long, value_parser = parse_day)]
    from: NaiveDate,
    /// Last day (inclusive).
    #[arg(long, value_parser = parse_day)]
    to: NaiveDate,
    /// The (fixed) rules file.
    #[arg(long, default_value = "streaming/rules/ddos.yaml")]
    rules: PathBuf,
    /// Print the diff and the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only re-run the downstream tasks of this DAG [default: every DAG with a streaming_stage].
    #[arg(long)]
    dag: Option<String>,
    /// Replace the alerts only; re-run no downstream task.
    #[arg(long)]
    no_downstream: bool,
    /// Where: `local` (the archive in the lake folder, alerts.db) or `aws` (the raw archive in
    /// S3 replayed through cartflow's window engine, alerts in DynamoDB; the downstream tasks
    /// re-run on AWS).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
}

fn print_diff(p: &Project, a: &flows::reprocess::Request, r: &Replaced) {
    if let Some(objects) = r.s3_objects {
        println!(
            "read {objects} raw object(s) from S3; alerts in DynamoDB table {}",
            p.config.aws.streaming.name("alerts")
        );
    }
    let rep = &r.report;
    println!(
        "reprocess detector {}..{}{}: {} archived event(s) read ({} invalid) in {:.1}s",
        day(a.from),
        day(a.to),
        if a.dry_run { " (dry run: nothing changed)" } else { "" },
        rep.records,
        rep.invalid,
        r.elapsed.as_secs_f64()
    );
    let mut t = table::new(&["rule", "day", "added", "retracted", "changed", "unchanged"]);
    for (rule, diff) in &rep.diffs {
        if diff.per_day.is_empty() {
            t.add_row(vec![rule.clone(), "-".into(), "0".into(), "0".into(), "0".into(), "0".into()]);
        }
        for (day, m) in &diff.per_day {
            let n = |k: &str| m.get(k).copied().unwrap_or(0).to_string();
            t.add_row(vec![rule.clone(), day.clone(), n("added"), n("retracted"), n("changed"), n("unchanged")]);
        }
    }
    println!("{t}");
}

pub fn run(p: &Project, a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let Stage::Detector = a.stage;
    let req = flows::reprocess::Request {
        from: a.from,
        to: a.to,
        rules: a.rules,
        dry_run: a.dry_run,
        dag: a.dag,
        downstream: !a.no_downstream,
        backend: a.backend,
    };
    let mut printer = Printer::new(g, req.dry_run);
    let req = &req;
    let done = with_signals(|cancel| async move {
        flows::reprocess::run(p, req, cancel, &mut |r| print_diff(p, req, r), &mut |e| printer.event(e)).await
    })??;
    let all_ok = done.downstream.iter().all(|(_, o)| o.as_deref().is_none_or(flows::all_succeeded));
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
