//! The executor: runs one DAG run to its end.
//!
//! A single loop owns the run's state and its store connection. A task starts as soon as
//! its trigger rule allows (not level by level), within `max_active_tasks` and its pool's
//! slots. Attempts run as tokio tasks and report back over a channel; the loop applies the
//! state transitions, persists each batch of them in one SQLite transaction *before*
//! starting anything that depends on them, and propagates skips and upstream failures.
//! A cancel stops new starts, stops running attempts (their process groups get SIGTERM,
//! then SIGKILL) and records them as cancelled.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dag::{Dag, TriggerRule};
use crate::kinds::{Backend, TaskContext, TaskFailure, TaskLog, TaskOutput};
use crate::schedule::DataInterval;
use crate::state::{RunState, TaskState, Trigger};
use crate::store::{Claim, Op, RunStore, StoreError};
use crate::template;

/// How long a cancelled or timed-out attempt gets to stop before it is dropped (and its
/// process group killed).
pub const STOP_GRACE: Duration = Duration::from_secs(8);

/// Errors that stop an execution before or outside of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--task` named something the DAG does not have.
    #[error("{0}")]
    Selection(String),
    /// A pool a task needs is not defined.
    #[error("task `{task}` uses pool `{pool}`, which is not defined (define it under `pools:` in cartflow.yaml)")]
    UnknownPool {
        /// The task.
        task: String,
        /// The pool.
        pool: String,
    },
}

/// Named pools of slots, shared by every run of one process.
#[derive(Debug, Default)]
pub struct Pools {
    pools: HashMap<String, (u32, Arc<Semaphore>)>,
}

impl Pools {
    /// Pools from `name → slots`.
    pub fn new(defs: &BTreeMap<String, u32>) -> Self {
        Pools { pools: defs.iter().map(|(k, v)| (k.clone(), (*v, Arc::new(Semaphore::new(*v as usize))))).collect() }
    }

    /// The names of the pools.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    fn semaphore(&self, name: &str) -> Option<&Arc<Semaphore>> {
        self.pools.get(name).map(|(_, s)| s)
    }
}

/// What to execute and how.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Which backend the tasks use.
    pub backend: Backend,
    /// The project folder (relative paths in task configs resolve here).
    pub project_dir: PathBuf,
    /// Parameter overrides (`--param k=v`) on top of the DAG's params.
    pub params: BTreeMap<String, String>,
    /// Run only these tasks (and, with `downstream`, what depends on them), even if they
    /// succeeded before.
    pub tasks: Vec<String>,
    /// With `tasks`: also everything downstream.
    pub downstream: bool,
    /// Re-run tasks that already succeeded.
    pub rerun: bool,
    /// Fail if there is no run to resume.
    pub require_existing: bool,
    /// How the run came to be.
    pub trigger: Trigger,
    /// The lake root (local backend).
    pub lake: PathBuf,
    /// The catalog database (local backend).
    pub catalog: PathBuf,
    /// The streaming stage's folder (local backend): streams, alerts, notifications.
    pub streaming: PathBuf,
    /// The aws backend's settings (`aws:` in cartflow.yaml).
    pub aws: crate::aws::AwsSettings,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            backend: Backend::Local,
            project_dir: PathBuf::from("."),
            params: BTreeMap::new(),
            tasks: Vec::new(),
            downstream: false,
            rerun: false,
            require_existing: false,
            trigger: Trigger::Manual,
            lake: PathBuf::from(".cartflow/lake"),
            catalog: PathBuf::from(".cartflow/catalog.db"),
            streaming: PathBuf::from(".cartflow/streaming"),
            aws: crate::aws::AwsSettings::default(),
        }
    }
}

/// Something that happened during a run, for progress displays.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The run was claimed.
    Claimed {
        /// The run id.
        run_id: &'a str,
        /// Selected tasks.
        total: usize,
        /// Selected tasks that had already succeeded.
        already_done: usize,
        /// Tasks whose attempts were interrupted by an earlier crash.
        interrupted: &'a [String],
    },
    /// A task changed state.
    Task {
        /// The task.
        task: &'a str,
        /// Its new state.
        state: &'a TaskState,
    },
}

