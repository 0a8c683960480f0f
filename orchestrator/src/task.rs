//! The task contract: what the engine hands a task attempt and what it gets back, and what a
//! task kind implements.
//!
//! A kind is a type implementing [`Kind`]: its strict config (deserialized at compile time, so
//! that a typo in a DAG file is a compile error with a line and column), how the config is
//! rendered for one run (templates filled in, values checked), and how one attempt runs, given
//! a [`TaskContext`] whose [`Env`] says which backend it runs on. The kinds live in
//! [`crate::kinds`], listed in its registry; this module sits below them and the engine.

use std::fmt::Debug;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::env::Env;
use crate::process;
use crate::schedule::DataInterval;
use crate::template::{self, TemplateError};
use crate::yaml::{self, DeError, Node};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The log of one task attempt: a file, created on first write.
#[derive(Debug)]
pub struct TaskLog {
    path: PathBuf,
    file: OnceLock<Option<std::fs::File>>,
}

impl TaskLog {
    /// A log that will live at `path`.
    pub fn new(path: PathBuf) -> Self {
        TaskLog { path, file: OnceLock::new() }
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything was written.
    pub fn exists(&self) -> bool {
        self.file.get().is_some_and(Option::is_some)
    }

    /// The open file, created (with its folders) on first use.
    pub fn file(&self) -> Option<&std::fs::File> {
        self.file
            .get_or_init(|| {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).ok()?;
                }
                std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok()
            })
            .as_ref()
    }

    /// Appends one timestamped line.
    pub fn line(&self, msg: impl std::fmt::Display) {
        if let Some(mut f) = self.file() {
            let _ = writeln!(f, "[{}] {msg}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
    }
}

/// Everything one attempt of a task may use.
#[derive(Debug)]
pub struct TaskContext {
    /// The DAG.
    pub dag_id: String,
    /// The task.
    pub task_id: String,
    /// The run.
    pub run_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The run's data interval.
    pub interval: DataInterval,
    /// Template values for this task.
    pub template: template::Context,
    /// The backend the task runs on: match on it to pick the implementation.
    pub env: Env,
    /// The attempt's log.
    pub log: Arc<TaskLog>,
    /// Cancelled when the task must stop (run cancelled or timed out).
    pub cancel: CancellationToken,
    /// Cancelled (before `cancel`) when another process took the run over: remote work the
    /// attempt started (an AWS job run) is left running for the new owner to re-attach to,
    /// and its facts are kept — stop only watching it.
    pub handover: CancellationToken,
    /// The project folder (the parent of the DAGs folder); relative paths resolve here.
    pub project_dir: PathBuf,
    /// Small facts the task keeps across attempts and crashes (an AWS job run id).
    pub facts: Facts,
    /// The task's data checks (`checks:`), run on its staged output before it is published.
    pub checks: Arc<[crate::checks::Check]>,
}

/// Where facts are kept: the run store, behind this boundary so that the task contract does
/// not depend on which store (or how many connections) the engine uses.
pub trait FactStore: Debug + Send + Sync {
    /// The value saved under `key` for (`run_id`, `task_id`).
    fn get(&self, run_id: &str, task_id: &str, key: &str) -> Result<Option<String>, String>;
    /// Saves `value` under `key`, committed when this returns.
    fn set(&self, run_id: &str, task_id: &str, key: &str, value: &str) -> Result<(), String>;
    /// Forgets `key`.
    fn clear(&self, run_id: &str, task_id: &str, key: &str) -> Result<(), String>;
    /// Records the process group attempt `attempt` runs, committed when this returns.
    fn record_group(&self, run_id: &str, task_id: &str, attempt: u32, group: &process::Group) -> Result<(), String>;
}

/// Key/value facts of one task instance, kept in the run store: what an attempt saves (an AWS
/// job run id, before it polls) the next attempt, or the resumed run after a crash, reads. A
/// re-run of the task (`--reprocess`, naming it) starts with none.
#[derive(Debug, Clone)]
pub struct Facts {
    store: Arc<dyn FactStore>,
    run_id: String,
    task_id: String,
}

impl Facts {
    /// The facts of `task_id` in `run_id`, kept in `store`.
    pub fn new(store: Arc<dyn FactStore>, run_id: &str, task_id: &str) -> Self {
        Facts { store, run_id: run_id.into(), task_id: task_id.into() }
    }

    fn failure(e: String) -> TaskFailure {
        TaskFailure::new(format!("run store: {e}"))
    }

    /// The value saved under `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>, TaskFailure> {
        self.store.get(&self.run_id, &self.task_id, key).map_err(Self::failure)
    }

    /// Saves `value` under `key` (durably: it is committed when this returns).
    pub fn set(&self, key: &str, value: &str) -> Result<(), TaskFailure> {
        self.store.set(&self.run_id, &self.task_id, key, value).map_err(Self::failure)
    }

    /// Forgets `key`.
    pub fn clear(&self, key: &str) -> Result<(), TaskFailure> {
        self.store.clear(&self.run_id, &self.task_id, key).map_err(Self::failure)
    }

    /// Records that attempt `attempt` runs process group `group`, so that whoever takes the run
    /// over after a crash of this process kills what is left of it.
    pub fn record_group(&self, attempt: u32, group: &process::Group) -> Result<(), TaskFailure> {
        self.store.record_group(&self.run_id, &self.task_id, attempt, group).map_err(Self::failure)
    }
}

