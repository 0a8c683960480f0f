//! Reprocess a stage after a fix: re-run it over the raw archive for a date range, replace
//! its output for those days (never duplicating it), and re-run what depends on it.
//!
//! Today's stage is the detector (the Flink application's rules): its alerts are replaced from
//! the raw archive — locally in the alerts database, on AWS in DynamoDB — and then, in every
//! DAG with a `streaming_stage` task, the tasks downstream of that stage run again for those
//! days through a backfill (`--reprocess completed`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use cartflow_streaming::pipeline::{self, ReprocessReport};
use cartflow_streaming::rules::RuleSet;
use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::{Event, FlowError, Observer, backfill, check_cancel, plan_and_run, problems_elsewhere, usage};
use crate::engine::backfill::{Outcome, Reprocess};
use crate::env::Backend;
use crate::project::Project;
use crate::schedule::ymd;
use crate::task::Kind;

/// A reprocess of the detector.
#[derive(Debug, Clone)]
pub struct Request {
    /// First day.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// The (fixed) rules file, relative to the project folder.
    pub rules: PathBuf,
    /// Report the diff and the plan; change nothing.
    pub dry_run: bool,
    /// Re-run the downstream tasks of this DAG only (default: every DAG with a stage).
    pub dag: Option<String>,
    /// Re-run downstream tasks at all.
    pub downstream: bool,
    /// Where the archive and the alerts are.
    pub backend: Backend,
}

/// The detector's new alerts for the range.
#[derive(Debug)]
pub struct Replaced {
    /// The diff per rule and day, and what was read.
    pub report: ReprocessReport,
    /// On AWS: the raw objects read from S3.
    pub s3_objects: Option<u64>,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// The tasks of one DAG that depend on the stage.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The DAG.
    pub dag: String,
    /// Its `streaming_stage` task.
    pub stage: String,
    /// The tasks right after it (their own downstream run too).
    pub children: Vec<String>,
}

/// What a reprocess did.
#[derive(Debug)]
pub struct Reprocessed {
    /// The alerts' replacement.
    pub replaced: Replaced,
    /// Per DAG: its downstream tasks and, unless a dry run or none, the backfill's outcomes.
    pub downstream: Vec<(Downstream, Option<Vec<Outcome>>)>,
}

/// Replaces the detector's alerts for the range from the raw archive.
pub fn replace_alerts(project: &Project, req: &Request) -> Result<Replaced, FlowError> {
    if req.to < req.from {
        return Err(usage(format!("--to {} is before --from {}", req.to, req.from)));
    }
    let rules = RuleSet::load(&project.dir.join(&req.rules)).map_err(|e| usage(e.to_string()))?;
    let (from, to) = (ymd(req.from), ymd(req.to));
    let started = std::time::Instant::now();
    let (report, s3_objects) = match req.backend {
        Backend::Local => {
            let paths = project.streaming_paths();
            let mut store = cartflow_streaming::handler::SqliteAlerts::open(&paths.alerts_db)
                .map_err(|e| FlowError::Step(e.to_string()))?;
            let rep =
                pipeline::reprocess(&paths.lake, &rules, &from, &to, &mut store, req.dry_run).map_err(|e| match e {
                    pipeline::PipelineError::Invalid(m) => usage(m),
                    e => FlowError::Step(e.to_string()),
                })?;
            (rep, None)
        }
        #[cfg(feature = "aws")]
        Backend::Aws => {
            let (rep, objects) = crate::aws::realtime::reprocess(&project.config.aws, &rules, &from, &to, req.dry_run)
                .map_err(FlowError::Step)?;
            (rep, Some(objects))
        }
        #[cfg(not(feature = "aws"))]
        Backend::Aws => return Err(crate::env::EnvError::AwsNotBuilt.into()),
    };
    record_last(project, req, &report)?;
    Ok(Replaced { report, s3_objects, elapsed: started.elapsed() })
}

/// Day -> change -> alerts.
pub type DiffPerDay = BTreeMap<String, BTreeMap<String, u64>>;

/// What the last reprocess (or its dry run) found, as the web UI's real-time page shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastReprocess {
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Only the diff was computed.
    pub dry_run: bool,
    /// The backend.
    pub backend: String,
    /// When it ended (RFC 3339).
    pub at: String,
    /// Raw records read.
    pub records: u64,
    /// Per rule: day -> change (`added`, `changed`, `retracted`, `unchanged`) -> alerts.
    pub diffs: Vec<(String, DiffPerDay)>,
}

