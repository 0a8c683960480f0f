//! Executor tests: real DAGs of `command` and `noop` tasks through the real run store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::dag::compile::{CompileOptions, compile_source};

/// Declares test `$sqlite` and, with the `aws` feature, `$dynamo`: `$body` on a fixture whose
/// run store is SQLite, and on one whose run store is a DynamoDB table in moto.
macro_rules! on_both_stores {
    ($sqlite:ident, $dynamo:ident, $body:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $body(Fixture::new()).await
        }

        #[cfg(feature = "aws")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $dynamo() {
            if let Some(f) = Fixture::dynamo() {
                $body(f).await
            }
        }
    };
}

struct Fixture {
    dir: tempfile::TempDir,
    at: StoreAt,
    #[cfg(feature = "aws")]
    _moto: Option<crate::stores::dynamodb::testing::Table>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = StoreAt::File(dir.path().join("state.db"));
        Fixture {
            dir,
            at,
            #[cfg(feature = "aws")]
            _moto: None,
        }
    }

    /// A fixture whose run store is a fresh table in moto (`None`: moto is not installed, and
    /// this is not CI).
    #[cfg(feature = "aws")]
    fn dynamo() -> Option<Self> {
        let table = crate::stores::dynamodb::testing::Table::start()?;
        Some(Fixture { dir: tempfile::tempdir().expect("tempdir"), at: table.at(), _moto: Some(table) })
    }

    /// Sets run `run_id`'s owner and lease as a process of another host leaves them when it
    /// took the run over.
    fn forge_owner(&self, run_id: &str, owner: &str, lease: &str) {
        #[cfg(feature = "aws")]
        if let Some(t) = &self._moto {
            t.forge(run_id, &[("owner", owner), ("lease_until", lease)]);
            return;
        }
        let db = rusqlite::Connection::open(self.path().join("state.db")).expect("db");
        db.execute(
            "UPDATE dag_runs SET owner = ?2, lease_until = ?3 WHERE run_id = ?1",
            rusqlite::params![run_id, owner, lease],
        )
        .expect("take over");
    }

    /// Leaves what an earlier execution of `task` left: a saved fact, and `failures` of its
    /// retry budget spent.
    fn forge_leftovers(&self, run_id: &str, task: &str, fact: (&str, &str), failures: u32) {
        #[cfg(feature = "aws")]
        if let Some(t) = &self._moto {
            let sk = format!("FACT#{task}#{}", fact.0);
            t.raw(run_id, &sk, &[("task", task), ("key", fact.0), ("value", fact.1)], None);
            let tsk = format!("TASK#{task}");
            let state_json = t.raw(run_id, &tsk, &[], Some("state_json")).expect("the task's state");
            let pos = t.raw(run_id, &tsk, &[], Some("pos")).unwrap_or_default();
            let state = t.raw(run_id, &tsk, &[], Some("state")).unwrap_or_default();
            let attempts = t.raw(run_id, &tsk, &[], Some("attempts")).unwrap_or_default();
            let failures = failures.to_string();
            t.raw(
                run_id,
                &tsk,
                &[
                    ("task", task),
                    ("pos", &pos),
                    ("state", &state),
                    ("state_json", &state_json),
                    ("attempts", &attempts),
                    ("failures", &failures),
                    ("updated_at", "2019-10-01T00:00:00.000Z"),
                ],
                None,
            );
            return;
        }
        let db = rusqlite::Connection::open(self.path().join("state.db")).expect("db");
        db.execute(
            "INSERT INTO task_facts (run_id, task_id, key, value) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![run_id, task, fact.0, fact.1],
        )
        .expect("fact");
        db.execute(
            "UPDATE task_instances SET failures = ?3 WHERE run_id = ?1 AND task_id = ?2",
            rusqlite::params![run_id, task, failures],
        )
        .expect("failures");
    }

    /// The retry budget `task` has spent in its current execution.
    fn failures(&self, run_id: &str, task: &str) -> u32 {
        #[cfg(feature = "aws")]
        if let Some(t) = &self._moto {
            return t
                .raw(run_id, &format!("TASK#{task}"), &[], Some("failures"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        let db = rusqlite::Connection::open(self.path().join("state.db")).expect("db");
        db.query_row("SELECT failures FROM task_instances WHERE run_id = ?1 AND task_id = ?2", [run_id, task], |r| {
            r.get(0)
        })
        .expect("failures")
    }

    /// Sets the state, owner and tries of the run's notifications (of one attempt, or all).
    fn forge_notes(&self, run_id: &str, attempt: Option<u32>, state: &str, owner: &str, tries: u32) {
        #[cfg(feature = "aws")]
        if let Some(t) = &self._moto {
            t.forge_notes(run_id, attempt, state, owner, tries);
            return;
        }
        let db = rusqlite::Connection::open(self.path().join("state.db")).expect("db");
        db.execute(
            "UPDATE notifications SET state = ?2, owner = ?3, tries = ?4 WHERE run_id = ?1 AND (?5 IS NULL OR attempt = ?5)",
            rusqlite::params![run_id, state, owner, tries, attempt],
        )
        .expect("forge the notifications");
    }

    fn store(&self) -> RunStore {
        RunStore::open(&self.at).expect("store")
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dag(&self, yaml: &str) -> Arc<Dag> {
        let src = yaml.replace("$DIR", &self.path().display().to_string());
        match compile_source(Path::new("test.yaml"), &src, &CompileOptions::default()) {
            Ok(d) => Arc::new(d),
            Err((_, diags)) => panic!("does not compile: {diags:#?}"),
        }
    }

    async fn run_with(
        &self,
        dag: &Arc<Dag>,
        pools: &BTreeMap<String, u32>,
        opts: ExecOptions,
        cancel: CancellationToken,
    ) -> RunReport {
        let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let opts = ExecOptions { project_dir: self.path().to_path_buf(), ..opts };
        execute(dag.clone(), interval, &self.at, Arc::new(Pools::new(pools)), &opts, cancel, &mut |_| {})
            .await
            .expect("execute")
    }

    async fn run(&self, dag: &Arc<Dag>) -> RunReport {
        self.run_with(dag, &BTreeMap::new(), ExecOptions::default(), CancellationToken::new()).await
    }
}

fn state_of<'a>(r: &'a RunReport, task: &str) -> &'a TaskState {
    &r.tasks.iter().find(|t| t.task_id == task).expect("task in report").state
}

fn sh(id: &str, deps: &str, script: &str) -> String {
    format!("  - id: {id}\n    kind: command\n    depends_on: [{deps}]\n    program: sh\n    args: [-c, '{script}']\n")
}

on_both_stores!(
    tasks_run_in_dependency_order_and_succeed,
    tasks_run_in_dependency_order_and_succeed_on_dynamodb,
    tasks_run_in_dependency_order_and_succeed_with
);
async fn tasks_run_in_dependency_order_and_succeed_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}{}",
        sh("a", "", "echo a >> $DIR/order"),
        sh("b", "a", "echo b >> $DIR/order"),
        sh("c", "b", "echo c >> $DIR/order")
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(std::fs::read_to_string(f.path().join("order")).expect("order"), "a\nb\nc\n");
}

