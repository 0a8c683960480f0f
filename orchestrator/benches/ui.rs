//! The web UI over a store with history: 3 DAGs × 3 years of daily runs × 15 tasks (a day in 50
//! without a run: ~48,300 task instances, each with an attempt), served by the real server on
//! 127.0.0.1. Prints the server time of the grid page (90 intervals, the missing days drawn
//! empty), the grid filtered to failed runs, a run page and the DAGs page — median and p95, from the
//! `Server-Timing` header the server sets — and their weight. Target: grid p95 under 50 ms.
//!
//! `cargo bench --workspace --bench ui`

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use cartflow::engine::store::RunStore;
use cartflow::env::Backend;
use cartflow::project::Project;
use chrono::{TimeZone, Utc};
use tokio_util::sync::CancellationToken;

const DAGS: usize = 3;
const DAYS: i64 = 3 * 365;
const TASKS: usize = 15;

fn seed(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("dags")).expect("dags");
    for d in 0..DAGS {
        let mut y = format!("id: dag{d}\nschedule: '@daily'\nstart_date: 2017-01-01\ntasks:\n");
        for t in 0..TASKS {
            let dep = if t == 0 { String::new() } else { format!("\n    depends_on: [t{}]", (t - 1) / 2) };
            y.push_str(&format!("  - id: t{t}\n    kind: noop{dep}\n"));
        }
        std::fs::write(dir.join(format!("dags/dag{d}.yaml")), y).expect("dag");
    }
    let db = dir.join(".cartflow/state.db");
    drop(RunStore::open(&db).expect("store"));
    let mut conn = rusqlite::Connection::open(&db).expect("sqlite");
    let tx = conn.transaction().expect("tx");
    let ts = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let day0 = Utc.with_ymd_and_hms(2017, 1, 1, 0, 0, 0).single().expect("day");
    for d in 0..DAGS {
        for i in 0..DAYS {
            let start = day0 + chrono::Duration::days(i);
            let end = start + chrono::Duration::days(1);
            let run_id = cartflow::engine::store::run_id(&format!("dag{d}"), start);
            // A day in 50 has no run (a missing partition: the grid draws it as an empty column).
            if i % 50 == 7 {
                continue;
            }
            let failed = i % 37 == 5;
            let state = if failed { "failed" } else { "success" };
            tx.execute(
                "INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, state, run_trigger, created_at, started_at, ended_at)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, 'scheduled', ?4, ?4, ?6)",
                rusqlite::params![run_id, format!("dag{d}"), ts(start), ts(end), state, ts(end + chrono::Duration::minutes(9))],
            )
            .expect("run");
            for t in 0..TASKS {
                let (a, b) = (
                    end + chrono::Duration::seconds(30 * t as i64),
                    end + chrono::Duration::seconds(30 * t as i64 + 25),
                );
                let (tstate, json) = if failed && t == 7 {
                    ("failed", format!(r#"{{"state":"failed","attempt":1,"ended_at":"{}","error":"exit 1"}}"#, ts(b)))
                } else if failed && t > 7 {
                    ("upstream_failed", r#"{"state":"upstream_failed"}"#.to_string())
                } else {
                    (
                        "success",
                        format!(r#"{{"state":"success","attempt":1,"started_at":"{}","ended_at":"{}"}}"#, ts(a), ts(b)),
                    )
                };
                tx.execute(
                    "INSERT INTO task_instances (run_id, task_id, state, state_json, attempts, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                    rusqlite::params![run_id, format!("t{t}"), tstate, json, ts(b)],
                )
                .expect("task");
                if tstate != "upstream_failed" {
                    tx.execute(
                        "INSERT INTO task_attempts (run_id, task_id, attempt, state, started_at, ended_at, summary) VALUES (?1, ?2, 1, ?3, ?4, ?5, 'rows in=200000 clean=199000')",
                        rusqlite::params![run_id, format!("t{t}"), tstate, ts(a), ts(b)],
                    )
                    .expect("attempt");
                }
            }
        }
    }
    tx.commit().expect("commit");
}

fn get(port: u16, path: &str) -> (f64, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
    let dur = head
        .lines()
        .find_map(|l| l.strip_prefix("server-timing: app;dur="))
        .and_then(|v| v.trim().parse().ok())
        .expect("server-timing");
    (dur, body.len())
}

fn stats(name: &str, mut ms: Vec<f64>, bytes: usize) {
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<34} median {:>7.2} ms   p95 {:>7.2} ms   max {:>7.2} ms   {:>7.1} KiB",
        q(0.5),
        q(0.95),
        q(1.0),
        bytes as f64 / 1024.0
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = std::time::Instant::now();
    seed(dir.path());
    println!(
        "seeded {DAGS} DAGs × {DAYS} days (a day in 50 without a run) × {TASKS} tasks in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // A project's relative paths (dags/, .cartflow/) resolve in the current folder, as for the CLI.
    std::env::set_current_dir(dir.path()).expect("cd");
    let project = Project::open(dir.path().to_path_buf(), None, None).expect("project");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cancel = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = cancel.clone();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            let env = project.env(Backend::Local).await.expect("env");
            let options = cartflow::ui::Options {
                bind: "127.0.0.1:0".parse().expect("addr"),
                tokens: Vec::new(),
                backend: Backend::Local,
                query_timeout: cartflow::ui::QUERY_TIMEOUT,
            };
            cartflow::ui::serve(project, env, options, stop, |a| tx.send(a.port()).expect("send"))
                .await
                .expect("serve");
        })
    });
    let port = rx.recv_timeout(Duration::from_secs(30)).expect("the server listens");
    let n: i64 = 200;
    // Warm-up (first compile of the DAGs, page cache).
    for _ in 0..5 {
        get(port, "/dags/dag1");
    }
    let mut samples = Vec::new();
    let mut bytes = 0;
    for i in 0..n {
        // Pages of 90 intervals all over the three years.
        let before =
            Utc.with_ymd_and_hms(2017, 4, 1, 0, 0, 0).single().expect("d") + chrono::Duration::days((i * 5) % 900);
        let (ms, b) =
            get(port, &format!("/dags/dag{}?before={}", i as usize % DAGS, before.format("%Y-%m-%dT%H:%M:%SZ")));
        samples.push(ms);
        bytes = b;
    }
    stats("grid page (90 intervals × 15 tasks)", samples, bytes);
    let mut samples = Vec::new();
    for i in 0..n / 2 {
        // The failed runs only: ~30 over the three years (the state filter's query).
        let (ms, b) = get(port, &format!("/dags/dag{}?state=failed", i as usize % DAGS));
        samples.push(ms);
        bytes = b;
    }
    stats("grid page, state=failed (3 years)", samples, bytes);
    let mut samples = Vec::new();
    for i in 0..n {
        let day = (i * 7) % DAYS;
        let day = if day % 50 == 7 { day + 1 } else { day }; // a day with a run
        let start = Utc.with_ymd_and_hms(2017, 1, 1, 0, 0, 0).single().expect("d") + chrono::Duration::days(day);
        let run = cartflow::engine::store::run_id(&format!("dag{}", i as usize % DAGS), start);
        let (ms, b) = get(port, &format!("/runs/{run}"));
        samples.push(ms);
        bytes = b;
    }
    stats("run page (15 tasks)", samples, bytes);
    let mut samples = Vec::new();
    for _ in 0..n / 2 {
        let (ms, b) = get(port, "/");
        samples.push(ms);
        bytes = b;
    }
    stats("DAGs page (3 DAGs)", samples, bytes);
    println!("target: grid page p95 under 50 ms");
    cancel.cancel();
    server.join().expect("server");
}
