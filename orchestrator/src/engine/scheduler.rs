//! The scheduler: creates and runs the due runs of every scheduled DAG.
//!
//! The run store is the truth: what is due is computed from the runs that exist, so a
//! restart neither misses nor doubles a run. DAG files are re-read when they change; a file
//! that no longer compiles keeps its last good version running, and the error is logged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::dag::Dag;
use crate::dag::compile::{CompileOptions, compile_dir};
use crate::engine::deadline;
use crate::engine::executor::{self, ExecError, ExecOptions, Pools, RunReport};
use crate::engine::state::{RunState, Trigger};
use crate::engine::store::{self, DeadlineRow, RunStore, StoreAt};
use crate::notify::Dispatcher;
use crate::schedule::clock;
use crate::schedule::{DataInterval, Schedule};

/// The most intervals [`due`] lists at once: a catch-up after a long pause of a minutely DAG
/// lists its oldest 10,000 (the rest come as those get runs), not millions.
pub const DUE_AT_MOST: usize = 10_000;

/// The intervals of `dag` that are due at `now`, oldest first (at most [`DUE_AT_MOST`]).
///
/// - Only complete intervals (end ≤ now) within `start_date` / `end_date`.
/// - With `catchup: true`, every interval after the latest existing run (or from
///   `start_date` when there is none).
/// - With `catchup: false` (the default), only the latest complete interval, if it is newer
///   than the latest existing run: a DAG that is new, or resumed after a pause, does not
///   replay the past.
pub fn due(dag: &Dag, last_run_start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<DataInterval> {
    if matches!(dag.schedule, Schedule::Manual) {
        return Vec::new();
    }
    let Some(latest) = dag.schedule.latest_complete_interval(now, dag.timezone) else {
        return Vec::new();
    };
    let newer = |i: &DataInterval| last_run_start.is_none_or(|l| i.start > l);
    let in_bounds =
        |i: &DataInterval| dag.start_date.is_none_or(|s| i.start >= s) && dag.end_date.is_none_or(|e| i.start < e);
    let candidates = if dag.catchup {
        let from = match (last_run_start, dag.start_date) {
            (Some(l), _) => Some(l + chrono::Duration::seconds(1)),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        };
        match from {
            Some(from) => dag.schedule.first_intervals_between(from, latest.end, dag.timezone, DUE_AT_MOST),
            None => vec![latest],
        }
    } else {
        vec![latest]
    };
    candidates.into_iter().filter(|i| i.end <= now && newer(i) && in_bounds(i)).collect()
}

/// Where the scheduler finds DAGs and state.
#[derive(Debug, Clone)]
pub struct Config {
    /// The DAGs folder.
    pub dags_dir: PathBuf,
    /// The run store.
    pub store_at: StoreAt,
    /// Options for the runs it creates (backend, project folder).
    pub exec: ExecOptions,
    /// Compile options (known pools).
    pub compile: CompileOptions,
    /// Pools shared by all runs.
    pub pools: Arc<Pools>,
    /// How often to look for due runs and changed files.
    pub tick: Duration,
    /// Only these DAG ids (empty: all).
    pub only: Vec<String>,
}

/// What a scheduler session did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Runs it created or resumed, with their final state.
    pub runs: Vec<(String, RunState)>,
    /// Runs that could not execute, with why.
    pub errors: Vec<(String, String)>,
    /// Deadlines it found missed (and raised `deadline_miss` for).
    pub deadline_misses: Vec<DeadlineRow>,
}