on_both_stores!(
    a_task_starts_as_soon_as_its_own_upstream_is_done,
    a_task_starts_as_soon_as_its_own_upstream_is_done_on_dynamodb,
    a_task_starts_as_soon_as_its_own_upstream_is_done_with
);
async fn a_task_starts_as_soon_as_its_own_upstream_is_done_with(f: Fixture) {
    // slow and fast are independent roots; after_fast depends only on fast and must start
    // (and finish) while slow is still running — no level-by-level barrier.
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}{}",
        sh("slow", "", "sleep 1.5; echo slow >> $DIR/order"),
        sh("fast", "", "echo fast >> $DIR/order"),
        sh("after_fast", "fast", "echo after_fast >> $DIR/order")
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(std::fs::read_to_string(f.path().join("order")).expect("order"), "fast\nafter_fast\nslow\n");
}

on_both_stores!(
    trigger_rules_decide_what_runs_after_a_failure,
    trigger_rules_decide_what_runs_after_a_failure_on_dynamodb,
    trigger_rules_decide_what_runs_after_a_failure_with
);
async fn trigger_rules_decide_what_runs_after_a_failure_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}{}{}{}{}{}",
        sh("ok", "", "true"),
        sh("bad", "", "exit 3"),
        sh("needs_all", "ok, bad", "true"),
        sh("after_needs_all", "needs_all", "true"),
        "  - id: cleanup\n    kind: noop\n    depends_on: [ok, bad]\n    trigger_rule: all_done\n",
        "  - id: alert\n    kind: noop\n    depends_on: [ok, bad]\n    trigger_rule: one_failed\n",
        "  - id: all_bad\n    kind: noop\n    depends_on: [ok, bad]\n    trigger_rule: all_failed\n",
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Failed);
    assert!(matches!(state_of(&r, "bad"), TaskState::Failed { .. }));
    assert_eq!(state_of(&r, "needs_all"), &TaskState::UpstreamFailed);
    assert_eq!(state_of(&r, "after_needs_all"), &TaskState::UpstreamFailed, "propagates transitively");
    assert!(matches!(state_of(&r, "cleanup"), TaskState::Success { .. }));
    assert!(matches!(state_of(&r, "alert"), TaskState::Success { .. }));
    assert_eq!(state_of(&r, "all_bad"), &TaskState::Skipped);
    let bad = r.tasks.iter().find(|t| t.task_id == "bad").expect("bad");
    assert_eq!(bad.error.as_deref(), Some("`sh` exited with code 3"));
}

on_both_stores!(
    skip_exit_code_skips_and_downstream_follows_its_rule,
    skip_exit_code_skips_and_downstream_follows_its_rule_on_dynamodb,
    skip_exit_code_skips_and_downstream_follows_its_rule_with
);
async fn skip_exit_code_skips_and_downstream_follows_its_rule_with(f: Fixture) {
    let dag = f.dag(
        "id: d\ntasks:\n  - id: maybe\n    kind: command\n    program: sh\n    args: [-c, 'exit 99']\n    skip_exit_code: 99\n\
         \x20 - id: strict\n    kind: noop\n    depends_on: maybe\n\
         \x20 - id: lenient\n    kind: noop\n    depends_on: maybe\n    trigger_rule: none_failed\n",
    );
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(state_of(&r, "maybe"), &TaskState::Skipped);
    assert_eq!(state_of(&r, "strict"), &TaskState::Skipped);
    assert!(matches!(state_of(&r, "lenient"), TaskState::Success { .. }));
}

