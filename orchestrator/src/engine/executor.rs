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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dag::{Dag, TriggerRule};
use crate::duration::humanize;
use crate::engine::state::{AttemptOutcome, IllegalTransition, RunState, TaskState, Trigger};
use crate::engine::store::{AttemptFacts, Claim, NewNotification, Op, RunStore, SELF_STOP, StoreAt, StoreError};
use crate::env::{Env, LocalEnv};
use crate::notify::{self, Dispatcher, Event as NotifyEvent, Happened, Notification};
use crate::schedule::DataInterval;
use crate::task::{Facts, TaskContext, TaskFailure, TaskLog, TaskOutput};
use crate::template;

/// How long a cancelled or timed-out attempt gets to stop before it is dropped (and its
/// process group killed).
pub const STOP_GRACE: Duration = Duration::from_secs(8);

/// How often a running run's owner records that it is alive.
/// (It is also how soon a cancel asked for by another process is seen.)
const HEARTBEAT: Duration = crate::engine::store::CANCEL_LATENCY;

// The run stops itself after SELF_STOP without a renewed lease, a few heartbeats before the
// lease ends and another host may take the run over.
const _: () = assert!(SELF_STOP.as_secs() + 3 * HEARTBEAT.as_secs() <= crate::engine::store::LEASE.as_secs());

/// Errors that stop an execution before or outside of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This process is executing the run already.
    #[error(
        "run {run_id} is being executed by this cartflow process already; wait for it to finish or cancel it first"
    )]
    Executing {
        /// The run.
        run_id: String,
    },
    /// `--task` named something the DAG does not have.
    #[error("{0}")]
    Selection(String),
    /// The state machine refused a move: a bug, reported instead of being papered over.
    #[error("task `{task}`: {message}")]
    Transition {
        /// The task.
        task: String,
        /// What was refused.
        message: String,
    },
    /// A task asks for what its backend cannot do yet (data checks on aws).
    #[error("task `{task}`: {message}")]
    Unsupported {
        /// The task.
        task: String,
        /// What is not supported.
        message: String,
    },
    /// A pool a task needs is not defined.
    #[error("task `{task}` uses pool `{pool}`, which is not defined (define it under `pools:` in cartflow.yaml)")]
    UnknownPool {
        /// The task.
        task: String,
        /// The pool.
        pool: String,
    },
}

impl ExecError {
    /// Whether the user has to change the DAG or the command (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, ExecError::Unsupported { .. })
    }

    fn transition(task: &str, e: IllegalTransition) -> ExecError {
        ExecError::Transition { task: task.to_string(), message: e.to_string() }
    }
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
    /// The backend the tasks run on, built once per process.
    pub env: Env,
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
    /// Where notifications go and how they are delivered (`notify:` of cartflow.yaml).
    pub notify: Arc<notify::Settings>,
    /// Skip the `refresh: latest` tasks: this run is a backfill's, not its last (which runs them).
    pub defer_latest: bool,
}

/// Runs in the current folder on the local backend, whose places are the default ones relative
/// to the current folder (set `env`, e.g. from [`crate::project::Project::exec_options`], to
/// run in a project).
impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            env: Env::Local(LocalEnv {
                lake: PathBuf::from(".cartflow/lake"),
                catalog: PathBuf::from(".cartflow/catalog.db"),
                streaming: PathBuf::from(".cartflow/streaming"),
            }),
            project_dir: PathBuf::from("."),
            params: BTreeMap::new(),
            tasks: Vec::new(),
            downstream: false,
            rerun: false,
            require_existing: false,
            trigger: Trigger::Manual,
            notify: Arc::new(notify::Settings::default()),
            defer_latest: false,
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
    /// The attempt failed (or timed out).
    Failed(TaskFailure, AttemptOutcome),
    Cancelled,
}

struct Completion {
    idx: usize,
    outcome: Outcome,
    log: Arc<TaskLog>,
}

/// The tokio task of one attempt; dropping it aborts the attempt, so that no path (a panic of
/// the watcher, a runtime shutting down) leaves an attempt running that nobody waits for.
struct AttemptTask(tokio::task::JoinHandle<Result<TaskOutput, TaskFailure>>);

