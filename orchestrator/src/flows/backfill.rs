//! Backfill a date range of one DAG: plan one run per complete interval (what `--dry-run`
//! prints), then run the plan with bounded concurrency. `cartflow backfill`, the demo and
//! `cartflow reprocess` all go through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{FlowError, check_render, check_tasks, merged_params, usage};
use crate::dag::Dag;
use crate::engine::backfill::{self, BackfillPlan, Outcome, Reprocess};
use crate::engine::state::Trigger;
use crate::engine::store::RunStore;
use crate::env::Env;
use crate::project::Project;
use crate::schedule;

/// A backfill as the user asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The DAG.
    pub dag: Arc<Dag>,
    /// First date (or date-time) of the range, in the DAG's timezone.
    pub from: String,
    /// Last date of the range, inclusive (a date-time is inclusive too).
    pub to: String,
    /// Which intervals that already have a run are run again.
    pub mode: Reprocess,
    /// Runs at once (default: the DAG's `max_active_runs`).
    pub max_active_runs: Option<usize>,
    /// Newest interval first.
    pub reverse: bool,
    /// Only these tasks in each interval.
    pub tasks: Vec<String>,
    /// With `tasks`: their downstream too.
    pub downstream: bool,
    /// `-p NAME=VALUE` overrides.
    pub params: Vec<(String, String)>,
}

impl Request {
    /// Every interval of `dag` from `from` to `to`, no selection, no overrides.
    pub fn new(dag: Arc<Dag>, from: impl Into<String>, to: impl Into<String>) -> Request {
        Request {
            dag,
            from: from.into(),
            to: to.into(),
            mode: Reprocess::None,
            max_active_runs: None,
            reverse: false,
            tasks: Vec::new(),
            downstream: false,
            params: Vec::new(),
        }
    }
}

/// A checked request and its plan.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The request.
    pub request: Request,
    /// Intervals starting at or after this ...
    pub from: DateTime<Utc>,
    /// ... and before this.
    pub to: DateTime<Utc>,
    /// What will happen to each interval.
    pub plan: BackfillPlan,
    params: BTreeMap<String, String>,
}

impl Planned {
    /// How many intervals will run.
    pub fn to_run(&self) -> usize {
        self.plan.items.iter().filter(|i| i.action.runs()).count()
    }

    fn key(&self) -> backfill::Request<'_> {
        let r = &self.request;
        backfill::Request {
            dag: &r.dag,
            from: self.from,
            to: self.to,
            mode: r.mode,
            tasks: &r.tasks,
            downstream: r.downstream,
        }
    }
}

/// `--to`: a date means the whole day (exclusive bound at the next local midnight); a
/// date-time is inclusive.
pub fn range_end(arg: &str, dag: &Dag) -> Result<DateTime<Utc>, FlowError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(arg, "%Y-%m-%d") {
        let next = d.succ_opt().ok_or_else(|| usage(format!("--to {arg} is out of range")))?;
        return Ok(schedule::local_midnight(next, dag.timezone));
    }
    Ok(schedule::parse_date_arg(arg, dag.timezone).map_err(usage)? + chrono::Duration::seconds(1))
}

/// Checks the request and plans it against the run store (a backfill that a crash interrupted
/// is continued, not planned afresh). Runs nothing.
pub fn plan(project: &Project, request: Request) -> Result<Planned, FlowError> {
    let dag = &request.dag;
    check_tasks(dag, &request.tasks)?;
    let params = merged_params(dag, &request.params)?;
    let from = schedule::parse_date_arg(&request.from, dag.timezone).map_err(usage)?;
    let to = range_end(&request.to, dag)?;
    if to <= from {
        return Err(usage(format!("--to {} is before --from {}", request.to, request.from)));
    }
    // A value that cannot stand where a template puts it is refused before anything runs. Only
    // the dates differ from one interval to the next, and they always render: the first and
    // the last interval stand for all.
    let intervals = dag.schedule.intervals_between(from, to, dag.timezone);
    for interval in intervals.first().into_iter().chain(intervals.last()) {
        check_render(dag, interval, &params)?;
    }
    let mut planned =
        Planned { request, from, to, plan: BackfillPlan { items: Vec::new(), incomplete: 0, continues: None }, params };
    let store = RunStore::open(&project.state)?;
    planned.plan =
        backfill::plan_request(&store, &planned.key(), crate::schedule::clock::now(), planned.request.reverse)?;
    Ok(planned)
}

/// Runs a plan on `env`; `on_done` hears of each interval as it ends. Returns every
/// interval's outcome, in interval order.
pub async fn run(
    project: &Project,
    env: Env,
    planned: &Planned,
    cancel: CancellationToken,
    on_done: &mut (dyn FnMut(&Outcome) + Send),
) -> Result<Vec<Outcome>, FlowError> {
    let r = &planned.request;
    let max_active = r.max_active_runs.unwrap_or(r.dag.max_active_runs as usize).max(1);
    let mut opts = project.exec_options(env, Trigger::Backfill);
    opts.params = planned.params.clone();
    opts.tasks = r.tasks.clone();
    opts.downstream = r.downstream;
    let run = backfill::Execution {
        store_at: &project.state,
        pools: project.pools(),
        base: opts,
        max_active_runs: max_active,
    };
    Ok(backfill::execute(r.dag.clone(), &planned.key(), planned.plan.clone(), &run, cancel, on_done).await?)
}