on_both_stores!(
    a_skipped_task_stays_skipped_on_resume_unless_an_upstream_runs_again,
    a_skipped_task_stays_skipped_on_resume_unless_an_upstream_runs_again_on_dynamodb,
    a_skipped_task_stays_skipped_on_resume_unless_an_upstream_runs_again_with
);
async fn a_skipped_task_stays_skipped_on_resume_unless_an_upstream_runs_again_with(f: Fixture) {
    let dag = f.dag(
        "id: d\ntasks:\n\
         \x20 - id: own_skip\n    kind: command\n    program: sh\n    args: [-c, 'echo x >> $DIR/own; exit 99']\n    skip_exit_code: 99\n\
         \x20 - id: flaky\n    kind: command\n    program: sh\n    args: [-c, '[ -f $DIR/fixed ]']\n\
         \x20 - id: cleanup\n    kind: command\n    program: sh\n    args: [-c, 'echo x >> $DIR/cleanup; exit 99']\n    skip_exit_code: 99\n    depends_on: [flaky]\n    trigger_rule: all_done\n",
    );
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Failed);
    assert_eq!((state_of(&r, "own_skip"), state_of(&r, "cleanup")), (&TaskState::Skipped, &TaskState::Skipped));
    std::fs::write(f.path().join("fixed"), "").expect("fix");
    // What the skipped execution of `cleanup` left: a saved fact, a failure spent.
    f.forge_leftovers(&r.run_id, "cleanup", ("job_run_id", "old"), 1);
    assert_eq!(f.failures(&r.run_id, "cleanup"), 1);
    // Run again (what failed): `flaky` runs and succeeds. `own_skip` decided to skip and nothing
    // it depends on changed: it stays skipped, not run. `cleanup` follows `flaky`: it runs again.
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    let lines = |name: &str| std::fs::read_to_string(f.path().join(name)).expect("file").lines().count();
    assert_eq!(lines("own"), 1, "a skip is kept as a success is");
    assert_eq!(lines("cleanup"), 2, "decided again after its upstream ran again");
    let fact = f.store().fact(&r.run_id, "cleanup", "job_run_id").expect("fact");
    let failures = f.failures(&r.run_id, "cleanup");
    assert_eq!((fact, failures), (None, 0), "decided again from a fresh start: no old fact, its whole retry budget");
    assert_eq!(state_of(&r, "own_skip"), &TaskState::Skipped);
}

on_both_stores!(
    a_task_a_person_marked_skipped_stays_skipped_when_its_upstream_runs_again,
    a_task_a_person_marked_skipped_stays_skipped_when_its_upstream_runs_again_on_dynamodb,
    a_task_a_person_marked_skipped_stays_skipped_when_its_upstream_runs_again_with
);
async fn a_task_a_person_marked_skipped_stays_skipped_when_its_upstream_runs_again_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}",
        sh("load", "", "[ -f $DIR/fixed ]"),
        sh("report", "load", "echo x >> $DIR/report")
    ));
    let r = f.run(&dag).await;
    assert_eq!(state_of(&r, "report"), &TaskState::UpstreamFailed);
    // Someone decides the report is not wanted for this day, and fixes the load.
    let mut store = f.store();
    store.mark(&r.run_id, "report", crate::engine::store::Mark::Skipped, "eve").expect("mark");
    drop(store);
    std::fs::write(f.path().join("fixed"), "").expect("fix");
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert!(matches!(state_of(&r, "load"), TaskState::Success { .. }), "load ran again");
    assert_eq!(state_of(&r, "report"), &TaskState::Skipped, "the person's skip stands");
    assert!(!f.path().join("report").exists(), "report never ran");
}