/// A successful attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOutput {
    /// The process exit code, for kinds that run a process.
    pub exit_code: Option<i32>,
    /// The task decided to skip itself (e.g. `skip_exit_code`).
    pub skipped: bool,
    /// A one-line summary for the run log (e.g. row counts).
    pub summary: Option<String>,
    /// The `warn` data checks that failed (the output was published): raises `check_failed`.
    pub checks_failed: Option<String>,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskFailure {
    /// What went wrong, for the user.
    pub message: String,
    /// The process exit code, if a process ran.
    pub exit_code: Option<i32>,
    /// False for failures a retry cannot fix (bad rendered config): retries are skipped.
    pub retryable: bool,
    /// The data checks that failed and stopped the publish: raises `check_failed` too.
    pub checks_failed: Option<String>,
}

impl TaskFailure {
    /// A retryable failure.
    pub fn new(message: impl Into<String>) -> Self {
        TaskFailure { message: message.into(), exit_code: None, retryable: true, checks_failed: None }
    }

    /// A failure that retrying would not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        TaskFailure { message: message.into(), exit_code: None, retryable: false, checks_failed: None }
    }
}

impl From<TemplateError> for TaskFailure {
    fn from(e: TemplateError) -> Self {
        TaskFailure::permanent(format!("rendering the config: {e}"))
    }
}

pub use crate::checks::Publishes;

/// A task kind.
pub trait Kind: Debug + Send + Sync + 'static {
    /// The YAML `kind:` name.
    const NAME: &'static str;
    /// One line for `--help` and the docs.
    const ABOUT: &'static str;
    /// The kind's strict config (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned + Debug + Send + Sync + 'static;
    /// The config with templates rendered for one run: what `plan` prints and `run` executes.
    type Rendered: Serialize + Send + 'static;
    /// What its tasks publish (default nothing): the data checks they may have.
    const PUBLISHES: Publishes = Publishes::Nothing;
    /// Whether its checks run on the aws backend too (default: local only, and a run on aws of
    /// a task with checks is refused before it starts).
    const CHECKS_ON_AWS: bool = false;

    /// Checks what serde cannot (value ranges, combinations, files the config names). Runs
    /// at compile time.
    fn validate(_config: &Self::Config, _env: &CompileEnv) -> Result<(), String> {
        Ok(())
    }

    /// Fills in the templates for one task of one run.
    fn render(config: &Self::Config, ctx: &template::Context) -> Result<Self::Rendered, TemplateError>;

    /// Runs one attempt.
    fn run(rendered: Self::Rendered, ctx: TaskContext) -> impl Future<Output = Result<TaskOutput, TaskFailure>> + Send;
}

/// A task's compiled config, with its kind erased.
pub trait CompiledTask: Debug + Send + Sync {
    /// The kind's name.
    fn kind(&self) -> &'static str;
    /// The rendered config as JSON, for `plan`.
    fn render_json(&self, ctx: &template::Context) -> Result<serde_json::Value, TemplateError>;
    /// Renders and runs one attempt.
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>>;
}

