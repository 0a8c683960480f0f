//! The run store on DynamoDB (`CARTFLOW_STATE=dynamodb://TABLE`), against moto's DynamoDB: each
//! process below has its own working directory (nothing on disk shared) and its own owner id
//! (`CARTFLOW_HOST`), as the ECS tasks of successive EventBridge firings do.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cartflow_e2e::{Moto, Project, Run, kill};

const TABLE: &str = "cartflow-state";
const CONFIG: &str = "aws:\n  lake: s3://lake/\n  poll: 200ms\n  max_poll: 1s\n";

/// A `cartflow` command of project `p` as host `host`, its run store the table.
fn on(p: &Project, moto: &Moto, host: &str, args: &[&str]) -> Command {
    let mut c = p.command(args);
    moto.configure(&mut c);
    c.env("CARTFLOW_STATE", format!("dynamodb://{TABLE}")).env("CARTFLOW_HOST", host);
    c
}

fn run(p: &Project, moto: &Moto, host: &str, args: &[&str]) -> Run {
    Run::from(on(p, moto, host, args).output().expect("cartflow"))
}

fn spawn(p: &Project, moto: &Moto, host: &str, args: &[&str]) -> Child {
    on(p, moto, host, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// A fresh working directory with the config and these DAG files.
fn checkout(dags: &[(&str, &str)]) -> Project {
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    for (name, yaml) in dags {
        p.dag(name, yaml);
    }
    p
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of a file outside every checkout (what the tasks themselves wrote).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The value of fact `key` of `task` in run `run_id`, read from the table with boto3.
fn fact(moto: &Moto, run_id: &str, task: &str, key: &str) -> Option<String> {
    let out = moto.boto3(&format!(
        "import boto3\n\
         r = boto3.client('dynamodb').get_item(TableName='{TABLE}', Key={{'pk': {{'S': 'RUN#{run_id}'}}, 'sk': {{'S': 'FACT#{task}#{key}'}}}})\n\
         print(r.get('Item', {{}}).get('value', {{}}).get('S', ''))"
    ));
    Some(out.trim().to_string()).filter(|v| !v.is_empty())
}

/// Sets the lease of run `run_id` to have ended a minute ago: the time a dead owner's lease
/// takes to run out, without waiting for it.
fn expire_lease(moto: &Moto, run_id: &str) {
    moto.boto3(&format!(
        "import boto3, datetime\n\
         t = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')\n\
         boto3.client('dynamodb').update_item(TableName='{TABLE}', Key={{'pk': {{'S': 'RUN#{run_id}'}}, 'sk': {{'S': 'RUN'}}}},\n\
         \x20 UpdateExpression='SET lease_until = :t', ExpressionAttributeValues={{':t': {{'S': t}}}})"
    ));
}

#[test]
fn two_hosts_claiming_the_same_interval_run_it_once() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let shared = tempfile::tempdir().expect("tmp");
    let count = shared.path().join("ran");
    let dag = format!(
        "id: race\nschedule: '@daily'\ntasks:\n  - id: work\n    kind: command\n    program: sh\n    args: [-c, 'echo ran >> {}; sleep 2']\n",
        count.display()
    );
    let (a, b) = (checkout(&[("race.yaml", &dag)]), checkout(&[("race.yaml", &dag)]));
    let args = ["run", "race", "--date", "2019-10-01"];
    let ca = spawn(&a, &moto, "host-a", &args);
    let cb = spawn(&b, &moto, "host-b", &args);
    let ra = Run::from(ca.wait_with_output().expect("a"));
    let rb = Run::from(cb.wait_with_output().expect("b"));
    assert_eq!(lines(&count), ["ran"], "the task ran once in all:\nA: {}\nB: {}", ra.stderr, rb.stderr);
    let (won, lost) = if ra.code == Some(0) { (&ra, &rb) } else { (&rb, &ra) };
    assert_eq!(won.code, Some(0), "one of them ran it: {}", won.stderr);
    assert_ne!(lost.code, Some(0), "the other was refused");
    assert!(
        lost.stderr.contains("host-a") || lost.stderr.contains("host-b"),
        "the refusal names the owner and its host: {}",
        lost.stderr
    );

    // A third checkout reads the run from the table: one attempt, its log from S3.
    let c = checkout(&[("race.yaml", &dag)]);
    let tasks = run(&c, &moto, "host-c", &["tasks", "race@2019-10-01T00:00:00Z"]);
    tasks.expect_code(0);
    let row = tasks.stdout.lines().find(|l| l.contains("work")).unwrap_or_default().to_string();
    assert!(row.contains("success"), "{}", tasks.stdout);
    let logs = run(&c, &moto, "host-c", &["logs", "race@2019-10-01T00:00:00Z", "work", "--attempt", "2"]);
    assert_ne!(logs.code, Some(0), "there is no second attempt");
    let keys = moto.boto3(
        "import boto3\nprint(sorted(o['Key'] for o in boto3.client('s3').list_objects_v2(Bucket='lake', Prefix='_logs/').get('Contents', [])))",
    );
    assert_eq!(keys.trim(), "['_logs/race@2019-10-01T00:00:00Z/work/attempt-1.log']");
    assert!(!c.path().join(".cartflow").exists(), "nothing of the run store on disk");
}

/// Orchestration only: the Glue job runs no script (the emulator paces its states).
#[test]
fn a_run_whose_host_died_mid_glue_job_is_taken_over_elsewhere_and_reattached_to_its_job_run() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3(
        "import boto3\nboto3.client('s3').create_bucket(Bucket='lake')\n\
         boto3.client('glue').create_job(Name='clean', Role='r', Command={'Name': 'glueetl', 'ScriptLocation': 's3://s/x.py'},\n\
         \x20 Tags={'emulator': 'orchestration-only'})",
    );
    moto.pace("glue::job_run", 2);
    let shared = tempfile::tempdir().expect("tmp");
    let count = shared.path().join("first");
    let dag = format!(
        "id: clean\nschedule: '@daily'\ntasks:\n  - id: first\n    kind: command\n    program: sh\n    args: [-c, 'echo ran >> {}']\n  - id: clean\n    kind: glue_job\n    depends_on: first\n    job_name: clean\n    local: clean_events\n",
        count.display()
    );
    let run_id = "clean@2019-10-01T00:00:00Z";
    let args = ["run", "clean", "--date", "2019-10-01", "--backend", "aws"];

    // Host A dies (SIGKILL) while the job run is going; its id is in the table.
    let a = checkout(&[("clean.yaml", &dag)]);
    let mut child = spawn(&a, &moto, "host-a", &args);
    wait_for("the saved job run id", Duration::from_secs(60), || {
        fact(&moto, run_id, "clean", "glue_job_run_id").is_some()
    });
    kill(child.id(), "KILL");
    let _ = child.wait();
    let saved = fact(&moto, run_id, "clean", "glue_job_run_id").expect("run id");

    // Host B, on a fresh directory: the run is A's while A's lease lasts...
    let b = checkout(&[("clean.yaml", &dag)]);
    let refused = run(&b, &moto, "host-b", &args);
    assert_ne!(refused.code, Some(0), "A's lease holds the run");
    assert!(refused.stderr.contains("on host-a"), "{}", refused.stderr);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), 1);

    // ...and B's once it ran out: B re-attaches to A's job run and finishes the run.
    expire_lease(&moto, run_id);
    let r = run(&b, &moto, "host-b", &args);
    r.expect_code(0);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), 1, "a single StartJobRun across both hosts");
    assert_eq!(lines(&count), ["ran"], "the task that had succeeded did not run again");
    let log = run(&b, &moto, "host-b", &["logs", run_id, "clean", "--attempt", "2"]);
    log.expect_code(0);
    assert!(log.stdout.contains(&saved), "attempt 2 follows A's job run {saved}: {}", log.stdout);
    let first = moto.boto3(&format!(
        "import boto3\n\
         i = boto3.client('dynamodb').get_item(TableName='{TABLE}', Key={{'pk': {{'S': 'RUN#{run_id}'}}, 'sk': {{'S': 'ATTEMPT#clean#000001'}}}})['Item']\n\
         print(i['state']['S'], i['error']['S'])"
    ));
    assert!(first.starts_with("interrupted the cartflow process running this attempt died"), "A's attempt: {first}");
    let states = moto.boto3(
        "import boto3\nprint([r['JobRunState'] for r in boto3.client('glue').get_job_runs(JobName='clean')['JobRuns']])",
    );
    assert_eq!(states.trim(), "['SUCCEEDED']");
}