impl AttemptTask {
    /// Gives the attempt (whose token is cancelled) [`STOP_GRACE`] to end, then aborts it and
    /// waits, as long again at most, until its future is dropped.
    async fn stop(&mut self) {
        if tokio::time::timeout(STOP_GRACE, &mut self.0).await.is_ok() {
            return;
        }
        self.0.abort();
        // Bounded: a future stuck inside one poll cannot be dropped until it returns.
        let _ = tokio::time::timeout(STOP_GRACE, &mut self.0).await;
    }
}

impl Drop for AttemptTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What an attempt's tokio task ending without a result means: `panicked: <message>`.
fn join_error_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "the attempt was aborted".to_string();
    }
    let payload = e.into_panic();
    let message = match payload.downcast_ref::<&'static str>() {
        Some(s) => s.to_string(),
        None => match payload.downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => "(a panic without a message)".to_string(),
        },
    };
    format!("panicked: {message}")
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

/// The runs this process is executing now. A second execution of one of them in the same
/// process (the web UI: a double-clicked Start, a second tab, a rerun while it runs, two
/// backfills over one range) is refused as busy, as another process's would be: the run store's
/// owner token names the process, so its claim cannot tell them apart.
static EXECUTING: std::sync::Mutex<std::collections::BTreeSet<(PathBuf, String)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A run (of a store) in [`EXECUTING`], until dropped.
struct Executing((PathBuf, String));

