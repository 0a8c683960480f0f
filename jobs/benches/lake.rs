//! The data path benchmark: compact + clean + enrich over generated events, beside DuckDB
//! doing the same work on the same raw files.
//!
//! ```text
//! scripts/bench-lake                  # 10M events (10 days x 1M), creates the DuckDB venv
//! CARTFLOW_BENCH_EVENTS_PER_DAY=200000 CARTFLOW_BENCH_DAYS=3 \
//!   cargo bench -p cartflow-jobs --no-default-features --bench lake
//! ```
//!
//! Prints rows/s and peak memory (VmHWM, reset before the measured phase) for both, and the
//! ratio DuckDB time / cartflow time (above 1 means cartflow is faster). The peer runs when
//! `CARTFLOW_BENCH_PYTHON` points at a Python with `duckdb`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cartflow_jobs::compact::{CompactConfig, compact};
use cartflow_jobs::event::{date_of, days_from_civil};
use cartflow_jobs::generate::{GenConfig, Sink, generate};
use cartflow_jobs::rawzone::RawZoneWriter;
use cartflow_jobs::recipe::{Recipe, run_job};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The cartflow binary's allocator, so that the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: cartflow_jobs::Allocator = cartflow_jobs::Allocator;

fn main() {
    let days = env_u64("CARTFLOW_BENCH_DAYS", 10) as u32;
    let per_day = env_u64("CARTFLOW_BENCH_EVENTS_PER_DAY", 1_000_000);
    let root: PathBuf = std::env::var_os("CARTFLOW_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cartflow-bench-lake-{days}x{per_day}")));
    let lake = root.join("lake");
    let start_day = days_from_civil(2019, 10, 1);
    let dates: Vec<String> = (0..i64::from(days)).map(|d| date_of((start_day + d) * 86_400)).collect();

    // The input: generated once, kept between runs of the bench.
    let marker = root.join("generated.ok");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("bench dir");
        let t = Instant::now();
        let mut w = RawZoneWriter::new(&lake, "bench", 1 << 20, 60);
        let cfg =
            GenConfig { start_day, days, events_per_day: per_day, seed: 42, malformed_rate: 0.0, bots_per_day: 2 };
        let truth = generate(&cfg, &mut Sink::Raw(&mut w)).expect("generate");
        let stats = w.close().expect("close");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "generated {} events into {} raw objects in {secs:.1}s ({:.0} rows/s, gzip JSON lines)",
            truth.rows,
            stats.files,
            truth.rows as f64 / secs
        );
        std::fs::write(&marker, truth.rows.to_string()).expect("marker");
    }
    let rows: u64 = std::fs::read_to_string(&marker).expect("marker").trim().parse().expect("rows");
    let recipe_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glue-scripts/databrew/enrich_events.json");
    let recipe = Recipe::load(&recipe_path).expect("recipe");

    reset_peak();
    let t = Instant::now();
    let (mut t_compact, mut t_clean, mut t_enrich) = (0.0, 0.0, 0.0);
    let mut clean_rows = 0;
    for date in &dates {
        let s = Instant::now();
        let c = compact(&CompactConfig {
            lake: lake.clone(),
            date: date.clone(),
            target_file_bytes: 128 << 20,
            stop: Default::default(),
        })
        .expect("compact");
        assert_eq!(c.rows_in, c.rows_out);
        t_compact += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let r = cartflow_jobs::clean::clean(&lake, date).expect("clean");
        t_clean += s.elapsed().as_secs_f64();
        clean_rows += r.clean;
        let s = Instant::now();
        run_job(&lake, &recipe, "clean/events", "enriched/events", date).expect("enrich");
        t_enrich += s.elapsed().as_secs_f64();
    }
    let ours = t.elapsed().as_secs_f64();
    let ours_peak = peak_rss_mib();
    println!(
        "cartflow: {rows} events, compact {t_compact:.2}s + clean {t_clean:.2}s + enrich {t_enrich:.2}s = {ours:.2}s \
         ({:.0} rows/s), {clean_rows} clean rows, peak memory {ours_peak:.0} MiB",
        rows as f64 / ours
    );

    let python = std::env::var("CARTFLOW_BENCH_PYTHON").unwrap_or_default();
    if python.is_empty() {
        println!("duckdb: skipped (set CARTFLOW_BENCH_PYTHON to a Python with duckdb; scripts/bench-lake does)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/lake_duckdb.py");
    let out = Command::new(&python).arg(&script).arg(&lake).args(&dates).output().expect("running the DuckDB peer");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!("the DuckDB peer failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in the peer's output:\n{text}"))
    };
    let (theirs, their_peak, their_clean) = (field("seconds"), field("peak_mib"), field("clean_rows"));
    println!(
        "duckdb:   {rows} events, compact {:.2}s + clean {:.2}s + enrich {:.2}s = {theirs:.2}s ({:.0} rows/s), \
         {their_clean} clean rows, peak memory {their_peak:.0} MiB",
        field("compact"),
        field("clean"),
        field("enrich"),
        rows as f64 / theirs
    );
    assert_eq!(their_clean as u64, clean_rows, "both engines must keep the same clean rows");
    println!("ratio (duckdb time / cartflow time): {:.2}x", theirs / ours);
}