/// The outcome of one task in a run.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// The task.
    pub task_id: String,
    /// Its final state in this execution.
    pub state: TaskState,
    /// Attempts started (over all executions of the run).
    pub attempts: u32,
    /// Whether it was part of this execution.
    pub selected: bool,
    /// The last error, if any.
    pub error: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// The DAG.
    pub dag_id: String,
    /// The interval.
    pub interval: DataInterval,
    /// The final state.
    pub state: RunState,
    /// Every task.
    pub tasks: Vec<TaskReport>,
    /// Wall time of this execution.
    pub elapsed: Duration,
    /// Tasks that had succeeded in an earlier execution and were not run again.
    pub reused: usize,
}

/// The decision of a trigger rule, given the states of a task's upstream tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not yet decidable.
    Wait,
    /// The task may run.
    Run,
    /// The task is skipped.
    Skip,
    /// The task is marked upstream_failed.
    UpstreamFailed,
}

/// Upstream tallies of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Upstream tasks in this execution.
    pub total: u32,
    /// Of them, succeeded.
    pub success: u32,
    /// Of them, failed, upstream_failed or cancelled.
    pub failed: u32,
    /// Of them, skipped.
    pub skipped: u32,
}

impl Tally {
    fn done(&self) -> u32 {
        self.success + self.failed + self.skipped
    }
}

/// Applies a trigger rule (Airflow semantics; `one_*` rules fire as soon as they can).
pub fn decide(rule: TriggerRule, t: Tally) -> Decision {
    if t.total == 0 {
        return Decision::Run;
    }
    let all_done = t.done() == t.total;
    match rule {
        TriggerRule::AllSuccess if t.failed > 0 => Decision::UpstreamFailed,
        TriggerRule::AllSuccess if t.skipped > 0 => Decision::Skip,
        TriggerRule::AllSuccess if t.success == t.total => Decision::Run,
        TriggerRule::AllDone if all_done => Decision::Run,
        TriggerRule::AllFailed if t.success > 0 || t.skipped > 0 => Decision::Skip,
        TriggerRule::AllFailed if t.failed == t.total => Decision::Run,
        TriggerRule::OneSuccess if t.success > 0 => Decision::Run,
        TriggerRule::OneSuccess if all_done && t.failed > 0 => Decision::UpstreamFailed,
        TriggerRule::OneSuccess if all_done => Decision::Skip,
        TriggerRule::OneFailed if t.failed > 0 => Decision::Run,
        TriggerRule::OneFailed if all_done => Decision::Skip,
        TriggerRule::NoneFailed if t.failed > 0 => Decision::UpstreamFailed,
        TriggerRule::NoneFailed if all_done => Decision::Run,
        _ => Decision::Wait,
    }
}

