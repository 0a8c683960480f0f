//! `cartflow state export` / `import`: history moved from one machine's SQLite file to the
//! DynamoDB table (moto) is what the engine and the CLI go by there — and the table's own
//! export gives back the same records, read by the other store's code.

use std::process::Command;
use std::time::{Duration, Instant};

use cartflow_e2e::{Moto, Project, Run, kill};

const TABLE: &str = "cartflow-state";
const CONFIG: &str = "aws:\n  lake: s3://lake/\n";

/// Two tasks: `extract` counts its runs in a file outside every checkout; `flaky` fails its
/// first attempt of each day (so that the history holds retries), then succeeds.
fn dag(shared: &std::path::Path) -> String {
    format!(
        "id: moved\nschedule: '@daily'\nnotify:\n  - on: [retry, success]\n    to: [{{file: {{path: notes.jsonl}}}}]\ntasks:\n  - id: extract\n    kind: command\n    program: sh\n    args: [-c, 'echo {{{{ ds }}}} >> {count}; echo extracted {{{{ ds }}}}']\n  - id: flaky\n    kind: command\n    depends_on: extract\n    retries: 1\n    retry_delay: 0s\n    program: sh\n    args: [-c, 'if [ ! -e {dir}/tried-{{{{ ds }}}} ]; then touch {dir}/tried-{{{{ ds }}}}; echo first try fails; exit 3; fi; echo second try']\n",
        count = shared.join("extracted").display(),
        dir = shared.display()
    )
}

fn checkout(dag: &str) -> Project {
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.dag("moved.yaml", dag);
    p
}

/// A command of `p` against the table.
fn on_table(p: &Project, moto: &Moto, table: &str, args: &[&str]) -> Command {
    let mut c = p.command(args);
    moto.configure(&mut c);
    c.env("CARTFLOW_STATE", format!("dynamodb://{table}"));
    c
}

fn run_on_table(p: &Project, moto: &Moto, table: &str, args: &[&str]) -> Run {
    Run::from(on_table(p, moto, table, args).output().expect("cartflow"))
}

/// The records of an export without its header, each log path cut to its last two parts
/// (a file here, an S3 key there: the same `task/attempt-N.log`).
fn records(text: &str) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(out[0]["type"], "header", "{text}");
    out.remove(0);
    for r in &mut out {
        if let Some(attempts) = r.get_mut("attempts").and_then(|a| a.as_array_mut()) {
            for a in attempts {
                if let Some(p) = a["log_path"].as_str() {
                    let tail: Vec<&str> = p.rsplit('/').take(2).collect();
                    a["log_path"] = format!("{}/{}", tail[1], tail[0]).into();
                }
            }
        }
    }
    out
}

#[test]
fn history_moved_from_sqlite_to_dynamodb_is_what_the_table_answers_and_runs_by() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let shared = tempfile::tempdir().expect("tmp");
    let dag = dag(shared.path());

    // Two days on the local default store, as a backfill job.
    let local = checkout(&dag);
    local.run(&["backfill", "moved", "--from", "2019-10-01", "--to", "2019-10-02"]).expect_code(0);
    let extracted = || std::fs::read_to_string(shared.path().join("extracted")).unwrap_or_default().lines().count();
    assert_eq!(extracted(), 2);

    let export = local.run(&["state", "export", "-o", "history.jsonl"]);
    export.expect_code(0);
    assert!(export.stderr.contains("exported 2 runs (4 task instances, 6 attempts"), "{}", export.stderr);
    assert!(export.stderr.contains("4 notifications), 1 backfill jobs"), "{}", export.stderr);
    assert_eq!(local.read("notes.jsonl").lines().count(), 4, "a retry and a success each day, delivered");
    let exported = local.read("history.jsonl");
    assert!(!local.path().join("history.partial").exists());

    // Into the table: the logs go to S3, and a second import adds nothing.
    let import = run_on_table(&local, &moto, TABLE, &["state", "import", "history.jsonl"]);
    import.expect_code(0);
    assert!(import.stdout.contains("imported 2 runs (4 task instances, 6 attempts"), "{}", import.stdout);
    assert!(import.stdout.contains("copied 6 attempt logs"), "{}", import.stdout);
    let again = run_on_table(&local, &moto, TABLE, &["state", "import", "history.jsonl"]);
    again.expect_code(0);
    assert!(again.stdout.contains("imported 0 runs"), "{}", again.stdout);
    assert!(!again.stdout.contains("copied"), "the logs of runs the table has are not copied again: {}", again.stdout);
    assert!(again.stdout.contains("already there (left as they were): 2 runs, 1 backfill jobs"), "{}", again.stdout);

    // A fresh checkout on the table answers as the local store did.
    let fresh = checkout(&dag);
    for args in [
        vec!["runs"],
        vec!["tasks", "moved@2019-10-02T00:00:00Z"],
        vec!["logs", "moved@2019-10-02T00:00:00Z", "flaky", "--attempt", "1"],
        vec!["logs", "moved@2019-10-01T00:00:00Z", "extract"],
    ] {
        let here = local.run(&args);
        here.expect_code(0);
        let there = run_on_table(&fresh, &moto, TABLE, &args);
        there.expect_code(0);
        assert_eq!(there.stdout, here.stdout, "`cartflow {}` on the table", args.join(" "));
    }
    let log = run_on_table(&fresh, &moto, TABLE, &["logs", "moved@2019-10-02T00:00:00Z", "flaky", "--attempt", "1"]);
    assert!(log.stdout.contains("first try fails"), "{}", log.stdout);

    // The engine goes by it: the days already run are not run again, the backfill job is
    // the same one, and a new day runs.
    let rerun =
        run_on_table(&fresh, &moto, TABLE, &["backfill", "moved", "--from", "2019-10-01", "--to", "2019-10-02"]);
    rerun.expect_code(0);
    assert_eq!(extracted(), 2, "no task of an imported successful run ran again: {}", rerun.stderr);
    let next = run_on_table(&fresh, &moto, TABLE, &["run", "moved", "--date", "2019-10-03"]);
    next.expect_code(0);
    assert_eq!(extracted(), 3);

    // The table's export holds the same records (read by the DynamoDB store's own code).
    let back = run_on_table(&fresh, &moto, TABLE, &["state", "export", "-o", "-"]);
    back.expect_code(0);
    let original = records(&exported);
    let jobs: Vec<&serde_json::Value> = original.iter().filter_map(|r| r.get("backfill_id")).collect();
    assert_eq!(jobs.len(), 1);
    let mut from_table = records(&back.stdout);
    // What ran on the table after the import: the third day, and the second backfill job.
    from_table.retain(|r| {
        r["run_id"] != "moved@2019-10-03T00:00:00Z" && r.get("backfill_id").is_none_or(|id| jobs.contains(&id))
    });
    assert_eq!(from_table, original);
}

