//! Running DAGs from the CLI: recording, retries, a killed run resuming, one process per
//! interval, Ctrl-C, `validate`, `plan`, task selection, JSON logs, the state's location and the
//! repository's example DAG.

use std::time::{Duration, Instant};

use cartflow_e2e::{Project, alive, kill, sh};

#[test]
fn a_dag_of_commands_runs_and_is_recorded() {
    let p = Project::new();
    p.dag(
        "etl.yaml",
        &format!(
            "id: etl\nschedule: '@daily'\nparams:\n  who: cartflow\ntasks:\n{}{}{}",
            // A param reaches the script as a variable, never spliced into it.
            "  - id: extract\n    kind: command\n    program: sh\n    args: [-c, 'echo extract {{ ds }} >> $DIR/trace; echo hello from \"$WHO\"']\n    env: {WHO: '{{ params.who }}'}\n",
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

/// Processes a failed test must not leave behind: killed on drop if they still run.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.iter().filter(|&&pid| alive(pid)) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
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
            // Each attempt records its shell (the group leader) and a grandchild it leaves in its
            // group; attempt 2 notes whether anything of attempt 1 still runs beside it.
            sh(
                "slow",
                "first",
                "echo slow >> $DIR/counter; sleep 300 & echo $! > $DIR/bg.$CARTFLOW_ATTEMPT.pid; \
                 echo $$ > $DIR/slow.$CARTFLOW_ATTEMPT.pid; \
                 for f in $DIR/slow.1.pid $DIR/bg.1.pid; do \
                   [ $CARTFLOW_ATTEMPT = 1 ] || { p=$(cat $f); [ -n \"$p\" ] && [ -e /proc/$p ] \
                     && ! grep -q \") Z\" /proc/$p/stat && echo $f >> $DIR/beside; }; \
                 done; \
                 while [ ! -f $DIR/release ]; do sleep 0.05; done"
            ),
            sh("last", "slow, side", "echo last >> $DIR/counter"),
        ),
    );
    let mut child = p.spawn(&["run", "k", "--date", "2019-10-01"]);
    p.wait_for_lines("counter", 3, Duration::from_secs(30));
    p.wait_for_lines("slow.1.pid", 1, Duration::from_secs(10));
    // `side` wrote its line; wait until its success is recorded too before the crash.
    p.wait_for_task_state("side", "success", Duration::from_secs(10));
    kill(child.id(), "KILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), None, "killed by a signal");
    let leader: i32 = p.read("slow.1.pid").trim().parse().expect("pid");
    let grandchild: i32 = p.read("bg.1.pid").trim().parse().expect("pid");
    let _cleanup = KillOnDrop(vec![leader, grandchild]);
    // The task's shell dies with cartflow (parent-death signal)...
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(leader) {
        assert!(Instant::now() < deadline, "the task's shell {leader} outlived cartflow");
        std::thread::sleep(Duration::from_millis(20));
    }

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
    // ...and what it left in its group is killed when the run is taken over, before the
    // second attempt starts.
    assert!(!p.path().join("beside").exists(), "ran beside attempt 2: {}", p.read("beside"));
    for pid in [leader, grandchild] {
        assert!(!alive(pid), "process {pid} of the crashed attempt is alive after the resume");
    }
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

/// `cartflow cancel` stops a run another process runs, as Ctrl-C there would: the running
/// task's processes are killed, its downstream never starts, the run ends `cancelled` and that
/// process exits 130; the audit log says who asked. A run that is not running, or whose
/// process died, is refused with why.
#[test]
fn cancel_stops_a_run_that_another_process_runs() {
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
    let run = "c@2019-10-01T00:00:00Z";
    p.run(&["cancel", "c@2019-10-09T00:00:00Z"]).expect_code(2);
    let asked = Instant::now();
    let r = p.run(&["cancel", run, "--wait"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("cancel asked for") && r.stdout.trim_end().ends_with(&format!("{run}: cancelled")),
        "{}",
        r.stdout
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "stopped within the heartbeat and the grace: {:?}",
        asked.elapsed()
    );
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancel asked for from another process"), "{stderr}");
    let sleeper: i32 = p.read("child.pid").trim().parse().expect("pid");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(sleeper), "the task's process tree is killed");
    assert!(!p.path().join("next_ran").exists());
    let db = p.store();
    let task_states: Vec<(String, String)> = db
        .prepare("SELECT task_id, state FROM task_instances ORDER BY task_id")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(task_states, vec![("long".into(), "cancelled".into()), ("next".into(), "cancelled".into())]);
    let audit: Vec<(String, String)> = db
        .prepare("SELECT action, run_id FROM audit")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(audit, vec![("cancel".to_string(), run.to_string())]);
    // Not running any more: refused, and the request is not left behind for its resume.
    let again = p.run(&["cancel", run]);
    again.expect_code(2);
    assert!(again.stderr.contains("is cancelled: only a running run can be cancelled"), "{}", again.stderr);
    let left: Option<String> =
        db.query_row("SELECT cancel_requested_by FROM dag_runs", [], |r| r.get(0)).expect("request");
    assert_eq!(left, None);

    // A run whose process died (kill -9): nothing to stop; it is said, and it resumes as before.
    p.write("child.pid", "");
    let child = p.spawn(&["run", "c", "--date", "2019-10-01"]);
    p.wait_for_lines("child.pid", 1, Duration::from_secs(30));
    kill(child.id(), "KILL");
    let _ = child.wait_with_output();
    let orphan = p.run(&["cancel", run]);
    orphan.expect_code(2);
    assert!(orphan.stderr.contains("no live process runs it"), "{}", orphan.stderr);
    // (The task's background `sleep` may outlive a SIGKILLed cartflow; the next owner kills it.)
    let sleeper: i32 = p.read("child.pid").trim().parse().expect("pid");
    if alive(sleeper) {
        kill(sleeper as u32, "KILL");
    }
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

#[test]
fn validate_refuses_out_of_range_durations_counts_and_cron_fields() {
    let p = Project::new();
    p.dag("timeout.yaml", "id: timeout\ntasks:\n  - id: a\n    kind: noop\n    timeout: 1000000000000000s\n");
    p.dag(
        "retry.yaml",
        "id: retry\ndefaults:\n  retries: 4000\ntasks:\n  - id: a\n    kind: noop\n    retry_delay: 1000000000000000\n  - id: b\n    kind: noop\n    max_retry_delay: 99999999999999999999d\n",
    );
    p.dag(
        "sensor.yaml",
        "id: sensor\ntasks:\n  - id: w\n    kind: wait_for_partition\n    poke_interval: 1000000000000000s\n  - id: v\n    kind: wait_for_partition\n    settle: 400d\n",
    );
    p.dag("step.yaml", "id: step\nschedule: '*/4294967295 * * * *'\ntasks:\n  - id: a\n    kind: noop\n");
    p.dag("wrap.yaml", "id: wrap\nschedule: '1/4294967295 * * * *'\ntasks:\n  - id: a\n    kind: noop\n");
    p.dag("range.yaml", "id: range\nschedule: '0-99999999999 * * * *'\ntasks:\n  - id: a\n    kind: noop\n");
    let r = p.run(&["validate"]);
    r.expect_code(2);
    for line in [
        "dags/timeout.yaml:5:14: error: task `a`: `timeout`: ",
        "dags/retry.yaml:3:12: error: `defaults`: `retries`: ",
        "dags/retry.yaml:7:18: error: task `a`: `retry_delay`: ",
        "dags/retry.yaml:10:22: error: task `b`: `max_retry_delay`: ",
        "dags/sensor.yaml:5:20: error: task `w` (wait_for_partition): `poke_interval`: ",
        "dags/sensor.yaml:8:13: error: task `v` (wait_for_partition): `settle`: ",
        "dags/step.yaml:2:11: error: invalid cron expression `*/4294967295 * * * *`: ",
        "dags/wrap.yaml:2:11: error: invalid cron expression `1/4294967295 * * * *`: ",
        "dags/range.yaml:2:11: error: invalid cron expression `0-99999999999 * * * *`: ",
    ] {
        assert!(r.stderr.contains(line), "missing `{line}` in\n{}", r.stderr);
    }
    insta::assert_snapshot!(r.stderr);
}

/// A run killed while a task waits for its retry resumes with the budget it had left and the
/// retry's time: attempt 2 starts no earlier than the delay after attempt 1, and with one retry
/// allowed there is no attempt 3.
#[test]
fn a_resumed_run_keeps_the_retry_budget_and_the_retry_delay() {
    let p = Project::new();
    p.dag(
        "r.yaml",
        "id: r\ntasks:\n  - id: flaky\n    kind: command\n    program: sh\n    args: [-c, 'date +%s.%N >> $DIR/attempts; exit 1']\n    retries: 1\n    retry_delay: 4s\n    retry_jitter: false\n",
    );
    let mut child = p.spawn(&["run", "r", "--date", "2019-10-01"]);
    // Attempt 1 failed and the task waits for its retry: kill cartflow then.
    p.wait_for_task_state("flaky", "up_for_retry", Duration::from_secs(30));
    kill(child.id(), "KILL");
    assert_eq!(child.wait().expect("wait").code(), None);

    let r = p.run(&["run", "r", "--date", "2019-10-01"]);
    r.expect_code(1);
    let times: Vec<f64> = p.read("attempts").lines().map(|l| l.trim().parse().expect("time")).collect();
    assert_eq!(times.len(), 2, "one retry allowed, so two attempts in all: {times:?}");
    assert!(times[1] - times[0] >= 3.9, "attempt 2 waited for the retry delay: {times:?}");
    let state: String = p
        .store()
        .query_row("SELECT state FROM task_instances WHERE task_id = 'flaky'", [], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "failed");
}

/// A task killed while waiting for its retry and then named to run again with what is upstream
/// of it starts fresh: after its upstream's new success, without the old retry's wait.
#[test]
fn a_task_waiting_for_a_retry_and_rerun_with_its_upstream_waits_for_the_upstream_not_the_retry() {
    let p = Project::new();
    p.dag(
        "u.yaml",
        &format!(
            "id: u\ndefaults:\n  retries: 1\n  retry_delay: 1h\n  max_retry_delay: 1h\ntasks:\n{}{}",
            sh("up", "", "echo up >> $DIR/trace"),
            sh("down", "up", "echo down >> $DIR/trace; [ -f $DIR/fixed ]"),
        ),
    );
    let mut child = p.spawn(&["run", "u", "--date", "2019-10-01"]);
    p.wait_for_task_state("down", "up_for_retry", Duration::from_secs(30));
    kill(child.id(), "KILL");
    assert_eq!(child.wait().expect("wait").code(), None);

    std::fs::write(p.path().join("fixed"), "").expect("fix");
    let mut rerun = p.spawn(&["run", "u", "--date", "2019-10-01", "--task", "up", "--downstream"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = rerun.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            kill(rerun.id(), "KILL");
            let _ = rerun.wait();
            panic!("the rerun waited for the old retry's hour: {}", p.read("trace"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(p.read("trace"), "up\ndown\nup\ndown\n", "down ran again only after up did");
}

/// `{{ ds | add_days(N) }}` moves the interval's date by whole days (a window's start: the
/// Airflow user's `macros.ds_add`); a filter that is not that, or on a variable that is not a
/// date, is a compile error with its line and column.
#[test]
fn a_template_moves_a_date_by_days_and_a_bad_filter_is_refused_at_compile_time() {
    let p = Project::new();
    p.dag(
        "w.yaml",
        &format!(
            "id: w\ntasks:\n{}",
            sh("window", "", "echo {{ ds | add_days(-6) }} {{ ds }} {{ ds_nodash | add_days(1) }} >> $DIR/window")
        ),
    );
    p.run(&["run", "w", "--date", "2020-03-01"]).expect_code(0);
    assert_eq!(p.read("window"), "2020-02-24 2020-03-01 20200302\n", "across a leap day");
    p.dag("bad.yaml", &format!("id: bad\ntasks:\n{}", sh("a", "", "echo {{ run_id | add_days(1) }}")));
    let r = p.run(&["validate"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains(
            "bad.yaml:7:16: error: task `a`: `{{ run_id | add_days(1) }}`: `add_days(N)` applies to `ds` or `ds_nodash`"
        ),
        "{}",
        r.stderr
    );
}

/// A param may declare a type: a `-p` value that is not of it is refused (exit 2, naming the
/// param) before anything runs; a param named like a YAML 1.1 boolean (`n`) keeps its name.
#[test]
fn typed_params_refuse_a_value_of_another_type_before_anything_runs() {
    let p = Project::new();
    p.dag(
        "t.yaml",
        &format!(
            "id: t\nparams:\n  n: {{type: int, default: 7}}\n  day: {{type: date, default: 2019-10-01}}\n  mode: {{enum: [fast, full], default: fast}}\ntasks:\n{}",
            "  - id: a\n    kind: command\n    program: sh\n    args: [-c, 'echo \"$N $DAY $MODE\" >> $DIR/out']\n    env: {N: '{{ params.n }}', DAY: '{{ params.day }}', MODE: '{{ params.mode }}'}\n"
        ),
    );
    for (bad, why) in [
        ("n=seven", "param `n` of DAG `t` is an int: `seven` is not a whole number"),
        ("n=1; rm -rf ~", "param `n` of DAG `t` is an int"),
        ("day=2019-02-30", "param `day` of DAG `t` is a date: `2019-02-30` is not a date (YYYY-MM-DD)"),
        ("mode=slow", "param `mode` of DAG `t` is an enum: `slow` is not one of `fast`, `full`"),
    ] {
        let r = p.run(&["run", "t", "--date", "2019-10-01", "-p", bad]);
        r.expect_code(2);
        assert!(r.stderr.contains(why), "{bad}: {}", r.stderr);
    }
    assert!(!p.path().join("out").exists() && !p.path().join(".cartflow/state.db").exists(), "nothing ran");
    p.run(&["run", "t", "--date", "2019-10-01", "-p", "n=-12", "-p", "mode=full"]).expect_code(0);
    assert_eq!(p.read("out"), "-12 2019-10-01 full\n");
}

/// An in-process job (here the Polars compaction) that times out is asked to stop and ends at
/// its next raw object: the attempt fails, and nothing is published (before, the job ran on on
/// its blocking thread through the attempt's grace period and published once done).
#[test]
fn a_timed_out_compaction_stops_at_its_next_file_and_publishes_nothing() {
    let p = Project::new();
    p.run(&[
        "generate",
        "--days",
        "1",
        "--events-per-day",
        "200000",
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--buffer-seconds",
        "300",
    ])
    .expect_code(0);
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ntasks:\n  - id: compact\n    kind: polars_job\n    job: compact\n    date: '{{ ds }}'\n    timeout: 100ms\n    retries: 0\n",
    );
    // 100ms: a tenth of what compacting the day's 288 objects takes on a fast machine (0.95 s
    // measured in debug), so the stop comes while objects are left to read (1s was a race).
    let r = p.run(&["run", "c", "--date", "2019-10-01"]);
    r.expect_code(1);
    let log = p.run(&["logs", "c@2019-10-01T00:00:00Z", "compact"]);
    assert!(
        log.stdout.contains("compaction: asked to stop; waiting for it to end at its next check"),
        "{}",
        log.stdout
    );
    let staged = p.path().join(".cartflow/lake/staged/events");
    let listing = || -> Vec<String> {
        std::fs::read_dir(&staged)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(listing(), Vec::<String>::new(), "nothing published, no staging folder left");
}