impl Executing {
    fn enter(store: PathBuf, run_id: String) -> Result<Executing, ExecError> {
        let key = (store, run_id);
        let mut set = EXECUTING.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.clone()) {
            return Err(ExecError::Executing { run_id: key.1 });
        }
        Ok(Executing(key))
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        EXECUTING.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// Runs one DAG run to its end (or to a cancel) and returns its report.
pub async fn execute(
    dag: Arc<Dag>,
    interval: DataInterval,
    store_at: &StoreAt,
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
    // Refused before the run starts, never skipped: a check that does not run does not guard.
    if opts.env.backend() == crate::env::Backend::Aws
        && let Some(t) = dag
            .tasks
            .iter()
            .zip(&selected)
            .find(|(t, s)| {
                **s && !t.checks.is_empty() && !crate::kinds::lookup(t.kind()).is_some_and(|k| k.checks_on_aws)
            })
            .map(|(t, _)| t)
    {
        return Err(ExecError::Unsupported {
            task: t.id.clone(),
            message: format!(
                "`checks:` of a `{}` task are not yet supported on aws: they run on the local backend (and on athena_ctas on aws); remove them, or run with --backend local",
                t.kind()
            ),
        });
    }
    let mut store = RunStore::open(store_at)?;
    // One execution of a run of one store per process at a time (the store's owner token is
    // the process's: it cannot tell two executions in one process apart).
    let _executing = Executing::enter(store_at.key(), crate::engine::store::run_id(&dag.id, interval.start))?;
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

    let slots: Vec<Slot> = dag
        .tasks
        .iter()
        .zip(&selected)
        .map(|(t, &sel)| {
            let (state, attempts, failures) = claimed.tasks.get(&t.id).cloned().unwrap_or((TaskState::Queued, 0, 0));
            let total = t.upstream.iter().filter(|&&u| selected[u]).count() as u32;
            Slot {
                state,
                attempts,
                failures,
                tally: Tally { total, ..Tally::default() },
                selected: sel,
                decided: false,
                last_error: None,
            }
        })
        .collect();
    // A task kept skipped whose upstream runs again is decided again (its trigger rule, its own
    // skip, depend on what the upstream does this time); one whose upstreams stay done, not, nor
    // one a person marked skipped.
    // (A task a person marked skipped stays skipped.)
    let by_hand = store.marked_skipped(&claimed.run_id)?;
    let mut slots = slots;
    let mut requeued: Vec<String> = Vec::new();
    loop {
        let again: Vec<usize> = (0..slots.len())
            .filter(|&i| {
                slots[i].selected
                    && slots[i].state == TaskState::Skipped
                    && !by_hand.contains(&dag.tasks[i].id)
                    && dag.tasks[i].upstream.iter().any(|&u| slots[u].selected && !slots[u].state.is_terminal())
            })
            .collect();
        if again.is_empty() {
            break;
        }
        for i in again {
            slots[i].state = TaskState::Queued;
            slots[i].failures = 0;
            requeued.push(dag.tasks[i].id.clone());
        }
    }
    // A fresh start, as the claim gives a cleared task: its whole retry budget, and none of
    // what the skipped execution saved (a finished job run to re-attach to).
    if !requeued.is_empty() {
        store.restart_fresh(&claimed.run_id, &requeued)?;
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

    // Notifications an earlier process recorded and did not deliver (it crashed): ours now.
    let notifier = Dispatcher::new(opts.notify.clone(), opts.env.clone(), &opts.project_dir, store_at);
    match store.undelivered_notifications(Some(&run_id), None) {
        Ok(keys) => notifier.dispatch(keys),
        Err(e) => warn!(dag = %dag.id, run = %run_id, error = %e, "cannot read the run's undelivered notifications"),
    }

    let (tx, rx) = mpsc::unbounded_channel::<Completion>();
    let mut run = RunLoop {
        logs_dir: store.logs_dir(),
        store,
        dag: dag.clone(),
        run_id,
        interval,
        template: tctx,
        store_at,
        opts,
        pools,
        // The run's own token: aborting this run stops its tasks, not the runs beside it.
        cancel: cancel.child_token(),
        handover: CancellationToken::new(),
        slots,
        ops: Vec::new(),
        ready: VecDeque::new(),
        retries: BinaryHeap::new(),
        rng: fastrand::Rng::new(),
        running: 0,
        cancelling: false,
        tx,
        observer,
        notifier,
    };
    if let Err(e) = run.start() {
        return Err(run.abort(e).await);
    }
    if let Err(e) = run.drive(rx).await {
        return Err(run.abort(e).await);
    }
    run.finish(started, reused).await
}

/// One execution of a run: the slots of its tasks, the changes not yet persisted, and what is
/// ready, running or waiting for a retry. The loop ([`RunLoop::drive`]) starts what may start,
/// persists, and applies completions, retries, heartbeats and a cancel as they come.
struct RunLoop<'a> {
    store: RunStore,
    logs_dir: PathBuf,
    dag: Arc<Dag>,
    run_id: String,
    interval: DataInterval,
    template: template::Context,
    store_at: &'a StoreAt,
    opts: &'a ExecOptions,
    pools: Arc<Pools>,
    cancel: CancellationToken,
    /// Cancelled when another process took the run over (see [`TaskContext::handover`]).
    handover: CancellationToken,
    slots: Vec<Slot>,
    /// Changes to persist before anything that depends on them happens.
    ops: Vec<Op>,
    ready: VecDeque<usize>,
    retries: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: fastrand::Rng,
    running: usize,
    cancelling: bool,
    tx: mpsc::UnboundedSender<Completion>,
    observer: &'a mut (dyn FnMut(Event<'_>) + Send),
    /// Delivers the notifications this execution records.
    notifier: Dispatcher,
}