/// Orchestration only: the Glue job runs no script.
#[test]
fn a_job_run_started_just_before_a_crash_is_found_by_its_task_key_and_a_rerun_starts_a_new_one() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3(
        "import boto3\nboto3.client('s3').create_bucket(Bucket='lake')\n\
         glue = boto3.client('glue')\n\
         glue.create_job(Name='clean', Role='r', Command={'Name': 'glueetl', 'ScriptLocation': 's3://s/x.py'},\n\
         \x20 ExecutionProperty={'MaxConcurrentRuns': 1000}, Tags={'emulator': 'orchestration-only'})\n\
         for i in range(230):\n\
         \x20   glue.start_job_run(JobName='clean', Arguments={'--cartflow-task': f'someone/else/{i}'})",
    );
    moto.pace("glue::job_run", 0);
    let dag = "id: clean\nschedule: '@daily'\ntasks:\n  - id: clean\n    kind: glue_job\n    job_name: clean\n    local: clean_events\n";
    let run_id = "clean@2019-10-01T00:00:00Z";
    let args = ["run", "clean", "--date", "2019-10-01", "--backend", "aws"];
    let before = moto.calls("AWSGlue.StartJobRun");

    // A dies right after StartJobRun, before the run id is saved; the run finishes meanwhile.
    let a = checkout(&[("clean.yaml", dag)]);
    let mut crash = on(&a, &moto, "host-a", &args);
    crash.env("CARTFLOW_CRASH_AT", "job.started");
    let crashed = Run::from(crash.output().expect("cartflow"));
    assert_ne!(crashed.code, Some(0), "{}", crashed.stderr);
    assert!(crashed.stderr.contains("crash point `job.started`"), "{}", crashed.stderr);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), before + 1);
    assert_eq!(fact(&moto, run_id, "clean", "glue_job_run_id"), None, "the id was not saved");
    let key = fact(&moto, run_id, "clean", "glue_run_key").expect("the task key is saved before the start");

    // Meanwhile the job run ends, and 230 more runs of the job (other DAGs') start after it.
    let state = moto.boto3(&format!(
        "import boto3\n\
         glue = boto3.client('glue')\n\
         mine = lambda: [r for p in glue.get_paginator('get_job_runs').paginate(JobName='clean') for r in p['JobRuns'] if r['Arguments'].get('--cartflow-task') == '{key}']\n\
         for _ in range(5): ours = mine()\n\
         for i in range(230): glue.start_job_run(JobName='clean', Arguments={{'--cartflow-task': f'later/{{i}}'}})\n\
         print(len(ours), ours[0]['JobRunState'])"
    ));
    assert_eq!(state.trim(), "1 SUCCEEDED");
    let before = moto.calls("AWSGlue.StartJobRun");

    // B finds it in the middle of 461 runs (GetJobRuns pages through 200 at a time): it
    // SUCCEEDED, so the task did too.
    let b = checkout(&[("clean.yaml", dag)]);
    expire_lease(&moto, run_id);
    let r = run(&b, &moto, "host-b", &args);
    r.expect_code(0);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), before, "no second job run: {}", r.stderr);
    assert!(moto.calls("AWSGlue.GetJobRuns") >= 2, "the lookup paged");
    let found = moto.boto3(&format!(
        "import boto3\nprint(sum(1 for p in boto3.client('glue').get_paginator('get_job_runs').paginate(JobName='clean') for r in p['JobRuns'] if r['Arguments'].get('--cartflow-task') == '{key}'))"
    ));
    assert_eq!(found.trim(), "1");

    // A rerun is a new job run (with a new key), not the one that succeeded before.
    let again = run(&b, &moto, "host-b", &["run", "clean", "--date", "2019-10-01", "--backend", "aws", "--rerun"]);
    again.expect_code(0);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), before + 1, "{}", again.stderr);
    assert_ne!(fact(&moto, run_id, "clean", "glue_run_key").as_deref(), Some(key.as_str()));
}