on_both_stores!(
    retries_back_off_exponentially_then_succeed,
    retries_back_off_exponentially_then_succeed_on_dynamodb,
    retries_back_off_exponentially_then_succeed_with
);
async fn retries_back_off_exponentially_then_succeed_with(f: Fixture) {
    // Fails on attempts 1 and 2, succeeds on 3; records when each attempt started.
    let script = "date +%s.%N >> $DIR/starts; n=$(wc -l < $DIR/starts); [ $n -ge 3 ]";
    let dag = f.dag(&format!(
        "id: d\ndefaults:\n  retries: 3\n  retry_delay: 300ms\n  retry_backoff: exponential\n  retry_jitter: false\ntasks:\n{}",
        sh("flaky", "", script)
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    let t = r.tasks.iter().find(|t| t.task_id == "flaky").expect("flaky");
    assert_eq!(t.attempts, 3);
    let starts: Vec<f64> = std::fs::read_to_string(f.path().join("starts"))
        .expect("starts")
        .lines()
        .map(|l| l.trim().parse().expect("timestamp"))
        .collect();
    assert_eq!(starts.len(), 3);
    let (gap1, gap2) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(gap1 >= 0.3, "first retry waits retry_delay: {gap1}");
    assert!(gap2 >= 0.6, "second retry waits twice as long: {gap2}");
    let store = f.store();
    let attempts = store.attempts(&r.run_id, Some("flaky")).expect("attempts");
    let states: Vec<&str> = attempts.iter().map(|a| a.state.name()).collect();
    assert_eq!(states, vec!["failed", "failed", "success"]);
}

on_both_stores!(
    retries_run_out_and_the_run_fails,
    retries_run_out_and_the_run_fails_on_dynamodb,
    retries_run_out_and_the_run_fails_with
);
async fn retries_run_out_and_the_run_fails_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ndefaults:\n  retries: 2\n  retry_delay: 10ms\ntasks:\n{}{}",
        sh("bad", "", "echo try >> $DIR/tries; exit 1"),
        sh("after", "bad", "true")
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(std::fs::read_to_string(f.path().join("tries")).expect("tries").lines().count(), 3);
    assert!(matches!(state_of(&r, "bad"), TaskState::Failed { attempt: 3, .. }));
    assert_eq!(state_of(&r, "after"), &TaskState::UpstreamFailed);
}

on_both_stores!(
    a_timeout_kills_the_whole_process_tree,
    a_timeout_kills_the_whole_process_tree_on_dynamodb,
    a_timeout_kills_the_whole_process_tree_with
);
async fn a_timeout_kills_the_whole_process_tree_with(f: Fixture) {
    // The task starts a background sleeper (a grandchild) and then waits; both must die.
    let dag = f.dag(&format!(
        "id: d\ndefaults:\n  timeout: 500ms\ntasks:\n{}",
        sh("hang", "", "sleep 60 & echo $! > $DIR/child.pid; wait")
    ));
    let started = Instant::now();
    let r = f.run(&dag).await;
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout must stop the task");
    assert_eq!(r.state, RunState::Failed);
    let t = r.tasks.iter().find(|t| t.task_id == "hang").expect("hang");
    assert_eq!(t.error.as_deref(), Some("timed out after 0.5s"));
    let pid: i32 = std::fs::read_to_string(f.path().join("child.pid")).expect("pid").trim().parse().expect("pid");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!crate::process::pid_alive(pid) || is_zombie(pid), "background child {pid} must be killed");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

on_both_stores!(
    cancel_stops_running_tasks_and_records_them,
    cancel_stops_running_tasks_and_records_them_on_dynamodb,
    cancel_stops_running_tasks_and_records_them_with
);
async fn cancel_stops_running_tasks_and_records_them_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}",
        sh("long", "", "sleep 60 & echo $! > $DIR/child.pid; wait"),
        sh("after", "long", "true")
    ));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c2.cancel();
    });
    let started = Instant::now();
    let r = f.run_with(&dag, &BTreeMap::new(), ExecOptions::default(), cancel).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(state_of(&r, "long"), &TaskState::Cancelled { attempt: Some(1) });
    assert_eq!(state_of(&r, "after"), &TaskState::Cancelled { attempt: None });
    let pid: i32 = std::fs::read_to_string(f.path().join("child.pid")).expect("pid").trim().parse().expect("pid");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!crate::process::pid_alive(pid) || is_zombie(pid), "child {pid} must be killed");
    let store = f.store();
    assert_eq!(store.run(&r.run_id).expect("run").expect("exists").state, RunState::Cancelled);
    // Running it again (here with a quicker `long`) finishes the same run.
    let quick = f.dag(&format!("id: d\ntasks:\n{}{}", sh("long", "", "true"), sh("after", "long", "true")));
    let r2 = f.run(&quick).await;
    assert_eq!((r2.run_id.as_str(), r2.state), (r.run_id.as_str(), RunState::Success));
}

on_both_stores!(
    a_run_this_process_executes_is_not_executed_a_second_time_at_once,
    a_run_this_process_executes_is_not_executed_a_second_time_at_once_on_dynamodb,
    a_run_this_process_executes_is_not_executed_a_second_time_at_once_with
);
async fn a_run_this_process_executes_is_not_executed_a_second_time_at_once_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}",
        sh("long", "", "echo x >> $DIR/starts; while [ ! -f $DIR/go ]; do sleep 0.05; done")
    ));
    let (d2, path, at) = (dag.clone(), f.path().to_path_buf(), f.at.clone());
    let first = tokio::spawn(async move {
        let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let opts = ExecOptions { project_dir: path.clone(), ..ExecOptions::default() };
        let pools = Arc::new(Pools::new(&BTreeMap::new()));
        execute(d2, interval, &at, pools, &opts, CancellationToken::new(), &mut |_| {}).await
    });
    let until = Instant::now() + Duration::from_secs(20);
    while !f.path().join("starts").exists() {
        assert!(Instant::now() < until, "the first execution never started its task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same run, in the same process, while the first runs it (the web UI's double submit).
    let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let opts = ExecOptions { project_dir: f.path().to_path_buf(), ..ExecOptions::default() };
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        execute(
            dag.clone(),
            interval,
            &f.at,
            Arc::new(Pools::new(&BTreeMap::new())),
            &opts,
            CancellationToken::new(),
            &mut |_| {},
        ),
    )
    .await;
    std::fs::write(f.path().join("go"), "").expect("go");
    assert!(matches!(second, Ok(Err(ExecError::Executing { .. }))), "refused at once: {second:?}");
    let r = first.await.expect("join").expect("first");
    assert_eq!(r.state, RunState::Success);
    assert_eq!(std::fs::read_to_string(f.path().join("starts")).expect("starts"), "x\n", "the task started once");
    // Once it ended, the run can be executed again.
    assert_eq!(f.run(&dag).await.state, RunState::Success);
}