enum Outcome {
    Done(TaskOutput),
    /// The attempt failed; the name is how the attempt is recorded (`failed`, `timed_out`).
    Failed(TaskFailure, &'static str),
    Cancelled,
}

struct Completion {
    idx: usize,
    outcome: Outcome,
    log: Arc<TaskLog>,
}

struct Slot {
    state: TaskState,
    attempts: u32,
    failures: u32,
    tally: Tally,
    selected: bool,
    decided: bool,
    last_error: Option<String>,
}

/// Runs one DAG run to its end (or to a cancel) and returns its report.
pub async fn execute(
    dag: Arc<Dag>,
    interval: DataInterval,
    state_path: &Path,
    pools: Arc<Pools>,
    opts: &ExecOptions,
    cancel: CancellationToken,
    observer: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunReport, ExecError> {
    let started = Instant::now();
    let selected = if opts.tasks.is_empty() {
        vec![true; dag.tasks.len()]
    } else {
        dag.select(&opts.tasks, opts.downstream).map_err(ExecError::Selection)?
    };
    for t in &dag.tasks {
        if let Some(p) = &t.pool
            && pools.semaphore(p).is_none()
        {
            return Err(ExecError::UnknownPool { task: t.id.clone(), pool: p.clone() });
        }
    }
    let mut store = RunStore::open(state_path)?;
    let logs_dir = store.logs_dir();
    let task_sel: Vec<(&str, bool)> = dag.tasks.iter().zip(&selected).map(|(t, s)| (t.id.as_str(), *s)).collect();
    let claimed = store.claim(&Claim {
        dag_id: &dag.id,
        interval,
        trigger: opts.trigger,
        tasks: &task_sel,
        // Naming tasks explicitly means "run these", even if they succeeded before.
        rerun: opts.rerun || !opts.tasks.is_empty(),
        require_existing: opts.require_existing,
    })?;
    let run_id = claimed.run_id.clone();
    let mut params = dag.params.clone();
    params.extend(opts.params.clone());
    let tctx = template::Context::new(&dag.id, &run_id, &interval, &params);

    let n = dag.tasks.len();
    let mut slots: Vec<Slot> = dag
        .tasks
        .iter()
        .zip(&selected)
        .map(|(t, &sel)| {
            let (state, attempts) = claimed.tasks.get(&t.id).cloned().unwrap_or((TaskState::Queued, 0));
            Slot {
                state,
                attempts,
                failures: 0,
                tally: Tally::default(),
                selected: sel,
                decided: false,
                last_error: None,
            }
        })
        .collect();
    for (i, t) in dag.tasks.iter().enumerate() {
        slots[i].tally.total = t.upstream.iter().filter(|&&u| selected[u]).count() as u32;
    }
    let reused = slots.iter().filter(|s| s.selected && matches!(s.state, TaskState::Success { .. })).count();
    observer(Event::Claimed {
        run_id: &run_id,
        total: selected.iter().filter(|s| **s).count(),
        already_done: reused,
        interrupted: &claimed.interrupted,
    });
    for t in &claimed.interrupted {
        warn!(dag = %dag.id, run = %run_id, task = %t, "attempt interrupted by an earlier crash; the task runs again");
    }
    info!(dag = %dag.id, run = %run_id, resumed = claimed.existed, "run started");

    let mut ops: Vec<Op> = Vec::new();
    let mut ready: VecDeque<usize> = VecDeque::new();
    let mut retries: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut rng = fastrand::Rng::new();

    // Tasks that are already finished (succeeded earlier) feed their downstream tallies;
    // then every undecided task is evaluated once.
    let mut work: Vec<usize> = (0..n).filter(|&i| slots[i].selected && slots[i].state.is_terminal()).collect();
    propagate(&dag, &mut slots, &mut work, &mut ops, &mut ready, observer);
    for i in 0..n {
        if slots[i].selected && !slots[i].decided && slots[i].state == TaskState::Queued {
            let mut w = Vec::new();
            evaluate(&dag, &mut slots, i, &mut w, &mut ops, &mut ready, observer);
            propagate(&dag, &mut slots, &mut w, &mut ops, &mut ready, observer);
        }
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
    let mut running = 0usize;
    let mut cancelling = false;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_active = dag.max_active_tasks as usize;

    loop {
        // Start what may start.
        let mut to_spawn: Vec<(usize, Option<OwnedSemaphorePermit>)> = Vec::new();
        if !cancelling {
            let mut blocked: Vec<usize> = Vec::new();
            while running + to_spawn.len() < max_active {
                let Some(i) = ready.pop_front() else { break };
                let permit = match &dag.tasks[i].pool {
                    None => None,
                    Some(p) => match pools.semaphore(p).map(|s| s.clone().try_acquire_owned()) {
                        Some(Ok(permit)) => Some(permit),
                        _ => {
                            blocked.push(i);
                            continue;
                        }
                    },
                };
                let slot = &mut slots[i];
                let attempt = slot.attempts + 1;
                let now = Utc::now();
                match slot.state.start(attempt, now) {
                    Ok(s) => {
                        slot.state = s;
                        slot.attempts = attempt;
                        ops.push(Op::AttemptStarted { task_id: dag.tasks[i].id.clone(), attempt, started_at: now });
                        ops.push(Op::Task {
                            task_id: dag.tasks[i].id.clone(),
                            state: slot.state.clone(),
                            attempts: attempt,
                        });
                        to_spawn.push((i, permit));
                    }
                    Err(e) => warn!(task = %dag.tasks[i].id, error = %e, "not started"),
                }
            }
            for b in blocked.into_iter().rev() {
                ready.push_front(b);
            }
        }
        // Persist before anything that depends on these transitions happens.
        store.apply(&run_id, &std::mem::take(&mut ops))?;
        for (i, permit) in to_spawn {
            let task = &dag.tasks[i];
            observer(Event::Task { task: &task.id, state: &slots[i].state });
            info!(dag = %dag.id, run = %run_id, task = %task.id, attempt = slots[i].attempts, "task started");
            let log = Arc::new(TaskLog::new(
                logs_dir.join(&dag.id).join(&run_id).join(&task.id).join(format!("attempt-{}.log", slots[i].attempts)),
            ));
            let token = cancel.child_token();
            let ctx = TaskContext {
                dag_id: dag.id.clone(),
                task_id: task.id.clone(),
                run_id: run_id.clone(),
                attempt: slots[i].attempts,
                interval,
                template: tctx.for_task(&task.id),
                backend: opts.backend,
                log: log.clone(),
                cancel: token.clone(),
                project_dir: opts.project_dir.clone(),
                lake: opts.project_dir.join(&opts.lake),
                catalog: opts.project_dir.join(&opts.catalog),
                streaming: opts.project_dir.join(&opts.streaming),
                aws: opts.aws.clone(),
                facts: crate::kinds::Facts::new(state_path, &run_id, &task.id),
            };
            let fut = task.config.run(ctx);
            let timeout = task.timeout;
            let run_cancel = cancel.clone();
            let tx = tx.clone();
            running += 1;
            tokio::spawn(async move {
                let mut fut = fut;
                let sleep = async {
                    match timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending().await,
                    }
                };
                let outcome = tokio::select! {
                    r = &mut fut => match r {
                        Ok(out) => Outcome::Done(out),
                        // The task noticed the cancel (and stopped) before this select did.
                        Err(_) if run_cancel.is_cancelled() => Outcome::Cancelled,
                        Err(f) => Outcome::Failed(f, "failed"),
                    },
                    () = sleep => {
                        token.cancel();
                        let _ = tokio::time::timeout(STOP_GRACE, &mut fut).await;
                        Outcome::Failed(
                            TaskFailure::new(format!("timed out after {}", humanize(timeout.unwrap_or_default()))),
                            "timed_out",
                        )
                    }
                    () = run_cancel.cancelled() => {
                        let _ = tokio::time::timeout(STOP_GRACE, &mut fut).await;
                        Outcome::Cancelled
                    }
                };
                drop(fut);
                drop(permit);
                let _ = tx.send(Completion { idx: i, outcome, log });
            });
        }

        if running == 0 && (cancelling || (ready.is_empty() && retries.is_empty())) {
            break;
        }

        let next_retry = retries.peek().map(|Reverse((t, _))| *t);
        let pool_wait = !ready.is_empty() && running < max_active && !cancelling;
        tokio::select! {
            // A cancel is handled before any completion that raced with it.
            biased;
            () = cancel.cancelled(), if !cancelling => {
                cancelling = true;
                warn!(dag = %dag.id, run = %run_id, running, "cancelling: no new tasks start; running tasks are being stopped");
                for (i, s) in slots.iter_mut().enumerate() {
                    if s.selected && matches!(s.state, TaskState::Queued | TaskState::UpForRetry { .. })
                        && let Ok(c) = s.state.cancel() {
                            s.state = c;
                            ops.push(Op::Task { task_id: dag.tasks[i].id.clone(), state: s.state.clone(), attempts: s.attempts });
                            observer(Event::Task { task: &dag.tasks[i].id, state: &s.state });
                        }
                }
                ready.clear();
                retries.clear();
            }
            Some(first) = rx.recv() => {
                let mut batch = vec![first];
                while let Ok(c) = rx.try_recv() {
                    batch.push(c);
                }
                for c in batch {
                    running -= 1;
                    let mut work = Vec::new();
                    complete(&dag, &mut slots, c, cancelling, &mut rng, &mut retries, &mut work, &mut ops, observer);
                    propagate(&dag, &mut slots, &mut work, &mut ops, &mut ready, observer);
                }
            }
            () = async { tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)).await }, if next_retry.is_some() => {
                let now = Instant::now();
                while let Some(Reverse((t, i))) = retries.peek().copied() {
                    if t > now { break; }
                    retries.pop();
                    ready.push_back(i);
                }
            }
            _ = heartbeat.tick() => {
                store.heartbeat(&run_id)?;
            }
            () = tokio::time::sleep(Duration::from_millis(100)), if pool_wait => {}
        }
    }
    store.apply(&run_id, &std::mem::take(&mut ops))?;

