//! End-to-end tests: the real `cartflow` binary on real DAG files, a real SQLite run store
//! and real processes. One test binary; the shared context lives in `cartflow_e2e`.

use std::time::{Duration, Instant};

use cartflow_e2e::{Project, alive, kill};

fn sh(id: &str, deps: &str, script: &str) -> String {
    format!("  - id: {id}\n    kind: command\n    depends_on: [{deps}]\n    program: sh\n    args: [-c, '{script}']\n")
}

#[test]
fn a_dag_of_commands_runs_and_is_recorded() {
    let p = Project::new();
    p.dag(
        "etl.yaml",
        &format!(
            "id: etl\nschedule: '@daily'\nparams:\n  who: cartflow\ntasks:\n{}{}{}",
            sh("extract", "", "echo extract {{ ds }} >> $DIR/trace; echo hello from {{ params.who }}"),
            sh("transform", "extract", "echo transform {{ ds_nodash }} >> $DIR/trace"),
            sh("load", "transform", "echo load {{ run_id }} >> $DIR/trace; echo to stderr >&2"),
        ),
    );
    let r = p.run(&["run", "etl", "--date", "2019-10-01"]);
    r.expect_code(0);
    assert!(r.stdout.contains("run etl@2019-10-01T00:00:00Z success"), "{}", r.stdout);
    assert_eq!(p.read("trace"), "extract 2019-10-01\ntransform 20191001\nload etl@2019-10-01T00:00:00Z\n");

    let runs = p.run(&["runs"]);
    runs.expect_code(0);
    assert!(runs.stdout.contains("etl@2019-10-01T00:00:00Z") && runs.stdout.contains("success"), "{}", runs.stdout);
    let tasks = p.run(&["tasks", "etl@2019-10-01T00:00:00Z"]);
    assert_eq!(tasks.stdout.matches("success").count(), 4, "run line + 3 tasks\n{}", tasks.stdout);

    let logs = p.run(&["logs", "etl@2019-10-01T00:00:00Z", "extract"]);
    logs.expect_code(0);
    assert!(logs.stdout.contains("hello from cartflow"), "{}", logs.stdout);
    let logs = p.run(&["logs", "etl@2019-10-01T00:00:00Z", "load"]);
    assert!(logs.stdout.contains("to stderr"), "stderr is captured too: {}", logs.stdout);
    let bad = p.run(&["logs", "etl@2019-10-01T00:00:00Z", "lod"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("did you mean `load`?"), "{}", bad.stderr);
}

#[test]
fn a_failing_task_retries_then_fails_the_run_with_exit_1() {
    let p = Project::new();
    p.dag(
        "f.yaml",
        &format!(
            "id: f\ndefaults:\n  retries: 2\n  retry_delay: 100ms\ntasks:\n{}{}",
            sh("flaky", "", "echo attempt $CARTFLOW_ATTEMPT >> $DIR/attempts; echo broken >&2; exit 4"),
            sh("after", "flaky", "touch $DIR/after_ran"),
        ),
    );
    let r = p.run(&["run", "f", "--date", "2019-10-01"]);
    r.expect_code(1);
    assert_eq!(p.read("attempts"), "attempt 1\nattempt 2\nattempt 3\n");
    assert!(!p.path().join("after_ran").exists());
    assert!(r.stdout.contains("failed") && r.stdout.contains("upstream_failed"), "{}", r.stdout);
    assert!(r.stdout.contains("`sh` exited with code 4"), "{}", r.stdout);
    let attempts: Vec<(u32, String, Option<i32>)> = {
        let db = p.store();
        let mut s = db
            .prepare("SELECT attempt, state, exit_code FROM task_attempts WHERE task_id = 'flaky' ORDER BY attempt")
            .expect("query");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("rows").map(|r| r.expect("row")).collect()
    };
    assert_eq!(
        attempts,
        vec![(1, "failed".into(), Some(4)), (2, "failed".into(), Some(4)), (3, "failed".into(), Some(4))]
    );
    let logs = p.run(&["logs", "f@2019-10-01T00:00:00Z", "flaky", "--attempt", "2"]);
    assert!(logs.stdout.contains("broken") && logs.stdout.contains("retry 2/2"), "{}", logs.stdout);
}

#[test]
fn a_run_killed_with_sigkill_resumes_without_rerunning_finished_tasks() {
    let p = Project::new();
    // `slow` blocks until the file `release` exists; the test kills cartflow while it waits.
    p.dag(
        "k.yaml",
        &format!(
            "id: k\ntasks:\n{}{}{}{}",
            sh("first", "", "echo first >> $DIR/counter"),
            sh("side", "first", "echo side >> $DIR/counter"),
            sh(
                "slow",
                "first",
                "echo slow >> $DIR/counter; echo $$ > $DIR/slow.pid; while [ ! -f $DIR/release ]; do sleep 0.05; done"
            ),
            sh("last", "slow, side", "echo last >> $DIR/counter"),
        ),
    );
    let mut child = p.spawn(&["run", "k", "--date", "2019-10-01"]);
    p.wait_for_lines("counter", 3, Duration::from_secs(30));
    p.wait_for_lines("slow.pid", 1, Duration::from_secs(10));
    // `side` wrote its line; wait until its success is recorded too before the crash.
    let deadline = Instant::now() + Duration::from_secs(10);
    while p
        .store()
        .query_row("SELECT state FROM task_instances WHERE task_id = 'side'", [], |r| r.get::<_, String>(0))
        .map_or(true, |s| s != "success")
    {
        assert!(Instant::now() < deadline, "`side` never succeeded");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(child.id(), "KILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), None, "killed by a signal");
    // The crash leaves the task's shell behind, as a real crash would; stop it.
    let orphan: i32 = p.read("slow.pid").trim().parse().expect("pid");
    kill(orphan as u32, "KILL");

    std::fs::write(p.path().join("release"), "").expect("release");
    let r = p.run(&["run", "k", "--date", "2019-10-01"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("resuming k@2019-10-01T00:00:00Z: 2 task(s) already succeeded, 1 interrupted"),
        "{}",
        r.stderr
    );
    let mut counts = std::collections::BTreeMap::new();
    for line in p.read("counter").lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("first"), Some(&1), "finished tasks do not run again: {counts:?}");
    assert_eq!(counts.get("side"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("slow"), Some(&2), "the interrupted task runs again: {counts:?}");
    assert_eq!(counts.get("last"), Some(&1), "{counts:?}");
    let db = p.store();
    let states: Vec<String> = db
        .prepare("SELECT state FROM task_attempts WHERE task_id = 'slow' ORDER BY attempt")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(states, vec!["interrupted", "success"]);
    let run_state: String = db.query_row("SELECT state FROM dag_runs", [], |r| r.get(0)).expect("run");
    assert_eq!(run_state, "success");
}

#[test]
fn a_second_process_cannot_run_the_same_interval() {
    let p = Project::new();
    p.dag(
        "busy.yaml",
        &format!(
            "id: busy\ntasks:\n{}",
            sh("wait", "", "touch $DIR/started; while [ ! -f $DIR/release ]; do sleep 0.05; done")
        ),
    );
    let first = p.spawn(&["run", "busy", "--date", "2019-10-01"]);
    p.wait_for_lines("started", 0, Duration::from_secs(1));
    let until = Instant::now() + Duration::from_secs(30);
    while !p.path().join("started").exists() {
        assert!(Instant::now() < until, "first run did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    let second = p.run(&["run", "busy", "--date", "2019-10-01"]);
    second.expect_code(1);
    assert!(second.stderr.contains("is being executed by another cartflow process (pid"), "{}", second.stderr);
    // Another interval of the same DAG is not blocked.
    std::fs::write(p.path().join("release"), "").expect("release");
    p.run(&["run", "busy", "--date", "2019-10-02"]).expect_code(0);
    let out = first.wait_with_output().expect("first");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ctrl_c_cancels_the_run_and_kills_its_processes() {
    let p = Project::new();
    p.dag(
        "c.yaml",
        &format!(
            "id: c\ntasks:\n{}{}",
            sh("long", "", "sleep 120 & echo $! > $DIR/child.pid; wait"),
            sh("next", "long", "touch $DIR/next_ran"),
        ),
    );
    let child = p.spawn(&["run", "c", "--date", "2019-10-01"]);
    p.wait_for_lines("child.pid", 1, Duration::from_secs(30));
    kill(child.id(), "INT");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling"), "{stderr}");
    let sleeper: i32 = p.read("child.pid").trim().parse().expect("pid");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(sleeper), "the task's process tree is killed");
    assert!(!p.path().join("next_ran").exists());
    let db = p.store();
    let run_state: String = db.query_row("SELECT state FROM dag_runs", [], |r| r.get(0)).expect("run");
    assert_eq!(run_state, "cancelled");
    let task_states: Vec<(String, String)> = db
        .prepare("SELECT task_id, state FROM task_instances ORDER BY task_id")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(task_states, vec![("long".into(), "cancelled".into()), ("next".into(), "cancelled".into())]);
}

#[test]
fn validate_reports_every_problem_of_every_file() {
    let p = Project::new();
    p.dag("good.yaml", "id: good\ntasks:\n  - id: a\n    kind: noop\n");
    p.dag("bad_one.yaml", "id: bad_one\nschedule: '0 2 * *'\ntasks:\n  - id: a\n    kind: noop\n    depends_on: [b]\n");
    p.dag("bad_two.yml", "id: bad_two\ntasks:\n  - id: a\n    kind: comand\n  - id: a\n    kind: noop\n");
    p.dag("broken.yaml", "id: broken\ntasks: [\n");
    let r = p.run(&["validate"]);
    r.expect_code(2);
    insta::assert_snapshot!(r.stderr);
    // The good DAG still runs: one bad file never hides the others.
    let run = p.run(&["run", "good", "--date", "2019-10-01"]);
    run.expect_code(0);
    assert!(run.stderr.contains("warning: 5 problem(s) in other DAG files"), "{}", run.stderr);
    // A DAG that does not compile cannot run, and says why.
    let bad = p.run(&["run", "bad_two", "--date", "2019-10-01"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("unknown task kind `comand`"), "{}", bad.stderr);
}

#[test]
fn plan_prints_rendered_configs_in_order_and_runs_nothing() {
    let p = Project::new();
    p.dag(
        "plan.yaml",
        "id: plan\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\nparams:\n  bucket: lake\ntasks:\n  - id: load\n    kind: command\n    depends_on: extract\n    program: touch\n    args: ['$DIR/ran', 's3://{{ params.bucket }}/dt={{ ds }}/']\n  - id: extract\n    kind: noop\n",
    );
    let r = p.run(&["plan", "plan", "--date", "2026-03-29", "-p", "bucket=other"]);
    r.expect_code(0);
    assert!(r.stdout.contains("interval [2026-03-29T03:00:00+02:00, 2026-03-30T02:00:00+02:00)"), "{}", r.stdout);
    let extract = r.stdout.find("1. extract").expect("extract first");
    let load = r.stdout.find("2. load").expect("load second");
    assert!(extract < load);
    assert!(r.stdout.contains("s3://other/dt=2026-03-29/"), "{}", r.stdout);
    assert!(!p.path().join("ran").exists(), "plan runs nothing");
    let bad = p.run(&["plan", "plan", "--date", "2026-03-29", "-p", "buckt=x"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("did you mean `bucket`?"), "{}", bad.stderr);
}

#[test]
fn task_selection_and_rerun_from_the_cli() {
    let p = Project::new();
    p.dag(
        "sel.yaml",
        &format!(
            "id: sel\ntasks:\n{}{}{}",
            sh("a", "", "echo a >> $DIR/order"),
            sh("b", "a", "echo b >> $DIR/order"),
            sh("c", "b", "echo c >> $DIR/order"),
        ),
    );
    p.run(&["run", "sel", "--date", "2019-10-01"]).expect_code(0);
    p.run(&["run", "sel", "--date", "2019-10-01"]).expect_code(0);
    assert_eq!(p.read("order"), "a\nb\nc\n", "a finished run is not redone");
    p.run(&["run", "sel", "--date", "2019-10-01", "--task", "b", "--downstream"]).expect_code(0);
    assert_eq!(p.read("order"), "a\nb\nc\nb\nc\n");
    p.run(&["run", "sel", "--date", "2019-10-01", "--rerun"]).expect_code(0);
    assert_eq!(p.read("order"), "a\nb\nc\nb\nc\na\nb\nc\n");
    let r = p.run(&["run", "sel", "--date", "2019-10-01", "--task", "x"]);
    r.expect_code(2);
    let r = p.run(&["run", "sel", "--date", "2019-10-05", "--resume"]);
    r.expect_code(1);
    assert!(r.stderr.contains("there is no run sel@2019-10-05T00:00:00Z to resume"), "{}", r.stderr);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let p = Project::new();
    p.dag("j.yaml", "id: j\ntasks:\n  - id: a\n    kind: noop\n");
    let r = p.run(&["--log-format", "json", "run", "j", "--date", "2019-10-01"]);
    r.expect_code(0);
    let lines: Vec<serde_json::Value> =
        r.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    assert!(lines.iter().any(|v| v["message"] == "task started" && v["task"] == "a" && v["dag"] == "j"), "{lines:?}");
    assert!(lines.iter().any(|v| v["message"] == "run finished" && v["state"] == "success"), "{lines:?}");
}

#[test]
fn state_location_is_configurable() {
    let p = Project::new();
    p.dag("s.yaml", "id: s\ntasks:\n  - id: a\n    kind: noop\n");
    let custom = p.path().join("elsewhere/state.sqlite");
    let r = p.command(&["run", "s", "--date", "2019-10-01"]).env("CARTFLOW_STATE", &custom).output().expect("run");
    assert_eq!(r.status.code(), Some(0));
    assert!(custom.exists());
    assert!(!p.path().join(".cartflow/state.db").exists());
    let runs = p.run(&["--state", custom.to_str().expect("utf8"), "runs"]);
    assert!(runs.stdout.contains("s@2019-10-01T00:00:00Z"), "{}", runs.stdout);
}

#[test]
fn the_example_dag_of_the_repository_runs() {
    let p = Project::new();
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dags/example_etl.yaml")).expect("example");
    p.dag("example_etl.yaml", &src);
    let r = p.run(&["run", "example_etl", "--date", "2019-10-01"]);
    r.expect_code(0);
    assert!(p.read(".cartflow/example/latest.txt").contains("3 view"), "{}", p.read(".cartflow/example/latest.txt"));
}

mod time {
    //! Backfills and the scheduler.

    use super::*;

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
        let body =
            "mkdir $DIR/l1 2>/dev/null && L=l1 || { mkdir $DIR/l2 && L=l2; } || exit 9; sleep 0.3; rmdir $DIR/$L";
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
        assert_eq!(
            c.keys().cloned().collect::<Vec<_>>(),
            vec!["added 2019-10-02", "live 2019-10-01", "live 2019-10-02"]
        );
    }
}

mod eventbridge {
    //! `cartflow schedules sync --backend aws` against moto's EventBridge.

    use cartflow_e2e::{Moto, Project, Run};

    const CONFIG: &str = "eventbridge:\n  rule_prefix: cartflow-\n  target:\n    arn: arn:aws:lambda:us-east-1:123456789012:function:cartflow-runner\n";

    fn sync(p: &Project, moto: &Moto, extra: &[&str]) -> Run {
        let mut args = vec!["schedules", "sync", "--backend", "aws"];
        args.extend_from_slice(extra);
        let mut cmd = p.command(&args);
        moto.configure(&mut cmd);
        Run::from(cmd.output().expect("sync"))
    }

    const LIST: &str = "import boto3, json\nc = boto3.client('events')\nout = {}\nfor r in c.list_rules(NamePrefix='cartflow-')['Rules']:\n    tags = {t['Key']: t['Value'] for t in c.list_tags_for_resource(ResourceARN=r['Arn'])['Tags']}\n    targets = c.list_targets_by_rule(Rule=r['Name'])['Targets']\n    out[r['Name']] = [r.get('ScheduleExpression'), r.get('State'), tags.get('managed-by'), [(t['Id'], t['Arn'], t.get('Input')) for t in targets]]\nprint(json.dumps(out, sort_keys=True))\n";

    fn rules(moto: &Moto) -> serde_json::Value {
        serde_json::from_str(&moto.boto3(LIST)).expect("json")
    }

    #[test]
    fn sync_creates_updates_deletes_and_is_idempotent() {
        let Some(moto) = Moto::start() else { return };
        let p = Project::new();
        p.write("cartflow.yaml", CONFIG);
        let t = "tasks:\n  - id: a\n    kind: noop\n";
        p.dag("daily.yaml", &format!("id: daily\nschedule: '@daily'\n{t}"));
        p.dag("weekdays.yaml", &format!("id: weekdays\nschedule: '0 2 * * 1-5'\n{t}"));
        p.dag("berlin.yaml", &format!("id: berlin\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\n{t}"));
        p.dag("manual.yaml", &format!("id: manual\n{t}"));
        // Someone else's rule under our prefix, without cartflow's tag: never touched.
        moto.boto3("import boto3\nboto3.client('events').put_rule(Name='cartflow-foreign', ScheduleExpression='rate(5 minutes)')\n");

        let dry = sync(&p, &moto, &["--dry-run"]);
        dry.expect_code(0);
        assert!(dry.stdout.contains("+ create cartflow-berlin cron(0 0,1 * * ? *) (dag berlin)"), "{}", dry.stdout);
        assert!(
            dry.stdout.contains("+ create cartflow-weekdays cron(0 2 ? * 2,3,4,5,6 *) (dag weekdays)"),
            "{}",
            dry.stdout
        );
        assert!(dry.stdout.contains("dry run: 3 to create, 0 to update, 0 to delete, 0 unchanged"), "{}", dry.stdout);
        assert_eq!(rules(&moto).as_object().map(|o| o.len()), Some(1), "dry run changes nothing");

        sync(&p, &moto, &[]).expect_code(0);
        let r = rules(&moto);
        assert_eq!(r["cartflow-daily"][0], "cron(0 0 * * ? *)");
        assert_eq!(r["cartflow-daily"][1], "ENABLED");
        assert_eq!(r["cartflow-daily"][2], "cartflow");
        let target = &r["cartflow-daily"][3][0];
        assert_eq!(target[1], "arn:aws:lambda:us-east-1:123456789012:function:cartflow-runner");
        let input: serde_json::Value = serde_json::from_str(target[2].as_str().expect("input")).expect("json");
        assert_eq!(input["args"], serde_json::json!(["scheduler", "--once", "--dag", "daily"]));
        assert!(r.get("cartflow-manual").is_none(), "manual DAGs get no rule");

        let again = sync(&p, &moto, &[]);
        again.expect_code(0);
        assert!(
            again.stdout.contains("0 to create, 0 to update, 0 to delete, 3 unchanged"),
            "idempotent: {}",
            again.stdout
        );

        // A DAG is deleted and another changes its schedule.
        std::fs::remove_file(p.path().join("dags/weekdays.yaml")).expect("rm");
        p.dag("daily.yaml", &format!("id: daily\nschedule: '30 4 * * *'\n{t}"));
        let changed = sync(&p, &moto, &[]);
        changed.expect_code(0);
        assert!(
            changed
                .stdout
                .contains("~ update cartflow-daily (schedule cron(0 0 * * ? *) -> cron(30 4 * * ? *); description)"),
            "{}",
            changed.stdout
        );
        assert!(changed.stdout.contains("- delete cartflow-weekdays"), "{}", changed.stdout);
        let r = rules(&moto);
        assert_eq!(r["cartflow-daily"][0], "cron(30 4 * * ? *)");
        assert!(r.get("cartflow-weekdays").is_none());
        assert_eq!(r["cartflow-foreign"][0], "rate(5 minutes)", "foreign rules are left alone");
    }

    #[test]
    fn sync_refuses_what_eventbridge_cannot_express_and_changes_nothing() {
        let Some(moto) = Moto::start() else { return };
        let p = Project::new();
        p.write("cartflow.yaml", CONFIG);
        let t = "tasks:\n  - id: a\n    kind: noop\n";
        p.dag("ok.yaml", &format!("id: ok\nschedule: '@daily'\n{t}"));
        p.dag("both.yaml", &format!("id: both\nschedule: '0 0 1 * 1'\n{t}"));
        let r = sync(&p, &moto, &[]);
        r.expect_code(2);
        assert!(
            r.stderr.contains("DAG `both`: schedule `0 0 1 * 1` in UTC cannot be expressed as one EventBridge rule"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
        assert_eq!(rules(&moto).as_object().map(|o| o.len()), Some(0));
        // Broken DAG files stop the sync too, so that their rules are never deleted.
        p.dag("both.yaml", "id: both\ntasks: [\n");
        let r = sync(&p, &moto, &[]);
        r.expect_code(2);
        assert!(r.stderr.contains("fix them first"), "{}", r.stderr);
        // The local backend has no rules.
        let r = p.run(&["schedules", "sync"]);
        r.expect_code(2);
        assert!(r.stderr.contains("--backend aws"), "{}", r.stderr);
    }
}

mod lake {
    //! The local data plane end to end: generated raw events through the daily DAG.

    use super::*;

    fn summaries(p: &Project, task: &str) -> Vec<(String, String)> {
        p.store()
            .prepare(
                "SELECT r.interval_start, a.summary FROM task_attempts a JOIN dag_runs r USING (run_id)
                 WHERE a.task_id = ?1 AND a.state = 'success' ORDER BY r.interval_start, a.attempt",
            )
            .expect("q")
            .query_map([task], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect()
    }

    /// The daily DAG with the files it names (recipe, SQL), as in the repository.
    pub(crate) fn install_daily(p: &Project) {
        for f in [
            "dags/ecommerce_daily.yaml",
            "glue-scripts/databrew/enrich_events.json",
            "dags/sql/daily_visitors.sql",
            "dags/sql/cart_abandonment.sql",
            "dags/sql/top_categories.sql",
            "dags/sql/brand_marketing.sql",
            "streaming/rules/ddos.yaml",
        ] {
            p.write(f, &repo_file(f));
        }
    }

    #[test]
    fn the_insight_tables_equal_duckdb_running_the_same_sql_and_reruns_are_identical() {
        let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
        let p = Project::new();
        install_daily(&p);
        p.run(&[
            "generate",
            "--days",
            "9",
            "--events-per-day",
            "1500",
            "--format",
            "raw",
            "--out",
            ".cartflow/lake",
            "--seed",
            "5",
        ])
        .expect_code(0);
        let r = p.run(&[
            "backfill",
            "ecommerce_daily",
            "--from",
            "2019-10-01",
            "--to",
            "2019-10-09",
            "--max-active-runs",
            "1",
        ]);
        r.expect_code(0);
        let check = |label: &str| {
            let mut args: Vec<String> = vec![
                repo_path("tests/python/insights_check.py"),
                p.path().join(".cartflow/lake").display().to_string(),
                p.path().join(".cartflow/catalog.db").display().to_string(),
                p.path().join("dags/sql").display().to_string(),
            ];
            args.extend((1..=9).map(|d| format!("2019-10-{d:02}")));
            let out = std::process::Command::new(&python).args(&args).output().expect("python");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{label}: insight tables differ from DuckDB:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for t in ["daily_visitors", "cart_abandonment", "top_categories", "brand_marketing"] {
                assert!(text.contains(&format!("{t}: ")) && !text.contains(&format!("{t}: 0 rows")), "{label}: {text}");
            }
            text
        };
        let first = check("after the backfill");
        // A re-run of a day replaces that day's partitions and rebuilds the full-refresh tables.
        p.run(&["run", "ecommerce_daily", "--date", "2019-10-05", "--rerun"]).expect_code(0);
        assert_eq!(check("after a rerun"), first, "a re-run gives identical tables");
        let parts = p.run(&["catalog", "partitions", "daily_visitors"]);
        assert_eq!(parts.stdout.matches("| dt=2019-10-").count(), 9, "{}", parts.stdout);
    }

    #[test]
    fn every_insight_sql_file_parses_as_trino_sql() {
        let Some(python) = cartflow_e2e::venv_python_with("sqlglot") else { return };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags/sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("dags/sql")
            .flatten()
            .map(|e| e.path().display().to_string())
            .filter(|p| p.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 4, "{files:?}");
        let out = std::process::Command::new(&python)
            .arg(repo_path("tests/python/parse_trino.py"))
            .args(&files)
            .output()
            .expect("python");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert_eq!(text.matches(": ok").count(), 4, "{text}");
        // The check can fail: a broken file is reported with its line and column.
        let p = Project::new();
        p.write("bad.sql", "SELECT brand,\n  count(*) FROM ecommerce.events GROUP BY (\n");
        let out = std::process::Command::new(&python)
            .arg(repo_path("tests/python/parse_trino.py"))
            .arg(p.path().join("bad.sql"))
            .output()
            .expect("python");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("bad.sql:2:"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn the_demo_runs_in_an_empty_folder_and_writes_the_dashboard() {
        let p = Project::new();
        let r = p.run(&["demo", "--days", "2", "--events-per-day", "2500", "--max-active-runs", "1"]);
        r.expect_code(0);
        assert!(r.stdout.contains("demo: wrote the daily DAG's files"), "{}", r.stdout);
        assert!(r.stdout.contains("2 run(s), 2 succeeded"), "{}", r.stdout);
        for what in ["lake:", "catalog:", "state:", "alerts:", "dashboard:"] {
            assert!(r.stdout.contains(what), "{what}: {}", r.stdout);
        }
        let html = p.read(".cartflow/dashboard.html");
        assert!(html.starts_with("<!doctype html>"), "{}", &html[..html.len().min(200)]);
        assert_eq!(html.matches("<svg").count(), 5, "one chart per insight, two heat maps");
        assert!(!html.contains("No data yet") && !html.contains("could not draw"), "every chart has data");
        assert!(html.contains("Period: 2019-10-01 to 2019-10-02"), "the period covered is shown");
        assert!(
            !html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"),
            "self-contained"
        );
        // A second demo replaces the data instead of doubling it.
        let again = p.run(&["demo", "--days", "2", "--events-per-day", "2500", "--max-active-runs", "1"]);
        again.expect_code(0);
        let events = |out: &str| out.lines().find(|l| l.contains(" events, ")).map(str::to_string);
        assert_eq!(events(&again.stdout), events(&r.stdout));
        // The dashboard command alone, for a sub-period.
        let d = p.run(&["dashboard", "--out", "d.html", "--from", "2019-10-02", "--to", "2019-10-02"]);
        d.expect_code(0);
        assert!(p.read("d.html").contains("Period: 2019-10-02 to 2019-10-02"));
        p.run(&["dashboard", "--from", "yesterday"]).expect_code(2);
    }

    pub(crate) fn repo_path(rel: &str) -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel).display().to_string()
    }

    pub(crate) fn repo_file(rel: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).expect(rel)
    }

    #[test]
    fn a_recipe_with_an_unsupported_operation_fails_validation_naming_the_step() {
        let p = Project::new();
        p.write(
            "glue-scripts/r.json",
            r#"[{"Action": {"Operation": "LOWER_CASE", "Parameters": {"sourceColumn": "brand"}}},
                {"Action": {"Operation": "PIVOT", "Parameters": {"sourceColumn": "brand"}}}]"#,
        );
        p.dag(
            "d.yaml",
            "id: d\ntasks:\n  - id: enrich\n    kind: databrew_job\n    job_name: j\n    recipe: glue-scripts/r.json\n    input: clean/events\n    output: enriched/events\n",
        );
        let r = p.run(&["validate"]);
        r.expect_code(2);
        assert!(
            r.stderr.contains(
                "dags/d.yaml:3:5: error: task `enrich` (databrew_job): recipe: glue-scripts/r.json: step 2 (PIVOT)"
            ),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("step 2 (PIVOT): `PIVOT` is not supported"), "{}", r.stderr);
    }

    #[test]
    fn a_kaggle_zip_is_ingested_and_runs_through_the_daily_dag() {
        let p = Project::new();
        install_daily(&p);
        p.run(&["generate", "--days", "1", "--events-per-day", "3000", "--out", "2019-Oct.csv", "--seed", "3"])
            .expect_code(0);
        // Kaggle serves the month as a zip holding the CSV.
        let zip = std::process::Command::new("python3")
            .current_dir(p.path())
            .args(["-c", "import zipfile; z = zipfile.ZipFile('2019-Oct.csv.zip', 'w', zipfile.ZIP_DEFLATED); z.write('2019-Oct.csv'); z.close()"])
            .status()
            .expect("python3");
        assert!(zip.success());
        let rows = p.read("2019-Oct.csv").lines().count() as u64 - 1;
        let r = p.run(&["ingest", "2019-Oct.csv.zip"]);
        r.expect_code(0);
        assert!(r.stdout.contains(&format!("{rows} records (0 malformed")), "{}", r.stdout);
        p.run(&["ingest", "2019-Oct.csv.zip"]).expect_code(0);
        p.run(&["run", "ecommerce_daily", "--date", "2019-10-01"]).expect_code(0);
        let compact = numbers(&summaries(&p, "compact")[0].1);
        assert_eq!((compact[0], compact[1]), (rows, rows), "re-ingesting replaced the first ingest");
        let clean = numbers(&summaries(&p, "clean")[0].1);
        assert_eq!(clean[0], clean[1] + clean[2] + clean[3]);
        assert_eq!(clean[2], 0, "generated rows are valid");
        let bad = p.run(&["ingest", "dags/ecommerce_daily.yaml"]);
        bad.expect_code(1);
        assert!(bad.stderr.contains("ecommerce_daily.yaml:1: expected the header"), "{}", bad.stderr);
    }

    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit()).filter(|x| !x.is_empty()).filter_map(|x| x.parse().ok()).collect()
    }

    #[test]
    fn three_days_of_raw_events_are_compacted_cataloged_and_cleaned_without_losing_a_row() {
        let p = Project::new();
        install_daily(&p);
        let g = p.run(&[
            "generate",
            "--days",
            "3",
            "--events-per-day",
            "4000",
            "--format",
            "raw",
            "--out",
            ".cartflow/lake",
            "--malformed-rate",
            "0.02",
            "--seed",
            "11",
        ]);
        g.expect_code(0);
        let truth: serde_json::Value =
            serde_json::from_str(&p.read(".cartflow/lake/raw/events/_truth.json")).expect("truth");
        let per_day: Vec<u64> =
            truth["rows_per_day"].as_array().expect("days").iter().map(|d| d[1].as_u64().expect("n")).collect();
        let malformed: u64 = truth["malformed"].as_array().expect("m").iter().map(|m| m[1].as_u64().expect("n")).sum();
        assert!(malformed > 0);

        let r = p.run(&["backfill", "ecommerce_daily", "--from", "2019-10-01", "--to", "2019-10-03"]);
        r.expect_code(0);
        assert!(r.stdout.contains("3 run(s), 3 succeeded"), "{}", r.stdout);

        let compact = summaries(&p, "compact");
        assert_eq!(compact.len(), 3);
        for ((_, s), rows) in compact.iter().zip(&per_day) {
            let n = numbers(s);
            assert_eq!((n[0], n[1]), (*rows, *rows), "compaction is lossless: {s}");
        }
        let clean = summaries(&p, "clean");
        let mut quarantined = 0;
        for ((_, s), rows) in clean.iter().zip(&per_day) {
            let n = numbers(s);
            assert_eq!(n[0], *rows, "{s}");
            assert_eq!(n[0], n[1] + n[2] + n[3], "in = clean + quarantined + duplicates: {s}");
            quarantined += n[2];
        }
        assert_eq!(quarantined, malformed, "every malformed row is quarantined, nothing else is");
        let enrich = summaries(&p, "enrich");
        assert_eq!(enrich.len(), 3);
        for ((_, e), (_, c)) in enrich.iter().zip(&clean) {
            let (e, c) = (numbers(e), numbers(c));
            assert_eq!(e[0], c[1], "enrich reads every clean row");
            assert_eq!((e[1], e[2]), (c[1], 0), "clean rows have no negative price, so the recipe removes none");
        }
        let show = p.run(&["catalog", "show", "enriched_events"]);
        for (col, ty) in
            [("category_main", "string"), ("category_leaf", "string"), ("event_hour", "int"), ("event_weekday", "int")]
        {
            assert!(show.stdout.lines().any(|l| l.contains(col) && l.contains(ty)), "{col} {ty}\n{}", show.stdout);
        }

        let ls = p.run(&["catalog", "ls"]);
        ls.expect_code(0);
        assert!(
            ls.stdout.contains("ecommerce.events") && ls.stdout.contains("ecommerce.staged_events"),
            "{}",
            ls.stdout
        );
        let show = p.run(&["catalog", "show", "events"]);
        for (col, ty) in [
            ("event_time", "timestamp"),
            ("product_id", "bigint"),
            ("category_id", "bigint"),
            ("price", "double"),
            ("brand", "string"),
        ] {
            assert!(show.stdout.lines().any(|l| l.contains(col) && l.contains(ty)), "{col} {ty}\n{}", show.stdout);
        }
        let parts = p.run(&["catalog", "partitions", "events"]);
        assert_eq!(parts.stdout.lines().filter(|l| l.starts_with("| dt=2019-10-0")).count(), 3, "{}", parts.stdout);

        // Re-running a day replaces its output: the counts stay the same.
        p.run(&["run", "ecommerce_daily", "--date", "2019-10-02", "--rerun"]).expect_code(0);
        let again = summaries(&p, "clean");
        assert_eq!(again.len(), 4);
        assert_eq!(
            numbers(&again.iter().rfind(|(d, _)| d.starts_with("2019-10-02")).expect("rerun").1),
            numbers(&clean[1].1)
        );
    }
}

mod streaming {
    use std::io::Read;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use cartflow_e2e::{Project, alive, kill};

    fn repo_file(rel: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).expect("repository file")
    }

    /// Every archived line, sorted (a multiset).
    fn archive(p: &Project) -> Vec<String> {
        let mut out = Vec::new();
        let root = p.path().join(".cartflow/lake/raw/events");
        let mut stack = vec![root];
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
                    out.extend(s.lines().map(str::to_string));
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

    const PRODUCE: &[&str] =
        &["produce", "--generate", "--events-per-day", "300000", "--seed", "5", "--bots-per-day", "3"];
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
        let dry =
            p.run(&["reprocess", "--stage", "detector", "--from", "2019-10-01", "--to", "2019-10-01", "--dry-run"]);
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
        let row =
            r.stdout.lines().find(|l| l.contains("ddos_user_burst") && l.contains("2019-10-01")).expect("diff row");
        let n: Vec<u64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let (added, retracted, changed, unchanged) = (n[0], n[1], n[2], n[3]);
        assert_eq!(added + changed + unchanged, want.len() as u64, "{row}");
        assert_eq!(retracted + changed + unchanged, before.len() as u64, "{row}");
        assert!(retracted > 0, "the bug's false alerts are retracted: {row}");
        let all = p.run(&["alerts", "--all"]);
        assert!(all.stdout.contains("retracted"), "{}", all.stdout);
    }
}

mod flink {
    use std::path::Path;

    use cartflow_e2e::{Project, flink_python};

    const RULES: &str = "rules:
  - name: ddos_user_burst
    key: user_id
    window: { size: 10s }
    watermark_delay: 5s
    threshold: 20
    notify_above: 100
    severity: high
  - name: session_scan
    key: user_session
    window: { size: 1m, slide: 20s }
    event_types: [view]
    aggregate: count_distinct(product_id)
    threshold: 15
  - name: hot_product
    key: product_id
    window: { size: 1m }
    watermark_delay: 10s
    event_types: [cart, purchase]
    threshold: 3
    severity: low
";

    type Row = (String, String, String, String, String, u64, u64, bool);

    /// `notify_above` of each rule in RULES (the default is the threshold).
    fn notify_above(rule: &str) -> u64 {
        match rule {
            "ddos_user_burst" => 100,
            "session_scan" => 15,
            _ => 3,
        }
    }

    fn row(v: &serde_json::Value, notify: bool) -> Row {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        (
            s("rule"),
            s("key"),
            s("window_start"),
            s("window_end"),
            s("first_event"),
            v["value"].as_u64().unwrap_or(0),
            v["threshold"].as_u64().unwrap_or(0),
            notify,
        )
    }

    #[test]
    fn the_generated_flink_sql_in_a_real_flink_gives_the_alerts_of_the_local_engine() {
        let Some(python) = flink_python() else { return };
        let p = Project::new();
        p.write("streaming/rules/conf.yaml", RULES);
        // The fixture: a day of generated events (with bot bursts) in the raw zone.
        p.run(&[
            "generate",
            "--days",
            "1",
            "--events-per-day",
            "20000",
            "--bots-per-day",
            "3",
            "--seed",
            "9",
            "--format",
            "raw",
            "--out",
            ".cartflow/lake",
            "--buffer-bytes",
            "1000000000",
            "--buffer-seconds",
            "100000",
        ])
        .expect_code(0);
        // Flink reads the same events as one time-ordered file of a raw-zone partition.
        let src = p.path().join("flink_src/dt=2019-10-01/hour=00");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut all = String::new();
        let mut hours: Vec<_> = std::fs::read_dir(p.path().join(".cartflow/lake/raw/events/dt=2019-10-01"))
            .expect("hours")
            .flatten()
            .map(|e| e.path())
            .collect();
        hours.sort();
        for h in hours {
            for f in std::fs::read_dir(&h).expect("files").flatten() {
                use std::io::Read;
                let mut s = String::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(f.path()).expect("open"))
                    .read_to_string(&mut s)
                    .expect("gunzip");
                all.push_str(&s);
            }
        }
        std::fs::write(src.join("part.json"), &all).expect("fixture");
        let flink_src = p.path().join("flink_src").display().to_string();
        let sql = p.run(&[
            "streaming",
            "sql",
            "streaming/rules/conf.yaml",
            "--source",
            "filesystem",
            "--path",
            &flink_src,
            "--sink-path",
            "/tmp/unused-cartflow-sink",
        ]);
        sql.expect_code(0);
        p.write("conf.sql", &sql.stdout);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/flink_conformance.py");
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(p.path().join("conf.sql"))
            .arg(p.path().join("flink.json"))
            .output()
            .expect("run pyflink");
        assert!(out.status.success(), "flink failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let flink: Vec<serde_json::Value> = serde_json::from_str(&p.read("flink.json")).expect("flink output");
        let mut want: Vec<Row> = flink.iter().map(|v| row(v, v["notify"].as_bool().expect("notify"))).collect();
        want.sort();

        // The local engine over the same archive.
        p.run(&[
            "reprocess",
            "--stage",
            "detector",
            "--from",
            "2019-10-01",
            "--to",
            "2019-10-01",
            "--rules",
            "streaming/rules/conf.yaml",
            "--no-downstream",
        ])
        .expect_code(0);
        let local = p.run(&["alerts", "--json"]);
        local.expect_code(0);
        let mut got: Vec<Row> = local
            .stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                let above = v["value"].as_u64().unwrap_or(0) > notify_above(v["rule"].as_str().unwrap_or(""));
                row(&v, above)
            })
            .collect();
        got.sort();
        for rule in ["ddos_user_burst", "session_scan", "hot_product"] {
            assert!(want.iter().any(|r| r.0 == rule), "the fixture makes rule {rule} fire");
        }
        assert_eq!(got, want, "Flink and the local engine give identical alerts");
    }
}

mod aws_alerts {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use cartflow_e2e::Moto;
    use cartflow_streaming::alert::Alert;
    use cartflow_streaming::aws::{DynamoAlerts, EmfMetrics, SnsNotifier};
    use cartflow_streaming::handler::handle;
    use cartflow_streaming::rules::Severity;

    fn alert(key: &str, value: u64, notify: bool) -> Alert {
        Alert {
            rule: "ddos_user_burst".into(),
            key_field: "user_id".into(),
            key: key.into(),
            window_start_ms: 1_569_888_010_000,
            window_end_ms: 1_569_888_020_000,
            value,
            first_event_ms: 1_569_888_011_000,
            threshold: 20,
            severity: Severity::High,
            notify,
        }
    }

    #[test]
    fn the_lambda_handler_stores_once_in_dynamodb_and_notifies_once_through_sns() {
        let Some(moto) = Moto::start() else { return };
        let setup = moto.boto3(
            "import boto3\n\
             boto3.client('dynamodb').create_table(TableName='alerts', KeySchema=[{'AttributeName':'id','KeyType':'HASH'}],\n\
               AttributeDefinitions=[{'AttributeName':'id','AttributeType':'S'}], BillingMode='PAY_PER_REQUEST')\n\
             sns = boto3.client('sns'); sqs = boto3.client('sqs')\n\
             topic = sns.create_topic(Name='alerts')['TopicArn']\n\
             q = sqs.create_queue(QueueName='inbox')['QueueUrl']\n\
             arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
             sns.subscribe(TopicArn=topic, Protocol='sqs', Endpoint=arn)\n\
             print(topic)",
        );
        let topic = setup.trim().to_string();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let creds = Credentials::new("testing", "testing", None, None, "test");
        let ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&moto.endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(creds.clone())
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::Config::builder()
                .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
                .endpoint_url(&moto.endpoint)
                .region(aws_sdk_sns::config::Region::new("us-east-1"))
                .credentials_provider(creds)
                .build(),
        );
        let mut store = DynamoAlerts::new(ddb, "alerts", rt.handle().clone());
        let records = [alert("1", 30, false).to_json(), alert("2", 300, true).to_json(), "not an alert".to_string()];
        let refs: Vec<&[u8]> = records.iter().map(|s| s.as_bytes()).collect();
        let mut metrics = EmfMetrics::default();

        // SNS answers with an error (no such topic): the invocation fails and Lambda retries.
        let mut broken = SnsNotifier::new(sns.clone(), &format!("{topic}-missing"), rt.handle().clone());
        let e = handle(&refs, &mut store, &mut broken, &mut metrics).expect_err("publish fails");
        assert!(e.to_string().starts_with("SNS Publish on arn:aws:sns:"), "{e}");

        // The retried batch: nothing stored twice, the notification goes out once.
        let mut notifier = SnsNotifier::new(sns, &topic, rt.handle().clone());
        let rep = handle(&refs, &mut store, &mut notifier, &mut metrics).expect("retry");
        assert_eq!((rep.received, rep.stored, rep.duplicates, rep.notified, rep.invalid), (3, 0, 2, 1, 1));
        let rep = handle(&refs, &mut store, &mut notifier, &mut metrics).expect("redelivery");
        assert_eq!((rep.stored, rep.duplicates, rep.notified), (0, 2, 0));
        let line = metrics.line("cartflow", 0);
        let emf: serde_json::Value = serde_json::from_str(&line).expect("emf");
        assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "cartflow");

        let check = moto.boto3(
            "import boto3, json\n\
             items = boto3.client('dynamodb').scan(TableName='alerts')['Items']\n\
             print(len(items), sorted((i['key']['S'], i['value']['N'], i['notified']['BOOL']) for i in items))\n\
             sqs = boto3.client('sqs'); q = sqs.get_queue_url(QueueName='inbox')['QueueUrl']\n\
             msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10).get('Messages', [])\n\
             print(len(msgs), [json.loads(json.loads(m['Body'])['Message'])['key'] for m in msgs])",
        );
        let mut lines = check.lines();
        assert_eq!(lines.next(), Some("2 [('1', '30', False), ('2', '300', True)]"), "{check}");
        assert_eq!(lines.next(), Some("1 ['2']"), "one notification, for the alert above 100: {check}");
    }
}

#[path = "e2e/aws_batch.rs"]
mod aws_batch;

#[path = "e2e/aws_platform.rs"]
mod aws_platform;