#[test]
fn the_scheduler_fired_twice_from_fresh_containers_creates_each_run_once() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let shared = tempfile::tempdir().expect("tmp");
    let trace = shared.path().join("trace");
    let start = moto.boto3(
        "import datetime\nprint((datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=4)).isoformat())",
    );
    let start = start.trim();
    let daily = format!(
        "id: daily\nschedule: '@daily'\nstart_date: {start}\ncatchup: true\nmax_active_runs: 8\ntasks:\n  - id: t\n    kind: command\n    program: sh\n    args: [-c, 'echo {{{{ ds }}}} >> {}']\n",
        trace.display()
    );
    let fire = |host: &str| {
        let p = checkout(&[("daily.yaml", &daily)]);
        let r = run(&p, &moto, host, &["scheduler", "--once", "--backend", "aws"]);
        r.expect_code(0);
        r
    };
    let r1 = fire("firing-1");
    assert_eq!(r1.stdout.matches(" success ").count(), 4, "{}", r1.stdout);
    assert!(!r1.stderr.contains("cannot read the undelivered notifications"), "{}", r1.stderr);
    let first = lines(&trace);
    assert_eq!(first.len(), 4, "catchup: the four complete days since start_date: {first:?}");
    let r2 = fire("firing-2");
    assert_eq!(r2.stdout.trim(), "nothing is due", "{}", r2.stderr);
    assert_eq!(lines(&trace), first, "the second firing created none of the runs the first did");

    let c = checkout(&[("daily.yaml", &daily)]);
    let runs = run(&c, &moto, "host-c", &["runs", "daily"]);
    runs.expect_code(0);
    assert_eq!(runs.stdout.lines().filter(|l| l.contains("daily@")).count(), 4, "{}", runs.stdout);
}

