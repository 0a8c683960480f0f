//! Deadline decisions against a real run store.

use std::path::Path;

use chrono::NaiveDate;

use super::*;
use crate::dag::compile::{CompileOptions, compile_source};
use crate::engine::state::Trigger;
use crate::engine::store::{Claim, Op};

fn dag(extra_task: &str) -> Dag {
    compile_source(
        Path::new("t.yaml"),
        &format!(
            "id: d\nschedule: '@daily'\ndeadline: 1h\nnotify:\n  - on: deadline_miss\n    to: {{file: {{path: n.jsonl}}}}\ntasks:\n  - id: a\n    kind: noop\n{extra_task}"
        ),
        &CompileOptions::default(),
    )
    .expect("compiles")
}

fn day(d: u32) -> DataInterval {
    DataInterval::daily_utc(NaiveDate::from_ymd_opt(2019, 10, d).expect("date"))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("ts").with_timezone(&Utc)
}

struct Store {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: RunStore,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.db");
        let store = RunStore::open(&path).expect("open");
        Store { _dir: dir, path, store }
    }

    /// A run of day `d` in `state`, its last execution ended at `ended`, task `a` succeeded
    /// then.
    fn run(&mut self, d: u32, state: RunState, ended: Option<&str>) {
        let tasks = [("a", true), ("b", true)];
        let c = self
            .store
            .claim(&Claim {
                dag_id: "d",
                interval: day(d),
                trigger: Trigger::Scheduled,
                tasks: &tasks,
                rerun: false,
                require_existing: false,
            })
            .expect("claim");
        if let Some(e) = ended {
            let ok = TaskState::Queued.start(1, at(e)).expect("start").succeed(at(e)).expect("ok");
            self.store
                .apply(&c.run_id, &[Op::Task { task_id: "a".into(), state: ok, attempts: 1, failures: 0 }])
                .expect("apply");
        }
        if state != RunState::Running {
            self.store.finish(&c.run_id, state).expect("finish");
        }
        let db = rusqlite::Connection::open(&self.path).expect("db");
        db.execute("UPDATE dag_runs SET ended_at = ?2 WHERE run_id = ?1", rusqlite::params![c.run_id, ended])
            .expect("ended_at");
    }

    fn decide(&mut self, dag: &Dag, now: &str, due: &[DataInterval]) -> Vec<DeadlineRow> {
        let decisions = decide(&self.store, dag, at(now), due, &notify::Settings::default()).expect("decide");
        for (row, notes) in &decisions {
            assert_eq!(notes.len(), usize::from(row.missed), "a miss notifies the DAG's rule, a met deadline nothing");
        }
        self.store.record_deadlines(&decisions).expect("record")
    }
}

fn summary(rows: &[DeadlineRow]) -> Vec<(String, Option<String>, Option<String>)> {
    rows.iter().map(|r| (r.run_id.clone(), r.task_id.clone(), r.reason.clone())).collect()
}

#[test]
fn a_due_interval_without_a_run_misses_its_deadline_once() {
    let mut s = Store::new();
    let d = dag("");
    // Day 1 ended 2019-10-02T00:00Z; its deadline is 01:00.
    assert!(s.decide(&d, "2019-10-02T00:59:59Z", &[day(1)]).is_empty(), "not yet");
    let rows = s.decide(&d, "2019-10-02T01:00:00Z", &[day(1)]);
    assert_eq!(
        summary(&rows),
        vec![(
            "d@2019-10-01T00:00:00Z".into(),
            None,
            Some("the run had not succeeded by 2019-10-02T01:00:00Z (1h00m after the interval's end): no run had started".into())
        )]
    );
    assert!(s.decide(&d, "2019-10-02T01:00:01Z", &[day(1)]).is_empty(), "decided once");
    // The run comes, late: still decided.
    s.run(1, RunState::Success, Some("2019-10-02T01:30:00Z"));
    assert!(s.decide(&d, "2019-10-02T02:00:00Z", &[]).is_empty());
    let notes = s.store.undelivered_notifications(None, None).expect("pending");
    assert_eq!(notes, vec![("d@2019-10-01T00:00:00Z/-/0/deadline_miss".to_string(), "file:n.jsonl".to_string())]);
}