#[test]
fn an_import_cut_off_is_finished_by_the_next_and_a_damaged_file_writes_nothing() {
    let Some(moto) = Moto::start() else { return };
    moto.state_table(TABLE);
    moto.state_table("other");
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')");
    let shared = tempfile::tempdir().expect("tmp");
    let local = checkout(&dag(shared.path()));
    local.run(&["run", "moved", "--date", "2019-10-01"]).expect_code(0);
    local.run(&["run", "moved", "--date", "2019-10-02"]).expect_code(0);
    local.run(&["state", "export", "-o", "history.jsonl"]).expect_code(0);
    let count_runs = |table: &str| {
        let r = run_on_table(&local, &moto, table, &["runs"]);
        r.expect_code(0);
        r.stdout.lines().filter(|l| l.contains("moved@")).count()
    };

    // Killed after the first run's items, before its run item: that run is not there yet.
    let mut cut = on_table(&local, &moto, TABLE, &["state", "import", "history.jsonl"]);
    cut.env("CARTFLOW_CRASH_AT", "store.import_children");
    let cut = Run::from(cut.output().expect("cartflow"));
    assert_ne!(cut.code, Some(0), "the crash point was reached: {}", cut.stderr);
    assert_eq!(count_runs(TABLE), 0);
    let done = run_on_table(&local, &moto, TABLE, &["state", "import", "history.jsonl"]);
    done.expect_code(0);
    assert!(done.stdout.contains("imported 2 runs"), "{}", done.stdout);
    assert_eq!(count_runs(TABLE), 2);
    let tasks = run_on_table(&local, &moto, TABLE, &["tasks", "moved@2019-10-01T00:00:00Z"]);
    assert_eq!(tasks.stdout, local.run(&["tasks", "moved@2019-10-01T00:00:00Z"]).stdout);

    // A damaged line anywhere: refused with its line number, before anything is written.
    let text = local.read("history.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let damaged = lines[2].replacen("\"state\":\"success\"", "\"state\":\"exploded\"", 1);
    assert_ne!(damaged, lines[2]);
    local.write("damaged.jsonl", &format!("{}\n{}\n{damaged}\n", lines[0], lines[1]));
    let refused = run_on_table(&local, &moto, "other", &["state", "import", "damaged.jsonl"]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("damaged.jsonl:3:") && refused.stderr.contains("exploded"), "{}", refused.stderr);
    assert_eq!(count_runs("other"), 0, "the good run before it was not written either");
    // Another spelling of an instant (the stores compare the text), an attempt twice.
    let respelled = lines[2].replace(".000Z\"", "Z\"");
    assert_ne!(respelled, lines[2]);
    let mut twice: serde_json::Value = serde_json::from_str(lines[2]).expect("json");
    let first = twice["attempts"][0].clone();
    twice["attempts"].as_array_mut().expect("attempts").push(first);
    for (name, line, says) in
        [("respelled", respelled, "not written as the stores write it"), ("twice", twice.to_string(), "twice")]
    {
        local.write("bad.jsonl", &format!("{}\n{line}\n", lines[0]));
        let r = run_on_table(&local, &moto, "other", &["state", "import", "bad.jsonl"]);
        r.expect_code(2);
        assert!(r.stderr.contains(says), "{name}: {}", r.stderr);
    }
    assert_eq!(count_runs("other"), 0);
    local.write("nothing.jsonl", &lines[1..].join("\n"));
    run_on_table(&local, &moto, "other", &["state", "import", "nothing.jsonl"]).expect_code(2);
}

#[test]
fn an_export_is_refused_while_a_run_is_being_executed_and_leaves_no_file() {
    let p = Project::new();
    p.dag("slow.yaml", "id: slow\ntasks:\n  - id: wait\n    kind: command\n    program: sleep\n    args: ['30']\n");
    let mut child = p.spawn(&["run", "slow", "--date", "2019-10-01"]);
    let until = Instant::now() + Duration::from_secs(30);
    while !p.run(&["runs"]).stdout.contains("running") {
        assert!(Instant::now() < until, "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = p.run(&["state", "export", "-o", "history.jsonl"]);
    kill(child.id(), "KILL");
    let _ = child.wait();
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("is being executed by another cartflow process"), "{}", refused.stderr);
    assert!(!p.path().join("history.jsonl").exists() && !p.path().join("history.partial").exists());
}
