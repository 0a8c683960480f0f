//! The local stage end to end, in process: producer → stream1 → detector + archiver → stream2 →
//! handler, against the generator's ground truth; and the reprocess after the seed's bug.

use std::collections::BTreeSet;
use std::path::Path;

use cartflow_jobs::generate::{GenConfig, GroundTruth, Sink};
use cartflow_streaming::handler::{AlertFilter, SqliteAlerts};
use cartflow_streaming::pipeline::{self, Paths, Source, StageConfig};
use cartflow_streaming::rules::RuleSet;

const DAY: i64 = 18_170; // 2019-10-01

fn gen_cfg(days: u32, events: u64, bots: u32) -> GenConfig {
    GenConfig { start_day: DAY, days, events_per_day: events, seed: 11, malformed_rate: 0.0, bots_per_day: bots }
}

fn truth(cfg: &GenConfig) -> GroundTruth {
    let mut sink = |_: &[u8], _: i64| Ok(());
    cartflow_jobs::generate::generate(cfg, &mut Sink::Lines(&mut sink)).expect("generate")
}

fn rules(name: &str) -> RuleSet {
    RuleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").join(name)).expect("rules")
}

fn stage(dir: &Path, rules: RuleSet, cfg: &GenConfig) -> StageConfig {
    let from = cfg.start_day * 86_400;
    StageConfig {
        paths: Paths::under(dir, &dir.join("lake")),
        rules,
        shards: 4,
        source: Some(Source::Generate(cfg.clone())),
        producer: format!("test-{from}"),
        interval: Some((from, from + i64::from(cfg.days) * 86_400)),
        rate: None,
    }
}

fn archived_lines(lake: &Path, date: &str) -> Vec<String> {
    use std::io::Read;
    let mut out = Vec::new();
    for f in cartflow_jobs::rawzone::list_partition(lake, date).expect("list") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).expect("open"))
            .read_to_string(&mut s)
            .expect("gunzip");
        out.extend(s.lines().map(str::to_string));
    }
    out
}

#[test]
fn every_burst_is_detected_normal_traffic_is_quiet_and_the_archive_keeps_every_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = gen_cfg(2, 30_000, 4);
    let t = truth(&cfg);
    let sc = stage(dir.path(), rules("ddos.yaml"), &cfg);
    let rep = pipeline::run_stage(&sc).expect("stage");
    assert_eq!(rep.produced.appended, t.rows);
    assert_eq!(rep.archived.records, t.rows, "events in = events archived");
    assert_eq!(rep.detected.records, t.rows);
    let late: u64 = rep.detected.rules.iter().map(|r| r.1.late).sum();
    assert_eq!(late, 0, "a stream in event order has no late events");

    // The archive holds each event exactly once.
    let mut archived = Vec::new();
    for d in ["2019-10-01", "2019-10-02"] {
        archived.extend(archived_lines(&sc.paths.lake, d));
    }
    assert_eq!(archived.len() as u64, t.rows);

    // Alerts: exactly the bots, each detected.
    let store = SqliteAlerts::open(&sc.paths.alerts_db).expect("alerts");
    let alerts = store.list(&AlertFilter::default()).expect("list");
    let bots: BTreeSet<String> = t.bursts.iter().map(|b| b.user_id.to_string()).collect();
    let alerted: BTreeSet<String> = alerts.iter().map(|a| a.key.clone()).collect();
    assert_eq!(alerted, bots, "every burst detected, no normal user flagged");
    for b in &t.bursts {
        let windows: u64 = alerts.iter().filter(|a| a.key == b.user_id.to_string()).map(|a| a.value).sum();
        assert!(windows * 2 >= b.events, "most of burst {b:?} is inside alerting windows ({windows})");
    }
    assert_eq!(rep.handled.stored, alerts.len() as u64);
    let notified = std::fs::read_to_string(&sc.paths.notifications).unwrap_or_default().lines().count() as u64;
    assert_eq!(notified, alerts.iter().filter(|a| a.value > 100).count() as u64);

    // A re-run of the same interval produces nothing twice and changes nothing.
    let again = pipeline::run_stage(&sc).expect("re-run");
    assert_eq!(again.produced.appended, 0);
    assert_eq!(again.produced.skipped, t.rows);
    assert_eq!(again.archived.records, 0);
    assert_eq!(store.list(&AlertFilter::default()).expect("list"), alerts);
}

#[test]
fn reprocess_after_the_seed_bug_equals_a_clean_run_and_reports_the_diff() {
    let cfg = gen_cfg(1, 20_000, 3);
    // A clean run with the fixed rule.
    let clean = tempfile::tempdir().expect("tmp");
    pipeline::run_stage(&stage(clean.path(), rules("ddos.yaml"), &cfg)).expect("clean run");
    let clean_store = SqliteAlerts::open(&clean.path().join("alerts.db")).expect("alerts");
    let want = pipeline::alert_set(&clean_store, &AlertFilter::default()).expect("set");
    assert!(!want.is_empty());

    // The seed's rule: windows on ingest time. The whole day arrives within seconds.
    let buggy = tempfile::tempdir().expect("tmp");
    let sc = stage(buggy.path(), rules("ddos_seed_bug.yaml"), &cfg);
    pipeline::run_stage(&sc).expect("buggy run");
    let mut store = SqliteAlerts::open(&sc.paths.alerts_db).expect("alerts");
    let before = pipeline::alert_set(&store, &AlertFilter::default()).expect("set");
    assert!(before.len() > want.len(), "the bug raises false alerts: {} vs {}", before.len(), want.len());

    // Reprocessing with the buggy rule is refused: the archive has no ingest time.
    let e = pipeline::reprocess(
        &sc.paths.lake,
        &rules("ddos_seed_bug.yaml"),
        "2019-10-01",
        "2019-10-01",
        &mut store,
        false,
    )
    .expect_err("ingest time");
    assert!(e.to_string().contains("ingest_time"), "{e}");

    // Dry run: the diff, nothing changed.
    let dry = pipeline::reprocess(&sc.paths.lake, &rules("ddos.yaml"), "2019-10-01", "2019-10-01", &mut store, true)
        .expect("dry");
    assert_eq!(pipeline::alert_set(&store, &AlertFilter::default()).expect("set"), before);
    let rep = pipeline::reprocess(&sc.paths.lake, &rules("ddos.yaml"), "2019-10-01", "2019-10-01", &mut store, false)
        .expect("reprocess");
    assert_eq!(dry.diffs, rep.diffs);
    assert_eq!(rep.records, truth(&cfg).rows, "every archived event was read");
    let after = pipeline::alert_set(&store, &AlertFilter::default()).expect("set");
    assert_eq!(after, want, "after the fix, the alerts are those of a clean run");
    let diff = &rep.diffs[0].1;
    let day = &diff.per_day["2019-10-01"];
    let kept = day.get("unchanged").copied().unwrap_or(0) + day.get("changed").copied().unwrap_or(0);
    assert_eq!(kept + day.get("added").copied().unwrap_or(0), want.len() as u64);
    assert_eq!(
        day.get("retracted").copied().unwrap_or(0) + kept,
        before.len() as u64,
        "every earlier alert is either kept or retracted"
    );
    // Idempotent: a second reprocess changes nothing.
    let again = pipeline::reprocess(&sc.paths.lake, &rules("ddos.yaml"), "2019-10-01", "2019-10-01", &mut store, false)
        .expect("again");
    assert_eq!(again.diffs[0].1.total("unchanged"), want.len() as u64);
    assert_eq!(again.diffs[0].1.total("added") + again.diffs[0].1.total("retracted"), 0);
}
