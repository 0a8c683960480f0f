//! `cartflow produce`: feed stream1 with a Kaggle file or the simulator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use cartflow::env::Backend;
use cartflow::project::Project;
use cartflow_streaming::pipeline::{self, Source};
use chrono::NaiveDate;

use super::streaming::paths;
use super::{day, epoch_day, parse_day, usage};

#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[arg(long, default_value = "2019-10-01", value_parser = parse_day)]
    start: NaiveDate,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bot bursts per generated day.
    #[arg(long, default_value_t = 4)]
    bots_per_day: u32,
    /// Share of generated records that are malformed (0 to 1): an unreadable time, a negative
    /// price, an unknown event type, no user, a bad product id, or cut short (not JSON).
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
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

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let paths = paths(p);
    let (source, default_name) = match &a.input {
        Some(f) => {
            if !f.exists() {
                return Err(usage(format!("--input {} does not exist", f.display())));
            }
            (Source::Csv(f.clone()), format!("file:{}", f.display()))
        }
        None => {
            if a.days == 0 || a.events_per_day == 0 {
                return Err(usage("--days and --events-per-day must be at least 1"));
            }
            if !(0.0..=1.0).contains(&a.malformed_rate) {
                return Err(usage("--malformed-rate is a share between 0 and 1"));
            }
            let start_day = epoch_day(a.start);
            let cfg = cartflow_jobs::generate::GenConfig {
                start_day,
                days: a.days,
                events_per_day: a.events_per_day,
                seed: a.seed,
                malformed_rate: a.malformed_rate,
                bots_per_day: a.bots_per_day,
            };
            let mut name = format!("generate:{}:{}:{}:{}", day(a.start), a.days, a.events_per_day, a.seed);
            if a.malformed_rate > 0.0 {
                name.push_str(&format!(":{}", a.malformed_rate));
            }
            (Source::Generate(cfg), name)
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
        return produce_aws(p, &source, a.rate, started);
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

/// Replays `source` into Kinesis stream1.
#[cfg(feature = "aws")]
fn produce_aws(p: &Project, source: &Source, rate: Option<f64>, started: Instant) -> anyhow::Result<ExitCode> {
    let rep = cartflow::aws::realtime::produce(&p.config.aws, source, rate).map_err(|m| anyhow::anyhow!(m))?;
    println!(
        "produced {} event(s) into Kinesis {} in {} PutRecords call(s) ({} re-sent after throttling) in {:.1}s",
        rep.records,
        p.config.aws.streaming.name("stream1"),
        rep.batches,
        rep.retried,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "aws"))]
fn produce_aws(_p: &Project, _source: &Source, _rate: Option<f64>, _started: Instant) -> anyhow::Result<ExitCode> {
    Err(cartflow::env::EnvError::AwsNotBuilt.into())
}
