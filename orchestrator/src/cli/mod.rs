//! Command-line interface: one module per command, each owning its arguments and its handler.
//! Handlers parse, call the library (the engine, or a flow of [`cartflow::flows`]) and print
//! what it reports; none calls another. What they share is here: the global options, the
//! project, the runtime and signal handling, value parsers, and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cartflow::env::Backend;
use cartflow::flows::FlowError;
use cartflow::project::{Project, ProjectError};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

mod alerts;
mod backfill;
mod cancel;
mod catalog;
mod dashboard;
mod demo;
mod generate;
mod ingest;
mod kinds;
mod logs;
mod mark;
mod pause;
mod plan;
mod produce;
mod progress;
mod reprocess;
mod run;
mod runs;
mod scheduler;
mod schedules;
mod sql;
mod state;
mod streaming;
mod table;
mod tasks;
mod ui;
mod validate;

const EXAMPLES: &str = "\
Examples:
  cartflow generate --days 7 --events-per-day 1000000 --format raw --out .cartflow/lake
  cartflow validate                          check every DAG under dags/
  cartflow plan example_etl --date 2019-10-01
  cartflow run example_etl --date 2019-10-01
  cartflow run example_etl --date 2019-10-01 --task transform --downstream
  cartflow backfill example_etl --from 2019-10-01 --to 2019-10-07 --max-active-runs 2
  cartflow backfill example_etl --from 2019-10-01 --to 2019-10-07 --reprocess failed --dry-run
  cartflow scheduler --once                  run what is due now, then exit (cron, EventBridge)
  cartflow runs example_etl
  cartflow tasks example_etl@2019-10-01T00:00:00Z
  cartflow logs example_etl@2019-10-01T00:00:00Z extract
  cartflow state export -o history.jsonl     then: cartflow --state dynamodb://TABLE state import history.jsonl
  cartflow ui                                the web UI on http://127.0.0.1:8787/";

/// cartflow: YAML DAGs for batch ETL, on your laptop or on AWS.
#[derive(Debug, Parser)]
#[command(name = "cartflow", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub struct Global {
    /// The DAGs folder [default: `dags` from cartflow.yaml, else ./dags].
    #[arg(long, global = true, env = "CARTFLOW_DAGS")]
    pub dags: Option<PathBuf>,
    /// The run store: a SQLite file, or `dynamodb://TABLE` (the aws backend's table) [default:
    /// `state` from cartflow.yaml, else .cartflow/state.db].
    #[arg(long, global = true, env = "CARTFLOW_STATE")]
    pub state: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logs (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Fewer logs (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile DAG files and report every problem (exit 2 if there are any).
    Validate(validate::Args),
    /// Show the tasks of one interval in order, with their rendered configs; runs nothing.
    Plan(plan::Args),
    /// Run one interval of a DAG (resuming it if it ran before).
    Run(run::Args),
    /// Run every complete interval of a date range (one run per interval).
    Backfill(backfill::Args),
    /// Create and run the due runs of every scheduled DAG (until Ctrl-C, or once).
    Scheduler(scheduler::Args),
    /// EventBridge rules for scheduled DAGs.
    #[command(subcommand)]
    Schedules(schedules::Cmd),
    /// The local catalog (the Glue Data Catalog's twin): tables, schemas, partitions.
    #[command(subcommand)]
    Catalog(catalog::Cmd),
    /// Run one read-only SELECT over the catalog's tables (DataFusion, or Athena with --backend
    /// aws): the rows, the bytes scanned and the time; saved queries in queries/.
    Sql(sql::Args),
    /// List DAG runs, newest first.
    Runs(runs::Args),
    /// Show the task instances of a run.
    Tasks(tasks::Args),
    /// Mark a finished task instance success or skipped by hand (recorded with who and when).
    Mark(mark::Args),
    /// Cancel a run another process is running (the scheduler, a run or backfill elsewhere):
    /// it stops within 5 s, as on Ctrl-C there (recorded with who and when).
    Cancel(cancel::Args),
    /// Pause a DAG: the scheduler creates no runs of it until it is unpaused.
    Pause(pause::Args),
    /// Unpause a DAG.
    Unpause(pause::Args),
    /// Print the log of a task attempt.
    Logs(logs::Args),
    /// List the task kinds.
    Kinds,
    /// Generate realistic synthetic events (Kaggle CSV, or the raw zone as Firehose writes it).
    Generate(generate::GenerateArgs),
    /// The whole platform in one command: generate a week of events (or ingest --input), run
    /// the daily DAG over it, write the dashboard, and say where everything is.
    Demo(demo::Args),
    /// Write the HTML dashboard from the insight tables.
    Dashboard(dashboard::Args),
    /// The real-time stage: the Flink SQL of the rules, or a consumer run over the local streams.
    #[command(subcommand)]
    Streaming(streaming::Cmd),
    /// Feed stream1: replay a Kaggle file or generated events (the seed's simulator).
    Produce(produce::Args),
    /// List the alerts (the alerts table: DynamoDB's local twin).
    Alerts(alerts::Args),
    /// Re-run a stage over the raw archive after a fix (e.g. the detector after a Flink bug),
    /// replace its output for those days, and re-run what depends on it.
    Reprocess(reprocess::Args),
    /// Replay Kaggle CSV files (.csv, .csv.gz, .csv.zip) into the raw zone, as Firehose would
    /// have archived them; re-ingesting a file replaces its earlier objects.
    Ingest(ingest::Args),
    /// Move run history between run stores (SQLite ↔ DynamoDB): export, import.
    #[command(subcommand)]
    State(state::Cmd),
    /// The web UI: DAGs, the grid of runs, runs, logs, reruns and backfills (127.0.0.1:8787).
    Ui(ui::Args),
}

/// `--backend`: where tasks run.
#[derive(Debug, Clone, Copy, Args)]
pub struct BackendArg {
    /// Where tasks run.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
}

/// `-p NAME=VALUE`: DAG param overrides.
#[derive(Debug, Clone, Args)]
pub struct ParamArgs {
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
}

/// `--task` and `--downstream`: which tasks of each interval run.
#[derive(Debug, Clone, Args)]
pub struct TaskSelection {
    /// Run only these tasks of each interval (repeatable).
    #[arg(long = "task")]
    pub tasks: Vec<String>,
    /// With --task: also run everything downstream of them.
    #[arg(long, requires = "tasks")]
    pub downstream: bool,
}

/// `--max-active-runs`: 1 to 256 runs at once.
pub fn parse_runs_at_once(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a number of runs from 1 to 256")),
    }
}