#[test]
fn a_pause_and_the_deadlines_decided_in_one_container_hold_in_the_next() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let start = moto.boto3(
        "import datetime\nprint((datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=2)).isoformat())",
    );
    let dag = format!(
        "id: paced\nschedule: '@daily'\nstart_date: {}\ncatchup: true\ndeadline: 1h\ntasks:\n  - id: t\n    kind: noop\n",
        start.trim()
    );
    let fresh = || checkout(&[("paced.yaml", &dag)]);
    let paused = run(&fresh(), &moto, "ops", &["pause", "paced"]);
    paused.expect_code(0);
    assert!(paused.stdout.contains("paced paused"), "{}", paused.stdout);
    let fired = run(&fresh(), &moto, "firing-1", &["scheduler", "--once", "--backend", "aws"]);
    fired.expect_code(0);
    assert_eq!(fired.stdout.trim(), "nothing is due", "a paused DAG gets no runs: {}", fired.stderr);
    run(&fresh(), &moto, "ops", &["unpause", "paced"]).expect_code(0);
    let fired = run(&fresh(), &moto, "firing-2", &["scheduler", "--once", "--backend", "aws"]);
    fired.expect_code(0);
    assert_eq!(fired.stdout.matches(" success ").count(), 2, "{}\n{}", fired.stdout, fired.stderr);
    let runs = run(&fresh(), &moto, "ops", &["runs", "paced"]);
    runs.expect_code(0);
    let rows: Vec<&str> = runs.stdout.lines().filter(|l| l.contains("paced@")).collect();
    assert_eq!(rows.len(), 2, "{}", runs.stdout);
    // Each deadline (an hour after its day) passed before anything ran, and before the pause:
    // decided missed once, recorded in the table, shown from yet another checkout.
    assert!(rows.iter().all(|r| r.contains("missed ")), "{}", runs.stdout);
    let again = run(&fresh(), &moto, "firing-3", &["scheduler", "--once", "--backend", "aws"]);
    again.expect_code(0);
    assert!(!again.stderr.contains("deadline missed"), "decided once, not at every firing: {}", again.stderr);
}

