//! The crash-point harness (issue #17): the daily DAG runs for a day on the local backend once
//! uninterrupted; then, for each crash point (every name `cartflow_jobs::crash` lists, and some
//! at a later hit), a fresh project runs the same command with `CARTFLOW_CRASH_AT=<point>` (it
//! must die by SIGABRT there: a point not reached fails the test), then again without it (it
//! must exit 0 with no failed attempt), and what a reader sees must equal the uninterrupted
//! run's: every table of the catalog (rows and a content checksum of what it points at, read
//! with DuckDB), the catalog itself (tables, columns, partitions), the quarantine, the raw
//! zone's objects, the files of the lake (nothing left in staging), the dashboard, the alerts
//! (`cartflow alerts --json`, with and without `--all`) and the notifications sent. No process
//! of the crashed run may be alive after the resume. The snapshot is
//! `tests/python/crash_snapshot.py`.
//!
//! Not compared, because a crash legitimately changes them: the names of version folders (a
//! timestamp), a full-refresh table's version folder the catalog never named (a crashed
//! refresh's, pruned after an hour), catalog version numbers (a task re-run after a crash
//! commits again), how often a notification was sent (at least once: the distinct
//! notifications are compared), the metrics counters, the streams' own files and the logs.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cartflow_e2e::{Project, Run};

use super::lake::{install_daily, repo_path};

const DAY: &str = "2019-10-01";

/// The command: the daily DAG for one day, its streaming stage simulating the events.
const COMMAND: &[&str] = &[
    "backfill",
    "ecommerce_daily",
    "--from",
    DAY,
    "--to",
    DAY,
    "-p",
    "stream_source=generate",
    "-p",
    "events_per_day=3000",
];

/// Every point at its first hit, and points hit several times per run at a later hit too,
/// mid-run: the 3rd swap is a CTAS partition's (compaction and enrichment come first), the
/// 10th attempt one of the four CTAS, the 3rd crawl the enriched table's.
const LATER_HITS: &[&str] = &[
    "swap.staged:3",
    "swap.exchanged:3",
    "swap.together.exchanged:2",
    "crawl.table_written:3",
    "crawl.partitions_written:2",
    "ctas.written:3",
    "ctas.cataloged:4",
    "store.attempt_started:10",
    "store.attempt_ended:10",
    "store.attempt_ended:13",
    "producer.appended:1500",
    "alerts.stored:3",
    "alerts.notified:2",
];

/// Marks the processes of a crashed run (set on its command, inherited by its children).
const MARKER: &str = "CARTFLOW_E2E_CRASHED_RUN";

/// Runs only these cases (comma-separated), to look into one point:
/// `CARTFLOW_E2E_CRASH_CASES=alerts.notified:2`.
const ONLY: &str = "CARTFLOW_E2E_CRASH_CASES";

fn cases() -> Vec<String> {
    cartflow_jobs::crash::all().map(str::to_string).chain(LATER_HITS.iter().map(|s| s.to_string())).collect()
}

/// What a reader sees of a project: the snapshot script's keys, plus the alerts.
fn snapshot(python: &Path, p: &Project) -> BTreeMap<String, serde_json::Value> {
    let out = std::process::Command::new(python)
        .arg(repo_path("tests/python/crash_snapshot.py"))
        .arg(p.path())
        .output()
        .expect("python");
    assert!(out.status.success(), "crash_snapshot.py: {}", String::from_utf8_lossy(&out.stderr));
    let mut snap: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout).expect("snapshot json");
    for (key, args) in [("alerts", &["alerts", "--json"][..]), ("alerts --all", &["alerts", "--json", "--all"][..])] {
        let r = p.run(args);
        r.expect_code(0);
        let mut lines: Vec<&str> = r.stdout.lines().collect();
        lines.sort_unstable();
        snap.insert(key.to_string(), serde_json::json!(lines));
    }
    snap
}

/// The keys whose values differ, with both values (for lists, what only one side has).
fn differences(want: &BTreeMap<String, serde_json::Value>, got: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
    let short = |s: String| match s.char_indices().nth(600) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    };
    let only = |a: &[serde_json::Value], b: &[serde_json::Value]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).map(ToString::to_string).collect()
    };
    want.keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| match (want.get(k), got.get(k)) {
            (Some(serde_json::Value::Array(a)), Some(serde_json::Value::Array(b))) => format!(
                "{k} ({} vs {} entries):\n    only uninterrupted {}\n    only crashed+resumed {}",
                a.len(),
                b.len(),
                short(only(a, b).join(", ")),
                short(only(b, a).join(", "))
            ),
            (w, g) => {
                let show =
                    |v: Option<&serde_json::Value>| short(v.map_or_else(|| "(absent)".into(), ToString::to_string));
                format!("{k}:\n    uninterrupted {}\n    crashed+resumed {}", show(w), show(g))
            }
        })
        .collect()
}