/// `--tick`: how often the scheduler looks, at least 10ms (0s would spin a core).
pub fn parse_tick(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        Err(format!("`{s}` is shorter than 10ms (it would spin a core)"))
    } else {
        Ok(d)
    }
}

/// A duration like `1s`, `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    cartflow::duration::HumanDuration::parse(s)
}

/// `NAME=VALUE`: a value is untrusted input, at most [`template::MAX_PARAM_BYTES`] long.
///
/// [`template::MAX_PARAM_BYTES`]: cartflow::template::MAX_PARAM_BYTES
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    let max = cartflow::template::MAX_PARAM_BYTES;
    let (k, v) = s.split_once('=').ok_or_else(|| {
        let shown: String = s.chars().take(60).collect();
        format!("expected NAME=VALUE, got `{shown}`")
    })?;
    if k.is_empty() {
        return Err("expected NAME=VALUE: the name is empty".into());
    }
    if v.len() > max {
        return Err(format!(
            "the value of `{k}` is {} bytes long; a param value may have at most {max} bytes",
            v.len()
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// A calendar day, `YYYY-MM-DD`: the one date parser of every date flag.
pub fn parse_day(s: &str) -> Result<chrono::NaiveDate, String> {
    cartflow::schedule::parse_ymd(s).ok_or_else(|| format!("{s} is not a date (YYYY-MM-DD, years 0001 to 9999)"))
}

pub use cartflow::schedule::ymd as day;

/// Days since 1970-01-01 of a calendar day.
pub fn epoch_day(d: chrono::NaiveDate) -> i64 {
    d.signed_duration_since(chrono::NaiveDate::default()).num_days()
}

/// A usage or config error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Exit code for an error that ended a command: 2 for usage and config errors, 130 for a
/// cancel, 1 otherwise.
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<FlowError>().is_some_and(|f| matches!(f.root(), FlowError::Cancelled)) {
        return ExitCode::from(130);
    }
    let usage = e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<cartflow::config::ConfigError>().is_some()
        || e.downcast_ref::<ProjectError>().is_some_and(ProjectError::is_usage)
        || e.downcast_ref::<cartflow::env::EnvError>().is_some()
        || e.downcast_ref::<FlowError>().is_some_and(FlowError::is_usage)
        || e.downcast_ref::<cartflow::engine::executor::ExecError>().is_some_and(|x| x.is_usage());
    if usage { ExitCode::from(2) } else { ExitCode::from(1) }
}

/// Prints the error that ended a command — a DAG's compile problems first, each as
/// `file:line:col: error: …` — and returns its exit code.
pub fn report_error(e: &anyhow::Error) -> ExitCode {
    let project =
        e.downcast_ref::<ProjectError>().or_else(|| e.downcast_ref::<FlowError>().and_then(|f| f.project_error()));
    for d in project.map(ProjectError::diagnostics).unwrap_or_default() {
        eprintln!("{d}");
    }
    eprintln!("error: {}", chain_text(e));
    exit_code_for(e)
}

/// The error and its causes as one line (what `{:#}` prints), each cause once: an error whose
/// message already ends with its cause's (`writing X: No such file or directory (os error 2)`
/// over the `io::Error` it wraps) does not print the cause again.
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.ends_with(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// A usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Sets up tracing on stderr.
pub fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet {
        "warn"
    } else {
        match g.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("CARTFLOW_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).compact().init(),
    }
}

/// The project in the current folder, with the global overrides.
fn open_project(g: &Global) -> anyhow::Result<Project> {
    let dir = std::env::current_dir().context("reading the current folder")?;
    Ok(Project::open(dir, g.dags.clone(), g.state.clone())?)
}

/// Picks a DAG of the project; its own compile errors are fatal (printed by
/// [`report_error`]), those of other files a warning.
pub fn pick_dag(p: &Project, name: &str) -> anyhow::Result<std::sync::Arc<cartflow::dag::Dag>> {
    let picked = p.dag(name)?;
    if picked.problems_elsewhere > 0 {
        eprintln!("warning: {}", cartflow::flows::problems_elsewhere(picked.problems_elsewhere));
    }
    Ok(picked.dag)
}

/// The async runtime of a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Runs `f` on a fresh runtime with the signal handler installed: the first Ctrl-C / SIGTERM
/// cancels the token `f` gets, the second kills every process group and exits.
pub fn with_signals<T, F>(f: impl FnOnce(CancellationToken) -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = T>,
{
    let rt = runtime()?;
    Ok(rt.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        f(cancel).await
    }))
}

/// First Ctrl-C / SIGTERM: cancel the run. Second: kill every process group and exit.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut count = 0;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { if r.is_err() { return; } }
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!(
                    "cancelling: no new tasks start, running tasks are stopped (press Ctrl-C again to exit at once)"
                );
                cancel.cancel();
            } else {
                cartflow::process::kill_all_groups();
                eprintln!("exiting at once");
                std::process::exit(130);
            }
        }
    });
}

