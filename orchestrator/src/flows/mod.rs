//! Flows: what a user asks for, as library functions — backfill a range, reprocess a stage and
//! what depends on it, the demo's week. Each takes a request and reports what happens to an
//! observer; the CLI (and the web UI) only parse, call them and show what they report.

use std::collections::BTreeMap;

use crate::dag::Dag;
use crate::engine::executor::ExecError;
use crate::engine::store::StoreError;
use crate::env::EnvError;
use crate::project::ProjectError;
use crate::schedule::{self, DataInterval};

pub mod backfill;
pub mod demo;
pub mod lake;
pub mod realtime;
pub mod reprocess;
pub mod sql;

/// Why a flow could not run (a run that fails is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The request is wrong: a bad date, an unknown task or param (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The project or a DAG of it.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The backend cannot be set up.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The run store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A step of the flow failed (with what it was doing).
    #[error("{0}")]
    Step(String),
    /// Stopped by a cancel (Ctrl-C) between two steps.
    #[error("cancelled")]
    Cancelled,
    /// What the flow was doing when `source` happened.
    #[error("{what}: {source}")]
    Context {
        /// What it was doing.
        what: String,
        /// What went wrong.
        source: Box<FlowError>,
    },
}

impl FlowError {
    /// Whether this is the user's mistake (a usage or config error) rather than a failure.
    pub fn is_usage(&self) -> bool {
        match self.root() {
            FlowError::Usage(_) | FlowError::Env(_) => true,
            FlowError::Exec(e) => e.is_usage(),
            FlowError::Project(p) => p.is_usage(),
            _ => false,
        }
    }