on_both_stores!(
    pools_limit_concurrency_across_tasks,
    pools_limit_concurrency_across_tasks_on_dynamodb,
    pools_limit_concurrency_across_tasks_with
);
async fn pools_limit_concurrency_across_tasks_with(f: Fixture) {
    // Four independent tasks in a one-slot pool: a task that finds the lock taken fails.
    let body = "mkdir $DIR/lock || exit 7; sleep 0.2; rmdir $DIR/lock";
    let mut yaml = String::from("id: d\nmax_active_tasks: 8\ndefaults:\n  pool: single\ntasks:\n");
    for i in 0..4 {
        yaml.push_str(&sh(&format!("t{i}"), "", body));
    }
    let dag = f.dag(&yaml);
    let pools: BTreeMap<String, u32> = [("single".to_string(), 1)].into();
    let r = f.run_with(&dag, &pools, ExecOptions::default(), CancellationToken::new()).await;
    assert_eq!(r.state, RunState::Success, "{:#?}", r.tasks);

    // Without the pool the same DAG collides.
    let f2 = Fixture::new();
    let dag2 = f2.dag(&yaml.replace("defaults:\n  pool: single\n", ""));
    let r2 = f2.run(&dag2).await;
    assert_eq!(r2.state, RunState::Failed, "without a pool the tasks overlap");
}

on_both_stores!(
    max_active_tasks_bounds_concurrency,
    max_active_tasks_bounds_concurrency_on_dynamodb,
    max_active_tasks_bounds_concurrency_with
);
async fn max_active_tasks_bounds_concurrency_with(f: Fixture) {
    let body = "mkdir $DIR/lock || exit 7; sleep 0.1; rmdir $DIR/lock";
    let mut yaml = String::from("id: d\nmax_active_tasks: 1\ntasks:\n");
    for i in 0..3 {
        yaml.push_str(&sh(&format!("t{i}"), "", body));
    }
    let r = f.run(&f.dag(&yaml)).await;
    assert_eq!(r.state, RunState::Success, "{:#?}", r.tasks);
}

on_both_stores!(
    a_selection_runs_only_those_tasks_and_downstream,
    a_selection_runs_only_those_tasks_and_downstream_on_dynamodb,
    a_selection_runs_only_those_tasks_and_downstream_with
);
async fn a_selection_runs_only_those_tasks_and_downstream_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}{}",
        sh("a", "", "echo a >> $DIR/order"),
        sh("b", "a", "echo b >> $DIR/order"),
        sh("c", "b", "echo c >> $DIR/order")
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    let opts = ExecOptions { tasks: vec!["b".into()], downstream: true, ..ExecOptions::default() };
    let r = f.run_with(&dag, &BTreeMap::new(), opts, CancellationToken::new()).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(std::fs::read_to_string(f.path().join("order")).expect("order"), "a\nb\nc\nb\nc\n");
    let opts = ExecOptions { tasks: vec!["b".into()], ..ExecOptions::default() };
    f.run_with(&dag, &BTreeMap::new(), opts, CancellationToken::new()).await;
    assert_eq!(std::fs::read_to_string(f.path().join("order")).expect("order"), "a\nb\nc\nb\nc\nb\n");
}

on_both_stores!(
    rerunning_a_failed_run_keeps_what_succeeded,
    rerunning_a_failed_run_keeps_what_succeeded_on_dynamodb,
    rerunning_a_failed_run_keeps_what_succeeded_with
);
async fn rerunning_a_failed_run_keeps_what_succeeded_with(f: Fixture) {
    let dag =
        f.dag(&format!("id: d\ntasks:\n{}{}", sh("a", "", "echo a >> $DIR/count"), sh("b", "a", "test -f $DIR/fixed")));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Failed);
    std::fs::write(f.path().join("fixed"), "").expect("fix");
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(r.reused, 1);
    assert_eq!(std::fs::read_to_string(f.path().join("count")).expect("count"), "a\n", "a ran once");
}

on_both_stores!(templates_reach_the_program, templates_reach_the_program_on_dynamodb, templates_reach_the_program_with);
async fn templates_reach_the_program_with(f: Fixture) {
    let dag = f.dag(
        "id: tpl\nparams:\n  name: world\ntasks:\n  - id: t\n    kind: command\n    program: sh\n    \
         args: [-c, 'echo \"$1 $2 $3 $CARTFLOW_DS\" > $DIR/out', '-', '{{ ds_nodash }}', '{{ params.name }}', '{{ task.id }}']\n",
    );
    let opts = ExecOptions { params: [("name".to_string(), "cartflow".to_string())].into(), ..ExecOptions::default() };
    let r = f.run_with(&dag, &BTreeMap::new(), opts, CancellationToken::new()).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(std::fs::read_to_string(f.path().join("out")).expect("out"), "20191001 cartflow t 2019-10-01\n");
}

/// How a [`Panicking`] task panics.
#[derive(Debug, Clone, Copy)]
enum PanicAt {
    /// In its future, after a yield.
    Future,
    /// In `spawn_blocking` work the future awaits (re-raised there, as `.unwrap()` would).
    Blocking,
    /// While building the future (where a kind renders its config).
    Render,
}

/// A task kind that only exists in these tests: it counts its attempts and panics.
#[derive(Debug)]
struct Panicking {
    at: PanicAt,
    attempts: Arc<std::sync::atomic::AtomicU32>,
}