#[derive(Default)]
struct Loaded {
    snapshot: Vec<(PathBuf, SystemTime, u64)>,
    by_file: BTreeMap<PathBuf, Arc<Dag>>,
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, SystemTime, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && let Ok(m) = e.metadata()
            {
                out.push((p, m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

impl Loaded {
    /// Re-reads the DAGs folder if anything in it changed.
    fn refresh(&mut self, cfg: &Config) {
        let snap = snapshot(&cfg.dags_dir);
        if snap == self.snapshot && !self.snapshot.is_empty() {
            return;
        }
        let first = self.snapshot.is_empty() && self.by_file.is_empty();
        self.snapshot = snap;
        let set = match compile_dir(&cfg.dags_dir, &cfg.compile) {
            Ok(s) => s,
            Err(e) => {
                error!(dir = %cfg.dags_dir.display(), error = %e, "cannot read the DAGs folder; keeping the DAGs loaded before");
                return;
            }
        };
        let mut next: BTreeMap<PathBuf, Arc<Dag>> = BTreeMap::new();
        for dag in set.dags.values() {
            if !first && self.by_file.get(&dag.file).is_none_or(|old| !Arc::ptr_eq(old, dag)) {
                info!(dag = %dag.id, file = %dag.file.display(), "DAG loaded");
            }
            next.insert(dag.file.clone(), dag.clone());
        }
        let failed: HashSet<&PathBuf> = set.diagnostics.iter().map(|d| &d.file).collect();
        for file in failed {
            for d in set.diagnostics.iter().filter(|d| &d.file == file) {
                error!(file = %file.display(), "{d}");
            }
            if let Some(old) = self.by_file.get(file).filter(|_| file.exists()) {
                warn!(dag = %old.id, file = %file.display(), "the file no longer compiles; keeping its last good version");
                next.insert(file.clone(), old.clone());
            }
        }
        for (file, old) in &self.by_file {
            if !next.contains_key(file) {
                info!(dag = %old.id, file = %file.display(), "DAG removed");
            }
        }
        if first {
            info!(dags = next.len(), dir = %cfg.dags_dir.display(), "DAGs loaded");
        }
        self.by_file = next;
    }
}

/// Runs the scheduler until `cancel` (or, with `once`, until what was due at the start has
/// run).
pub async fn run(cfg: Config, once: bool, cancel: CancellationToken) -> Result<Summary, ExecError> {
    let mut store = RunStore::open(&cfg.store_at)?;
    // Deadline notifications, and what a crashed process recorded in the last days and did not
    // deliver (a run that is resumed sends its own, whatever their age).
    let notifier = Dispatcher::new(cfg.exec.notify.clone(), cfg.exec.env.clone(), &cfg.exec.project_dir, &cfg.store_at);
    match store.undelivered_notifications(None, Utc::now().checked_sub_signed(deadline::LOOKBACK)) {
        Ok(keys) => notifier.dispatch(keys),
        Err(e) => warn!(error = %e, "cannot read the undelivered notifications"),
    }
    let mut loaded = Loaded::default();
    let mut launched: HashMap<String, String> = HashMap::new(); // run id -> dag id
    let mut set: JoinSet<(String, Result<RunReport, ExecError>)> = JoinSet::new();
    let mut summary = Summary::default();
    let started_now = clock::now();
    info!(once, dags = %cfg.dags_dir.display(), "scheduler started");
    loop {
        let now = if once { started_now } else { clock::now() };
        loaded.refresh(&cfg);
        let mut created = 0;
        if !cancel.is_cancelled() {
            // A paused DAG gets no scheduled runs (nor deadline checks) until it is unpaused.
            let paused = store.paused()?;
            for dag in loaded
                .by_file
                .values()
                .filter(|d| cfg.only.is_empty() || cfg.only.contains(&d.id))
                .filter(|d| !paused.contains_key(&d.id))
            {
                let last = store.last_run_start(&dag.id)?;
                let due_now = due(dag, last, now);
                check_deadlines(&mut store, dag, now, &due_now, &cfg, &notifier, &mut summary)?;
                let ours: HashSet<String> =
                    launched.iter().filter(|(_, d)| **d == dag.id).map(|(r, _)| r.clone()).collect();
                let live: HashSet<String> = store.live_runs(&dag.id)?.into_iter().collect();
                let active = live.len() + ours.iter().filter(|r| !live.contains(*r)).count();
                let slots = (dag.max_active_runs as usize).saturating_sub(active);
                if slots == 0 {
                    continue;
                }
                for interval in
                    due_now.into_iter().filter(|i| !ours.contains(&store::run_id(&dag.id, i.start))).take(slots)
                {
                    let run_id = store::run_id(&dag.id, interval.start);
                    info!(dag = %dag.id, run = %run_id, "run is due");
                    launched.insert(run_id.clone(), dag.id.clone());
                    created += 1;
                    let (dag, opts, state, pools, cancel) = (
                        dag.clone(),
                        ExecOptions { trigger: Trigger::Scheduled, ..cfg.exec.clone() },
                        cfg.store_at.clone(),
                        cfg.pools.clone(),
                        cancel.clone(),
                    );
                    set.spawn(async move {
                        let r = executor::execute(dag, interval, &state, pools, &opts, cancel, &mut |_| {}).await;
                        (run_id, r)
                    });
                }
            }
        }
        if once && created == 0 && set.is_empty() {
            break;
        }
        if cancel.is_cancelled() && set.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = set.join_next() => {
                if let Ok((run_id, r)) = done {
                    launched.remove(&run_id);
                    match r {
                        Ok(report) => {
                            info!(run = %run_id, state = %report.state, "scheduled run finished");
                            summary.runs.push((run_id, report.state));
                        }
                        Err(e) => {
                            warn!(run = %run_id, error = %e, "scheduled run could not execute");
                            summary.errors.push((run_id, e.to_string()));
                        }
                    }
                }
            }
            () = tokio::time::sleep(cfg.tick), if !once => {}
            () = cancel.cancelled(), if !cancel.is_cancelled() => {
                warn!(running = set.len(), "scheduler stopping: running runs are being cancelled");
            }
        }
    }
    notifier.drain().await;
    info!(runs = summary.runs.len(), "scheduler stopped");
    Ok(summary)
}

/// Decides the deadlines of `dag` that passed, records them, and sends the notifications of
/// the misses this scheduler was the first to decide.
fn check_deadlines(
    store: &mut RunStore,
    dag: &Dag,
    now: DateTime<Utc>,
    due_now: &[DataInterval],
    cfg: &Config,
    notifier: &Dispatcher,
    summary: &mut Summary,
) -> Result<(), ExecError> {
    if dag.deadline.is_none() && dag.tasks.iter().all(|t| t.deadline.is_none()) {
        return Ok(());
    }
    let decisions = deadline::decide(store, dag, now, due_now, &cfg.exec.notify)?;
    let new = store.record_deadlines(&decisions)?;
    for (row, notes) in &decisions {
        if !new.contains(row) {
            continue;
        }
        if let Some(reason) = &row.reason {
            let task = row.task_id.as_deref().unwrap_or("-");
            warn!(dag = %dag.id, run = %row.run_id, task = %task, "deadline missed: {reason}");
            summary.deadline_misses.push(row.clone());
        }
        notifier.dispatch(notes.iter().map(|n| (n.note.dedupe_key.clone(), n.target.clone())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::dag::compile::compile_source;

    fn dag(yaml: &str) -> Dag {
        compile_source(Path::new("t.yaml"), yaml, &CompileOptions::default()).expect("compiles")
    }

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("ts").with_timezone(&Utc)
    }

    fn ds(v: &[DataInterval]) -> Vec<String> {
        v.iter().map(DataInterval::ds).collect()
    }

    const TASKS: &str = "tasks:\n  - id: a\n    kind: noop\n";

    #[test]
    fn without_catchup_only_the_latest_complete_interval_is_due() {
        let d = dag(&format!("id: d\nschedule: '@daily'\nstart_date: 2026-11-01\n{TASKS}"));
        let now = ts("2026-11-25T10:00:00Z");
        assert_eq!(ds(&due(&d, None, now)), vec!["2026-11-24"], "first scheduled: the latest only");
        assert_eq!(ds(&due(&d, Some(ts("2026-11-20T00:00:00Z")), now)), vec!["2026-11-24"], "resumed after a pause");
        assert!(due(&d, Some(ts("2026-11-24T00:00:00Z")), now).is_empty(), "already ran");
    }

    #[test]
    fn catchup_runs_every_missed_interval_from_start_date_or_the_last_run() {
        let d = dag(&format!("id: d\nschedule: '@daily'\nstart_date: 2026-11-20\ncatchup: true\n{TASKS}"));
        let now = ts("2026-11-25T10:00:00Z");
        assert_eq!(ds(&due(&d, None, now)), vec!["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"]);
        assert_eq!(ds(&due(&d, Some(ts("2026-11-22T00:00:00Z")), now)), vec!["2026-11-23", "2026-11-24"]);
    }

    #[test]
    fn a_catch_up_of_years_of_a_minutely_dag_lists_its_oldest_intervals_only() {
        let d = dag(&format!("id: d\nschedule: '* * * * *'\nstart_date: 2023-01-01\ncatchup: true\n{TASKS}"));
        let now = ts("2026-11-25T10:00:00Z");
        let v = due(&d, None, now);
        assert_eq!(v.len(), DUE_AT_MOST);
        assert_eq!(v[0].start, ts("2023-01-01T00:00:00Z"));
        assert_eq!(v[DUE_AT_MOST - 1].end, ts("2023-01-07T22:40:00Z"), "10,000 minutes later, consecutive");
        assert!(v.windows(2).all(|w| w[0].end == w[1].start));
        // Near the end: what is left, complete ones only.
        let tail = due(&d, Some(ts("2026-11-25T09:55:00Z")), now);
        assert_eq!(tail.len(), 4, "09:56 .. 09:59 (10:00 has not ended)");
    }

    #[test]
    fn start_and_end_dates_bound_what_is_due() {
        let future = dag(&format!("id: d\nschedule: '@daily'\nstart_date: 2027-01-01\n{TASKS}"));
        assert!(due(&future, None, ts("2026-11-25T10:00:00Z")).is_empty());
        let ended = dag(&format!(
            "id: d\nschedule: '@daily'\nstart_date: 2026-11-01\nend_date: 2026-11-23\ncatchup: true\n{TASKS}"
        ));
        let v = due(&ended, Some(ts("2026-11-20T00:00:00Z")), ts("2026-11-25T10:00:00Z"));
        assert_eq!(ds(&v), vec!["2026-11-21", "2026-11-22"]);
        let manual = dag(&format!("id: d\n{TASKS}"));
        assert!(due(&manual, None, ts("2026-11-25T10:00:00Z")).is_empty(), "manual DAGs are never due");
    }

    #[test]
    fn a_run_is_due_exactly_at_its_interval_end() {
        let d = dag(&format!("id: d\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\n{TASKS}"));
        let before = due(&d, Some(ts("2026-11-23T01:00:00Z")), ts("2026-11-25T00:59:59Z"));
        assert!(before.is_empty(), "{:?}", ds(&before));
        assert_eq!(ds(&due(&d, Some(ts("2026-11-23T01:00:00Z")), ts("2026-11-25T01:00:00Z"))), vec!["2026-11-24"]);
    }
}
