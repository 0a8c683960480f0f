//! `cartflow generate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use cartflow_jobs::generate::{GenConfig, Sink, generate};
use cartflow_jobs::rawzone::RawZoneWriter;
use clap::{Args, ValueEnum};

use super::usage;

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// The Kaggle CSV (`.gz` at the end of --out compresses it).
    Csv,
    /// The raw zone: raw/events/dt=YYYY-MM-DD/hour=HH/*.json.gz under --out.
    Raw,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many days.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Events per day (weekends are busier).
    #[arg(long, default_value_t = 100_000)]
    events_per_day: u64,
    /// First day.
    #[arg(long, default_value = "2019-10-01", value_parser = super::parse_day)]
    start: chrono::NaiveDate,
    /// Seed; the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where: a CSV file, or the lake folder for --format raw [default: events.csv or .cartflow/lake].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Share of malformed rows (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Bot bursts per day (ground truth written beside the data).
    #[arg(long, default_value_t = 2)]
    bots_per_day: u32,
    /// Raw zone: flush a partition buffer at this many bytes (Firehose's buffer size).
    #[arg(long, default_value_t = 1 << 20)]
    buffer_bytes: usize,
    /// Raw zone: flush a partition buffer after this many seconds of event time.
    #[arg(long, default_value_t = 60)]
    buffer_seconds: i64,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let date = a.start;
    if !(0.0..=1.0).contains(&a.malformed_rate) {
        return Err(usage("--malformed-rate is a share between 0 and 1"));
    }
    if a.days == 0 || a.events_per_day == 0 {
        return Err(usage("--days and --events-per-day must be at least 1"));
    }
    let start_day = cartflow_jobs::event::days_from_civil(
        i64::from(chrono::Datelike::year(&date)),
        i64::from(chrono::Datelike::month(&date)),
        i64::from(chrono::Datelike::day(&date)),
    );
    let cfg = GenConfig {
        start_day,
        days: a.days,
        events_per_day: a.events_per_day,
        seed: a.seed,
        malformed_rate: a.malformed_rate,
        bots_per_day: a.bots_per_day,
    };
    let started = Instant::now();
    let (truth, where_, truth_path, files) = match a.format {
        Format::Csv => {
            let out = a.out.unwrap_or_else(|| PathBuf::from("events.csv"));
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let buf = std::io::BufWriter::with_capacity(1 << 20, file);
            let truth = if out.extension().is_some_and(|e| e == "gz") {
                let mut gz = flate2::write::GzEncoder::new(buf, flate2::Compression::fast());
                let t = generate(&cfg, &mut Sink::Csv(&mut gz))?;
                gz.finish()?.flush()?;
                t
            } else {
                let mut buf = buf;
                let t = generate(&cfg, &mut Sink::Csv(&mut buf))?;
                buf.flush()?;
                t
            };
            let truth_path = PathBuf::from(format!("{}.truth.json", out.display()));
            (truth, out, truth_path, 1)
        }
        Format::Raw => {
            let out = a.out.unwrap_or_else(|| PathBuf::from(".cartflow/lake"));
            let (truth, files) = write_raw(&out, &cfg, a.buffer_bytes, a.buffer_seconds)?;
            let truth_path = out.join(cartflow_jobs::rawzone::RAW_EVENTS).join("_truth.json");
            (truth, out, truth_path, files)
        }
    };
    if a.format == Format::Csv {
        std::fs::write(&truth_path, serde_json::to_vec_pretty(&truth)?)
            .with_context(|| format!("writing {}", truth_path.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {} events over {} day(s) in {:.1}s ({:.0} rows/s) into {} ({} file(s)); ground truth: {}",
        truth.rows,
        a.days,
        secs,
        truth.rows as f64 / secs.max(1e-9),
        where_.display(),
        files,
        truth_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Generates events into the raw zone of `lake` as Firehose would archive them, and writes the
/// ground truth beside them (`raw/events/_truth.json`); returns it and the number of objects.
fn write_raw(
    lake: &std::path::Path,
    cfg: &GenConfig,
    buffer_bytes: usize,
    buffer_seconds: i64,
) -> anyhow::Result<(cartflow_jobs::generate::GroundTruth, u64)> {
    let mut w = RawZoneWriter::new(lake, &format!("generator-{}", cfg.seed), buffer_bytes, buffer_seconds);
    let truth = generate(cfg, &mut Sink::Raw(&mut w))?;
    let stats = w.close()?;
    anyhow::ensure!(stats.records == truth.rows, "wrote {} records of {}", stats.records, truth.rows);
    let truth_path = lake.join(cartflow_jobs::rawzone::RAW_EVENTS).join("_truth.json");
    // Like the events beside it, not through a link that leads out of the lake.
    cartflow_jobs::swap::beneath(lake, &truth_path).map_err(anyhow::Error::msg)?;
    std::fs::write(&truth_path, serde_json::to_vec_pretty(&truth)?)
        .with_context(|| format!("writing {}", truth_path.display()))?;
    Ok((truth, stats.files))
}
