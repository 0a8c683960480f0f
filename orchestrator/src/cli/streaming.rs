//! `cartflow streaming sql|run`: the Flink SQL of the rules, and a consumer run over the local
//! streams.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cartflow::project::Project;
use cartflow_streaming::flink::{self, SinkKind, SourceKind};
use cartflow_streaming::pipeline::{self, Paths};
use cartflow_streaming::rules::RuleSet;
use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};

use super::{day, epoch_day, parse_day, usage};

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
pub enum Cmd {
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
        #[arg(long, requires = "to", value_parser = parse_day)]
        from: Option<NaiveDate>,
        /// Filesystem source: last date (dt) to read.
        #[arg(long, requires = "from", value_parser = parse_day)]
        to: Option<NaiveDate>,
    },
    /// Consume stream1 (detector, archiver) and stream2 (alert handler) until caught up.
    Run {
        /// The rules file.
        #[arg(long, default_value = "streaming/rules/ddos.yaml")]
        rules: PathBuf,
        /// The input is complete up to this date's end (YYYY-MM-DD): close its windows.
        #[arg(long, value_parser = parse_day)]
        close: Option<NaiveDate>,
    },
}

/// The local streams, alerts and notifications of the project.
pub fn paths(p: &Project) -> Paths {
    p.streaming_paths()
}

fn load_rules(p: &Project, rules: &std::path::Path) -> anyhow::Result<RuleSet> {
    RuleSet::load(&p.dir.join(rules)).map_err(|e| usage(e.to_string()))
}

pub fn run(p: &Project, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Sql { rules, source, sink, stream1, stream2, region, path, sink_path, from, to } => {
            let set = load_rules(p, &rules)?;
            let src = match source {
                SqlSource::Kinesis => SourceKind::Kinesis { stream: stream1, region: region.clone() },
                SqlSource::Filesystem => SourceKind::Filesystem { path, dates: from.map(day).zip(to.map(day)) },
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
        Cmd::Run { rules, close } => {
            let set = load_rules(p, &rules)?;
            // Milliseconds of the end of that day (its windows close).
            let close_at = close.map(|d| (epoch_day(d) + 1) * 86_400 * 1000);
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