/// Live (not zombie) processes of the crashed run: carrying its marker, or running in its
/// project folder.
fn leftovers(p: &Project) -> Vec<String> {
    let marker = format!("{MARKER}={}", p.path().display());
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        let Ok(n) = pid.parse::<i32>() else { continue };
        if pid == me || !cartflow_e2e::alive(n) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let marked = env.split(|b| *b == 0).any(|v| v == marker.as_bytes());
        let inside = std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(p.path()));
        if marked || inside {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{pid}: {}", String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// One case: crash at `at`, resume, compare. `Err` says what went wrong.
fn crash_and_resume(at: &str, python: &Path, want: &BTreeMap<String, serde_json::Value>) -> Result<(), String> {
    let p = Project::new();
    install_daily(&p);
    let mut cmd = p.command(COMMAND);
    cmd.env(cartflow_jobs::crash::ENV, at).env(MARKER, p.path());
    let out = cmd.output().expect("run cartflow");
    let crashed = Run::from(out.clone());
    let name = at.split(':').next().unwrap_or(at);
    match out.status.signal() {
        Some(libc::SIGABRT) if crashed.stderr.contains(&format!("crash point `{name}` reached")) => {}
        Some(s) => return Err(format!("died by signal {s}, not at the point\n{}", tail(&crashed.stderr))),
        None => {
            return Err(format!(
                "the point was not reached: the run exited with {:?}\n{}",
                crashed.code,
                tail(&crashed.stderr)
            ));
        }
    }
    let resumed = p.run(COMMAND);
    if resumed.code != Some(0) {
        return Err(format!(
            "the resume exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            resumed.code,
            resumed.stdout,
            tail(&resumed.stderr)
        ));
    }
    // The resume re-ran what the crash interrupted, and nothing failed (a failure would have
    // been retried, and hidden a difference behind the retry).
    let attempts: Vec<(String, u32, String)> = p
        .store()
        .prepare("SELECT task_id, attempt, state FROM task_attempts WHERE state NOT IN ('success', 'interrupted')")
        .and_then(|mut q| q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .expect("attempts");
    if !attempts.is_empty() {
        return Err(format!("attempts that neither succeeded nor were interrupted by the crash: {attempts:?}"));
    }
    // A process of the crashed run still dying is given a moment; one still alive is a leak.
    let until = Instant::now() + Duration::from_secs(5);
    let mut left = leftovers(&p);
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        left = leftovers(&p);
    }
    if !left.is_empty() {
        return Err(format!("processes of the crashed run are alive after the resume: {left:?}"));
    }
    let diff = differences(want, &snapshot(python, &p));
    if !diff.is_empty() {
        return Err(format!("differs from the uninterrupted run:\n  {}", diff.join("\n  ")));
    }
    Ok(())
}

/// A case, how it ended, and how long it took.
type Outcome = (String, Result<(), String>, Duration);

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn a_crash_at_any_point_resumes_to_the_uninterrupted_result() {
    let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
    let started = Instant::now();
    let baseline = Project::new();
    install_daily(&baseline);
    baseline.run(COMMAND).expect_code(0);
    let want = snapshot(&python, &baseline);
    // The baseline is a real day: every kind of output is there to compare.
    for key in [
        "data ecommerce.enriched_events/dt=2019-10-01",
        "data ecommerce.top_categories",
        "quarantine dt=2019-10-01",
        "dashboard",
    ] {
        let rows = want.get(key).and_then(|v| v.get(0)).and_then(serde_json::Value::as_u64);
        assert!(key == "dashboard" && want.contains_key(key) || rows.is_some_and(|n| n > 0), "{key}: {want:?}");
    }
    assert!(want["alerts"].as_array().is_some_and(|a| !a.is_empty()), "the day raises alerts");
    assert!(want.keys().any(|k| k.starts_with("raw ")), "the raw zone is archived");

    let cases = cases();
    let distinct: std::collections::BTreeSet<String> =
        cases.iter().map(|c| c.split(':').next().unwrap_or(c).to_string()).collect();
    assert!(distinct.len() >= 25, "at least 25 distinct crash points: {distinct:?}");
    let cases: Vec<String> = match std::env::var(ONLY) {
        Ok(only) if !only.trim().is_empty() => {
            let only: Vec<String> = only.split(',').map(|c| c.trim().to_string()).collect();
            eprintln!("{ONLY}: only {only:?}");
            only
        }
        _ => cases,
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Outcome>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(at) = cases.get(i) else { break };
                    let t = Instant::now();
                    let r = crash_and_resume(at, &python, &want);
                    let took = t.elapsed();
                    eprintln!("{at}: {} ({took:.1?})", if r.is_ok() { "identical" } else { "FAILED" });
                    results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((at.clone(), r, took));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(at, _, _)| cases.iter().position(|c| c == at));
    let identical = results.iter().filter(|(_, r, _)| r.is_ok()).count();
    println!("{} crash points, {identical} identical ({} distinct names)", results.len(), distinct.len());
    for (at, r, took) in &results {
        println!("  {at:<28} {} {took:.1?}", if r.is_ok() { "identical" } else { "FAILED" });
    }
    println!("in {:.1?}", started.elapsed());
    let failed: Vec<String> =
        results.iter().filter_map(|(at, r, _)| r.as_ref().err().map(|e| format!("{at}: {e}"))).collect();
    assert!(failed.is_empty(), "{} of {} crash points failed:\n\n{}", failed.len(), results.len(), failed.join("\n\n"));
}
