//! The window engine's benchmark: the seed's rule (10-second tumbling windows per user) over
//! generated events, on one core, in events per second; beside it, the same rule over the same
//! events in a real local Flink (PyFlink, parallelism 1), printed as a ratio.
//!
//!   scripts/bench-window                                  # 4M events
//!   CARTFLOW_BENCH_EVENTS=1000000 scripts/bench-window
//!
//! Both read the events as JSON lines and parse them; Flink's time is the query alone (its
//! JVM's start is not counted). Without the Flink venv (CARTFLOW_BENCH_FLINK_PYTHON) only the
//! local number is printed.

use std::path::PathBuf;
use std::time::Instant;

use cartflow_jobs::generate::{GenConfig, Sink};
use cartflow_streaming::flink::{self, SinkKind, SourceKind};
use cartflow_streaming::rules::RuleSet;
use cartflow_streaming::window::Engine;

fn main() {
    let n: u64 = std::env::var("CARTFLOW_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let rules_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/ddos.yaml");
    let rules = RuleSet::load(&rules_path).expect("rules");

    // The events, as the stream carries them (one JSON object per line), in time order.
    let t = Instant::now();
    let mut data: Vec<u8> = Vec::with_capacity(n as usize * 240);
    let mut ends: Vec<usize> = Vec::with_capacity(n as usize);
    let cfg =
        GenConfig { start_day: 18_170, days: 1, events_per_day: n, seed: 3, malformed_rate: 0.0, bots_per_day: 20 };
    let mut sink = |line: &[u8], _t: i64| {
        data.extend_from_slice(line);
        data.push(b'\n');
        ends.push(data.len());
        Ok(())
    };
    let truth = cartflow_jobs::generate::generate(&cfg, &mut Sink::Lines(&mut sink)).expect("generate");
    println!("generated {} events ({} MiB of JSON) in {:.1}s", truth.rows, data.len() >> 20, t.elapsed().as_secs_f64());

    // The local engine: parse + window + fire, one thread.
    let mut best = f64::MAX;
    let mut alerts = 0;
    for _ in 0..3 {
        let mut e = Engine::new(&rules.rules, 1);
        let mut out = Vec::new();
        let t = Instant::now();
        let mut start = 0;
        for &end in &ends {
            e.push_line(&data[start..end - 1], 0, 0, &mut out);
            start = end;
        }
        e.finish(&mut out);
        best = best.min(t.elapsed().as_secs_f64());
        alerts = out.len();
    }
    let local_rate = truth.rows as f64 / best;
    // Where the time goes: reading the records alone.
    let t = Instant::now();
    let mut start = 0;
    let mut keys = 0usize;
    for &end in &ends {
        if let Ok(r) = cartflow_streaming::json::parse(&data[start..end - 1]) {
            keys += r.get("user_id").map_or(0, str::len);
        }
        start = end;
    }
    println!("  of which reading the JSON records: {:.3}s ({keys} key bytes)", t.elapsed().as_secs_f64());
    println!(
        "cartflow window engine: {} events in {best:.3}s = {:.2}M events/s on one core ({alerts} alerts)",
        truth.rows,
        local_rate / 1e6
    );

    let Some(python) = std::env::var_os("CARTFLOW_BENCH_FLINK_PYTHON").map(PathBuf::from) else {
        println!("(set CARTFLOW_BENCH_FLINK_PYTHON, or use scripts/bench-window, for the Flink side)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("cartflow-bench-window-{n}"));
    let part = dir.join("src/dt=2019-10-01/hour=00");
    std::fs::create_dir_all(&part).expect("mkdir");
    std::fs::write(part.join("part.json"), &data).expect("write events");
    let sql = flink::generate(
        &rules,
        &SourceKind::Filesystem { path: dir.join("src").display().to_string(), dates: None },
        &SinkKind::Filesystem { path: dir.join("out").display().to_string() },
        "rules/ddos.yaml",
    );
    std::fs::write(dir.join("q.sql"), sql).expect("write sql");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/flink_conformance.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(dir.join("q.sql"))
        .arg(dir.join("flink.json"))
        .output()
        .expect("run pyflink");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flink failed: {err}");
    let secs: f64 = err
        .lines()
        .rev()
        .find_map(|l| l.split("queries ").nth(1))
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("flink timing");
    let flink_alerts: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("flink.json")).expect("flink output")).expect("json");
    let flink_rate = truth.rows as f64 / secs;
    println!(
        "Flink 2.3 (PyFlink, local, parallelism 1): {} events in {secs:.3}s = {:.2}M events/s ({} alerts)",
        truth.rows,
        flink_rate / 1e6,
        flink_alerts.len()
    );
    println!("ratio: cartflow is {:.1}x Flink on the same rule and events", local_rate / flink_rate);
    assert_eq!(flink_alerts.len(), alerts, "both find the same alerts");
}
