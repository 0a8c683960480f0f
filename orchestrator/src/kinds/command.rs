//! `command`: runs a program with arguments, environment and working directory. Its stdout
//! and stderr go to the task log; the exit code decides. No shell is involved: arguments are
//! passed as they are, so rendered values cannot inject shell syntax (write `program: sh`,
//! `args: [-c, "..."]` when a shell is what you want).
//!
//! The program runs in its own process group. A timeout or cancel sends SIGTERM to the group,
//! then SIGKILL after a grace period; when the program exits, whatever it left running in its
//! group is killed too, so a task never leaks processes. Nor does a crash of cartflow: the
//! program dies with it (parent-death signal, on Linux), and the group is recorded with the
//! attempt, so that the process resuming the run kills what is left of it before the next
//! attempt starts (see [`crate::process`]). The same implementation serves both backends: on
//! `aws` the program runs where cartflow runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process;
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `command` kind.
#[derive(Debug)]
pub struct Command;

/// How long a program may take to exit after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Config of a `command` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program: a name looked up on PATH, or a path (relative to the project folder). Written
    /// in the DAG file it may be any path (`/bin/echo`: the DAG is code); with a placeholder the
    /// rendered path must stay inside the project, and no `{{ params.* }}` may choose it.
    pub program: Template,
    /// Arguments, each passed as one argv element (no shell).
    #[serde(default)]
    pub args: Vec<Template>,
    /// Extra environment variables (templates allowed in values).
    #[serde(default)]
    pub env: BTreeMap<String, Template>,
    /// Working directory, relative to the project folder (default: the project folder). Like
    /// `program`: any path as the DAG file writes it, inside the project when templated.
    #[serde(default)]
    pub working_dir: Option<Template>,
    /// Start from an empty environment (keeping PATH and HOME) instead of inheriting
    /// cartflow's.
    #[serde(default = "default_false")]
    pub clear_env: bool,
    /// An exit code that marks the task skipped instead of failed (like Airflow's
    /// `skip_on_exit_code`); downstream tasks follow their trigger rules.
    #[serde(default)]
    pub skip_exit_code: Option<i32>,
}

/// A path field as the DAG file writes it (trusted: the DAG is code, an absolute path is kept),
/// or, when it has a placeholder, rendered as a path that stays inside the project.
fn as_written_or_inside(t: &Template, ctx: &template::Context) -> Result<String, TemplateError> {
    if t.0.contains("{{") { ctx.render(t, Escaping::Path) } else { Ok(t.0.clone()) }
}

fn default_false() -> bool {
    false
}

/// A `command` config rendered for one run.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Whether the environment is cleared.
    pub clear_env: bool,
    /// Exit code that means skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_exit_code: Option<i32>,
}

impl Kind for Command {
    const NAME: &'static str = "command";
    const ABOUT: &'static str = "runs a program; its output goes to the task log, its exit code decides";
    type Config = CommandConfig;
    type Rendered = RenderedCommand;