    /// The error under any context.
    pub fn root(&self) -> &FlowError {
        match self {
            FlowError::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// The project error under any context, if that is what it is.
    pub fn project_error(&self) -> Option<&ProjectError> {
        match self.root() {
            FlowError::Project(p) => Some(p),
            _ => None,
        }
    }

    /// This error, saying what the flow was doing.
    pub fn context(self, what: impl Into<String>) -> FlowError {
        FlowError::Context { what: what.into(), source: Box::new(self) }
    }
}

/// Stops between two steps of a flow once `cancel` fired.
pub fn check_cancel(cancel: &tokio_util::sync::CancellationToken) -> Result<(), FlowError> {
    if cancel.is_cancelled() { Err(FlowError::Cancelled) } else { Ok(()) }
}

/// The warning for compile problems in DAG files other than the one a command uses.
pub fn problems_elsewhere(n: usize) -> String {
    format!("{n} problem(s) in other DAG files (see `cartflow validate`)")
}

/// A usage error.
pub fn usage(msg: impl Into<String>) -> FlowError {
    FlowError::Usage(msg.into())
}

/// The DAG's params with the `-p NAME=VALUE` overrides applied (from the CLI, the web UI, a
/// backfill request): an unknown name, a value longer than [`crate::template::MAX_PARAM_BYTES`]
/// and a value not of the param's declared type are refused.
pub fn merged_params(dag: &Dag, overrides: &[(String, String)]) -> Result<BTreeMap<String, String>, FlowError> {
    let mut params = dag.params.clone();
    let max = crate::template::MAX_PARAM_BYTES;
    for (k, v) in overrides {
        if v.len() > max {
            return Err(usage(format!(
                "the value of param `{}` is {} bytes long; a param value may have at most {max} bytes",
                crate::template::clip(k).trim_matches('"'),
                v.len()
            )));
        }
        if !dag.params.contains_key(k) {
            let hint = crate::yaml::hint(k, dag.params.keys().map(String::as_str));
            return Err(usage(format!("DAG `{}` declares no param `{k}`{hint}", dag.id)));
        }
        if let Some(why) = dag.param_types.get(k).and_then(|t| t.problem(v).map(|why| (t.name(), why))) {
            return Err(usage(format!("param `{k}` of DAG `{}` is {} {}: {}", dag.id, a_or_an(why.0), why.0, why.1)));
        }
        params.insert(k.clone(), v.clone());
    }
    Ok(params)
}

fn a_or_an(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// Renders every task of `dag` for `interval` with `params`, as its run will: a value that
/// cannot stand where a template puts it (a `-p` value outside SQL quotes, a path or partition
/// value leaving the lake) is a usage error before anything runs, naming the task and the
/// variable. Every problem is reported.
pub fn check_render(dag: &Dag, interval: &DataInterval, params: &BTreeMap<String, String>) -> Result<(), FlowError> {
    let run_id = crate::engine::store::run_id(&dag.id, interval.start);
    let ctx = crate::template::Context::new(&dag.id, &run_id, interval, params);
    let problems: Vec<String> = dag
        .tasks
        .iter()
        .filter_map(|t| t.config.render_json(&ctx.for_task(&t.id)).err().map(|e| format!("task `{}`: {e}", t.id)))
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(usage(problems.join("\n"))) }
}

/// Refuses task ids the DAG does not have.
pub fn check_tasks(dag: &Dag, tasks: &[String]) -> Result<(), FlowError> {
    if let Some(bad) = tasks.iter().find(|t| dag.task_index(t).is_none()) {
        let hint = crate::yaml::hint(bad, dag.tasks.iter().map(|t| t.id.as_str()));
        return Err(usage(format!("DAG `{}` has no task `{bad}`{hint}", dag.id)));
    }
    Ok(())
}

/// The interval of `dag` that a `--date` (date, date-time or RFC 3339) names.
pub fn interval_for(dag: &Dag, date: &str) -> Result<DataInterval, FlowError> {
    let t = schedule::parse_date_arg(date, dag.timezone).map_err(usage)?;
    dag.schedule.interval_starting_at_or_after(t, dag.timezone).ok_or_else(|| {
        usage(format!("schedule `{}` of DAG `{}` has no interval at or after {date}", dag.schedule, dag.id))
    })
}

/// What a flow reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A line of progress for a person ("demo: running the daily DAG over …").
    Note(String),
    /// Something the person should know that does not stop the flow.
    Warning(String),
    /// A backfill was planned (and, unless it is a dry run, is about to run).
    BackfillPlanned(&'a backfill::Planned),
    /// One interval of the running backfill ended.
    IntervalDone(&'a crate::engine::backfill::Outcome),
    /// The backfill ended; every interval's outcome, in order.
    BackfillDone(&'a backfill::Planned, &'a [crate::engine::backfill::Outcome]),
}

/// An observer of a flow.
pub type Observer<'o> = dyn FnMut(Event<'_>) + Send + 'o;

/// Replays Kaggle CSV files (.csv, .csv.gz, .csv.zip) into the raw zone under `lake`, as
/// Firehose would have archived them; re-ingesting a file replaces its earlier objects. Each
/// file's result is reported as a note.
pub fn ingest(
    files: &[std::path::PathBuf],
    lake: &std::path::Path,
    cancel: &tokio_util::sync::CancellationToken,
    observer: &mut Observer<'_>,
) -> Result<(), FlowError> {
    for file in files {
        check_cancel(cancel)?;
        let started = std::time::Instant::now();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .split(".csv")
            .next()
            .unwrap_or_default()
            .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'), "_");
        // The input is the user's: a file that is not there, not a CSV of the dataset (its header),
        // or a broken zip is theirs to fix (exit 2); a raw zone that cannot be written is not.
        use cartflow_jobs::kaggle::KaggleError;
        let r = cartflow_jobs::kaggle::ingest(file, lake, &format!("ingest-{name}")).map_err(|e| match e {
            KaggleError::Io { .. } | KaggleError::Zip { .. } | KaggleError::Header { .. } => usage(e.to_string()),
            KaggleError::RawZone(_) => FlowError::Step(e.to_string()),
        })?;
        let secs = started.elapsed().as_secs_f64();
        observer(Event::Note(format!(
            "{}: {} records ({} malformed, kept for quarantine) -> {} raw object(s) under {} in {:.1}s ({:.0} rows/s){}",
            file.display(),
            r.records,
            r.malformed,
            r.written.files,
            lake.join(cartflow_jobs::rawzone::RAW_EVENTS).display(),
            secs,
            r.records as f64 / secs.max(1e-9),
            if r.replaced_files > 0 {
                format!("; replaced {} earlier object(s)", r.replaced_files)
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

/// Plans a backfill and reports the plan; unless `dry_run`, sets up the backend (only then: a
/// dry run touches nothing on AWS) and runs it, reporting each interval and the end.
pub async fn plan_and_run(
    project: &crate::project::Project,
    backend: crate::env::Backend,
    request: backfill::Request,
    dry_run: bool,
    cancel: tokio_util::sync::CancellationToken,
    observer: &mut Observer<'_>,
) -> Result<Option<Vec<crate::engine::backfill::Outcome>>, FlowError> {
    let planned = backfill::plan(project, request)?;
    observer(Event::BackfillPlanned(&planned));
    if dry_run {
        return Ok(None);
    }
    let env = project.env(backend).await?;
    let outcomes = backfill::run(project, env, &planned, cancel, &mut |o| observer(Event::IntervalDone(o))).await?;
    observer(Event::BackfillDone(&planned, &outcomes));
    Ok(Some(outcomes))
}

/// Whether every interval that ran succeeded.
pub fn all_succeeded(outcomes: &[crate::engine::backfill::Outcome]) -> bool {
    outcomes.iter().all(|o| !o.planned.action.runs() || o.state == Some(crate::engine::state::RunState::Success))
}
