//! `cartflow backfill`: every complete interval of a date range, one run per interval; and the
//! printer of a backfill's plan and outcomes, which `reprocess` and `demo` show too.

use std::process::ExitCode;

use cartflow::duration::humanize;
use cartflow::engine::backfill::Reprocess;
use cartflow::engine::state::RunState;
use cartflow::flows::{self, Event, backfill::Request};
use cartflow::project::Project;

use super::progress::progress_bar;
use super::{BackendArg, Global, ParamArgs, TaskSelection, pick_dag, table, with_signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// DAG id (or the path of its file).
    dag: String,
    /// First date (or date-time) of the range, in the DAG's timezone.
    #[arg(long)]
    from: String,
    /// Last date of the range, inclusive (a date-time is inclusive too).
    #[arg(long)]
    to: String,
    /// Which intervals that already have a run are run again.
    #[arg(long, value_enum, default_value_t = Reprocess::None)]
    reprocess: Reprocess,
    /// Runs at once, 1 to 256 [default: the DAG's max_active_runs].
    #[arg(long, value_parser = super::parse_runs_at_once)]
    max_active_runs: Option<usize>,
    /// Newest interval first.
    #[arg(long)]
    reverse: bool,
    /// Print the plan and run nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    select: TaskSelection,
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    params: ParamArgs,
}

pub fn run(p: &Project, a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let dag = pick_dag(p, &a.dag)?;
    let request = Request {
        dag,
        from: a.from,
        to: a.to,
        mode: a.reprocess,
        max_active_runs: a.max_active_runs,
        reverse: a.reverse,
        tasks: a.select.tasks,
        downstream: a.select.downstream,
        params: a.params.params,
    };
    let (dry_run, backend) = (a.dry_run, a.backend.backend);
    let mut printer = Printer::new(g, dry_run);
    let outcomes = with_signals(|cancel| async move {
        flows::plan_and_run(p, backend, request, dry_run, cancel, &mut |e| printer.event(e)).await
    })??;
    Ok(match outcomes {
        Some(o) if !flows::all_succeeded(&o) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// Prints what a flow reports: notes, a backfill's plan (and, for a dry run, its table), a
/// progress bar while it runs, and its outcomes.
pub struct Printer<'g> {
    g: &'g Global,
    dry_run: bool,
    bar: Option<indicatif::ProgressBar>,
    failed: u64,
}

impl<'g> Printer<'g> {
    /// A printer; with `dry_run`, plans are printed in full and nothing runs.
    pub fn new(g: &'g Global, dry_run: bool) -> Self {
        Printer { g, dry_run, bar: None, failed: 0 }
    }

    /// Shows one event.
    pub fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Note(line) => match &self.bar {
                Some(b) if !b.is_hidden() => b.println(line),
                _ => println!("{line}"),
            },
            Event::Warning(line) => eprintln!("warning: {line}"),
            Event::BackfillPlanned(planned) => {
                let r = &planned.request;
                let plan = &planned.plan;
                let to_run = planned.to_run();
                println!(
                    "backfill {} from {} to {} (reprocess: {}): {} interval(s), {} to run, {} skipped{}",
                    r.dag.id,
                    r.from,
                    r.to,
                    r.mode,
                    plan.items.len(),
                    to_run,
                    plan.items.len() - to_run,
                    if plan.incomplete > 0 {
                        format!(", {} not complete yet (not planned)", plan.incomplete)
                    } else {
                        String::new()
                    }
                );
                if let Some(job) = &plan.continues {
                    println!("continuing backfill job {job}, which did not finish");
                }
                if let Some(last) = cartflow::engine::backfill::last_run(&r.dag, &plan.items) {
                    let once: Vec<&str> = r
                        .dag
                        .tasks
                        .iter()
                        .filter(|t| t.refresh == cartflow::dag::Refresh::Latest)
                        .map(|t| t.id.as_str())
                        .collect();
                    let ds = plan
                        .items
                        .iter()
                        .find(|i| i.interval.start == last)
                        .map(|i| i.interval.ds())
                        .unwrap_or_default();
                    println!(
                        "refresh: latest — {} run once, in the run of {ds}, after the other runs have ended (skipped in the others)",
                        once.join(", ")
                    );
                }
                if self.dry_run {
                    let mut t = table::new(&["ds", "interval start", "run id", "action"]);
                    for i in &plan.items {
                        t.add_row(vec![i.interval.ds(), i.interval.start_rfc3339(), i.run_id.clone(), i.action.name()]);
                    }
                    println!("{t}");
                    println!("dry run: nothing was run");
                } else {
                    self.failed = 0;
                    self.bar = Some(progress_bar(self.g, to_run as u64, &r.dag.id, "intervals "));
                }
            }
            Event::IntervalDone(o) => {
                if let Some(bar) = &self.bar
                    && o.planned.action.runs()
                {
                    bar.inc(1);
                    if o.state != Some(RunState::Success) {
                        self.failed += 1;
                    }
                    bar.set_message(format!("· failed {}", self.failed));
                }
            }
            Event::BackfillDone(planned, outcomes) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let mut t = table::new(&["ds", "action", "state", "duration", "failed tasks"]);
                let mut bad = 0;
                for o in outcomes {
                    let state = match (&o.state, &o.error) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(e)) => table::clip(e, 60),
                        (None, None) => "-".into(),
                    };
                    if o.planned.action.runs() && o.state != Some(RunState::Success) {
                        bad += 1;
                    }
                    t.add_row(vec![
                        o.planned.interval.ds(),
                        o.planned.action.name(),
                        state,
                        o.elapsed.map(humanize).unwrap_or_default(),
                        o.failed_tasks.join(", "),
                    ]);
                }
                println!("{t}");
                let ran = outcomes.iter().filter(|o| o.planned.action.runs()).count();
                println!(
                    "backfill {}: {} run(s), {} succeeded, {} not successful",
                    planned.request.dag.id,
                    ran,
                    ran - bad,
                    bad
                );
            }
        }
    }
}
