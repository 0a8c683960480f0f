//! Backfills and the scheduler.

use std::time::Duration;

use cartflow_e2e::{Project, kill, sh};

fn counts(text: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

const DAILY: &str = "id: daily\nschedule: '@daily'\nstart_date: 2019-10-01\nmax_active_runs: 2\ntasks:\n";

#[test]
fn backfill_runs_each_complete_interval_once_and_skips_what_ran() {
    let p = Project::new();
    p.dag("d.yaml", &format!("{DAILY}{}", sh("a", "", "echo {{ ds }} >> $DIR/ran; [ ! -f $DIR/fail_{{ ds }} ]")));
    p.write("fail_2019-10-03", "");
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-05"]);
    r.expect_code(1);
    assert!(r.stdout.contains("5 run(s), 4 succeeded, 1 not successful"), "{}", r.stdout);
    assert!(r.stdout.contains("2019-10-03   create   failed"), "{}", r.stdout);
    assert_eq!(counts(&p.read("ran")).values().sum::<usize>(), 5);

    // none: everything has a run -> nothing runs.
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-05"]);
    r.expect_code(0);
    assert!(r.stdout.contains("5 interval(s), 0 to run, 5 skipped"), "{}", r.stdout);

    // failed: only the failed interval runs again.
    std::fs::remove_file(p.path().join("fail_2019-10-03")).expect("fix");
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-05", "--reprocess", "failed"]);
    r.expect_code(0);
    assert!(r.stdout.contains("1 to run, 4 skipped"), "{}", r.stdout);
    assert_eq!(counts(&p.read("ran")).get("2019-10-03"), Some(&2));

    // completed: everything runs again.
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-05", "--reprocess", "completed"]);
    r.expect_code(0);
    assert!(r.stdout.contains("5 to run, 0 skipped"), "{}", r.stdout);
    assert_eq!(p.read("ran").lines().count(), 11);
    let triggers: Vec<String> = p
        .store()
        .prepare("SELECT DISTINCT run_trigger FROM dag_runs")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(triggers, vec!["backfill"]);
}

#[test]
fn backfill_dry_run_prints_the_plan_and_runs_nothing() {
    let p = Project::new();
    p.dag("d.yaml", &format!("{DAILY}{}", sh("a", "", "echo {{ ds }} >> $DIR/ran")));
    p.run(&["run", "daily", "--date", "2019-10-02"]).expect_code(0);
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-03", "--dry-run", "--reverse"]);
    r.expect_code(0);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("| 2019")).collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[0].contains("2019-10-03") && lines[0].contains("create"), "newest first: {}", r.stdout);
    assert!(lines[1].contains("2019-10-02") && lines[1].contains("skip (success)"), "{}", r.stdout);
    assert!(lines[2].contains("2019-10-01") && lines[2].contains("create"), "{}", r.stdout);
    assert!(r.stdout.contains("dry run: nothing was run"));
    assert_eq!(p.read("ran"), "2019-10-02\n", "only the manual run ran");
}

