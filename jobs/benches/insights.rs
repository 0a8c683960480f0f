//! The insight benchmark: the four insight SQL files over the enriched events of the lake
//! benchmark (10 days x ~1M events), on cartflow's local engine (DataFusion + the Trino
//! functions) and beside it DuckDB running the same files on the same Parquet.
//!
//! ```text
//! scripts/bench-lake        # first: generates and enriches the events
//! scripts/bench-insights    # then: this benchmark
//! ```
//!
//! The partitioned insights run once per day (as the daily DAG does), the full-refresh ones
//! once. Both run `CARTFLOW_BENCH_RUNS` times (default 3) in alternation; prints the time of
//! each insight, the totals, and the ratio of the median totals, DuckDB time / cartflow time.
//!
//! For experiments: `CARTFLOW_BENCH_ONLY=a,b` runs only those insights (on both sides), and
//! `CARTFLOW_BENCH_SET="datafusion.x = v; …"` sets DataFusion options on cartflow's session first,
//! and `CARTFLOW_BENCH_EXPLAIN=1` prints each insight's `EXPLAIN ANALYZE` (of its first day).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cartflow_jobs::catalog::{Catalog, Column, Table};
use cartflow_jobs::sql::SqlEngine;

const INSIGHTS: [(&str, bool); 4] =
    [("daily_visitors", true), ("cart_abandonment", true), ("top_categories", false), ("brand_marketing", false)];

/// The cartflow binary's allocator, so that the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: cartflow_jobs::Allocator = cartflow_jobs::Allocator;

fn main() {
    let days = std::env::var("CARTFLOW_BENCH_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10u32);
    let per_day: u64 =
        std::env::var("CARTFLOW_BENCH_EVENTS_PER_DAY").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let root: PathBuf = std::env::var_os("CARTFLOW_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cartflow-bench-lake-{days}x{per_day}")));
    let lake = root.join("lake");
    let enriched = lake.join("enriched/events");
    let mut dates: Vec<String> = std::fs::read_dir(&enriched)
        .unwrap_or_else(|_| panic!("{} is missing: run scripts/bench-lake first", enriched.display()))
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("dt=")).map(str::to_string))
        .collect();
    dates.sort();
    let catalog_path = root.join("bench-catalog.db");
    let _ = std::fs::remove_file(&catalog_path);
    let mut c = Catalog::open(&catalog_path).expect("catalog");
    c.ensure_database("ecommerce").expect("db");
    c.put_table(&Table {
        database: "ecommerce".into(),
        name: "enriched_events".into(),
        location: "enriched/events".into(),
        format: "parquet".into(),
        columns: Vec::new(),
        partition_keys: vec![Column::new("dt", "string")],
        parameters: Default::default(),
        version: 0,
    })
    .expect("table");
    drop(c);
    let sql_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags/sql");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let engine = rt.block_on(SqlEngine::open(&lake, &catalog_path)).expect("engine");
    for set in std::env::var("CARTFLOW_BENCH_SET").unwrap_or_default().split(';').filter(|s| !s.trim().is_empty()) {
        rt.block_on(engine.execute_trusted(&format!("SET {set}"))).expect("SET");
    }
    let only: Vec<String> = std::env::var("CARTFLOW_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let selected: Vec<(&str, bool)> =
        INSIGHTS.into_iter().filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n)).collect();
    if let Some(unknown) = only.iter().find(|o| !INSIGHTS.iter().any(|(n, _)| n == o)) {
        let names: Vec<&str> = INSIGHTS.iter().map(|(n, _)| *n).collect();
        panic!("CARTFLOW_BENCH_ONLY: no insight {unknown:?}; use some of {}", names.join(","));
    }
    let explain = std::env::var_os("CARTFLOW_BENCH_EXPLAIN").is_some();
    let python = std::env::var("CARTFLOW_BENCH_PYTHON").unwrap_or_default();
    let rounds: usize = match std::env::var("CARTFLOW_BENCH_RUNS") {
        Ok(v) => {
            v.parse::<usize>().unwrap_or_else(|_| panic!("CARTFLOW_BENCH_RUNS={v:?}: give a number of rounds")).max(1)
        }
        Err(_) => 3,
    };
    // The machine is shared and its speed drifts by ±20% over minutes: the two engines run in
    // alternation, and the ratio is that of their medians.
    // Each insight's queries, rendered once: one per day for the partitioned ones.
    let queries: Vec<(&str, Vec<String>)> = selected
        .iter()
        .map(|&(name, partitioned)| {
            let sql = std::fs::read_to_string(sql_dir.join(format!("{name}.sql"))).expect("sql");
            let runs = if partitioned { dates.iter().map(|d| sql.replace("{{ ds }}", d)).collect() } else { vec![sql] };
            (name, runs)
        })
        .collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut total = 0.0;
        let mut parts = Vec::new();
        for (name, runs) in &queries {
            let t = Instant::now();
            let mut rows = 0;
            for q in runs {
                let (_, b) = rt.block_on(engine.query(q)).expect("query");
                rows += b.iter().map(|b| b.num_rows()).sum::<usize>();
            }
            let secs = t.elapsed().as_secs_f64();
            if explain && round == 1 {
                let (_, b) = rt.block_on(engine.query(&format!("EXPLAIN ANALYZE {}", runs[0]))).expect("explain");
                println!("{}", cartflow_jobs::sql::arrow::util::pretty::pretty_format_batches(&b).expect("fmt"));
            }
            total += secs;
            parts.push(format!("{name} {secs:.2}s ({rows} rows)"));
        }
        println!("[{round}/{rounds}] cartflow (DataFusion): {} = {total:.2}s", parts.join(" + "));
        ours.push(total);
        if python.is_empty() {
            continue;
        }
        let out = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/insights_duckdb.py"))
            .arg(&lake)
            .arg(&sql_dir)
            .arg(selected.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","))
            .args(&dates)
            .output()
            .expect("python");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the DuckDB peer failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        for line in text.lines().filter(|l| !l.starts_with("seconds=")) {
            println!("[{round}/{rounds}] {line}");
        }
        theirs.push(
            text.lines()
                .find_map(|l| l.strip_prefix("seconds="))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .expect("seconds= from the peer"),
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours = median(&mut ours);
    println!("cartflow median: {ours:.2}s");
    if theirs.is_empty() {
        println!("duckdb: skipped (set CARTFLOW_BENCH_PYTHON to a Python with duckdb; scripts/bench-insights does)");
        return;
    }
    let theirs = median(&mut theirs);
    println!("duckdb median: {theirs:.2}s");
    println!("ratio (duckdb time / cartflow time, medians of {rounds}): {:.2}x", theirs / ours);
}
