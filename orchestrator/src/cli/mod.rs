//! Command-line interface: argument definitions and one function per command.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use cartflow::backfill::{self, Reprocess};
use cartflow::config::ProjectConfig;
use cartflow::dag::compile::{CompileOptions, compile_dir, compile_files, summary};
use cartflow::dag::{Dag, DagSet};
use cartflow::executor::{self, Event, ExecOptions, Pools, RunReport};
use cartflow::kinds::{Backend, REGISTRY};
use cartflow::schedule;
use cartflow::state::{RunState, TaskState, Trigger};
use cartflow::store::RunStore;
use cartflow::template;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

mod demo;
mod generate;
mod streaming;
mod table;

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
  cartflow logs example_etl@2019-10-01T00:00:00Z extract";

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
    /// The run store (SQLite) [default: .cartflow/state.db].
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
    Validate {
        /// Files or folders [default: the DAGs folder].
        paths: Vec<PathBuf>,
    },
    /// Show the tasks of one interval in order, with their rendered configs; runs nothing.
    Plan {
        /// DAG id (or the path of its file).
        dag: String,
        /// The logical date: YYYY-MM-DD, YYYY-MM-DDTHH:MM, or RFC 3339.
        #[arg(long)]
        date: String,
        /// Override a param: NAME=VALUE (repeatable).
        #[arg(short = 'p', long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    /// Run one interval of a DAG (resuming it if it ran before).
    Run(RunArgs),
    /// Run every complete interval of a date range (one run per interval).
    Backfill(BackfillArgs),
    /// Create and run the due runs of every scheduled DAG (until Ctrl-C, or once).
    Scheduler {
        /// Run what is due now, wait for it, and exit (for cron or an EventBridge target).
        #[arg(long)]
        once: bool,
        /// Where tasks run.
        #[arg(long, value_enum, default_value_t = Backend::Local)]
        backend: Backend,
        /// How often to look for due runs and changed DAG files.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        tick: Duration,
        /// Only these DAGs (repeatable; what an EventBridge rule passes).
        #[arg(long = "dag")]
        dags: Vec<String>,
    },
    /// EventBridge rules for scheduled DAGs.
    #[command(subcommand)]
    Schedules(SchedulesCmd),
    /// The local catalog (the Glue Data Catalog's twin): tables, schemas, partitions.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// List DAG runs, newest first.
    Runs {
        /// Only this DAG.
        dag: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show the task instances of a run.
    Tasks {
        /// The run id (see `cartflow runs`).
        run_id: String,
    },
    /// Print the log of a task attempt.
    Logs {
        /// The run id.
        run_id: String,
        /// The task.
        task: String,
        /// The attempt [default: the last].
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// List the task kinds.
    Kinds,
    /// Generate realistic synthetic events (Kaggle CSV, or the raw zone as Firehose writes it).
    Generate(generate::GenerateArgs),
    /// The whole platform in one command: generate a week of events (or ingest --input), run
    /// the daily DAG over it, write the dashboard, and say where everything is.
    Demo(demo::DemoArgs),
    /// Write the HTML dashboard from the insight tables.
    Dashboard(demo::DashboardArgs),
    /// The real-time stage: the Flink SQL of the rules, or a consumer run over the local streams.
    #[command(subcommand)]
    Streaming(streaming::StreamingCmd),
    /// Feed stream1: replay a Kaggle file or generated events (the seed's simulator).
    Produce(streaming::ProduceArgs),
    /// List the alerts (the alerts table: DynamoDB's local twin).
    Alerts(streaming::AlertsArgs),
    /// Re-run a stage over the raw archive after a fix (e.g. the detector after a Flink bug),
    /// replace its output for those days, and re-run what depends on it.
    Reprocess(streaming::ReprocessArgs),
    /// Replay Kaggle CSV files (.csv, .csv.gz, .csv.zip) into the raw zone, as Firehose would
    /// have archived them; re-ingesting a file replaces its earlier objects.
    Ingest {
        /// The files, as downloaded from Kaggle.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The lake folder [default: the project's lake].
        #[arg(long)]
        lake: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// DAG id (or the path of its file).
    dag: String,
    /// The logical date: YYYY-MM-DD, YYYY-MM-DDTHH:MM, or RFC 3339.
    #[arg(long)]
    date: String,
    /// Run only these tasks (repeatable).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// With --task: also run everything downstream of them.
    #[arg(long, requires = "tasks")]
    downstream: bool,
    /// Require an earlier run of this interval to resume (error if there is none).
    #[arg(long, conflicts_with = "rerun")]
    resume: bool,
    /// Run again tasks that already succeeded.
    #[arg(long)]
    rerun: bool,
    /// Where tasks run.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_parser = parse_kv)]
    params: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// List the tables.
    Ls,
    /// Show a table: location, format, columns with Glue types, partition keys, versions.
    Show {
        /// `database.table`, or `table` in the `ecommerce` database.
        table: String,
    },
    /// List the partitions of a table.
    Partitions {
        /// `database.table`, or `table` in the `ecommerce` database.
        table: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// Create, update and delete one EventBridge rule per scheduled DAG (idempotent).
    Sync {
        /// Must be `aws`: the local backend schedules with `cartflow scheduler`.
        #[arg(long, value_enum, default_value_t = Backend::Local)]
        backend: Backend,
        /// Print the diff and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// DAG id (or the path of its file).
    dag: String,
    /// First date (or date-time) of the range, in the DAG's timezone.
    #[arg(long)]
    from: String,
    /// Last date of the range, inclusive (a date-time is inclusive too).
    #[arg(long)]
    to: String,
    /// Which intervals that already have a run are run again.
    #[arg(long, value_enum, default_value_t = Reprocess::None)]
    reprocess: Reprocess,
    /// Runs at once [default: the DAG's max_active_runs].
    #[arg(long)]
    max_active_runs: Option<usize>,
    /// Newest interval first.
    #[arg(long)]
    reverse: bool,
    /// Print the plan and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run only these tasks in each interval (repeatable).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// With --task: also everything downstream of them.
    #[arg(long, requires = "tasks")]
    downstream: bool,
    /// Where tasks run.
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// Override a param: NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_parser = parse_kv)]
    params: Vec<(String, String)>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    cartflow::dag::HumanDuration::parse(s)
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got `{s}`"))
}

/// A usage or config error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Exit code for an error that ended a command.
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<UsageError>().is_some() || e.downcast_ref::<cartflow::config::ConfigError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
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

struct Project {
    dir: PathBuf,
    config: ProjectConfig,
    dags_dir: PathBuf,
    state: PathBuf,
}

impl Project {
    fn resolve(g: &Global) -> anyhow::Result<Project> {
        let dir = std::env::current_dir().context("reading the current folder")?;
        let config = ProjectConfig::load(&dir)?;
        let dags_dir = g.dags.clone().unwrap_or_else(|| config.dags.clone());
        let state = g.state.clone().unwrap_or_else(|| config.state.clone());
        Ok(Project { dir, config, dags_dir, state })
    }

    fn compile_options(&self) -> CompileOptions {
        CompileOptions { pools: Some(self.config.pools.keys().cloned().collect()), project_dir: Some(self.dir.clone()) }
    }

    fn load(&self) -> anyhow::Result<DagSet> {
        if !self.dags_dir.is_dir() {
            return Err(usage(format!(
                "DAGs folder {} does not exist (use --dags DIR or set `dags:` in cartflow.yaml)",
                self.dags_dir.display()
            )));
        }
        compile_dir(&self.dags_dir, &self.compile_options())
            .with_context(|| format!("reading {}", self.dags_dir.display()))
    }

    /// Loads the DAGs and picks one; its own compile errors are fatal, others are a warning.
    fn dag(&self, name: &str) -> anyhow::Result<Arc<Dag>> {
        let as_file = Path::new(name);
        let set = if as_file.is_file() {
            compile_files(&[as_file.to_path_buf()], &self.compile_options())
        } else {
            self.load()?
        };
        if let Some(dag) = set.get(name) {
            let others = set.diagnostics.iter().filter(|d| d.file != dag.file).count();
            if others > 0 {
                eprintln!("warning: {others} problem(s) in other DAG files (see `cartflow validate`)");
            }
            return Ok(dag.clone());
        }
        if let Some(file) =
            set.failed_ids.get(name).cloned().or_else(|| as_file.is_file().then(|| as_file.to_path_buf()))
        {
            for d in set.diagnostics.iter().filter(|d| d.file == file) {
                eprintln!("{d}");
            }
            return Err(usage(format!("DAG `{name}` does not compile ({})", file.display())));
        }
        let hint = cartflow::yaml::did_you_mean(name, set.dags.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Err(usage(format!("no DAG `{name}` in {}{hint}", self.dags_dir.display())))
    }
}

/// Runs a command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut project = Project::resolve(&cli.global)?;
    match cli.command {
        Command::Validate { paths } => validate(&project, &paths),
        Command::Plan { dag, date, params } => plan(&project, &dag, &date, params),
        Command::Run(args) => run(&project, args, &cli.global),
        Command::Backfill(args) => backfill(&project, args, &cli.global),
        Command::Scheduler { once, backend, tick, dags } => scheduler(&project, once, backend, tick, dags),
        Command::Schedules(SchedulesCmd::Sync { backend, dry_run }) => schedules_sync(&project, backend, dry_run),
        Command::Runs { dag, limit } => runs(&project, dag.as_deref(), limit),
        Command::Tasks { run_id } => tasks(&project, &run_id),
        Command::Logs { run_id, task, attempt } => logs(&project, &run_id, &task, attempt),
        Command::Generate(args) => generate::run(args),
        Command::Demo(args) => demo::demo(&mut project, args, &cli.global),
        Command::Dashboard(args) => demo::dashboard(&project, args),
        Command::Ingest { files, lake } => {
            generate::ingest(&files, &lake.unwrap_or_else(|| project.dir.join(&project.config.lake)))
        }
        Command::Catalog(cmd) => catalog(&project, cmd),
        Command::Streaming(cmd) => streaming::streaming(&project, cmd),
        Command::Produce(args) => streaming::produce(&project, args),
        Command::Alerts(args) => streaming::alerts(&project, args),
        Command::Reprocess(args) => streaming::reprocess(&project, args, &cli.global),
        Command::Kinds => {
            for k in REGISTRY {
                println!("{:<19} {}", k.name, k.about);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(p: &Project, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let set = if paths.is_empty() {
        p.load()?
    } else {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let s = compile_dir(path, &CompileOptions::default())?;
                files.extend(s.files);
            } else if path.exists() {
                files.push(path.clone());
            } else {
                return Err(usage(format!("{} does not exist", path.display())));
            }
        }
        compile_files(&files, &p.compile_options())
    };
    for d in &set.diagnostics {
        eprintln!("{d}");
    }
    if set.diagnostics.is_empty() {
        println!("ok: {}", summary(&set));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("failed: {}", summary(&set));
        Ok(ExitCode::from(2))
    }
}

fn interval_for(dag: &Dag, date: &str) -> anyhow::Result<schedule::DataInterval> {
    let t = schedule::parse_date_arg(date, dag.timezone).map_err(usage)?;
    dag.schedule.interval_starting_at_or_after(t, dag.timezone).ok_or_else(|| {
        usage(format!("schedule `{}` of DAG `{}` has no interval at or after {date}", dag.schedule, dag.id))
    })
}

fn merged_params(dag: &Dag, overrides: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut params = dag.params.clone();
    for (k, v) in overrides {
        if !dag.params.contains_key(&k) {
            let hint = cartflow::yaml::did_you_mean(&k, dag.params.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(usage(format!("DAG `{}` declares no param `{k}`{hint}", dag.id)));
        }
        params.insert(k, v);
    }
    Ok(params)
}

fn plan(p: &Project, name: &str, date: &str, overrides: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    let dag = p.dag(name)?;
    let interval = interval_for(&dag, date)?;
    let params = merged_params(&dag, overrides)?;
    let run_id = cartflow::store::run_id(&dag.id, interval.start);
    let ctx = template::Context::new(&dag.id, &run_id, &interval, &params);
    println!("DAG {} ({} tasks) · schedule {} · timezone {}", dag.id, dag.tasks.len(), dag.schedule, dag.timezone);
    println!(
        "interval [{}, {}) · ds {} · run {}",
        interval.start_rfc3339(),
        interval.end_rfc3339(),
        interval.ds(),
        run_id
    );
    for (n, t) in dag.tasks.iter().enumerate() {
        let ups: Vec<&str> = t.upstream.iter().map(|&u| dag.tasks[u].id.as_str()).collect();
        println!();
        println!(
            "{}. {} [{}] after: {} · trigger: {} · retries: {} · timeout: {} · pool: {}",
            n + 1,
            t.id,
            t.kind(),
            if ups.is_empty() { "-".to_string() } else { ups.join(", ") },
            t.trigger_rule,
            t.retry.retries,
            t.timeout.map(executor::humanize).unwrap_or_else(|| "-".into()),
            t.pool.as_deref().unwrap_or("-"),
        );
        match t.config.render_json(&ctx.for_task(&t.id)) {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                for line in text.lines() {
                    println!("   {line}");
                }
            }
            Err(e) => println!("   cannot render: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_tasks(dag: &Dag, tasks: &[String]) -> anyhow::Result<()> {
    if let Some(bad) = tasks.iter().find(|t| dag.task_index(t).is_none()) {
        let hint = cartflow::yaml::did_you_mean(bad, dag.tasks.iter().map(|t| t.id.as_str()))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(usage(format!("DAG `{}` has no task `{bad}`{hint}", dag.id)));
    }
    Ok(())
}

/// `--to`: a date means the whole day (exclusive bound at the next local midnight); a
/// date-time is inclusive.
fn range_end(arg: &str, dag: &Dag) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(arg, "%Y-%m-%d") {
        let next = d.succ_opt().ok_or_else(|| usage(format!("--to {arg} is out of range")))?;
        return Ok(schedule::local_midnight(next, dag.timezone));
    }
    Ok(schedule::parse_date_arg(arg, dag.timezone).map_err(usage)? + chrono::Duration::seconds(1))
}

fn backfill(p: &Project, a: BackfillArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let dag = p.dag(&a.dag)?;
    check_tasks(&dag, &a.tasks)?;
    let params = merged_params(&dag, a.params)?;
    let from = schedule::parse_date_arg(&a.from, dag.timezone).map_err(usage)?;
    let to = range_end(&a.to, &dag)?;
    if to <= from {
        return Err(usage(format!("--to {} is before --from {}", a.to, a.from)));
    }
    let req = backfill::Request { dag: &dag, from, to, mode: a.reprocess, tasks: &a.tasks, downstream: a.downstream };
    let store = RunStore::open(&p.state)?;
    let plan = backfill::plan_request(&store, &req, cartflow::clock::now(), a.reverse)?;
    drop(store);
    let to_run = plan.items.iter().filter(|i| i.action.runs()).count();
    println!(
        "backfill {} from {} to {} (reprocess: {}): {} interval(s), {} to run, {} skipped{}",
        dag.id,
        a.from,
        a.to,
        a.reprocess,
        plan.items.len(),
        to_run,
        plan.items.len() - to_run,
        if plan.incomplete > 0 {
            format!(", {} not complete yet (not planned)", plan.incomplete)
        } else {
            String::new()
        }
    );
    if let Some(job) = &plan.continues {
        println!("continuing backfill job {job}, which did not finish");
    }
    if a.dry_run {
        let mut t = table::new(&["ds", "interval start", "run id", "action"]);
        for i in &plan.items {
            t.add_row(vec![i.interval.ds(), i.interval.start_rfc3339(), i.run_id.clone(), i.action.name()]);
        }
        println!("{t}");
        println!("dry run: nothing was run");
        return Ok(ExitCode::SUCCESS);
    }
    let max_active = a.max_active_runs.unwrap_or(dag.max_active_runs as usize).max(1);
    let opts = ExecOptions {
        backend: a.backend,
        project_dir: p.dir.clone(),
        params,
        tasks: a.tasks.clone(),
        downstream: a.downstream,
        rerun: false,
        require_existing: false,
        trigger: Trigger::Backfill,
        lake: p.config.lake.clone(),
        catalog: p.config.catalog.clone(),
        aws: p.config.aws.clone(),
        streaming: p.config.streaming.clone(),
    };
    let pools = Arc::new(Pools::new(&p.config.pools));
    let bar = progress_bar(g, to_run as u64, &dag.id, "intervals ");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let mut failed = 0u64;
    let outcomes = rt.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        backfill::execute(dag.clone(), &req, plan, &p.state, pools, opts, max_active, cancel, &mut |o| {
            if o.planned.action.runs() {
                bar.inc(1);
                if o.state != Some(RunState::Success) {
                    failed += 1;
                }
                bar.set_message(format!("· failed {failed}"));
            }
        })
        .await
    })?;
    bar.finish_and_clear();
    let mut t = table::new(&["ds", "action", "state", "duration", "failed tasks"]);
    let mut bad = 0;
    for o in &outcomes {
        let state = match (&o.state, &o.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => table::clip(e, 60),
            (None, None) => "-".into(),
        };
        if o.planned.action.runs() && o.state != Some(RunState::Success) {
            bad += 1;
        }
        t.add_row(vec![
            o.planned.interval.ds(),
            o.planned.action.name(),
            state,
            o.elapsed.map(executor::humanize).unwrap_or_default(),
            o.failed_tasks.join(", "),
        ]);
    }
    println!("{t}");
    let ran = outcomes.iter().filter(|o| o.planned.action.runs()).count();
    println!("backfill {}: {} run(s), {} succeeded, {} not successful", dag.id, ran, ran - bad, bad);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The database a bare table name belongs to.
const DEFAULT_DATABASE: &str = "ecommerce";

fn catalog(p: &Project, cmd: CatalogCmd) -> anyhow::Result<ExitCode> {
    use cartflow_jobs::catalog::Catalog;
    let path = p.dir.join(&p.config.catalog);
    if !path.exists() {
        return Err(usage(format!("no catalog at {} yet: run a crawler (or the demo) first", path.display())));
    }
    let cat = Catalog::open(&path)?;
    let missing = |t: &str| usage(format!("no table `{t}` in the catalog (see `cartflow catalog ls`)"));
    match cmd {
        CatalogCmd::Ls => {
            let mut t =
                table::new(&["table", "format", "columns", "partition keys", "partitions", "version", "location"]);
            for tb in cat.tables()? {
                let parts = cat.partitions(&tb.qualified(), "")?.len();
                t.add_row(vec![
                    tb.qualified(),
                    tb.format.clone(),
                    tb.columns.len().to_string(),
                    tb.partition_keys.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", "),
                    parts.to_string(),
                    tb.version.to_string(),
                    tb.location.clone(),
                ]);
            }
            println!("{t}");
        }
        CatalogCmd::Show { table: name } => {
            let tb = cat.table(&name, DEFAULT_DATABASE)?.ok_or_else(|| missing(&name))?;
            println!("table {} · {} · version {} · location {}", tb.qualified(), tb.format, tb.version, tb.location);
            let mut t = table::new(&["column", "type", "partition key"]);
            for c in &tb.columns {
                t.add_row(vec![c.name.clone(), c.glue_type.clone(), String::new()]);
            }
            for c in &tb.partition_keys {
                t.add_row(vec![c.name.clone(), c.glue_type.clone(), "yes".into()]);
            }
            println!("{t}");
            for (k, v) in &tb.parameters {
                println!("{k} = {v}");
            }
            let versions = cat.versions(&name, DEFAULT_DATABASE)?;
            println!("versions: {}", versions.iter().map(|(v, l)| format!("{v} ({l})")).collect::<Vec<_>>().join(", "));
        }
        CatalogCmd::Partitions { table: name } => {
            let tb = cat.table(&name, DEFAULT_DATABASE)?.ok_or_else(|| missing(&name))?;
            let mut t = table::new(&["partition", "location"]);
            for part in cat.partitions(&name, DEFAULT_DATABASE)? {
                t.add_row(vec![part.spec(&tb.partition_keys), part.location]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedules_sync(p: &Project, backend: Backend, dry_run: bool) -> anyhow::Result<ExitCode> {
    use cartflow::schedules_sync::{Change, desired_rules, plan_sync};
    if backend != Backend::Aws {
        return Err(usage(
            "EventBridge rules exist only with `--backend aws`; on the local backend, run `cartflow scheduler`",
        ));
    }
    let Some(cfg) = p.config.eventbridge.clone() else {
        return Err(usage(
            "cartflow.yaml has no `eventbridge:` section; add one, e.g.\n\neventbridge:\n  rule_prefix: cartflow-\n  target:\n    arn: arn:aws:lambda:REGION:ACCOUNT:function:cartflow-runner",
        ));
    };
    let set = p.load()?;
    if !set.diagnostics.is_empty() {
        for d in &set.diagnostics {
            eprintln!("{d}");
        }
        return Err(usage(format!(
            "{} problem(s) in the DAG files: fix them first (nothing was changed, so that no rule of a broken DAG is deleted)",
            set.diagnostics.len()
        )));
    }
    let (desired, errors) = desired_rules(set.dags.values().map(|d| d.as_ref()), &cfg);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(usage(format!("{} DAG(s) cannot be scheduled by EventBridge; nothing was changed", errors.len())));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let changes = rt.block_on(async {
        let client = cartflow::aws::eventbridge::client().await;
        let current = cartflow::aws::eventbridge::list_rules(&client, &cfg).await?;
        let changes = plan_sync(&desired, &current, &cfg.target);
        if !dry_run {
            cartflow::aws::eventbridge::apply(&client, &cfg, &changes).await?;
        }
        Ok::<_, cartflow::aws::AwsError>(changes)
    })?;
    for c in &changes {
        println!("{c}");
    }
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    println!(
        "{}{} to create, {} to update, {} to delete, {} unchanged",
        if dry_run { "dry run: " } else { "" },
        count(|c| matches!(c, Change::Create(_))),
        count(|c| matches!(c, Change::Update(..))),
        count(|c| matches!(c, Change::Delete(_))),
        count(|c| matches!(c, Change::Unchanged(_))),
    );
    Ok(ExitCode::SUCCESS)
}

fn scheduler(p: &Project, once: bool, backend: Backend, tick: Duration, only: Vec<String>) -> anyhow::Result<ExitCode> {
    if !p.dags_dir.is_dir() {
        return Err(usage(format!("DAGs folder {} does not exist", p.dags_dir.display())));
    }
    for id in &only {
        p.dag(id)?;
    }
    let cfg = cartflow::scheduler::Config {
        only,
        dags_dir: p.dags_dir.clone(),
        state_path: p.state.clone(),
        exec: ExecOptions {
            backend,
            project_dir: p.dir.clone(),
            lake: p.config.lake.clone(),
            catalog: p.config.catalog.clone(),
            aws: p.config.aws.clone(),
            streaming: p.config.streaming.clone(),
            ..ExecOptions::default()
        },
        compile: p.compile_options(),
        pools: Arc::new(Pools::new(&p.config.pools)),
        tick,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let summary = rt.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        cartflow::scheduler::run(cfg, once, cancel).await
    })?;
    if once {
        let mut t = table::new(&["run id", "state"]);
        for (run, state) in &summary.runs {
            t.add_row(vec![run.clone(), state.to_string()]);
        }
        for (run, e) in &summary.errors {
            t.add_row(vec![run.clone(), table::clip(e, 80)]);
        }
        if summary.runs.is_empty() && summary.errors.is_empty() {
            println!("nothing is due");
        } else {
            println!("{t}");
        }
    }
    let ok = summary.errors.is_empty() && summary.runs.iter().all(|(_, s)| *s == RunState::Success);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run(p: &Project, args: RunArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let dag = p.dag(&args.dag)?;
    let interval = interval_for(&dag, &args.date)?;
    let params = merged_params(&dag, args.params)?;
    check_tasks(&dag, &args.tasks)?;
    let opts = ExecOptions {
        backend: args.backend,
        project_dir: p.dir.clone(),
        params,
        tasks: args.tasks,
        downstream: args.downstream,
        rerun: args.rerun,
        require_existing: args.resume,
        trigger: Trigger::Manual,
        lake: p.config.lake.clone(),
        catalog: p.config.catalog.clone(),
        aws: p.config.aws.clone(),
        streaming: p.config.streaming.clone(),
    };
    let pools = Arc::new(Pools::new(&p.config.pools));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let report = rt.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let mut progress = Progress::new(&dag, g);
        let r =
            executor::execute(dag.clone(), interval, &p.state, pools, &opts, cancel, &mut |e| progress.event(e)).await;
        progress.finish();
        r
    })?;
    print_report(&report);
    Ok(match report.state {
        RunState::Success => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
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

/// A progress bar on a terminal (hidden otherwise, or with --quiet / JSON logs).
fn progress_bar(g: &Global, len: u64, prefix: &str, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || g.quiet || g.log_format != LogFormat::Text {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}{{msg}} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

struct Progress {
    bar: indicatif::ProgressBar,
    done: u64,
    running: i64,
    failed: u64,
}

impl Progress {
    fn new(dag: &Dag, g: &Global) -> Self {
        let bar = progress_bar(g, dag.tasks.len() as u64, &dag.id, "");
        Progress { bar, done: 0, running: 0, failed: 0 }
    }

    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Claimed { total, already_done, interrupted, run_id } => {
                self.bar.set_length(total as u64);
                self.done = already_done as u64;
                if already_done > 0 || !interrupted.is_empty() {
                    let msg = format!(
                        "resuming {run_id}: {already_done} task(s) already succeeded, {} interrupted attempt(s) will run again",
                        interrupted.len()
                    );
                    if self.bar.is_hidden() { eprintln!("{msg}") } else { self.bar.println(msg) }
                }
            }
            Event::Task { state, .. } => match state {
                TaskState::Running { .. } => self.running += 1,
                TaskState::UpForRetry { .. } => self.running -= 1,
                TaskState::Success { .. } | TaskState::Skipped => {
                    self.running -= 1;
                    self.done += 1;
                }
                TaskState::Failed { .. } => {
                    self.running -= 1;
                    self.done += 1;
                    self.failed += 1;
                }
                TaskState::Cancelled { attempt } => {
                    if attempt.is_some() {
                        self.running -= 1;
                    }
                    self.done += 1;
                }
                TaskState::UpstreamFailed => {
                    self.done += 1;
                    self.failed += 1;
                }
                TaskState::Queued => {}
            },
        }
        self.running = self.running.max(0);
        self.bar.set_position(self.done);
        self.bar.set_message(format!("running {} · failed {}", self.running, self.failed));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn print_report(r: &RunReport) {
    let mut t = table::new(&["task", "state", "attempts", "error"]);
    for task in r.tasks.iter().filter(|t| t.selected) {
        t.add_row(vec![
            task.task_id.clone(),
            task.state.name().to_string(),
            task.attempts.to_string(),
            task.error.as_deref().map(|e| table::clip(e, 80)).unwrap_or_default(),
        ]);
    }
    println!("{t}");
    let reused =
        if r.reused > 0 { format!(" · {} task(s) reused from an earlier execution", r.reused) } else { String::new() };
    println!("run {} {} in {}{}", r.run_id, r.state, executor::humanize(r.elapsed), reused);
}

fn open_store(p: &Project) -> anyhow::Result<RunStore> {
    if !p.state.exists() {
        return Err(usage(format!(
            "no run store at {} yet: nothing has run here (use --state PATH)",
            p.state.display()
        )));
    }
    Ok(RunStore::open(&p.state)?)
}

fn fmt_ts(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn fmt_dur(a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => executor::humanize((b - a).to_std().unwrap_or_default()),
        _ => String::new(),
    }
}

fn runs(p: &Project, dag: Option<&str>, limit: usize) -> anyhow::Result<ExitCode> {
    let store = open_store(p)?;
    let rows = store.runs(dag, limit)?;
    if rows.is_empty() {
        println!("no runs{}", dag.map(|d| format!(" of {d}")).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table::new(&["run id", "dag", "interval start", "state", "trigger", "started", "duration"]);
    for r in rows {
        t.add_row(vec![
            r.run_id,
            r.dag_id,
            fmt_ts(Some(r.interval_start)),
            r.state.to_string(),
            r.trigger,
            fmt_ts(r.started_at),
            fmt_dur(r.started_at, r.ended_at),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn tasks(p: &Project, run_id: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(p)?;
    let run = store.run(run_id)?.ok_or_else(|| usage(format!("no run `{run_id}` (see `cartflow runs`)")))?;
    let attempts = store.attempts(run_id, None)?;
    let mut t = table::new(&["task", "state", "attempts", "started", "duration", "exit", "error / summary"]);
    for task in store.tasks(run_id)? {
        let last = attempts.iter().rfind(|a| a.task_id == task.task_id);
        t.add_row(vec![
            task.task_id.clone(),
            task.state.name().to_string(),
            task.attempts.to_string(),
            fmt_ts(last.map(|a| a.started_at)),
            fmt_dur(last.map(|a| a.started_at), last.and_then(|a| a.ended_at)),
            last.and_then(|a| a.exit_code).map(|c| c.to_string()).unwrap_or_default(),
            last.and_then(|a| a.error.as_deref().or(a.summary.as_deref()))
                .map(|e| table::clip(e, 100))
                .unwrap_or_default(),
        ]);
    }
    println!("run {} · {} · interval start {}", run.run_id, run.state, fmt_ts(Some(run.interval_start)));
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn logs(p: &Project, run_id: &str, task: &str, attempt: Option<u32>) -> anyhow::Result<ExitCode> {
    let store = open_store(p)?;
    store.run(run_id)?.ok_or_else(|| usage(format!("no run `{run_id}` (see `cartflow runs`)")))?;
    let attempts = store.attempts(run_id, Some(task))?;
    if attempts.is_empty() {
        let known: Vec<String> = store.tasks(run_id)?.into_iter().map(|t| t.task_id).collect();
        if !known.iter().any(|k| k == task) {
            let hint = cartflow::yaml::did_you_mean(task, known.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            bail!(UsageError(format!("run `{run_id}` has no task `{task}`{hint}")));
        }
        println!("task `{task}` has not started an attempt in run {run_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let a = match attempt {
        Some(n) => attempts
            .iter()
            .find(|a| a.attempt == n)
            .ok_or_else(|| usage(format!("task `{task}` has attempts 1..={}, not {n}", attempts.len())))?,
        None => attempts.last().ok_or_else(|| anyhow!("no attempts"))?,
    };
    println!("# {run_id} {task} attempt {} · {} · started {}", a.attempt, a.state, fmt_ts(Some(a.started_at)));
    match &a.log_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the log {path}"))?;
            print!("{text}");
        }
        None => println!("(this attempt wrote no log)"),
    }
    if let Some(e) = &a.error {
        println!("# error: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