#[test]
fn what_a_run_was_at_its_deadline_decides_it() {
    let mut s = Store::new();
    let d = dag("");
    s.run(1, RunState::Success, Some("2019-10-02T00:40:00Z"));
    s.run(2, RunState::Success, Some("2019-10-03T01:00:01Z"));
    s.run(3, RunState::Running, None);
    s.run(4, RunState::Failed, Some("2019-10-05T00:10:00Z"));
    s.run(5, RunState::Cancelled, Some("2019-10-06T00:10:00Z"));
    let rows = s.decide(&d, "2019-10-07T00:00:00Z", &[]);
    let reasons: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| {
            (
                r.run_id.clone(),
                r.missed,
                r.reason.clone().unwrap_or_default().split(": ").last().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("d@2019-10-01T00:00:00Z".into(), false, "".into()),
            ("d@2019-10-02T00:00:00Z".into(), true, "it succeeded later, at 2019-10-03T01:00:01Z".into()),
            ("d@2019-10-03T00:00:00Z".into(), true, "it was still running".into()),
            ("d@2019-10-04T00:00:00Z".into(), true, "it had failed".into()),
            ("d@2019-10-05T00:00:00Z".into(), true, "it was cancelled".into()),
        ]
    );
    assert!(s.decide(&d, "2019-10-08T00:00:00Z", &[]).is_empty(), "every one decided once");
}

#[test]
fn deadlines_older_than_the_lookback_are_never_decided() {
    let mut s = Store::new();
    let d = dag("");
    s.run(1, RunState::Failed, Some("2019-10-02T00:10:00Z"));
    // Day 1's deadline (2019-10-02T01:00Z) is more than 7 days before now: a backfill's past.
    assert!(s.decide(&d, "2019-10-09T01:00:01Z", &[]).is_empty());
    assert_eq!(s.decide(&d, "2019-10-09T01:00:00Z", &[]).len(), 1, "exactly 7 days is still looked at");
}

#[test]
fn a_task_with_its_own_deadline_is_decided_apart_from_the_run() {
    let mut s = Store::new();
    let d = dag("    deadline: 30m\n  - id: b\n    kind: noop\n    deadline: 2h\n");
    s.run(1, RunState::Running, Some("2019-10-02T00:20:00Z"));
    let rows = s.decide(&d, "2019-10-02T01:30:00Z", &[]);
    let got: Vec<(Option<String>, bool)> = rows.iter().map(|r| (r.task_id.clone(), r.missed)).collect();
    assert_eq!(got, vec![(None, true), (Some("a".into()), false)], "b's deadline (02:00) has not passed");
    let rows = s.decide(&d, "2019-10-02T02:00:00Z", &[]);
    assert_eq!(summary(&rows)[0].1.as_deref(), Some("b"));
    assert!(summary(&rows)[0].2.as_deref().is_some_and(|r| r.ends_with("it was queued")), "{rows:?}");
}

#[test]
fn deadlines_that_passed_while_the_dag_was_paused_are_not_raised() {
    let mut s = Store::new();
    let d = dag("");
    assert!(s.store.set_paused("d", true, "eve").expect("pause"));
    assert!(s.store.set_paused("d", false, "eve").expect("unpause"));
    // Paused 2019-10-02T12:00Z .. 2019-10-04T12:00Z (the audit log's times, set here). Day 1's
    // deadline (10-02 01:00) passed before the pause and was never decided: raised. Days 2 and
    // 3 (10-03 01:00, 10-04 01:00) passed during it: not raised. Day 4's (10-05 01:00), after.
    let db = rusqlite::Connection::open(&s.path).expect("db");
    db.execute("UPDATE audit SET at = '2019-10-02T12:00:00Z' WHERE action = 'pause'", []).expect("at");
    db.execute("UPDATE audit SET at = '2019-10-04T12:00:00Z' WHERE action = 'unpause'", []).expect("at");
    assert_eq!(
        s.store.last_pause("d").expect("read"),
        Some((Some(at("2019-10-02T12:00:00Z")), at("2019-10-04T12:00:00Z")))
    );
    let rows = s.decide(&d, "2019-10-04T12:00:01Z", &[day(1), day(2), day(3)]);
    assert_eq!(summary(&rows).iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["d@2019-10-01T00:00:00Z"]);
    let rows = s.decide(&d, "2019-10-05T01:00:00Z", &[day(1), day(2), day(3), day(4)]);
    assert_eq!(summary(&rows).iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["d@2019-10-04T00:00:00Z"]);
    assert!(rows[0].missed);
    assert_eq!(s.store.last_pause("other").expect("read"), None, "never unpaused");
}