impl crate::task::CompiledTask for Panicking {
    fn kind(&self) -> &'static str {
        "test_panicking"
    }

    fn render_json(&self, _: &template::Context) -> Result<serde_json::Value, template::TemplateError> {
        Ok(serde_json::Value::Null)
    }

    fn run(&self, ctx: TaskContext) -> crate::task::BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let attempt = ctx.attempt;
        match self.at {
            PanicAt::Render => panic!("render boom on attempt {attempt}"),
            PanicAt::Future => Box::pin(async move {
                tokio::task::yield_now().await;
                panic!("boom on attempt {attempt}")
            }),
            PanicAt::Blocking => Box::pin(async move {
                let r =
                    tokio::task::spawn_blocking(move || -> u32 { panic!("blocking boom on attempt {attempt}") }).await;
                let n = r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                Ok(TaskOutput { summary: Some(n.to_string()), ..TaskOutput::default() })
            }),
        }
    }
}

/// Compiles `yaml` and gives task `id` the kind `config` (a kind the registry does not have).
fn with_kind(f: &Fixture, yaml: &str, id: &str, config: Arc<dyn crate::task::CompiledTask>) -> Arc<Dag> {
    let mut dag = Arc::try_unwrap(f.dag(yaml)).expect("one owner");
    dag.tasks.iter_mut().find(|t| t.id == id).expect("task").config = config;
    Arc::new(dag)
}

on_both_stores!(
    a_panicking_task_is_a_failed_attempt_and_the_run_goes_on,
    a_panicking_task_is_a_failed_attempt_and_the_run_goes_on_on_dynamodb,
    a_panicking_task_is_a_failed_attempt_and_the_run_goes_on_with
);
async fn a_panicking_task_is_a_failed_attempt_and_the_run_goes_on_with(f: Fixture) {
    // One store, a DAG per place of the panic.
    for (i, at) in [PanicAt::Future, PanicAt::Blocking, PanicAt::Render].into_iter().enumerate() {
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let dag = with_kind(
            &f,
            &format!(
                "id: d{i}\ndefaults:\n  retries: 2\n  retry_delay: 10ms\ntasks:\n  - id: bad\n    kind: noop\n{}{}{}",
                sh("after", "bad", "true"),
                "  - id: cleanup\n    kind: noop\n    depends_on: [bad]\n    trigger_rule: all_done\n",
                sh("beside", "", "true"),
            ),
            "bad",
            Arc::new(Panicking { at, attempts: attempts.clone() }),
        );
        let r = tokio::time::timeout(Duration::from_secs(30), f.run(&dag))
            .await
            .unwrap_or_else(|_| panic!("{at:?}: the run hangs after a panic"));
        assert_eq!(r.state, RunState::Failed, "{at:?}");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3, "{at:?}: retries apply to a panic");
        assert!(matches!(state_of(&r, "bad"), TaskState::Failed { attempt: 3, .. }), "{at:?}: {:?}", r.tasks);
        let bad = r.tasks.iter().find(|t| t.task_id == "bad").expect("bad");
        let expected = match at {
            PanicAt::Future => "panicked: boom on attempt 3",
            PanicAt::Blocking => "panicked: blocking boom on attempt 3",
            PanicAt::Render => "panicked: render boom on attempt 3",
        };
        assert_eq!(bad.error.as_deref(), Some(expected), "{at:?}");
        assert_eq!(state_of(&r, "after"), &TaskState::UpstreamFailed, "{at:?}");
        assert!(matches!(state_of(&r, "cleanup"), TaskState::Success { .. }), "{at:?}: all_done runs after a panic");
        assert!(matches!(state_of(&r, "beside"), TaskState::Success { .. }), "{at:?}");
        let store = f.store();
        let attempts = store.attempts(&r.run_id, Some("bad")).expect("attempts");
        let states: Vec<&str> = attempts.iter().map(|a| a.state.name()).collect();
        assert_eq!(states, vec!["failed", "failed", "failed"], "{at:?}");
        assert_eq!(store.run(&r.run_id).expect("run").expect("exists").state, RunState::Failed, "{at:?}");
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A task that ignores its cancel token and never ends; its future holds a [`DropFlag`].
#[derive(Debug)]
struct Stubborn {
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::task::CompiledTask for Stubborn {
    fn kind(&self) -> &'static str {
        "test_stubborn"
    }

    fn render_json(&self, _: &template::Context) -> Result<serde_json::Value, template::TemplateError> {
        Ok(serde_json::Value::Null)
    }

    fn run(&self, _ctx: TaskContext) -> crate::task::BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        let flag = DropFlag(self.dropped.clone());
        Box::pin(async move {
            let _flag = flag;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

on_both_stores!(
    a_task_that_ignores_its_timeout_is_dropped_after_the_grace_period,
    a_task_that_ignores_its_timeout_is_dropped_after_the_grace_period_on_dynamodb,
    a_task_that_ignores_its_timeout_is_dropped_after_the_grace_period_with
);
async fn a_task_that_ignores_its_timeout_is_dropped_after_the_grace_period_with(f: Fixture) {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dag = with_kind(
        &f,
        "id: d\ntasks:\n  - id: stuck\n    kind: noop\n    timeout: 200ms\n",
        "stuck",
        Arc::new(Stubborn { dropped: dropped.clone() }),
    );
    let r = tokio::time::timeout(STOP_GRACE + Duration::from_secs(20), f.run(&dag)).await.expect("the run ends");
    assert_eq!(r.state, RunState::Failed);
    let t = r.tasks.iter().find(|t| t.task_id == "stuck").expect("stuck");
    assert_eq!(t.error.as_deref(), Some("timed out after 0.2s"));
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the attempt's future is dropped before the run ends");
}

/// The notifications a file target received: (event, task, attempt) of each line.
fn notified(f: &Fixture, file: &str) -> Vec<(String, Option<String>, u32)> {
    std::fs::read_to_string(f.path().join(file))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let n: Notification = serde_json::from_str(l).expect("a notification per line");
            (n.event.to_string(), n.task, n.attempt)
        })
        .collect()
}

on_both_stores!(
    a_retry_notifies_retry_and_not_failure,
    a_retry_notifies_retry_and_not_failure_on_dynamodb,
    a_retry_notifies_retry_and_not_failure_with
);
async fn a_retry_notifies_retry_and_not_failure_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\nnotify:\n  - on: [failure, retry]\n    to: {{file: {{path: n.jsonl}}}}\ntasks:\n{}    retries: 1\n    retry_delay: 10ms\n",
        sh("flaky", "", "test -f $DIR/ran || { touch $DIR/ran; exit 3; }"),
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Success);
    assert_eq!(notified(&f, "n.jsonl"), vec![("retry".into(), Some("flaky".into()), 1)]);
    let store = f.store();
    let rows = store.notifications(&r.run_id).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state, rows[0].tries), (crate::engine::store::DeliveryState::Sent, 1));
    assert_eq!(rows[0].note.error.as_deref(), Some("`sh` exited with code 3"));
}