/// `refresh: latest`: in a backfill the summary task runs once, in the last run, after every
/// other run of the backfill has ended (here with 3 runs at once, and the other days slower);
/// in the other runs it is skipped, and what depends on it too. Outside a backfill it runs.
#[test]
fn a_refresh_latest_task_runs_once_per_backfill_after_every_other_run() {
    let p = Project::new();
    let dag = format!(
        "id: daily\nschedule: '@daily'\nstart_date: 2019-10-01\nmax_active_runs: 3\ntasks:\n{}{}    refresh: latest\n{}",
        // The last day is quick, the others slow: a last run that did not wait for them would
        // write its summary before their days.
        sh("day", "", "[ {{ ds }} = 2019-10-03 ] || sleep 2; echo day {{ ds }} >> $DIR/ran"),
        sh("summary", "day", "echo summary {{ ds }} >> $DIR/ran"),
        sh("publish", "summary", "echo publish {{ ds }} >> $DIR/ran"),
    );
    p.dag("d.yaml", &dag);
    // The last interval already ran: the summary goes in the last run that runs (2019-10-03).
    p.run(&["run", "daily", "--date", "2019-10-04"]).expect_code(0);
    assert_eq!(p.read("ran"), "day 2019-10-04\nsummary 2019-10-04\npublish 2019-10-04\n", "outside a backfill it runs");
    std::fs::remove_file(p.path().join("ran")).expect("rm");

    let dry = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-04", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout
            .contains("refresh: latest — summary run once, in the run of 2019-10-03, after the other runs have ended"),
        "{}",
        dry.stdout
    );
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-04"]);
    r.expect_code(0);
    assert!(r.stdout.contains("3 run(s), 3 succeeded"), "{}", r.stdout);
    let ran = p.read("ran");
    let lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("summary")).count(), 1, "{ran}");
    assert_eq!(&lines[lines.len() - 2..], ["summary 2019-10-03", "publish 2019-10-03"], "after every day: {ran}");
    let mut days: Vec<&str> = lines[..lines.len() - 2].to_vec();
    days.sort();
    assert_eq!(days, ["day 2019-10-01", "day 2019-10-02", "day 2019-10-03"], "{ran}");
    let tasks = p.run(&["tasks", "daily@2019-10-01T00:00:00Z"]);
    for t in ["summary", "publish"] {
        assert!(tasks.stdout.lines().any(|l| l.contains(t) && l.contains("skipped")), "{}", tasks.stdout);
    }
}

#[test]
fn backfill_only_plans_complete_intervals() {
    let p = Project::new();
    p.dag("d.yaml", &format!("{DAILY}{}", sh("a", "", "true")));
    let r = p
        .command(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-10", "--dry-run"])
        .env("CARTFLOW_NOW", "2019-10-04T12:00:00Z")
        .output()
        .expect("run");
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.contains("3 interval(s), 3 to run, 0 skipped, 7 not complete yet"), "{out}");
}

#[test]
fn a_backfill_killed_midway_continues_where_it_stopped() {
    let p = Project::new();
    // Day 3 blocks until released; one run at a time.
    p.dag(
        "d.yaml",
        &format!(
            "{DAILY}{}",
            sh("a", "", "echo {{ ds }} >> $DIR/ran; if [ {{ ds }} = 2019-10-03 ]; then while [ ! -f $DIR/release ]; do sleep 0.05; done; fi")
        ),
    );
    // A first, complete backfill; then a `completed` reprocess that we kill on day 3.
    std::fs::write(p.path().join("release"), "").expect("release");
    p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-05"]).expect_code(0);
    std::fs::remove_file(p.path().join("release")).expect("block");
    std::fs::write(p.path().join("ran"), "").expect("reset");
    let args = [
        "backfill",
        "daily",
        "--from",
        "2019-10-01",
        "--to",
        "2019-10-05",
        "--reprocess",
        "completed",
        "--max-active-runs",
        "1",
    ];
    let mut child = p.spawn(&args);
    p.wait_for_lines("ran", 3, Duration::from_secs(30));
    kill(child.id(), "KILL");
    child.wait().expect("wait");
    std::fs::write(p.path().join("release"), "").expect("release");
    let r = p.run(&args);
    r.expect_code(0);
    assert!(r.stdout.contains("continuing backfill job"), "{}", r.stdout);
    let c = counts(&p.read("ran"));
    assert_eq!(c.get("2019-10-01"), Some(&1), "finished intervals are not redone: {c:?}");
    assert_eq!(c.get("2019-10-02"), Some(&1), "{c:?}");
    assert_eq!(c.get("2019-10-03"), Some(&2), "the interrupted interval resumes: {c:?}");
    assert_eq!(c.get("2019-10-04"), Some(&1), "{c:?}");
    assert_eq!(c.get("2019-10-05"), Some(&1), "{c:?}");
    // The job is finished: the same command now plans afresh (and reruns everything).
    let r = p.run(&[
        "backfill",
        "daily",
        "--from",
        "2019-10-01",
        "--to",
        "2019-10-05",
        "--reprocess",
        "completed",
        "--max-active-runs",
        "1",
        "--dry-run",
    ]);
    assert!(!r.stdout.contains("continuing"), "{}", r.stdout);
    assert!(r.stdout.contains("5 to run"), "{}", r.stdout);
}

