//! A project: the folder cartflow runs in, its `cartflow.yaml`, its DAGs and its run store.
//! What every command and the web UI start from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{ConfigError, ProjectConfig};
use crate::dag::compile::{CompileOptions, Diagnostic, compile_dir, compile_files};
use crate::dag::{Dag, DagSet};
use crate::engine::executor::{ExecOptions, Pools};
use crate::engine::state::Trigger;
use crate::engine::store::StoreAt;
use crate::env::{Backend, Env, EnvError, LocalEnv};

/// The project folder and what it configures.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project folder: relative paths of the config resolve here.
    pub dir: PathBuf,
    /// `cartflow.yaml` (or the defaults).
    pub config: ProjectConfig,
    /// The DAGs folder.
    pub dags_dir: PathBuf,
    /// The run store: a SQLite file (relative paths resolve in the project folder), or the aws
    /// backend's DynamoDB table (`state: dynamodb://TABLE`).
    pub state: StoreAt,
}

/// Where `state:` (or `--state`) puts the run store: a file path, or `dynamodb://TABLE` — a
/// table of the aws backend, region and credentials from the standard AWS chain.
/// Attempt logs of a DynamoDB store go to `logs` (the aws lake's `_logs/` folder) when given.
pub fn store_at(state: &Path, logs: Option<crate::config::aws::S3Loc>) -> Result<StoreAt, (String, &'static str)> {
    let text = state.to_string_lossy();
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(StoreAt::File(state.to_path_buf()));
    };
    if scheme != "dynamodb" {
        return Err((
            format!("the run store `{text}` has an unknown scheme `{scheme}://`"),
            "give a file path (the SQLite store) or dynamodb://TABLE",
        ));
    }
    // DynamoDB's table names: 3-255 of letters, digits, `_`, `-`, `.`.
    let valid = (3..=255).contains(&rest.len())
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err((
            format!("`{text}` does not name a DynamoDB table"),
            "a table name is 3-255 letters, digits, `_`, `-` and `.`: dynamodb://cartflow-state",
        ));
    }
    #[cfg(feature = "aws")]
    {
        Ok(StoreAt::Remote(std::sync::Arc::new(crate::stores::dynamodb::DynamoTable::new(rest, logs))))
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = logs;
        Err((
            format!(
                "the run store `{text}` is a DynamoDB table, and this cartflow was built without the `aws` feature"
            ),
            "build cartflow with the default features, or use a SQLite file as the run store",
        ))
    }
}

/// A DAG cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The DAGs folder is missing.
    #[error("DAGs folder {} does not exist (use --dags DIR or set `dags:` in cartflow.yaml)", .0.display())]
    NoDagsDir(PathBuf),
    /// The DAGs folder cannot be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The folder.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// No DAG has that id.
    #[error("no DAG `{name}` in {}{hint}", dir.display())]
    NoSuchDag {
        /// What was asked for.
        name: String,
        /// The DAGs folder.
        dir: PathBuf,
        /// ` (did you mean …?)` or nothing.
        hint: String,
    },
    /// The DAG's file has errors.
    #[error("DAG `{name}` does not compile ({})", file.display())]
    DoesNotCompile {
        /// The DAG.
        name: String,
        /// Its file.
        file: PathBuf,
        /// Its file's problems.
        diagnostics: Vec<Diagnostic>,
    },
}

/// A DAG picked from the project, and how many problems other DAG files have.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The DAG.
    pub dag: Arc<Dag>,
    /// Problems in the other files of the DAGs folder (they do not stop this DAG).
    pub problems_elsewhere: usize,
}

impl ProjectError {
    /// Whether this is the user's to fix (a missing folder, an unknown or broken DAG) rather
    /// than a failure of the machine.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ProjectError::Read { .. })
    }

    /// The compile problems behind the error, if it is a DAG that does not compile.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ProjectError::DoesNotCompile { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

impl Project {
    /// The project in `dir`, with the DAGs folder and run store overridden when given.
    pub fn open(dir: PathBuf, dags: Option<PathBuf>, state: Option<PathBuf>) -> Result<Project, ConfigError> {
        let config = ProjectConfig::load(&dir)?;
        let dags_dir = dags.unwrap_or_else(|| config.dags.clone());
        let (state, from) = match state {
            Some(s) => (s, "--state".to_string()),
            None => (config.state.clone(), dir.join("cartflow.yaml").display().to_string()),
        };
        let state = store_at(&state, config.aws.locate("_logs").ok()).map_err(|(message, hint)| ConfigError {
            file: from,
            line: 1,
            column: 1,
            message,
            hint: Some(hint.to_string()),
        })?;
        Ok(Project { dir, config, dags_dir, state })
    }