    let state = if cancelling || cancel.is_cancelled() {
        RunState::Cancelled
    } else if slots.iter().any(|s| s.selected && s.state.counts_as_failed()) {
        RunState::Failed
    } else {
        RunState::Success
    };
    store.finish(&run_id, state)?;
    info!(dag = %dag.id, run = %run_id, state = %state, "run finished");
    let tasks = dag
        .tasks
        .iter()
        .zip(slots)
        .map(|(t, s)| TaskReport {
            task_id: t.id.clone(),
            error: match &s.state {
                TaskState::Failed { error, .. } => Some(error.clone()),
                _ => s.last_error,
            },
            state: s.state,
            attempts: s.attempts,
            selected: s.selected,
        })
        .collect();
    Ok(RunReport { run_id, dag_id: dag.id.clone(), interval, state, tasks, elapsed: started.elapsed(), reused })
}

#[allow(clippy::too_many_arguments)]
fn complete(
    dag: &Dag,
    slots: &mut [Slot],
    c: Completion,
    cancelling: bool,
    rng: &mut fastrand::Rng,
    retries: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    work: &mut Vec<usize>,
    ops: &mut Vec<Op>,
    observer: &mut (dyn FnMut(Event<'_>) + Send),
) {
    let i = c.idx;
    let task = &dag.tasks[i];
    let slot = &mut slots[i];
    let TaskState::Running { attempt, .. } = slot.state else {
        warn!(task = %task.id, state = %slot.state, "completion for a task that is not running");
        return;
    };
    let now = Utc::now();
    let mut exit_code = None;
    let mut summary = None;
    let (next, outcome, error): (TaskState, &'static str, Option<String>) = match c.outcome {
        Outcome::Done(out) if out.skipped => {
            exit_code = out.exit_code;
            (slot.state.skip_self().unwrap_or(TaskState::Skipped), "skipped", None)
        }
        Outcome::Done(out) => {
            exit_code = out.exit_code;
            summary = out.summary;
            (slot.state.succeed(now).unwrap_or(TaskState::Queued), "success", None)
        }
        Outcome::Cancelled => {
            (slot.state.cancel().unwrap_or(TaskState::Cancelled { attempt: Some(attempt) }), "cancelled", None)
        }
        Outcome::Failed(..) if cancelling => {
            (slot.state.cancel().unwrap_or(TaskState::Cancelled { attempt: Some(attempt) }), "cancelled", None)
        }
        Outcome::Failed(f, outcome) => {
            let (message, retryable, code) = (f.message, f.retryable, f.exit_code);
            exit_code = code;
            slot.failures += 1;
            let retry = retryable && slot.failures <= task.retry.retries;
            let retry_at = retry.then(|| task.retry.delay_for(slot.failures, rng));
            c.log.line(format_args!(
                "attempt {attempt} {outcome}: {message}{}",
                match retry_at {
                    Some(d) => format!("; retry {}/{} in {}", slot.failures, task.retry.retries, humanize(d)),
                    None if !retryable => "; not retryable".to_string(),
                    None => String::new(),
                }
            ));
            let at = retry_at.map(|d| now + chrono::Duration::from_std(d).unwrap_or_default());
            let next = slot.state.fail(message.clone(), now, at).unwrap_or(TaskState::Queued);
            if let Some(d) = retry_at {
                warn!(dag = %dag.id, task = %task.id, attempt, error = %message, retry_in = %humanize(d), "task failed; will retry");
                retries.push(Reverse((Instant::now() + d, i)));
            } else {
                warn!(dag = %dag.id, task = %task.id, attempt, error = %message, "task failed");
            }
            slot.last_error = Some(message.clone());
            (next, outcome, Some(message))
        }
    };
    if outcome == "success" {
        info!(dag = %dag.id, task = %task.id, attempt, "task succeeded");
    }
    slot.state = next;
    ops.push(Op::AttemptEnded {
        task_id: task.id.clone(),
        attempt,
        outcome,
        ended_at: now,
        error,
        exit_code,
        summary,
        log_path: c.log.exists().then(|| c.log.path().display().to_string()),
    });
    ops.push(Op::Task { task_id: task.id.clone(), state: slot.state.clone(), attempts: slot.attempts });
    observer(Event::Task { task: &task.id, state: &slot.state });
    if slot.state.is_terminal() {
        work.push(i);
    }
}

/// Feeds finished tasks' states into their downstream tallies and decides what follows.
fn propagate(
    dag: &Dag,
    slots: &mut [Slot],
    work: &mut Vec<usize>,
    ops: &mut Vec<Op>,
    ready: &mut VecDeque<usize>,
    observer: &mut (dyn FnMut(Event<'_>) + Send),
) {
    while let Some(i) = work.pop() {
        let st = slots[i].state.clone();
        for &d in &dag.tasks[i].downstream {
            if !slots[d].selected {
                continue;
            }
            let t = &mut slots[d].tally;
            match st {
                TaskState::Success { .. } => t.success += 1,
                TaskState::Skipped => t.skipped += 1,
                ref s if s.counts_as_failed() => t.failed += 1,
                _ => continue,
            }
            if !slots[d].decided && slots[d].state == TaskState::Queued {
                evaluate(dag, slots, d, work, ops, ready, observer);
            }
        }
    }
}

fn evaluate(
    dag: &Dag,
    slots: &mut [Slot],
    i: usize,
    work: &mut Vec<usize>,
    ops: &mut Vec<Op>,
    ready: &mut VecDeque<usize>,
    observer: &mut (dyn FnMut(Event<'_>) + Send),
) {
    let slot = &mut slots[i];
    let next = match decide(dag.tasks[i].trigger_rule, slot.tally) {
        Decision::Wait => return,
        Decision::Run => {
            slot.decided = true;
            ready.push_back(i);
            return;
        }
        Decision::Skip => slot.state.skip(),
        Decision::UpstreamFailed => slot.state.upstream_failed(),
    };
    if let Ok(s) = next {
        slot.decided = true;
        slot.state = s;
        ops.push(Op::Task { task_id: dag.tasks[i].id.clone(), state: slot.state.clone(), attempts: slot.attempts });
        observer(Event::Task { task: &dag.tasks[i].id, state: &slot.state });
        work.push(i);
    }
}

/// `1.5s`, `2m03s`, `1h02m`.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod run_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(total: u32, success: u32, failed: u32, skipped: u32) -> Tally {
        Tally { total, success, failed, skipped }
    }

    #[test]
    fn all_success() {
        let r = TriggerRule::AllSuccess;
        assert_eq!(decide(r, t(2, 1, 0, 0)), Decision::Wait);
        assert_eq!(decide(r, t(2, 2, 0, 0)), Decision::Run);
        assert_eq!(decide(r, t(2, 0, 1, 0)), Decision::UpstreamFailed, "fails fast");
        assert_eq!(decide(r, t(2, 1, 0, 1)), Decision::Skip);
        assert_eq!(decide(r, t(0, 0, 0, 0)), Decision::Run, "root tasks always run");
    }

    #[test]
    fn all_done() {
        let r = TriggerRule::AllDone;
        assert_eq!(decide(r, t(3, 1, 1, 0)), Decision::Wait);
        assert_eq!(decide(r, t(3, 1, 1, 1)), Decision::Run);
    }

    #[test]
    fn all_failed() {
        let r = TriggerRule::AllFailed;
        assert_eq!(decide(r, t(2, 0, 1, 0)), Decision::Wait);
        assert_eq!(decide(r, t(2, 0, 2, 0)), Decision::Run);
        assert_eq!(decide(r, t(2, 1, 0, 0)), Decision::Skip);
    }

    #[test]
    fn one_success() {
        let r = TriggerRule::OneSuccess;
        assert_eq!(decide(r, t(3, 1, 0, 0)), Decision::Run, "fires as soon as one succeeds");
        assert_eq!(decide(r, t(2, 0, 1, 0)), Decision::Wait);
        assert_eq!(decide(r, t(2, 0, 2, 0)), Decision::UpstreamFailed);
        assert_eq!(decide(r, t(2, 0, 0, 2)), Decision::Skip);
    }

    #[test]
    fn one_failed() {
        let r = TriggerRule::OneFailed;
        assert_eq!(decide(r, t(3, 0, 1, 0)), Decision::Run, "fires as soon as one fails");
        assert_eq!(decide(r, t(2, 1, 0, 0)), Decision::Wait);
        assert_eq!(decide(r, t(2, 2, 0, 0)), Decision::Skip);
    }

    #[test]
    fn none_failed() {
        let r = TriggerRule::NoneFailed;
        assert_eq!(decide(r, t(2, 1, 0, 1)), Decision::Run);
        assert_eq!(decide(r, t(2, 1, 0, 0)), Decision::Wait);
        assert_eq!(decide(r, t(2, 1, 1, 0)), Decision::UpstreamFailed);
    }

    #[test]
    fn humanized_durations() {
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humanize(Duration::from_secs(123)), "2m03s");
        assert_eq!(humanize(Duration::from_secs(3720)), "1h02m");
    }
}