    /// Every problem of the task at once: an empty `program` does not hide a param spliced
    /// into a shell script.
    fn validate(config: &CommandConfig, _env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        if config.program.0.trim().is_empty() {
            problems.push("`program` is empty".to_string());
        }
        // Which program runs is code: a param (anyone's text) may not decide it.
        if let Some(p) = template::parse(&config.program.0).ok().and_then(|pieces| {
            pieces.into_iter().find_map(|p| match p {
                template::Piece::Var { name, .. } if name.starts_with("params.") => Some(name.to_string()),
                _ => None,
            })
        }) {
            problems.push(format!(
                "`program`: `{{{{ {p} }}}}` would let a param choose the program that runs (name the program in the DAG and pass the param as an argument or in `env:`)"
            ));
        }
        if config.skip_exit_code == Some(0) {
            problems.push("`skip_exit_code` cannot be 0 (0 means success)".into());
        }
        // A name the environment cannot hold: the program would not start.
        for k in config.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                problems.push(format!(
                    "`env`: {k:?} is not an environment variable name (it must be non-empty, without `=` or NUL)"
                ));
            }
        }
        // A param is untrusted text (`-p`, the web UI, an EventBridge input): spliced into a
        // shell script it would run as code. The fixed variables may stand there: cartflow makes
        // them (dates and timestamps of digits, `-`, `:`, `+`, `T`; the DAG's and task's checked
        // ids; the run id made of both).
        let args: Vec<&str> = config.args.iter().map(|a| a.0.as_str()).collect();
        problems.extend(template::params_in_shell_script(&config.program.0, &args));
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &CommandConfig, ctx: &template::Context) -> Result<RenderedCommand, TemplateError> {
        Ok(RenderedCommand {
            program: as_written_or_inside(&c.program, ctx)?,
            args: c.args.iter().map(|a| ctx.render(a, Escaping::None)).collect::<Result<_, _>>()?,
            env: c
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), ctx.render(v, Escaping::None)?)))
                .collect::<Result<_, TemplateError>>()?,
            working_dir: c.working_dir.as_ref().map(|w| as_written_or_inside(w, ctx)).transpose()?,
            clear_env: c.clear_env,
            skip_exit_code: c.skip_exit_code,
        })
    }

    async fn run(r: RenderedCommand, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let program: PathBuf = if r.program.contains('/') && !r.program.starts_with('/') {
            ctx.project_dir.join(&r.program)
        } else {
            PathBuf::from(&r.program)
        };
        let cwd = match &r.working_dir {
            Some(w) => ctx.project_dir.join(w),
            None => ctx.project_dir.clone(),
        };
        let log = ctx
            .log
            .file()
            .ok_or_else(|| TaskFailure::new(format!("cannot open the task log {}", ctx.log.path().display())))?;
        let out = log.try_clone().map_err(|e| TaskFailure::new(format!("task log: {e}")))?;
        let err = log.try_clone().map_err(|e| TaskFailure::new(format!("task log: {e}")))?;
        ctx.log.line(format_args!("$ {} {}", r.program, shell_words(&r.args)));

        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&r.args).current_dir(&cwd).stdin(Stdio::null()).stdout(out).stderr(err);
        if r.clear_env {
            cmd.env_clear();
            for keep in ["PATH", "HOME"] {
                if let Ok(v) = std::env::var(keep) {
                    cmd.env(keep, v);
                }
            }
        }
        cmd.env("CARTFLOW_DAG_ID", &ctx.dag_id)
            .env("CARTFLOW_DS", ctx.interval.ds())
            .env("CARTFLOW_DATA_INTERVAL_START", ctx.interval.start_rfc3339())
            .env("CARTFLOW_DATA_INTERVAL_END", ctx.interval.end_rfc3339());
        cmd.envs(&r.env);
        // After `env:`, which cannot override them: they name the attempt for whoever takes the
        // run over after a crash (see `process::kill_leftover`).
        cmd.envs(process::attempt_env(&ctx.run_id, &ctx.task_id, ctx.attempt));

        let (mut child, guard) = process::spawn_group(cmd).await.map_err(|e| {
            TaskFailure::permanent(format!("cannot start `{}` in {}: {e}", program.display(), cwd.display()))
        })?;
        // Recorded before anything else can happen: a crash from here on leaves a group that
        // the next owner of the run can find and kill. Unrecorded, it could be orphaned.
        match guard.identity() {
            Some(group) => ctx.facts.record_group(ctx.attempt, group)?,
            None => ctx.log.line(format_args!(
                "process group {} not recorded (no /proc): a crash of cartflow would leave it running",
                guard.pgid()
            )),
        }

        let status = tokio::select! {
            status = child.wait() => status,
            () = ctx.cancel.cancelled() => {
                ctx.log.line("stopping: SIGTERM to the process group");
                process::signal_group(guard.pgid(), process::SIGTERM);
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    ctx.log.line(format_args!("still running after {GRACE:?}: SIGKILL"));
                }
                drop(guard);
                let _ = child.wait().await;
                return Err(TaskFailure::new("stopped"));
            }
        };
        drop(guard); // kills anything the program left behind in its group
        let status = status.map_err(|e| TaskFailure::new(format!("waiting for `{}`: {e}", r.program)))?;
        match status.code() {
            Some(0) => Ok(TaskOutput { exit_code: Some(0), ..TaskOutput::default() }),
            Some(code) if Some(code) == r.skip_exit_code => {
                ctx.log.line(format_args!("exit code {code}: task skipped"));
                Ok(TaskOutput { exit_code: Some(code), skipped: true, ..TaskOutput::default() })
            }
            Some(code) => Err(TaskFailure {
                exit_code: Some(code),
                ..TaskFailure::new(format!("`{}` exited with code {code}", r.program))
            }),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let sig = status.signal().unwrap_or(0);
                Err(TaskFailure::new(format!("`{}` was killed by signal {sig}", r.program)))
            }
        }
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