impl RunLoop<'_> {
    /// Persists the pending changes in one transaction, then starts delivering the
    /// notifications among them.
    fn persist(&mut self) -> Result<(), ExecError> {
        let ops = std::mem::take(&mut self.ops);
        self.store.apply(&self.run_id, &ops)?;
        self.notifier.dispatch(ops.iter().filter_map(Op::notification_key));
        Ok(())
    }

    /// The notifications of `event` — of task `task`, or of the run — one per target the
    /// DAG's and the task's rules name.
    fn notifications(
        &self,
        task: Option<usize>,
        event: NotifyEvent,
        attempt: u32,
        error: Option<&str>,
    ) -> Vec<NewNotification> {
        let task = task.map(|i| &self.dag.tasks[i]);
        let targets = notify::targets_for(&self.dag.notify, task.map(|t| t.notify.as_slice()), task.is_some(), event);
        if targets.is_empty() {
            return Vec::new();
        }
        let note = Notification::new(
            &Happened {
                event,
                dag_id: &self.dag.id,
                run_id: &self.run_id,
                interval: &self.interval,
                task: task.map(|t| t.id.as_str()),
                attempt,
                error,
                at: Utc::now(),
            },
            &self.opts.notify.base_url,
        );
        let mut out = Vec::new();
        for t in targets {
            match self.opts.notify.resolve(t) {
                Some(spec) => out.push(NewNotification { target: t.name(), spec, note: note.clone() }),
                None => {
                    warn!(dag = %self.dag.id, target = %t.name(), "notify target is not defined in cartflow.yaml; not notified")
                }
            }
        }
        out
    }

    /// Tasks that are already finished (succeeded earlier) feed their downstream tallies; then
    /// every undecided task is evaluated once.
    fn start(&mut self) -> Result<(), ExecError> {
        let n = self.dag.tasks.len();
        let mut work: Vec<usize> =
            (0..n).filter(|&i| self.slots[i].selected && self.slots[i].state.is_terminal()).collect();
        self.propagate(&mut work)?;
        for i in 0..n {
            // A retry that was waiting when an earlier process died: due at its time, not now —
            // unless an upstream runs again in this execution (`--task … --downstream`), when it
            // waits for that upstream like any queued task (its budget kept).
            if self.slots[i].selected
                && let TaskState::UpForRetry { retry_at, .. } = &self.slots[i].state
            {
                let retry_at = *retry_at;
                let upstream_settled = self.dag.tasks[i]
                    .upstream
                    .iter()
                    .all(|&u| !self.slots[u].selected || self.slots[u].state.is_terminal());
                let task_id = self.dag.tasks[i].id.clone();
                let s = &mut self.slots[i];
                if upstream_settled {
                    let wait = (retry_at - Utc::now()).to_std().unwrap_or_default();
                    s.decided = true;
                    let due = Instant::now().checked_add(wait).unwrap_or_else(Instant::now);
                    self.retries.push(Reverse((due, i)));
                    continue;
                }
                s.state = s.state.interrupt().map_err(|e| ExecError::transition(&task_id, e))?;
                self.ops.push(Op::Task { task_id, state: s.state.clone(), attempts: s.attempts, failures: s.failures });
            }
            let s = &self.slots[i];
            if s.selected && !s.decided && s.state == TaskState::Queued {
                let mut w = Vec::new();
                self.evaluate(i, &mut w)?;
                self.propagate(&mut w)?;
            }
        }
        Ok(())
    }

    /// The loop: start what may start, persist, wait for the next thing to happen.
    async fn drive(&mut self, mut rx: mpsc::UnboundedReceiver<Completion>) -> Result<(), ExecError> {
        // When the lease was last renewed (the claim renewed it).
        let mut renewed = Instant::now();
        let mut missed_heartbeats = 0u32;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_active = self.dag.max_active_tasks as usize;
        loop {
            let to_spawn = self.start_ready(max_active)?;
            // Persist before anything that depends on these transitions happens.
            self.persist()?;
            for (i, permit) in to_spawn {
                self.spawn(i, permit);
            }
            if self.running == 0 && (self.cancelling || (self.ready.is_empty() && self.retries.is_empty())) {
                break;
            }
            let next_retry = self.retries.peek().map(|Reverse((t, _))| *t);
            let pool_wait = !self.ready.is_empty() && self.running < max_active && !self.cancelling;
            let cancel = self.cancel.clone();
            tokio::select! {
                // A cancel is handled before any completion that raced with it.
                biased;
                () = cancel.cancelled(), if !self.cancelling => self.on_cancel()?,
                Some(first) = rx.recv() => {
                    let mut batch = vec![first];
                    while let Ok(c) = rx.try_recv() {
                        batch.push(c);
                    }
                    for c in batch {
                        self.on_completion(c)?;
                    }
                }
                () = async { tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)).await }, if next_retry.is_some() => {
                    let now = Instant::now();
                    while let Some(Reverse((t, i))) = self.retries.peek().copied() {
                        if t > now { break; }
                        self.retries.pop();
                        self.ready.push_back(i);
                    }
                }
                _ = heartbeat.tick() => match self.store.heartbeat(&self.run_id) {
                    Ok(cancel_asked) => {
                        missed_heartbeats = 0;
                        renewed = Instant::now();
                        // Another process asked (`cartflow cancel`, a web UI): stop as a
                        // Ctrl-C would; the cancel branch above runs on the next turn.
                        if let Some(who) = cancel_asked
                            && !self.cancel.is_cancelled()
                        {
                            warn!(dag = %self.dag.id, run = %self.run_id, by = %who, "cancel asked for from another process");
                            self.cancel.cancel();
                        }
                    }
                    // Another process holds the run now: stop at once, writing nothing more.
                    Err(e @ StoreError::LeaseLost { .. }) => return Err(e.into()),
                    // A busy or briefly unwritable store is not the run's end while the lease
                    // runs; after SELF_STOP of failures the run stops, before the lease ends.
                    Err(e) if renewed.elapsed() < SELF_STOP => {
                        missed_heartbeats += 1;
                        warn!(dag = %self.dag.id, run = %self.run_id, error = %e, missed = missed_heartbeats, "heartbeat not saved; the run goes on");
                    }
                    Err(e) => return Err(e.into()),
                },
                () = tokio::time::sleep(Duration::from_millis(100)), if pool_wait => {}
            }
        }
        self.persist()?;
        Ok(())
    }

    /// Moves ready tasks to running, within `max_active` and their pools' slots.
    fn start_ready(&mut self, max_active: usize) -> Result<Vec<(usize, Option<OwnedSemaphorePermit>)>, ExecError> {
        let mut to_spawn = Vec::new();
        if self.cancelling {
            return Ok(to_spawn);
        }
        let mut blocked: Vec<usize> = Vec::new();
        while self.running + to_spawn.len() < max_active {
            let Some(i) = self.ready.pop_front() else { break };
            let permit = match &self.dag.tasks[i].pool {
                None => None,
                Some(p) => match self.pools.semaphore(p).map(|s| s.clone().try_acquire_owned()) {
                    Some(Ok(permit)) => Some(permit),
                    _ => {
                        blocked.push(i);
                        continue;
                    }
                },
            };
            let task_id = self.dag.tasks[i].id.clone();
            let slot = &mut self.slots[i];
            let attempt = slot.attempts + 1;
            let now = Utc::now();
            slot.state = slot.state.start(attempt, now).map_err(|e| ExecError::transition(&task_id, e))?;
            slot.attempts = attempt;
            self.ops.push(Op::AttemptStarted { task_id: task_id.clone(), attempt, started_at: now });
            self.ops.push(Op::Task { task_id, state: slot.state.clone(), attempts: attempt, failures: slot.failures });
            to_spawn.push((i, permit));
        }
        for b in blocked.into_iter().rev() {
            self.ready.push_front(b);
        }
        Ok(to_spawn)
    }

    /// Starts the attempt of task `i` (already moved to running and persisted).
    ///
    /// The attempt runs in a tokio task of its own, watched by a second one that applies its
    /// timeout and the run's cancel. A panic — in the kind's future, in `spawn_blocking` work it
    /// awaits and re-raises, or while the kind renders its config — ends the attempt as a
    /// failure `panicked: <message>` (retries and trigger rules apply as for any failure)
    /// instead of leaving the run waiting for a completion that never comes. A timed-out or
    /// cancelled attempt gets [`STOP_GRACE`] to stop by itself; then it is aborted, and its
    /// future is dropped (which kills its process group) before its completion is sent.
    fn spawn(&mut self, i: usize, permit: Option<OwnedSemaphorePermit>) {
        let task = &self.dag.tasks[i];
        let attempt = self.slots[i].attempts;
        (self.observer)(Event::Task { task: &task.id, state: &self.slots[i].state });
        info!(dag = %self.dag.id, run = %self.run_id, task = %task.id, attempt, "task started");
        let log = Arc::new(TaskLog::new(crate::engine::store::attempt_log(
            &self.logs_dir,
            &self.dag.id,
            &self.run_id,
            &task.id,
            attempt,
        )));
        let token = self.cancel.child_token();
        let ctx = TaskContext {
            dag_id: self.dag.id.clone(),
            task_id: task.id.clone(),
            run_id: self.run_id.clone(),
            attempt,
            interval: self.interval,
            template: self.template.for_task(&task.id),
            env: self.opts.env.clone(),
            log: log.clone(),
            cancel: token.clone(),
            handover: self.handover.clone(),
            project_dir: self.opts.project_dir.clone(),
            facts: Facts::new(Arc::new(AttemptFacts::new(self.store_at)), &self.run_id, &task.id),
            checks: task.checks.clone(),
        };
        let config = task.config.clone();
        let timeout = task.timeout;
        let run_cancel = self.cancel.clone();
        let tx = self.tx.clone();
        self.running += 1;
        let mut attempt_task = AttemptTask(tokio::spawn(async move { config.run(ctx).await }));
        tokio::spawn(async move {
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = &mut attempt_task.0 => match r {
                    Ok(Ok(out)) => Outcome::Done(out),
                    // The task noticed the cancel (and stopped) before this select did.
                    Ok(Err(_)) if run_cancel.is_cancelled() => Outcome::Cancelled,
                    Ok(Err(f)) => Outcome::Failed(f, AttemptOutcome::Failed),
                    Err(e) => Outcome::Failed(TaskFailure::new(join_error_message(e)), AttemptOutcome::Failed),
                },
                () = sleep => {
                    token.cancel();
                    attempt_task.stop().await;
                    Outcome::Failed(
                        TaskFailure::new(format!("timed out after {}", humanize(timeout.unwrap_or_default()))),
                        AttemptOutcome::TimedOut,
                    )
                }
                () = run_cancel.cancelled() => {
                    attempt_task.stop().await;
                    Outcome::Cancelled
                }
            };
            drop(attempt_task);
            drop(permit);
            let _ = tx.send(Completion { idx: i, outcome, log });
        });
    }

    /// The run is cancelled: nothing new starts; queued and waiting tasks are cancelled (the
    /// running ones are being stopped and report back).
    fn on_cancel(&mut self) -> Result<(), ExecError> {
        self.cancelling = true;
        warn!(dag = %self.dag.id, run = %self.run_id, running = self.running, "cancelling: no new tasks start; running tasks are being stopped");
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.selected && matches!(s.state, TaskState::Queued | TaskState::UpForRetry { .. }) {
                let task_id = &self.dag.tasks[i].id;
                s.state = s.state.cancel().map_err(|e| ExecError::transition(task_id, e))?;
                self.ops.push(Op::Task {
                    task_id: task_id.clone(),
                    state: s.state.clone(),
                    attempts: s.attempts,
                    failures: s.failures,
                });
                (self.observer)(Event::Task { task: task_id, state: &s.state });
            }
        }
        self.ready.clear();
        self.retries.clear();
        Ok(())
    }

    /// An attempt ended: its transition, a retry if it has one left, and what follows.
    fn on_completion(&mut self, c: Completion) -> Result<(), ExecError> {
        self.running -= 1;
        let i = c.idx;
        let task = &self.dag.tasks[i];
        let slot = &mut self.slots[i];
        let TaskState::Running { attempt, .. } = slot.state else {
            return Err(ExecError::Transition {
                task: task.id.clone(),
                message: format!("an attempt ended while the task was `{}`", slot.state),
            });
        };
        let illegal = |e| ExecError::transition(&task.id, e);
        let now = Utc::now();
        let mut exit_code = None;
        let mut summary = None;
        // The notification this attempt's end raises, with its error.
        let mut raised: Option<NotifyEvent> = None;
        // The data checks that failed (`check_failed`, besides the attempt's own event).
        let mut checks_failed: Option<String> = None;
        let (next, outcome, error) = match c.outcome {
            Outcome::Done(out) if out.skipped => {
                exit_code = out.exit_code;
                (slot.state.skip_self().map_err(illegal)?, AttemptOutcome::Skipped, None)
            }
            Outcome::Done(out) => {
                exit_code = out.exit_code;
                summary = out.summary;
                checks_failed = out.checks_failed;
                raised = Some(NotifyEvent::Success);
                (slot.state.succeed(now).map_err(illegal)?, AttemptOutcome::Success, None)
            }
            Outcome::Cancelled => (slot.state.cancel().map_err(illegal)?, AttemptOutcome::Cancelled, None),
            Outcome::Failed(..) if self.cancelling => {
                (slot.state.cancel().map_err(illegal)?, AttemptOutcome::Cancelled, None)
            }
            Outcome::Failed(f, outcome) => {
                let (message, retryable, code) = (f.message, f.retryable, f.exit_code);
                checks_failed = f.checks_failed;
                exit_code = code;
                slot.failures += 1;
                let retry = retryable && slot.failures <= task.retry.retries;
                raised = Some(if retry { NotifyEvent::Retry } else { NotifyEvent::Failure });
                let retry_at = retry.then(|| task.retry.delay_for(slot.failures, &mut self.rng));
                c.log.line(format_args!(
                    "attempt {attempt} {outcome}: {message}{}",
                    match retry_at {
                        Some(d) => format!("; retry {}/{} in {}", slot.failures, task.retry.retries, humanize(d)),
                        None if !retryable => "; not retryable".to_string(),
                        None => String::new(),
                    }
                ));
                // Delays are at most `max_retry_delay` (at most a year): the checked sums only
                // guard against a policy built elsewhere.
                let at = retry_at
                    .map(|d| chrono::Duration::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(now));
                let next = slot.state.fail(message.clone(), now, at).map_err(illegal)?;
                if let Some(d) = retry_at {
                    warn!(dag = %self.dag.id, task = %task.id, attempt, error = %message, retry_in = %humanize(d), "task failed; will retry");
                    let start = Instant::now();
                    let due = start.checked_add(d).or_else(|| start.checked_add(crate::duration::MAX)).unwrap_or(start);
                    self.retries.push(Reverse((due, i)));
                } else {
                    warn!(dag = %self.dag.id, task = %task.id, attempt, error = %message, "task failed");
                }
                slot.last_error = Some(message.clone());
                (next, outcome, Some(message))
            }
        };
        if outcome == AttemptOutcome::Success {
            info!(dag = %self.dag.id, task = %task.id, attempt, "task succeeded");
        }
        slot.state = next;
        self.ops.push(Op::AttemptEnded {
            task_id: task.id.clone(),
            attempt,
            outcome,
            ended_at: now,
            error: error.clone(),
            exit_code,
            summary,
            log_path: c.log.exists().then(|| match self.store.keep_log(&self.run_id, &task.id, attempt, c.log.path()) {
                Ok(kept) => kept,
                Err(e) => {
                    warn!(dag = %self.dag.id, task = %task.id, attempt, error = %e, "the attempt's log is kept only on this machine");
                    c.log.path().display().to_string()
                }
            }),
        });
        self.ops.push(Op::Task {
            task_id: task.id.clone(),
            state: slot.state.clone(),
            attempts: slot.attempts,
            failures: slot.failures,
        });
        (self.observer)(Event::Task { task: &task.id, state: &slot.state });
        let terminal = slot.state.is_terminal();
        if let Some(event) = raised {
            // Recorded with the attempt's end, in the same transaction.
            let notes = self.notifications(Some(i), event, attempt, error.as_deref());
            self.ops.extend(notes.into_iter().map(|n| Op::Notify(Box::new(n))));
        }
        if let Some(text) = checks_failed {
            let notes = self.notifications(Some(i), NotifyEvent::CheckFailed, attempt, Some(&text));
            self.ops.extend(notes.into_iter().map(|n| Op::Notify(Box::new(n))));
        }
        let mut work = Vec::new();
        if terminal {
            work.push(i);
        }
        self.propagate(&mut work)
    }

    /// Feeds finished tasks' states into their downstream tallies and decides what follows.
    fn propagate(&mut self, work: &mut Vec<usize>) -> Result<(), ExecError> {
        while let Some(i) = work.pop() {
            let st = self.slots[i].state.clone();
            let dag = self.dag.clone();
            for &d in &dag.tasks[i].downstream {
                if !self.slots[d].selected {
                    continue;
                }
                let t = &mut self.slots[d].tally;
                match st {
                    TaskState::Success { .. } => t.success += 1,
                    TaskState::Skipped => t.skipped += 1,
                    ref s if s.counts_as_failed() => t.failed += 1,
                    _ => continue,
                }
                if !self.slots[d].decided && self.slots[d].state == TaskState::Queued {
                    self.evaluate(d, work)?;
                }
            }
        }
        Ok(())
    }

    /// Applies task `i`'s trigger rule to its upstream tally.
    fn evaluate(&mut self, i: usize, work: &mut Vec<usize>) -> Result<(), ExecError> {
        let task_id = &self.dag.tasks[i].id;
        let slot = &mut self.slots[i];
        let deferred = self.opts.defer_latest && self.dag.tasks[i].refresh == crate::dag::Refresh::Latest;
        let next = match decide(self.dag.tasks[i].trigger_rule, slot.tally) {
            Decision::Wait => return Ok(()),
            // `refresh: latest` in a backfill run that is not the last: the last one runs it.
            Decision::Run if deferred => {
                info!(dag = %self.dag.id, run = %self.run_id, task = %task_id, "refresh: latest: skipped here, runs once in the backfill's last run");
                slot.state.skip()
            }
            Decision::Run => {
                slot.decided = true;
                self.ready.push_back(i);
                return Ok(());
            }
            Decision::Skip => slot.state.skip(),
            Decision::UpstreamFailed => slot.state.upstream_failed(),
        };
        slot.state = next.map_err(|e| ExecError::transition(task_id, e))?;
        slot.decided = true;
        self.ops.push(Op::Task {
            task_id: task_id.clone(),
            state: slot.state.clone(),
            attempts: slot.attempts,
            failures: slot.failures,
        });
        (self.observer)(Event::Task { task: task_id, state: &slot.state });
        work.push(i);
        Ok(())
    }

    /// The loop cannot go on (the store failed, or the state machine refused a move): stop what
    /// was started, release the run as failed if the store still answers, and return `e`.
    async fn abort(mut self, e: ExecError) -> ExecError {
        warn!(dag = %self.dag.id, run = %self.run_id, error = %e, running = self.running, "the run stops: stopping its tasks");
        let lost = matches!(e, ExecError::Store(StoreError::LeaseLost { .. }));
        if lost {
            self.handover.cancel();
        }
        self.cancel.cancel();
        // A run another process holds now is its to write: nothing of ours goes in.
        if !lost {
            let _ = self.persist();
            if let Err(f) = self.store.finish(&self.run_id, RunState::Failed) {
                warn!(run = %self.run_id, error = %f, "could not release the run; the next claim takes it over");
            }
        }
        self.notifier.drain().await;
        e
    }

    /// Records the run's end (with the notifications of its success), waits for this
    /// execution's notifications to be delivered or given up, and reports every task.
    async fn finish(mut self, started: Instant, reused: usize) -> Result<RunReport, ExecError> {
        let state = if self.cancelling || self.cancel.is_cancelled() {
            RunState::Cancelled
        } else if self.slots.iter().any(|s| s.selected && s.state.counts_as_failed()) {
            RunState::Failed
        } else {
            RunState::Success
        };
        // A run's success is keyed by the attempts of all its tasks: finishing again without
        // running anything (a resume after a crash at the very end) raises nothing new.
        let notes = if state == RunState::Success {
            let attempts = self.slots.iter().map(|s| s.attempts).sum();
            self.notifications(None, NotifyEvent::Success, attempts, None)
        } else {
            Vec::new()
        };
        let result = self.store.finish_with(&self.run_id, state, &notes);
        if result.is_ok() {
            self.notifier.dispatch(notes.iter().map(|n| (n.note.dedupe_key.clone(), n.target.clone())));
        }
        self.notifier.drain().await;
        result?;
        info!(dag = %self.dag.id, run = %self.run_id, state = %state, "run finished");
        let tasks = self
            .dag
            .tasks
            .iter()
            .zip(std::mem::take(&mut self.slots))
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
        Ok(RunReport {
            run_id: self.run_id.clone(),
            dag_id: self.dag.id.clone(),
            interval: self.interval,
            state,
            tasks,
            elapsed: started.elapsed(),
            reused,
        })
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
}