#[test]
fn backfill_respects_max_active_runs() {
    let p = Project::new();
    // Each run holds one of two lock dirs; a third concurrent run would find both taken.
    let body = "mkdir $DIR/l1 2>/dev/null && L=l1 || { mkdir $DIR/l2 && L=l2; } || exit 9; sleep 0.3; rmdir $DIR/$L";
    p.dag("d.yaml", &format!("{DAILY}{}", sh("a", "", body)));
    let r = p.run(&["backfill", "daily", "--from", "2019-10-01", "--to", "2019-10-06"]);
    r.expect_code(0);
    let r = p.run(&[
        "backfill",
        "daily",
        "--from",
        "2019-10-01",
        "--to",
        "2019-10-06",
        "--reprocess",
        "completed",
        "--max-active-runs",
        "3",
    ]);
    r.expect_code(1);
}

#[test]
fn scheduler_once_runs_what_is_due_and_a_restart_neither_misses_nor_doubles() {
    let p = Project::new();
    p.dag(
        "catchup.yaml",
        &format!(
            "id: catchup\nschedule: '@daily'\nstart_date: 2019-10-01\ncatchup: true\nmax_active_runs: 2\ntasks:\n{}",
            sh("a", "", "echo catchup {{ ds }} >> $DIR/ran")
        ),
    );
    p.dag(
        "latest.yaml",
        &format!(
            "id: latest\nschedule: '0 6 * * *'\nstart_date: 2019-09-01\ntasks:\n{}",
            sh("a", "", "echo latest {{ ds }} >> $DIR/ran")
        ),
    );
    p.dag("manual.yaml", &format!("id: manual\ntasks:\n{}", sh("a", "", "echo manual >> $DIR/ran")));
    let once = |now: &str| {
        let o = p.command(&["scheduler", "--once"]).env("CARTFLOW_NOW", now).output().expect("scheduler");
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (code, out) = once("2019-10-04T07:00:00Z");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        counts(&p.read("ran")).keys().cloned().collect::<Vec<_>>(),
        vec!["catchup 2019-10-01", "catchup 2019-10-02", "catchup 2019-10-03", "latest 2019-10-03"],
        "catchup replays from start_date; without catchup only the latest interval runs; manual DAGs never"
    );
    // Restart at the same instant: nothing is due.
    let (_, out) = once("2019-10-04T07:00:00Z");
    assert!(out.contains("nothing is due"), "{out}");
    // Two days later: both DAGs pick up exactly what became due.
    once("2019-10-06T07:00:00Z");
    let c = counts(&p.read("ran"));
    assert!(c.values().all(|n| *n == 1), "no run twice: {c:?}");
    assert_eq!(c.len(), 4 + 2 + 1, "{c:?}");
    assert!(c.contains_key("latest 2019-10-05") && !c.contains_key("latest 2019-10-04"), "{c:?}");
}

#[test]
fn the_scheduler_respects_max_active_runs() {
    let p = Project::new();
    // One run at a time: a run that finds the lock taken fails.
    let body = "mkdir $DIR/lock || exit 9; echo {{ ds }} >> $DIR/ran; sleep 0.2; rmdir $DIR/lock";
    p.dag(
        "one.yaml",
        &format!(
            "id: one\nschedule: '@daily'\nstart_date: 2019-10-01\ncatchup: true\nmax_active_runs: 1\ntasks:\n{}",
            sh("a", "", body)
        ),
    );
    let o = p.command(&["scheduler", "--once"]).env("CARTFLOW_NOW", "2019-10-05T00:00:00Z").output().expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(p.read("ran"), "2019-10-01\n2019-10-02\n2019-10-03\n2019-10-04\n", "oldest first, one at a time");
}

