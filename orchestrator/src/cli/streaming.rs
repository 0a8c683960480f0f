//! `cartflow streaming sql|run`, `cartflow produce`, `cartflow alerts`, `cartflow reprocess`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use cartflow::backfill::Reprocess;
use cartflow::kinds::Backend;
use cartflow_streaming::flink::{self, SinkKind, SourceKind};
use cartflow_streaming::handler::{AlertFilter, SqliteAlerts};
use cartflow_streaming::pipeline::{self, Paths, Source};
use cartflow_streaming::rules::RuleSet;
use clap::{Args, Subcommand, ValueEnum};

use super::{BackfillArgs, Global, Project, usage};

/// Where the Flink SQL reads.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SqlSource {
    /// Kinesis stream1 (what runs on Managed Service for Apache Flink).
    Kinesis,
    /// The raw zone (batch reprocessing).
    Filesystem,
}

/// Where the Flink SQL writes.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SqlSink {
    /// Kinesis stream2.
    Kinesis,
    /// JSON files.
    Filesystem,
}

#[derive(Debug, Subcommand)]
pub enum StreamingCmd {
    /// Print the Flink SQL of a rules file (what the AWS backend deploys).
    Sql {
        /// The rules file.
        #[arg(default_value = "streaming/rules/ddos.yaml")]
        rules: PathBuf,
        /// Where events come from.
        #[arg(long, value_enum, default_value_t = SqlSource::Kinesis)]
        source: SqlSource,
        /// Where alerts go [default: kinesis for a kinesis source, filesystem otherwise].
        #[arg(long, value_enum)]
        sink: Option<SqlSink>,
        /// stream1's name.
        #[arg(long, default_value = "cartflow-stream1")]
        stream1: String,
        /// stream2's name.
        #[arg(long, default_value = "cartflow-stream2")]
        stream2: String,
        /// The region of the streams.
        #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
        region: String,
        /// Filesystem source: the raw events folder or s3:// prefix.
        #[arg(long, default_value = "s3://cartflow-raw/raw/events")]
        path: String,
        /// Filesystem sink: the output folder or s3:// prefix.
        #[arg(long, default_value = "s3://cartflow-curated/alerts")]
        sink_path: String,
        /// Filesystem source: first date (dt) to read.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Filesystem source: last date (dt) to read.
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Consume stream1 (detector, archiver) and stream2 (alert handler) until caught up.
    Run {
        /// The rules file.
        #[arg(long, default_value = "streaming/rules/ddos.yaml")]
        rules: PathBuf,
        /// The input is complete up to this date's end (YYYY-MM-DD): close its windows.
        #[arg(long)]
        close: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// A Kaggle CSV file (.csv, .csv.gz, .csv.zip) to replay.
    #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
    input: Option<PathBuf>,
    /// Replay generated events (the seed's simulator).
    #[arg(long)]
    generate: bool,
    /// Days to generate.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Events per generated day.
    #[arg(long, default_value_t = 100_000)]
    events_per_day: u64,
    /// First generated day.
    #[arg(long, default_value = "2019-10-01")]
    start: String,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bot bursts per generated day.
    #[arg(long, default_value_t = 4)]
    bots_per_day: u32,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Shards of stream1 when it is created.
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// The producer's name: a re-run under the same name resumes instead of producing twice
    /// (local stream1 only: Kinesis has no idempotent producer).
    #[arg(long)]
    producer: Option<String>,
    /// Where stream1 is: `local` (the stage's folder) or `aws` (Kinesis `{prefix}stream1`).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Windows starting on or after this date.
    #[arg(long)]
    from: Option<String>,
    /// Windows starting on or before this date.
    #[arg(long)]
    to: Option<String>,
    /// Only this rule.
    #[arg(long)]
    rule: Option<String>,
    /// Include alerts a reprocess retracted.
    #[arg(long)]
    all: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// The stage that can be reprocessed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Stage {
    /// The detector (the Flink application's rules).
    Detector,
}

#[derive(Debug, Args)]
pub struct ReprocessArgs {
    /// Which stage.
    #[arg(long, value_enum)]
    stage: Stage,
    /// First day.
    #[arg(long)]
    from: String,
    /// Last day (inclusive).
    #[arg(long)]
    to: String,
    /// The (fixed) rules file.
    #[arg(long, default_value = "streaming/rules/ddos.yaml")]
    rules: PathBuf,
    /// Print the diff and the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only re-run the downstream tasks of this DAG [default: every DAG with a streaming_stage].
    #[arg(long)]
    dag: Option<String>,
    /// Replace the alerts only; re-run no downstream task.
    #[arg(long)]
    no_downstream: bool,
    /// Where: `local` (the archive in the lake folder, alerts.db) or `aws` (the raw archive in
    /// S3 replayed through cartflow's window engine, alerts in DynamoDB; the downstream tasks
    /// re-run on AWS).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    backend: Backend,
}

fn paths(p: &Project) -> Paths {
    Paths::under(&p.dir.join(&p.config.streaming), &p.dir.join(&p.config.lake))
}

fn check_date(flag: &str, d: &str) -> anyhow::Result<()> {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| usage(format!("{flag} {d} is not a date (YYYY-MM-DD)")))
}

fn load_rules(p: &Project, rules: &std::path::Path) -> anyhow::Result<RuleSet> {
    RuleSet::load(&p.dir.join(rules)).map_err(|e| usage(e.to_string()))
}

pub fn streaming(p: &Project, cmd: StreamingCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        StreamingCmd::Sql { rules, source, sink, stream1, stream2, region, path, sink_path, from, to } => {
            let set = load_rules(p, &rules)?;
            for d in [&from, &to].into_iter().flatten() {
                check_date("--from/--to", d)?;
            }
            let src = match source {
                SqlSource::Kinesis => SourceKind::Kinesis { stream: stream1, region: region.clone() },
                SqlSource::Filesystem => SourceKind::Filesystem { path, dates: from.zip(to) },
            };
            let sink =
                match sink.unwrap_or(if source == SqlSource::Kinesis { SqlSink::Kinesis } else { SqlSink::Filesystem })
                {
                    SqlSink::Kinesis => SinkKind::Kinesis { stream: stream2, region },
                    SqlSink::Filesystem => SinkKind::Filesystem { path: sink_path },
                };
            print!("{}", flink::generate(&set, &src, &sink, &rules.display().to_string()));
            Ok(ExitCode::SUCCESS)
        }
        StreamingCmd::Run { rules, close } => {
            let set = load_rules(p, &rules)?;
            let close_at = match &close {
                Some(d) => {
                    check_date("--close", d)?;
                    cartflow_jobs::event::parse_event_time(&format!("{d} 00:00:00")).map(|t| (t + 86_400) * 1000)
                }
                None => None,
            };
            let paths = paths(p);
            if cartflow_streaming::log::shard_count(&paths.stream1())?.is_none() {
                return Err(usage(format!(
                    "no stream at {} yet: run `cartflow produce` first",
                    paths.stream1().display()
                )));
            }
            let started = Instant::now();
            let done = AtomicBool::new(true);
            let detected_done = AtomicBool::new(false);
            let (archived, detected, handled) = std::thread::scope(|s| {
                let a = s.spawn(|| pipeline::archive(&paths, &|| done.load(Ordering::SeqCst), None));
                let d = s.spawn(|| {
                    let r = pipeline::detect(&paths, &set, &|| done.load(Ordering::SeqCst), close_at);
                    detected_done.store(true, Ordering::SeqCst);
                    r
                });
                let h = pipeline::handle_stream(&paths, &|| detected_done.load(Ordering::SeqCst));
                (a.join(), d.join(), h)
            });
            let archived = archived.map_err(|_| anyhow::anyhow!("the archiver panicked"))??;
            let detected = detected.map_err(|_| anyhow::anyhow!("the detector panicked"))??;
            let handled = handled?;
            println!(
                "archived {} event(s) in {} object(s); detected over {} event(s): {} alert(s); handler stored {} new, {} redelivered, {} notified ({:.1}s)",
                archived.records,
                archived.objects,
                detected.records,
                detected.alerts,
                handled.stored,
                handled.duplicates,
                handled.notified,
                started.elapsed().as_secs_f64()
            );
            for (name, s) in &detected.rules {
                println!("  rule {name}: {} event(s), {} late, {} alert(s)", s.events, s.late, s.alerts);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn produce(p: &Project, a: ProduceArgs) -> anyhow::Result<ExitCode> {
    let paths = paths(p);
    let (source, default_name) = match &a.input {
        Some(f) => {
            if !f.exists() {
                return Err(usage(format!("--input {} does not exist", f.display())));
            }
            (Source::Csv(f.clone()), format!("file:{}", f.display()))
        }
        None => {
            check_date("--start", &a.start)?;
            if a.days == 0 || a.events_per_day == 0 {
                return Err(usage("--days and --events-per-day must be at least 1"));
            }
            let start_day =
                cartflow_jobs::event::parse_event_time(&format!("{} 00:00:00", a.start)).unwrap_or(0) / 86_400;
            let cfg = cartflow_jobs::generate::GenConfig {
                start_day,
                days: a.days,
                events_per_day: a.events_per_day,
                seed: a.seed,
                malformed_rate: 0.0,
                bots_per_day: a.bots_per_day,
            };
            (Source::Generate(cfg), format!("generate:{}:{}:{}:{}", a.start, a.days, a.events_per_day, a.seed))
        }
    };
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(usage("--rate must be a positive number of events per second"));
    }
    let started = Instant::now();
    if a.backend == Backend::Aws {
        if a.producer.is_some() {
            return Err(usage(
                "--producer (resume without producing twice) needs the local stream1: Kinesis has no idempotent producer",
            ));
        }
        let rep = cartflow::aws::streaming::produce(&p.config.aws, &source, a.rate).map_err(|m| anyhow::anyhow!(m))?;
        println!(
            "produced {} event(s) into Kinesis {} in {} PutRecords call(s) ({} re-sent after throttling) in {:.1}s",
            rep.records,
            p.config.aws.streaming.name("stream1"),
            rep.batches,
            rep.retried,
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let producer = a.producer.unwrap_or(default_name);
    let shards = cartflow_streaming::log::shard_count(&paths.stream1())?.unwrap_or(a.shards);
    let rep = pipeline::produce(&paths, shards, &producer, &source, None, a.rate)?;
    println!(
        "produced {} event(s) into {} ({} shard(s)) in {:.1}s; {} were already there from an earlier run of producer `{producer}`",
        rep.appended,
        paths.stream1().display(),
        shards,
        started.elapsed().as_secs_f64(),
        rep.skipped
    );
    Ok(ExitCode::SUCCESS)
}

pub fn alerts(p: &Project, a: AlertsArgs) -> anyhow::Result<ExitCode> {
    for d in [&a.from, &a.to].into_iter().flatten() {
        check_date("--from/--to", d)?;
    }
    let paths = paths(p);
    let store = SqliteAlerts::open(&paths.alerts_db)?;
    let list = store.list(&AlertFilter { from: a.from, to: a.to, rule: a.rule, include_retracted: a.all })?;
    if a.json {
        for x in &list {
            println!("{}", serde_json::to_string(x)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut t =
        super::table::new(&["window start", "rule", "key", "value", "threshold", "severity", "status", "notified"]);
    for x in &list {
        t.add_row(vec![
            x.window_start.clone(),
            x.rule.clone(),
            format!("{}={}", x.key_field, x.key),
            x.value.to_string(),
            x.threshold.to_string(),
            x.severity.clone(),
            x.status.clone(),
            if x.notified { "yes".into() } else { "no".into() },
        ]);
    }
    println!("{t}");
    println!("{} alert(s)", list.len());
    Ok(ExitCode::SUCCESS)
}

pub fn reprocess(p: &Project, a: ReprocessArgs, g: &Global) -> anyhow::Result<ExitCode> {
    check_date("--from", &a.from)?;
    check_date("--to", &a.to)?;
    if a.to < a.from {
        return Err(usage(format!("--to {} is before --from {}", a.to, a.from)));
    }
    let Stage::Detector = a.stage;
    let set = load_rules(p, &a.rules)?;
    let started = Instant::now();
    let rep = match a.backend {
        Backend::Local => {
            let paths = paths(p);
            let mut store = SqliteAlerts::open(&paths.alerts_db)?;
            pipeline::reprocess(&paths.lake, &set, &a.from, &a.to, &mut store, a.dry_run).map_err(|e| match e {
                pipeline::PipelineError::Invalid(m) => usage(m),
                e => e.into(),
            })?
        }
        Backend::Aws => {
            let (rep, objects) = cartflow::aws::streaming::reprocess(&p.config.aws, &set, &a.from, &a.to, a.dry_run)
                .map_err(|m| anyhow::anyhow!(m))?;
            println!(
                "read {objects} raw object(s) from S3; alerts in DynamoDB table {}",
                p.config.aws.streaming.name("alerts")
            );
            rep
        }
    };
    println!(
        "reprocess detector {}..{}{}: {} archived event(s) read ({} invalid) in {:.1}s",
        a.from,
        a.to,
        if a.dry_run { " (dry run: nothing changed)" } else { "" },
        rep.records,
        rep.invalid,
        started.elapsed().as_secs_f64()
    );
    let mut t = super::table::new(&["rule", "day", "added", "retracted", "changed", "unchanged"]);
    for (rule, diff) in &rep.diffs {
        if diff.per_day.is_empty() {
            t.add_row(vec![rule.clone(), "-".into(), "0".into(), "0".into(), "0".into(), "0".into()]);
        }
        for (day, m) in &diff.per_day {
            let n = |k: &str| m.get(k).copied().unwrap_or(0).to_string();
            t.add_row(vec![rule.clone(), day.clone(), n("added"), n("retracted"), n("changed"), n("unchanged")]);
        }
    }
    println!("{t}");
    if a.no_downstream {
        return Ok(ExitCode::SUCCESS);
    }
    // Re-run what depends on the detector's output: the tasks downstream of each DAG's
    // streaming_stage, for those dates, through the backfill planner.
    let set_dags = p.load()?;
    let mut code = ExitCode::SUCCESS;
    let mut any = false;
    for (id, dag) in &set_dags.dags {
        if a.dag.as_ref().is_some_and(|d| d != id) {
            continue;
        }
        let Some(stage) = dag.tasks.iter().find(|t| t.kind() == "streaming_stage") else { continue };
        let children: Vec<String> = stage.downstream.iter().map(|&i| dag.tasks[i].id.clone()).collect();
        any = true;
        if children.is_empty() {
            println!("{id}: nothing downstream of `{}`", stage.id);
            continue;
        }
        println!(
            "{id}: re-running what is downstream of `{}` ({}) for {}..{}",
            stage.id,
            children.join(", "),
            a.from,
            a.to
        );
        let args = BackfillArgs {
            dag: id.clone(),
            from: a.from.clone(),
            to: a.to.clone(),
            reprocess: Reprocess::Completed,
            max_active_runs: None,
            reverse: false,
            dry_run: a.dry_run,
            tasks: children,
            downstream: true,
            backend: a.backend,
            params: Vec::new(),
        };
        let c = super::backfill(p, args, g).with_context(|| format!("re-running {id}"))?;
        if c != ExitCode::SUCCESS {
            code = c;
        }
    }
    if !any {
        println!("no DAG has a streaming_stage task: no downstream task to re-run");
    }
    Ok(code)
}