on_both_stores!(
    a_failure_notifies_once_per_attempt_and_a_task_success_only_its_own_rules,
    a_failure_notifies_once_per_attempt_and_a_task_success_only_its_own_rules_on_dynamodb,
    a_failure_notifies_once_per_attempt_and_a_task_success_only_its_own_rules_with
);
async fn a_failure_notifies_once_per_attempt_and_a_task_success_only_its_own_rules_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\nnotify:\n  - on: [failure, retry, success]\n    to: {{file: {{path: n.jsonl}}}}\ntasks:\n{}{}    notify:\n      - on: success\n        to: {{file: {{path: ok.jsonl}}}}\n",
        sh("bad", "", "exit 3"),
        sh("good", "", "true"),
    ));
    let r = f.run(&dag).await;
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(
        notified(&f, "n.jsonl"),
        vec![("failure".into(), Some("bad".into()), 1)],
        "no run success, no task success at DAG level"
    );
    assert_eq!(notified(&f, "ok.jsonl"), vec![("success".into(), Some("good".into()), 1)]);
    // Running the run again re-runs the failed task: a new attempt, a new failure.
    f.run(&dag).await;
    assert_eq!(
        notified(&f, "n.jsonl"),
        vec![("failure".into(), Some("bad".into()), 1), ("failure".into(), Some("bad".into()), 2)]
    );
    assert_eq!(notified(&f, "ok.jsonl").len(), 1, "`good` succeeded before and did not run again");
}

on_both_stores!(
    a_run_success_notifies_once_and_finishing_again_without_work_raises_nothing,
    a_run_success_notifies_once_and_finishing_again_without_work_raises_nothing_on_dynamodb,
    a_run_success_notifies_once_and_finishing_again_without_work_raises_nothing_with
);
async fn a_run_success_notifies_once_and_finishing_again_without_work_raises_nothing_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\nnotify:\n  - on: success\n    to: {{file: {{path: n.jsonl}}}}\ntasks:\n{}",
        sh("a", "", "true"),
    ));
    f.run(&dag).await;
    assert_eq!(notified(&f, "n.jsonl"), vec![("success".into(), None, 1)]);
    // Nothing left to run: the run finishes again with the same attempts, the same key.
    f.run(&dag).await;
    assert_eq!(notified(&f, "n.jsonl").len(), 1);
    // A rerun does work again: a new success.
    f.run_with(&dag, &BTreeMap::new(), ExecOptions { rerun: true, ..ExecOptions::default() }, CancellationToken::new())
        .await;
    assert_eq!(notified(&f, "n.jsonl"), vec![("success".into(), None, 1), ("success".into(), None, 2)]);
}

on_both_stores!(
    a_target_whose_url_variable_is_unset_fails_its_notification_not_the_run,
    a_target_whose_url_variable_is_unset_fails_its_notification_not_the_run_on_dynamodb,
    a_target_whose_url_variable_is_unset_fails_its_notification_not_the_run_with
);
async fn a_target_whose_url_variable_is_unset_fails_its_notification_not_the_run_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\nnotify:\n  - on: failure\n    to: [{{webhook: {{url_env: CARTFLOW_TEST_NEVER_SET_4F2A}}}}, {{file: {{path: n.jsonl}}}}]\ntasks:\n{}{}",
        sh("bad", "", "exit 1"),
        sh("after", "", "true"),
    ));
    let started = Instant::now();
    let r = f.run(&dag).await;
    assert!(started.elapsed() < Duration::from_secs(5), "a permanent failure is not retried: {:?}", started.elapsed());
    assert_eq!(r.state, RunState::Failed, "the task's failure, nothing more");
    assert!(matches!(state_of(&r, "after"), TaskState::Success { .. }));
    let store = f.store();
    let rows = store.notifications(&r.run_id).expect("rows");
    let web = rows.iter().find(|n| n.target == "webhook:CARTFLOW_TEST_NEVER_SET_4F2A").expect("webhook row");
    assert_eq!(web.state, crate::engine::store::DeliveryState::Failed);
    assert_eq!(web.tries, 1);
    assert_eq!(web.error.as_deref(), Some("environment variable CARTFLOW_TEST_NEVER_SET_4F2A is not set"));
    assert_eq!(notified(&f, "n.jsonl").len(), 1, "the other target still gets it");
}