/// Writes the reprocess's diff beside the alerts database (a temporary file renamed into place).
fn record_last(project: &Project, req: &Request, report: &ReprocessReport) -> Result<(), FlowError> {
    let last = LastReprocess {
        from: ymd(req.from),
        to: ymd(req.to),
        dry_run: req.dry_run,
        backend: match req.backend {
            Backend::Local => "local".into(),
            Backend::Aws => "aws".into(),
        },
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        records: report.records,
        diffs: report
            .diffs
            .iter()
            .map(|(rule, d)| {
                let days: DiffPerDay = d
                    .per_day
                    .iter()
                    .map(|(day, m)| (day.clone(), m.iter().map(|(k, v)| (k.to_string(), *v)).collect()))
                    .collect();
                (rule.clone(), days)
            })
            .collect(),
    };
    let path = project.streaming_paths().last_reprocess();
    let step = |e: std::io::Error| FlowError::Step(format!("recording the diff in {}: {e}", path.display()));
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(step)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&last).unwrap_or_default()).map_err(step)?;
    std::fs::rename(&tmp, &path).map_err(step)
}

/// The last reprocess's diff, if one ran in this project.
pub fn last(project: &Project) -> Result<Option<LastReprocess>, FlowError> {
    let path = project.streaming_paths().last_reprocess();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| FlowError::Step(format!("{} cannot be read: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FlowError::Step(format!("{}: {e}", path.display()))),
    }
}

/// The DAGs with a `streaming_stage` task (or just `only`), and the tasks right after it.
pub fn downstream_of_the_stage(project: &Project, only: Option<&str>) -> Result<Vec<Downstream>, FlowError> {
    let set = project.load()?;
    let mut out = Vec::new();
    for (id, dag) in &set.dags {
        if only.is_some_and(|d| d != id) {
            continue;
        }
        let stage_kind = crate::kinds::streaming_stage::StreamingStage::NAME;
        let Some(stage) = dag.tasks.iter().find(|t| t.kind() == stage_kind) else { continue };
        let children = stage.downstream.iter().map(|&i| dag.tasks[i].id.clone()).collect();
        out.push(Downstream { dag: id.clone(), stage: stage.id.clone(), children });
    }
    Ok(out)
}

/// The whole reprocess: the alerts (reported to `on_replaced`, for the diff), then each DAG's
/// downstream tasks for those days (reported to `observer`, backfill by backfill).
pub async fn run(
    project: &Project,
    req: &Request,
    cancel: CancellationToken,
    on_replaced: &mut (dyn FnMut(&Replaced) + Send),
    observer: &mut Observer<'_>,
) -> Result<Reprocessed, FlowError> {
    let replaced = {
        let (project, req) = (project.clone(), req.clone());
        let work = tokio::task::spawn_blocking(move || replace_alerts(&project, &req));
        // A cancel does not wait for the replay: the alerts change in one transaction per
        // day, so stopping here leaves each day either replaced or as it was.
        tokio::select! {
            r = work => r.map_err(|e| FlowError::Step(format!("the reprocess panicked: {e}")))??,
            () = cancel.cancelled() => return Err(FlowError::Cancelled),
        }
    };
    on_replaced(&replaced);
    let mut downstream = Vec::new();
    if !req.downstream {
        return Ok(Reprocessed { replaced, downstream });
    }
    let dags = downstream_of_the_stage(project, req.dag.as_deref())?;
    if dags.is_empty() {
        observer(Event::Note("no DAG has a streaming_stage task: no downstream task to re-run".into()));
        return Ok(Reprocessed { replaced, downstream });
    }
    for d in dags {
        if d.children.is_empty() {
            observer(Event::Note(format!("{}: nothing downstream of `{}`", d.dag, d.stage)));
            downstream.push((d, None));
            continue;
        }
        observer(Event::Note(format!(
            "{}: re-running what is downstream of `{}` ({}) for {}..{}",
            d.dag,
            d.stage,
            d.children.join(", "),
            ymd(req.from),
            ymd(req.to)
        )));
        check_cancel(&cancel)?;
        let picked = project.dag(&d.dag)?;
        if picked.problems_elsewhere > 0 {
            observer(Event::Warning(problems_elsewhere(picked.problems_elsewhere)));
        }
        let mut request = backfill::Request::new(picked.dag, ymd(req.from), ymd(req.to));
        request.mode = Reprocess::Completed;
        request.tasks = d.children.clone();
        request.downstream = true;
        let outcomes = plan_and_run(project, req.backend, request, req.dry_run, cancel.clone(), observer)
            .await
            .map_err(|e| e.context(format!("re-running {}", d.dag)))?;
        downstream.push((d, outcomes));
    }
    Ok(Reprocessed { replaced, downstream })
}
