//! The local streaming pipeline: killed producers and consumers resume without loss or
//! duplicates, and reprocessing after a rule fix replaces the alerts.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use cartflow_e2e::{Project, Run, alive, kill};

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).expect("repository file")
}

/// Every archived line, sorted (a multiset).
fn archive(p: &Project) -> Vec<String> {
    archive_lines(p, false)
}

/// Every archived line with its partition (`dt=…/hour=…`), sorted.
fn archive_by_partition(p: &Project) -> Vec<String> {
    archive_lines(p, true)
}

fn archive_lines(p: &Project, partition: bool) -> Vec<String> {
    let mut out = Vec::new();
    let root = p.path().join(".cartflow/lake/raw/events");
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".json.gz") && !name.starts_with('.') {
                let mut s = String::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).expect("open"))
                    .read_to_string(&mut s)
                    .expect("gunzip");
                let part = path.parent().and_then(|h| h.strip_prefix(&root).ok()).map(|r| r.display().to_string());
                let part = part.unwrap_or_default();
                out.extend(s.lines().map(|l| if partition { format!("{part} {l}") } else { l.to_string() }));
            }
        }
    }
    out.sort();
    out
}

fn alerts(p: &Project) -> Vec<(String, u64)> {
    let r = p.run(&["alerts", "--json"]);
    r.expect_code(0);
    r.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (v["id"].as_str().unwrap_or("").to_string(), v["value"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// Starts `cartflow ARGS` and kills it with SIGKILL once `ready()` holds (or it ends).
fn kill_when(p: &Project, args: &[&str], ready: impl Fn() -> bool) -> bool {
    let mut child = p.spawn(args);
    let until = Instant::now() + Duration::from_secs(120);
    while !ready() && alive(child.id() as i32) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = alive(child.id() as i32);
    if killed {
        kill(child.id(), "KILL");
    }
    let _ = child.wait();
    killed
}

const PRODUCE: &[&str] = &["produce", "--generate", "--events-per-day", "300000", "--seed", "5", "--bots-per-day", "3"];
const RUN: &[&str] = &["streaming", "run", "--close", "2019-10-01"];

#[test]
fn killed_producers_and_consumers_resume_without_losing_or_doubling_an_event_or_an_alert() {
    // The reference: no kills.
    let clean = Project::new();
    clean.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    clean.run(PRODUCE).expect_code(0);
    let r = clean.run(RUN);
    r.expect_code(0);
    let want_archive = archive(&clean);
    let want_alerts = alerts(&clean);
    assert!(want_archive.len() > 250_000, "{}", want_archive.len());
    assert!(!want_alerts.is_empty());

    let p = Project::new();
    p.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    // Kill the producer once part of the stream is written, then run it again.
    let shard = p.path().join(".cartflow/streaming/streams/stream1/shard-000");
    let size = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    let killed = kill_when(&p, PRODUCE, || size(&shard) > 4 << 20);
    assert!(killed, "the producer was still running when a shard held 4 MiB");
    let again = p.run(PRODUCE);
    again.expect_code(0);
    assert!(!again.stdout.contains(" 0 were already there"), "the second run resumed: {}", again.stdout);
    // Kill the consumers after their first checkpoint, then run them again.
    let ckpt = p.path().join(".cartflow/streaming/streams/stream1/checkpoints/archiver.ckpt");
    let killed = kill_when(&p, RUN, || ckpt.exists());
    assert!(killed, "the consumers were still running at their first checkpoint");
    let done = p.run(RUN);
    done.expect_code(0);
    assert_eq!(archive(&p), want_archive, "every event archived exactly once");
    assert_eq!(alerts(&p), want_alerts, "the same alerts, none twice");
    // A third run has nothing left to do.
    let idle = p.run(RUN);
    idle.expect_code(0);
    assert!(idle.stdout.starts_with("archived 0 event(s)"), "{}", idle.stdout);
    assert_eq!(archive(&p).len(), want_archive.len());
}

/// The archiver's crash points: killed at each (with malformed records in the stream, whose
/// partition comes from the record before them), the stage resumes to the archive and the alerts
/// of a run that was never interrupted.
#[test]
fn the_stage_crashed_at_each_archiver_point_resumes_to_the_uninterrupted_archive() {
    const PRODUCE_MALFORMED: &[&str] = &[
        "produce",
        "--generate",
        "--events-per-day",
        "250000",
        "--seed",
        "9",
        "--bots-per-day",
        "2",
        "--malformed-rate",
        "0.02",
    ];
    let clean = Project::new();
    clean.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    let prod = clean.run(PRODUCE_MALFORMED);
    prod.expect_code(0);
    let n_produced: usize = prod
        .stdout
        .strip_prefix("produced ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("produced N");
    let produced = clean.path().join(".cartflow/streaming");
    let copy_stream = |to: &Project| {
        let dest = to.path().join(".cartflow");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let ok = std::process::Command::new("cp").arg("-a").arg(&produced).arg(&dest).status().expect("cp");
        assert!(ok.success());
    };
    let fresh = Project::new();
    fresh.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    copy_stream(&fresh);
    fresh.run(RUN).expect_code(0);
    let want_archive = archive_by_partition(&fresh);
    let want_alerts = alerts(&fresh);
    assert_eq!(want_archive.len(), n_produced, "the uninterrupted archive holds every produced record");
    let line = |l: &String| l.split_once(' ').map(|(_, l)| l.to_string()).unwrap_or_default();
    assert!(
        want_archive.iter().map(line).any(|l| serde_json::from_str::<serde_json::Value>(&l).is_err()),
        "malformed lines are archived too"
    );
    assert!(want_archive.iter().all(|l| l.starts_with("dt=2019-10-0")), "every line in the generated days");

    // 250k records: a checkpoint at 200k, then the last one; `:2` crashes in the last.
    let points =
        ["archiver.staged", "archiver.checkpointed", "archiver.published", "archiver.staged:2", "archiver.published:2"];
    for point in points {
        let p = Project::new();
        p.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
        copy_stream(&p);
        let crashed = Run::from(p.command(RUN).env("CARTFLOW_CRASH_AT", point).output().expect("run"));
        assert_eq!(crashed.code, None, "{point}: the process aborted there\n{}", crashed.stderr);
        p.run(RUN).expect_code(0);
        assert_eq!(
            archive_by_partition(&p),
            want_archive,
            "{point}: every event archived exactly once, in the same partition"
        );
        assert_eq!(alerts(&p), want_alerts, "{point}: the same alerts");
    }
}

fn stage_dag() -> String {
    "id: rt\nschedule: '@daily'\nstart_date: 2019-10-01\ntasks:\n  - id: stream\n    kind: streaming_stage\n    source: generate\n    events_per_day: \"20000\"\n    bots_per_day: 3\n  - id: report\n    kind: command\n    depends_on: [stream]\n    program: sh\n    args: [-c, 'echo report {{ ds }} >> $DIR/reports']\n".to_string()
}

#[test]
fn reprocess_after_fixing_the_rule_replaces_the_alerts_and_reruns_what_depends_on_them() {
    // A clean run with the fixed rule.
    let clean = Project::new();
    clean.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    clean.dag("rt.yaml", &stage_dag());
    clean.run(&["backfill", "rt", "--from", "2019-10-01", "--to", "2019-10-01"]).expect_code(0);
    let want = alerts(&clean);
    assert!(!want.is_empty());

    // The seed's rule (ingest time) is deployed first.
    let p = Project::new();
    p.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos_seed_bug.yaml"));
    p.dag("rt.yaml", &stage_dag());
    p.run(&["backfill", "rt", "--from", "2019-10-01", "--to", "2019-10-01"]).expect_code(0);
    let before = alerts(&p);
    assert!(before.len() > want.len(), "the seed's rule raises false alerts: {before:?}");
    assert_eq!(p.read("reports"), "report 2019-10-01\n");

    // Reprocessing with the buggy rule is refused: the archive has no ingest time.
    let refused = p.run(&["reprocess", "--stage", "detector", "--from", "2019-10-01", "--to", "2019-10-01"]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("ingest_time"), "{}", refused.stderr);

    // Fix the rule; a dry run shows the diff and the plan and changes nothing.
    p.write("streaming/rules/ddos.yaml", &repo_file("streaming/rules/ddos.yaml"));
    let dry = p.run(&["reprocess", "--stage", "detector", "--from", "2019-10-01", "--to", "2019-10-01", "--dry-run"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert!(dry.stdout.contains("ddos_user_burst") && dry.stdout.contains("2019-10-01"), "{}", dry.stdout);
    assert_eq!(alerts(&p), before);
    assert_eq!(p.read("reports"), "report 2019-10-01\n");

    let r = p.run(&["reprocess", "--stage", "detector", "--from", "2019-10-01", "--to", "2019-10-01"]);
    r.expect_code(0);
    assert!(r.stdout.contains("re-running what is downstream of `stream` (report)"), "{}", r.stdout);
    assert_eq!(alerts(&p), want, "the alerts are those of a clean run with the fixed rule");
    assert_eq!(p.read("reports"), "report 2019-10-01\nreport 2019-10-01\n", "the downstream task ran again");
    // The diff row: day, added, retracted, changed, unchanged.
    let row = r.stdout.lines().find(|l| l.contains("ddos_user_burst") && l.contains("2019-10-01")).expect("diff row");
    let n: Vec<u64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (added, retracted, changed, unchanged) = (n[0], n[1], n[2], n[3]);
    assert_eq!(added + changed + unchanged, want.len() as u64, "{row}");
    assert_eq!(retracted + changed + unchanged, before.len() as u64, "{row}");
    assert!(retracted > 0, "the bug's false alerts are retracted: {row}");
    let all = p.run(&["alerts", "--all"]);
    assert!(all.stdout.contains("retracted"), "{}", all.stdout);
}