/// Runs a command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let mut p = open_project(g)?;
    match cli.command {
        Command::Validate(a) => validate::run(&p, a),
        Command::Plan(a) => plan::run(&p, a),
        Command::Run(a) => run::run(&p, a, g),
        Command::Backfill(a) => backfill::run(&p, a, g),
        Command::Scheduler(a) => scheduler::run(&p, a),
        Command::Schedules(cmd) => schedules::run(&p, cmd),
        Command::Runs(a) => runs::run(&p, a),
        Command::Tasks(a) => tasks::run(&p, a),
        Command::Mark(a) => mark::run(&p, a),
        Command::Cancel(a) => cancel::run(&p, a),
        Command::Pause(a) => pause::run(&p, a, true),
        Command::Unpause(a) => pause::run(&p, a, false),
        Command::Logs(a) => logs::run(&p, a),
        Command::Generate(a) => generate::run(a),
        Command::Demo(a) => demo::run(&mut p, a, g),
        Command::Dashboard(a) => dashboard::run(&p, a),
        Command::Ingest(a) => ingest::run(&p, a),
        Command::Catalog(cmd) => catalog::run(&p, cmd),
        Command::Sql(a) => sql::run(&p, a),
        Command::Streaming(cmd) => streaming::run(&p, cmd),
        Command::Produce(a) => produce::run(&p, a),
        Command::Alerts(a) => alerts::run(&p, a),
        Command::Reprocess(a) => reprocess::run(&p, a, g),
        Command::Kinds => kinds::run(),
        Command::State(cmd) => state::run(&p, cmd),
        Command::Ui(a) => ui::run(&p, a),
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("writing {path}: {source}")]
    struct Wrapping {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        // A message that repeats its cause, under a context that repeats both.
        let e = anyhow::Error::new(Wrapping { path: "x".into(), source: io() });
        assert_eq!(super::chain_text(&e), format!("writing x: {}", io()));
        let e = e.context("ingest");
        assert_eq!(super::chain_text(&e), format!("ingest: writing x: {}", io()));
        // A cause the message does not say is said.
        let e = anyhow::Error::new(io()).context("reading y");
        assert_eq!(super::chain_text(&e), format!("reading y: {}", io()));
    }
}