struct Compiled<K: Kind>(K::Config);

impl<K: Kind> Debug for Compiled<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", K::NAME, self.0)
    }
}

impl<K: Kind> CompiledTask for Compiled<K> {
    fn kind(&self) -> &'static str {
        K::NAME
    }

    fn render_json(&self, ctx: &template::Context) -> Result<serde_json::Value, TemplateError> {
        let r = K::render(&self.0, ctx)?;
        Ok(serde_json::to_value(&r).unwrap_or(serde_json::Value::Null))
    }

    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        match K::render(&self.0, &ctx.template) {
            Ok(rendered) => Box::pin(K::run(rendered, ctx)),
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

/// Every problem of the config at once: each key serde refuses, and (when the config as
/// written deserializes, unknown keys aside) what the kind's own checks find. With the problems
/// comes the config as written when it deserialized (unknown keys aside), so that the compile
/// step can render it and report what rendering refuses too (a path leaving the lake beside a
/// missing SQL file).
fn compile<K: Kind>(node: &Node, env: &CompileEnv) -> Result<Arc<dyn CompiledTask>, CompileErrors> {
    let (config, mut errors) = match yaml::from_node_all::<K::Config>(node) {
        Ok(c) => (Some(c), Vec::new()),
        Err((errors, rest)) => (rest, errors),
    };
    if let Some(c) = &config
        && let Err(message) = K::validate(c, env)
    {
        errors.push(DeError { message, pos: Some(node.pos), hint: None });
    }
    match config {
        Some(c) if errors.is_empty() => Ok(Arc::new(Compiled::<K>(c))),
        Some(c) => Err(CompileErrors { errors, as_written: Some(Arc::new(Compiled::<K>(c))) }),
        None => Err(CompileErrors { errors, as_written: None }),
    }
}

/// The problems of a task's config, and the config as written when it deserialized (unknown
/// keys aside): it can still be rendered, for the problems rendering finds.
#[derive(Debug)]
pub struct CompileErrors {
    /// Every problem serde and the kind's checks found.
    pub errors: Vec<DeError>,
    /// The config, for rendering only (it is not a task that may run).
    pub as_written: Option<Arc<dyn CompiledTask>>,
}

/// What the compile step knows beyond a task's config.
#[derive(Debug, Clone, Default)]
pub struct CompileEnv {
    /// The project folder: relative paths in configs resolve here.
    pub project_dir: PathBuf,
    /// The files configs named ([`CompileEnv::resolve`]), shared by every DAG of one compile.
    pub reads: Arc<std::sync::Mutex<std::collections::BTreeSet<PathBuf>>>,
}

impl CompileEnv {
    /// A file a config names (a SQL file, a recipe, a rules file), resolved in the project
    /// folder and remembered: what the DAGs were compiled from besides their own files, so that
    /// a change to it is a reason to compile again (`DagSet::read`).
    pub fn resolve(&self, rel: &std::path::Path) -> PathBuf {
        let path = self.project_dir.join(rel);
        self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(path.clone());
        path
    }
}

/// Deserializes and checks one task's config; every problem is returned.
pub type CompileFn = fn(&Node, &CompileEnv) -> Result<Arc<dyn CompiledTask>, CompileErrors>;

/// A kind as the compile step sees it.
#[derive(Debug, Clone, Copy)]
pub struct KindEntry {
    /// The YAML `kind:` name.
    pub name: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// Deserializes and checks a config.
    pub compile: CompileFn,
    /// What its tasks publish: the data checks they may have.
    pub publishes: Publishes,
    /// Whether its checks run on the aws backend too.
    pub checks_on_aws: bool,
}

/// The registry entry of kind `K`.
pub const fn entry<K: Kind>() -> KindEntry {
    KindEntry {
        name: K::NAME,
        about: K::ABOUT,
        compile: compile::<K>,
        publishes: K::PUBLISHES,
        checks_on_aws: K::CHECKS_ON_AWS,
    }
}

pub use crate::ids::valid_id;