#[test]
fn the_scheduler_reloads_dags_and_keeps_the_last_good_version() {
    let p = Project::new();
    let good = format!(
        "id: live\nschedule: '@daily'\nstart_date: 2019-10-01\ncatchup: true\ntasks:\n{}",
        sh("a", "", "echo live {{ ds }} >> $DIR/ran")
    );
    p.dag("live.yaml", &good);
    let mut child = p
        .command(&["scheduler", "--tick", "100ms"])
        .env("CARTFLOW_NOW", "2019-10-03T01:00:00Z")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scheduler");
    p.wait_for_lines("ran", 2, Duration::from_secs(30));
    // A new DAG file is picked up.
    p.dag(
        "added.yaml",
        &format!(
            "id: added\nschedule: '@daily'\nstart_date: 2019-10-02\ncatchup: true\ntasks:\n{}",
            sh("a", "", "echo added {{ ds }} >> $DIR/ran")
        ),
    );
    p.wait_for_lines("ran", 3, Duration::from_secs(30));
    // Breaking a file keeps its last good version loaded (and logs the error).
    p.dag("live.yaml", "id: live\ntasks: [\n");
    std::thread::sleep(Duration::from_millis(500));
    kill(child.id(), "TERM");
    let status = child.wait().expect("wait");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err).expect("read");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("no longer compiles; keeping its last good version"), "{err}");
    assert!(err.contains("live.yaml:2:8: error: invalid YAML"), "{err}");
    let c = counts(&p.read("ran"));
    assert_eq!(c.keys().cloned().collect::<Vec<_>>(), vec!["added 2019-10-02", "live 2019-10-01", "live 2019-10-02"]);
}

/// One run of a running scheduler is cancelled with `cartflow cancel`: that run stops and ends
/// `cancelled`, the scheduler goes on (its other DAG's run succeeds, it keeps ticking) and does
/// not make the cancelled interval again.
#[test]
fn a_scheduled_run_is_cancelled_and_the_scheduler_goes_on_without_making_it_again() {
    let p = Project::new();
    p.dag(
        "slow.yaml",
        &format!("id: slow\nschedule: '@daily'\ntasks:\n{}", sh("a", "", "echo started >> $DIR/slow; exec sleep 120")),
    );
    p.dag(
        "quick.yaml",
        &format!(
            "id: quick\nschedule: '@daily'\ntasks:\n{}",
            sh("a", "", "while [ ! -f $DIR/go ]; do sleep 0.05; done; echo ran >> $DIR/quick")
        ),
    );
    let mut child = p
        .command(&["scheduler", "--tick", "100ms"])
        .env("CARTFLOW_NOW", "2019-10-02T01:00:00Z")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scheduler");
    p.wait_for_lines("slow", 1, Duration::from_secs(30));
    let r = p.run(&["cancel", "slow@2019-10-01T00:00:00Z", "--wait"]);
    r.expect_code(0);
    assert!(r.stdout.trim_end().ends_with("slow@2019-10-01T00:00:00Z: cancelled"), "{}", r.stdout);
    // The scheduler is still there, its other run goes on and succeeds.
    assert!(child.try_wait().expect("wait").is_none(), "the scheduler goes on");
    p.write("go", "");
    p.wait_for_lines("quick", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000)); // ten ticks
    assert_eq!(p.read("slow").lines().count(), 1, "the cancelled interval was not made again");
    let runs: Vec<(String, String)> = {
        let db = p.store();
        let mut st = db.prepare("SELECT run_id, state FROM dag_runs ORDER BY run_id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    assert_eq!(
        runs,
        vec![
            ("quick@2019-10-01T00:00:00Z".to_string(), "success".to_string()),
            ("slow@2019-10-01T00:00:00Z".to_string(), "cancelled".to_string())
        ]
    );
    kill(child.id(), "TERM");
    let status = child.wait().expect("wait");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err).expect("read");
    // Stopped, it exits 1: one of its runs did not succeed (it was cancelled).
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cancel asked for from another process"), "{err}");
}