on_both_stores!(
    a_notification_a_crashed_process_recorded_is_sent_by_the_next_owner_once,
    a_notification_a_crashed_process_recorded_is_sent_by_the_next_owner_once_on_dynamodb,
    a_notification_a_crashed_process_recorded_is_sent_by_the_next_owner_once_with
);
async fn a_notification_a_crashed_process_recorded_is_sent_by_the_next_owner_once_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\nnotify:\n  - on: failure\n    to: {{file: {{path: n.jsonl}}}}\ntasks:\n{}",
        sh("bad", "", "exit 1"),
    ));
    let run_id = f.run(&dag).await.run_id;
    assert_eq!(notified(&f, "n.jsonl").len(), 1);
    // As a crash between the record and the send leaves it: pending, owned by a dead process.
    f.forge_notes(&run_id, None, "pending", "999999999:1", 0);
    std::fs::remove_file(f.path().join("n.jsonl")).expect("rm");
    // The next execution of the run sends it (and the new attempt's failure), each once.
    f.run(&dag).await;
    let mut got = notified(&f, "n.jsonl");
    got.sort();
    assert_eq!(got, vec![("failure".into(), Some("bad".into()), 1), ("failure".into(), Some("bad".into()), 2)]);
    // Delivered rows are never sent again; one a live process is sending is left to it.
    f.forge_notes(&run_id, Some(1), "sending", &my_token_of_init(), 1);
    f.run(&dag).await;
    assert_eq!(notified(&f, "n.jsonl").len(), 3, "only attempt 3's failure is new");
}

/// The owner token of pid 1, which is always alive.
fn my_token_of_init() -> String {
    crate::process::process_token(1).unwrap_or_else(|| "1:?".into())
}

on_both_stores!(
    a_process_that_lost_its_lease_stops_its_tasks_and_writes_nothing_more,
    a_process_that_lost_its_lease_stops_its_tasks_and_writes_nothing_more_on_dynamodb,
    a_process_that_lost_its_lease_stops_its_tasks_and_writes_nothing_more_with
);
async fn a_process_that_lost_its_lease_stops_its_tasks_and_writes_nothing_more_with(f: Fixture) {
    let dag = f.dag(&format!(
        "id: d\ntasks:\n{}{}",
        sh("long", "", "echo $$ > $DIR/long.pid; sleep 60"),
        sh("after", "long", "echo ran > $DIR/after")
    ));
    let (d2, path, at) = (dag.clone(), f.path().to_path_buf(), f.at.clone());
    let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let run_id = crate::engine::store::run_id(&dag.id, interval.start);
    let run = tokio::spawn(async move {
        let opts = ExecOptions { project_dir: path.clone(), ..ExecOptions::default() };
        let pools = Arc::new(Pools::new(&BTreeMap::new()));
        execute(d2, interval, &at, pools, &opts, CancellationToken::new(), &mut |_| {}).await
    });
    let until = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(f.path().join("long.pid")).map_or(true, |s| !s.ends_with('\n')) {
        assert!(Instant::now() < until, "the task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: i32 = std::fs::read_to_string(f.path().join("long.pid")).expect("pid").trim().parse().expect("pid");
    // As a process of another host leaves the run when it took it over after our lease
    // expired (our heartbeats did not reach the store): its owner id, its lease.
    let taker = "4242:7@another-host/00000000";
    let lease = (chrono::Utc::now() + chrono::Duration::seconds(90)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    f.forge_owner(&run_id, taker, &lease);
    let read = || {
        let s = f.store();
        let tasks: Vec<(String, TaskState)> =
            s.tasks(&run_id).expect("tasks").into_iter().map(|t| (t.task_id, t.state)).collect();
        (tasks, s.attempts(&run_id, None).expect("attempts"), s.run(&run_id).expect("run").expect("a run"))
    };
    let before = read();
    let out =
        tokio::time::timeout(Duration::from_secs(30), run).await.expect("stops within a heartbeat").expect("join");
    match out {
        Err(ExecError::Store(StoreError::LeaseLost { owner, .. })) => {
            assert_eq!(owner.as_deref(), Some("4242 on another-host/00000000"))
        }
        other => panic!("the lost lease ends the execution: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!crate::process::pid_alive(pid) || is_zombie(pid), "the task {pid} is stopped");
    assert!(!f.path().join("after").exists(), "nothing starts after the lease is lost");
    // Not a byte of the run is ours any more: tasks, attempts and the run as the new owner has them.
    let after = read();
    assert_eq!(after, before, "nothing written after the takeover");
    assert_eq!((after.2.state, after.2.ended_at), (RunState::Running, None));
    assert_eq!(after.1.len(), 1);
    assert_eq!(
        (after.1[0].state, after.1[0].ended_at),
        (crate::engine::state::AttemptState::Running, None),
        "the new owner's to record"
    );
    match f.store().heartbeat(&run_id) {
        Err(StoreError::LeaseLost { owner, .. }) => assert_eq!(owner.as_deref(), Some("4242 on another-host/00000000")),
        other => panic!("the run is the taker's: {other:?}"),
    }
}