#[test]
fn a_run_on_one_host_is_cancelled_from_another() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let dag = "id: long\ntasks:\n  - id: wait\n    kind: command\n    program: sleep\n    args: ['60']\n";
    let a = checkout(&[("long.yaml", dag)]);
    let child = spawn(&a, &moto, "host-a", &["run", "long", "--date", "2019-10-01"]);
    let b = checkout(&[("long.yaml", dag)]);
    wait_for("the run to start", Duration::from_secs(30), || {
        run(&b, &moto, "host-b", &["tasks", "long@2019-10-01T00:00:00Z"]).stdout.contains("running")
    });
    let cancel = run(&b, &moto, "host-b", &["cancel", "long@2019-10-01T00:00:00Z"]);
    cancel.expect_code(0);
    assert!(cancel.stdout.contains("host-a"), "names the process that runs it: {}", cancel.stdout);
    let t = Instant::now();
    let ra = Run::from(child.wait_with_output().expect("a"));
    assert_eq!(ra.code, Some(130), "A stopped the run as on Ctrl-C: {}", ra.stderr);
    assert!(t.elapsed() < Duration::from_secs(30), "within a few heartbeats, not after the task's minute");
    let runs = run(&checkout(&[("long.yaml", dag)]), &moto, "host-c", &["runs"]);
    assert!(runs.stdout.lines().any(|l| l.contains("long@") && l.contains("cancelled")), "{}", runs.stdout);
}

#[test]
fn a_backfill_killed_mid_job_is_continued_from_another_container_and_runs_each_day_once() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let shared = tempfile::tempdir().expect("tmp");
    let trace = shared.path().join("trace");
    let dag = format!(
        "id: fill\nschedule: '@daily'\ntasks:\n  - id: t\n    kind: command\n    program: sh\n    args: [-c, 'echo {{{{ ds }}}} >> {}']\n",
        trace.display()
    );
    let args = ["backfill", "fill", "--from", "2019-10-01", "--to", "2019-10-04"];
    // Killed right after the job recorded its second run's outcome.
    let a = checkout(&[("fill.yaml", &dag)]);
    let mut cut = on(&a, &moto, "host-a", &args);
    cut.env("CARTFLOW_CRASH_AT", "store.backfill_run_done:2");
    let cut = Run::from(cut.output().expect("cartflow"));
    assert_ne!(cut.code, Some(0), "the crash point was reached: {}", cut.stderr);
    let ran = lines(&trace);
    assert!(ran.len() >= 2 && ran.len() < 4, "cut off mid job: {ran:?}");
    // Another container runs the same command: the same job, continued; every day once.
    let b = checkout(&[("fill.yaml", &dag)]);
    let done = run(&b, &moto, "host-b", &args);
    done.expect_code(0);
    assert!(done.stdout.contains("continuing backfill job"), "{}", done.stdout);
    let mut all = lines(&trace);
    all.sort();
    assert_eq!(all, ["2019-10-01", "2019-10-02", "2019-10-03", "2019-10-04"], "each day once");
}

#[test]
fn without_catchup_two_firings_for_the_same_day_create_one_run() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let start = moto.boto3(
        "import datetime\nprint((datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=4)).isoformat())",
    );
    let dag = format!(
        "id: latest\nschedule: '@daily'\nstart_date: {}\ncatchup: false\ntasks:\n  - id: t\n    kind: noop\n",
        start.trim()
    );
    let fire = |host: &str| {
        let r = run(&checkout(&[("latest.yaml", &dag)]), &moto, host, &["scheduler", "--once", "--backend", "aws"]);
        r.expect_code(0);
        r
    };
    let first = fire("firing-1");
    assert_eq!(first.stdout.matches(" success ").count(), 1, "the latest day only: {}", first.stdout);
    let second = fire("firing-2");
    assert_eq!(second.stdout.trim(), "nothing is due", "{}", second.stderr);
    let runs = run(&checkout(&[("latest.yaml", &dag)]), &moto, "ops", &["runs", "latest"]);
    assert_eq!(runs.stdout.lines().filter(|l| l.contains("latest@")).count(), 1, "{}", runs.stdout);
}