    /// What the compile step checks against (the pools defined, the project folder).
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            pools: Some(self.config.pools.keys().cloned().collect()),
            project_dir: Some(self.dir.clone()),
            notify_targets: Some(self.config.notify.targets.keys().cloned().collect()),
            reads: Default::default(),
        }
    }

    /// Compiles every DAG of the DAGs folder.
    pub fn load(&self) -> Result<DagSet, ProjectError> {
        if !self.dags_dir.is_dir() {
            return Err(ProjectError::NoDagsDir(self.dags_dir.clone()));
        }
        compile_dir(&self.dags_dir, &self.compile_options())
            .map_err(|error| ProjectError::Read { path: self.dags_dir.clone(), error })
    }

    /// Every file under the DAGs folder with its modification time and size: what [`Project::load`]
    /// reads (a changed snapshot means the DAGs must be compiled again).
    pub fn dags_snapshot(&self) -> Vec<(PathBuf, std::time::SystemTime, u64)> {
        fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, std::time::SystemTime, u64)>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(m) = std::fs::metadata(&p) else { continue };
                if m.is_dir() {
                    if depth < 16 {
                        walk(&p, depth + 1, out);
                    }
                } else {
                    out.push((p, m.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH), m.len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dags_dir, 0, &mut out);
        out.sort();
        out
    }

    /// One DAG, by id or by the path of its file. Its own compile errors are fatal; those of
    /// other files are only counted.
    pub fn dag(&self, name: &str) -> Result<Picked, ProjectError> {
        let as_file = Path::new(name);
        let set = if as_file.is_file() {
            compile_files(&[as_file.to_path_buf()], &self.compile_options())
        } else {
            self.load()?
        };
        if let Some(dag) = set.get(name) {
            let problems_elsewhere = set.diagnostics.iter().filter(|d| d.file != dag.file).count();
            return Ok(Picked { dag: dag.clone(), problems_elsewhere });
        }
        if let Some(file) =
            set.failed_ids.get(name).cloned().or_else(|| as_file.is_file().then(|| as_file.to_path_buf()))
        {
            let diagnostics = set.diagnostics.iter().filter(|d| d.file == file).cloned().collect();
            return Err(ProjectError::DoesNotCompile { name: name.to_string(), file, diagnostics });
        }
        Err(ProjectError::NoSuchDag {
            name: name.to_string(),
            dir: self.dags_dir.clone(),
            hint: crate::yaml::hint(name, set.dags.keys().map(String::as_str)),
        })
    }

    /// The lake root of the local backend.
    pub fn lake(&self) -> PathBuf {
        self.dir.join(&self.config.lake)
    }

    /// The local catalog.
    pub fn catalog(&self) -> PathBuf {
        self.dir.join(&self.config.catalog)
    }

    /// The streaming stage's folder of the local backend.
    pub fn streaming(&self) -> PathBuf {
        self.dir.join(&self.config.streaming)
    }

    /// The local streams, alerts database and notifications of the streaming stage.
    pub fn streaming_paths(&self) -> cartflow_streaming::pipeline::Paths {
        cartflow_streaming::pipeline::Paths::under(&self.streaming(), &self.lake())
    }

    /// The local backend's places.
    pub fn local_env(&self) -> LocalEnv {
        LocalEnv { lake: self.lake(), catalog: self.catalog(), streaming: self.streaming() }
    }

    /// The backend `backend` for this process: built once, handed to every task.
    pub async fn env(&self, backend: Backend) -> Result<Env, EnvError> {
        Env::build(backend, self.local_env(), &self.config.aws).await
    }

    /// The pools of `cartflow.yaml`, shared by every run of this process.
    pub fn pools(&self) -> Arc<Pools> {
        Arc::new(Pools::new(&self.config.pools))
    }

    /// How runs of this project execute on `env`: the one place execution options are made
    /// from the config. Callers set the selection, params and trigger.
    pub fn exec_options(&self, env: Env, trigger: Trigger) -> ExecOptions {
        ExecOptions {
            env,
            project_dir: self.dir.clone(),
            trigger,
            notify: Arc::new(self.config.notify.clone()),
            ..ExecOptions::default()
        }
    }
}
