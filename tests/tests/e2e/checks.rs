//! Data checks (write-audit-publish) with the real binary: a failing `error` check keeps the
//! published table as it was (read back), fails the task once with the check's name and failing
//! rows, and stops what is downstream; a `warn` check publishes and raises `check_failed`; the
//! daily DAG ships checks that pass, and stop a corrupted day before the insights.

use std::collections::BTreeMap;
use std::path::Path;

use cartflow_e2e::Project;

use super::lake::install_daily;

/// A full-refresh table `t` of one row `n = {{ params.n }}`, a check on it, and a task after it.
fn ctas_dag(severity: &str) -> String {
    format!(
        "id: chk\n\
         params: {{n: {{type: int, default: 5}}}}\n\
         tasks:\n\
         \x20 - id: t\n\
         \x20   kind: athena_ctas\n\
         \x20   sql: dags/t.sql\n\
         \x20   table: t\n\
         \x20   retries: 3\n\
         \x20   retry_delay: 1ms\n\
         \x20   notify: [{{on: [failure, check_failed, success], to: {{file: {{path: notes.jsonl}}}}}}]\n\
         \x20   checks:\n\
         \x20     - row_count: {{min: 1, max: 1}}\n\
         \x20     - name: small\n\
         \x20       severity: {severity}\n\
         \x20       sql: SELECT n FROM {{{{ this }}}} WHERE n > 10\n\
         \x20 - id: after\n\
         \x20   kind: command\n\
         \x20   depends_on: t\n\
         \x20   program: 'true'\n"
    )
}

pub(crate) fn ctas_project(severity: &str) -> Project {
    let p = Project::new();
    p.dag("chk.yaml", &ctas_dag(severity));
    p.write("dags/t.sql", "SELECT {{ params.n }} AS n");
    p
}

fn sql(p: &Project, q: &str) -> String {
    let r = p.run(&["sql", "--format", "csv", q]);
    r.expect_code(0);
    r.stdout
}

fn states(p: &Project, run_id: &str) -> BTreeMap<String, (String, i64)> {
    let db = p.store();
    let mut st = db.prepare("SELECT task_id, state, attempts FROM task_instances WHERE run_id = ?1").expect("sql");
    st.query_map([run_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
}

/// Every file under `dir` with its bytes: what a reader of the folder would read.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under").display().to_string();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

fn notes(p: &Project) -> Vec<serde_json::Value> {
    p.read("notes.jsonl").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// The events notified, sorted (two of one attempt may be delivered in either order).
fn events(p: &Project) -> Vec<String> {
    let mut e: Vec<String> = notes(p).iter().map(|n| n["event"].as_str().unwrap_or_default().to_string()).collect();
    e.sort();
    e
}

#[test]
fn a_failing_check_keeps_the_published_table_and_fails_the_task_once_without_publishing() {
    let p = ctas_project("error");
    p.run(&["run", "chk", "--date", "2019-10-01"]).expect_code(0);
    assert_eq!(sql(&p, "SELECT n FROM t"), "n\n5\n");
    let before = files(&p.path().join(".cartflow/lake/curated/t"));
    assert_eq!(before.len(), 1, "one version published: {:?}", before.keys());
    let catalog_before = sql(&p, "SELECT count(*) FROM t");

    let r = p.run(&["run", "chk", "--date", "2019-10-02", "-p", "n=50"]);
    r.expect_code(1);
    let run_id = "chk@2019-10-02T00:00:00Z";
    let st = states(&p, run_id);
    assert_eq!(st["t"], ("failed".to_string(), 1), "not retried: retrying cannot fix data ({st:?})");
    assert_eq!(st["after"].0, "upstream_failed", "{st:?}");
    // The published table is the one before, byte for byte, and the staged version is gone.
    assert_eq!(sql(&p, "SELECT n FROM t"), "n\n5\n");
    assert_eq!(sql(&p, "SELECT count(*) FROM t"), catalog_before);
    assert_eq!(files(&p.path().join(".cartflow/lake/curated/t")), before, "nothing of the failed run is left");
    // The error names the check, what it found and the failing rows.
    let error: String = p
        .store()
        .query_row("SELECT error FROM task_attempts WHERE run_id = ?1 AND task_id = 't'", [run_id], |r| r.get(0))
        .expect("error");
    assert!(
        error.starts_with(
            "check `small` failed (error): the query returned 1 rows (it must return none); failing rows: n=50"
        ),
        "{error}"
    );
    assert!(error.contains("the published table is unchanged"), "{error}");
    // cartflow tasks shows every check's result.
    let tasks = p.run(&["tasks", run_id]);
    tasks.expect_code(0);
    let row =
        |name: &str| tasks.stdout.lines().find(|l| l.contains(&format!(" {name} "))).unwrap_or_default().to_string();
    assert!(row("row_count").contains("error") && row("row_count").contains("passed"), "{}", tasks.stdout);
    assert!(row("small").contains("FAILED") && row("small").contains("e.g. n=50"), "{}", tasks.stdout);
    // Notified: the failure and the failed check, once each; no success.
    let ev = events(&p);
    assert_eq!(
        ev,
        ["check_failed", "failure", "success"],
        "the first run's success, then the failure and the check: {ev:?}"
    );
    let all = notes(&p);
    let check_note = all.iter().find(|n| n["event"] == "check_failed").expect("check_failed");
    assert_eq!((check_note["task"].as_str(), check_note["attempt"].as_u64()), (Some("t"), Some(1)));
    assert!(check_note["error"].as_str().unwrap_or_default().contains("check `small` failed"), "{check_note}");
}

#[test]
fn a_warn_check_publishes_and_raises_check_failed() {
    let p = ctas_project("warn");
    let r = p.run(&["run", "chk", "--date", "2019-10-01", "-p", "n=50"]);
    r.expect_code(0);
    assert_eq!(sql(&p, "SELECT n FROM t"), "n\n50\n", "a warning does not block the publish");
    let st = states(&p, "chk@2019-10-01T00:00:00Z");
    assert_eq!(st["after"].0, "success", "{st:?}");
    assert_eq!(events(&p), ["check_failed", "success"]);
    let summary: String = p
        .store()
        .query_row("SELECT summary FROM task_attempts WHERE task_id = 't'", [], |r| r.get(0))
        .expect("summary");
    assert!(summary.ends_with("; checks: 1 passed, 1 warned"), "{summary}");
    let tasks = p.run(&["tasks", "chk@2019-10-01T00:00:00Z"]);
    assert!(
        tasks.stdout.lines().any(|l| l.contains(" small ") && l.contains("warn") && l.contains("FAILED")),
        "{}",
        tasks.stdout
    );
}

fn generate(p: &Project, day: &str, events: &str, malformed: &str) {
    let raw = p.path().join(format!(".cartflow/lake/raw/events/dt={day}"));
    let _ = std::fs::remove_dir_all(&raw);
    let g = p.run(&[
        "generate",
        "--start",
        day,
        "--days",
        "1",
        "--events-per-day",
        events,
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--malformed-rate",
        malformed,
        "--seed",
        "4",
    ]);
    g.expect_code(0);
}

/// The check results the run store keeps for a run: (task, check, passed, detail).
fn results(p: &Project, run_id: &str) -> Vec<(String, String, bool, String)> {
    let db = p.store();
    let mut st = db
        .prepare("SELECT task_id, value FROM task_facts WHERE run_id = ?1 AND key = 'checks' ORDER BY task_id")
        .expect("sql");
    let facts: Vec<(String, String)> =
        st.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(|r| r.expect("row")).collect();
    let mut out = Vec::new();
    for (task, json) in facts {
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        for c in v.as_array().expect("list") {
            out.push((
                task.clone(),
                c["name"].as_str().expect("name").to_string(),
                c["passed"].as_bool().expect("passed"),
                c["detail"].as_str().expect("detail").to_string(),
            ));
        }
    }
    out
}

/// The daily DAG: its checks pass on generated days; a day corrupted with 50% malformed rows is
/// stopped by clean's quarantine check, before anything downstream, and what was published for
/// that day stays as it was; a day with a fifth of the visitors is stopped by daily_visitors'.
#[test]
fn the_daily_dag_passes_its_checks_and_a_corrupted_day_is_stopped_before_the_insights() {
    let p = Project::new();
    install_daily(&p);
    generate(&p, "2019-10-01", "3000", "0.01");
    generate(&p, "2019-10-02", "3000", "0.01");
    let r =
        p.run(&["backfill", "ecommerce_daily", "--from", "2019-10-01", "--to", "2019-10-02", "--max-active-runs", "1"]);
    r.expect_code(0);
    let run2 = "ecommerce_daily@2019-10-02T00:00:00Z";
    let rows = results(&p, run2);
    assert_eq!(rows.len(), 8, "3 on clean, 2 on daily_visitors, 1 on each other insight: {rows:#?}");
    assert!(rows.iter().all(|r| r.2), "{rows:#?}");
    let visitors = rows.iter().find(|r| r.1 == "visitors_within_50pct_of_previous_day").expect("row");
    assert_eq!(visitors.0, "daily_visitors");
    assert!(visitors.3.contains("returned 0 rows"), "{visitors:?}");

    // The second day again, half of its rows malformed.
    let clean_dir = p.path().join(".cartflow/lake/clean/events/dt=2019-10-02");
    let quarantine_dir = p.path().join(".cartflow/lake/quarantine/events/dt=2019-10-02");
    let visitors_dir = p.path().join(".cartflow/lake/curated/daily_visitors/dt=2019-10-02");
    let (clean_before, quarantine_before, visitors_before) =
        (files(&clean_dir), files(&quarantine_dir), files(&visitors_dir));
    assert!(!clean_before.is_empty() && !quarantine_before.is_empty() && !visitors_before.is_empty());
    let counted = |p: &Project| sql(p, "SELECT count(*), sum(price) FROM events WHERE dt = '2019-10-02'");
    let clean_count = counted(&p);
    generate(&p, "2019-10-02", "3000", "0.5");
    let r = p.run(&["run", "ecommerce_daily", "--date", "2019-10-02", "--rerun"]);
    r.expect_code(1);
    let st = states(&p, run2);
    assert_eq!(st["clean"].0, "failed", "{st:?}");
    for t in [
        "crawl_clean",
        "enrich",
        "daily_visitors",
        "cart_abandonment",
        "top_categories",
        "brand_marketing",
        "dashboard",
    ] {
        assert_eq!(st[t].0, "upstream_failed", "{t}: {st:?}");
    }
    assert_eq!(files(&clean_dir), clean_before, "the clean partition is the one before, file for file");
    assert_eq!(counted(&p), clean_count);
    assert_eq!(files(&visitors_dir), visitors_before);
    assert_eq!(files(&quarantine_dir), quarantine_before, "its quarantine too (they are published together)");
    let failed: Vec<_> = results(&p, run2).into_iter().filter(|r| !r.2).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0.as_str(), failed[0].1.as_str()), ("clean", "quarantine_rate"));
    assert!(failed[0].3.contains("% allowed"), "{failed:?}");
    let tasks = p.run(&["tasks", run2]);
    assert!(tasks.stdout.lines().any(|l| l.contains(" quarantine_rate ") && l.contains("FAILED")), "{}", tasks.stdout);
    let error: String = p
        .store()
        .query_row(
            "SELECT error FROM task_attempts WHERE run_id = ?1 AND task_id = 'clean' ORDER BY attempt DESC",
            [run2],
            |r| r.get(0),
        )
        .expect("error");
    assert!(error.contains("check `quarantine_rate` failed (error)") && error.contains("reason="), "{error}");

    // A day with a fifth of the events: clean passes, daily_visitors is stopped.
    generate(&p, "2019-10-03", "600", "0");
    let r = p.run(&["run", "ecommerce_daily", "--date", "2019-10-03"]);
    r.expect_code(1);
    let st = states(&p, "ecommerce_daily@2019-10-03T00:00:00Z");
    assert_eq!((st["clean"].0.as_str(), st["daily_visitors"].0.as_str()), ("success", "failed"), "{st:?}");
    assert_eq!(st["dashboard"].0, "upstream_failed");
    let failed: Vec<_> =
        results(&p, "ecommerce_daily@2019-10-03T00:00:00Z").into_iter().filter(|r| !r.2).map(|r| r.1).collect();
    assert_eq!(failed, ["visitors_within_50pct_of_previous_day"]);
    let error: String = p
        .store()
        .query_row(
            "SELECT error FROM task_attempts WHERE run_id = 'ecommerce_daily@2019-10-03T00:00:00Z' AND task_id = 'daily_visitors'",
            [],
            |r| r.get(0),
        )
        .expect("error");
    assert!(error.contains("previous_dt=2019-10-02"), "the day before is what it compared with: {error}");
    let parts = p.run(&["catalog", "partitions", "daily_visitors"]);
    assert!(!parts.stdout.contains("dt=2019-10-03"), "not published: {}", parts.stdout);
    assert!(!p.path().join(".cartflow/lake/curated/daily_visitors/dt=2019-10-03").exists());
}

#[test]
fn checks_are_validated_when_the_dag_compiles() {
    let p = Project::new();
    p.dag(
        "bad.yaml",
        "id: bad\ntasks:\n  - id: a\n    kind: command\n    program: 'true'\n    checks: [{row_count: {min: 1}}]\n\
         \x20 - id: b\n    kind: athena_ctas\n    sql: dags/b.sql\n    table: b\n    checks:\n\
         \x20     - row_cout: {min: 1}\n      - row_count: {min: lots}\n      - quarantine_rate: {max_pct: 5}\n",
    );
    p.write("dags/b.sql", "SELECT 1 AS n");
    let r = p.run(&["validate"]);
    r.expect_code(2);
    for want in [
        "bad.yaml:6:13: error: task `a`: `checks`: a task of kind `command` publishes no table",
        "bad.yaml:12:9: error: task `b`: unknown check `row_cout`\n  = hint: did you mean `row_count`?",
        "bad.yaml:13:26: error: task `b`: check `row_count`: a row count is a whole number, 0 or more, found `lots`",
        "bad.yaml:14:9: error: task `b`: check `quarantine_rate`: a task of kind `athena_ctas` quarantines no rows",
    ] {
        assert!(r.stderr.contains(want) || r.stdout.contains(want), "{want}\n{}{}", r.stdout, r.stderr);
    }
}

#[test]
fn checks_the_aws_backend_cannot_run_are_refused_before_the_run_starts() {
    let p = Project::new();
    p.dag(
        "g.yaml",
        "id: g\ntasks:\n  - id: clean\n    kind: glue_job\n    job_name: ecommerce-clean-events\n    local: clean_events\n    checks: [{row_count: {min: 1}}]\n",
    );
    p.write("cartflow.yaml", "aws:\n  lake: s3://lake/\n");
    let r = p.run(&["run", "g", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("task `clean`: `checks:` of a `glue_job` task are not yet supported on aws"),
        "named, refused, not skipped: {}",
        r.stderr
    );
    assert!(!p.path().join(".cartflow/state.db").exists() || states(&p, "g@2019-10-01T00:00:00Z").is_empty());
}

/// On the aws backend, an `athena_ctas` task's checks are Athena queries on its CTAS's
/// temporary table, before the swap (moto, with the CTAS run by DuckDB).
#[test]
fn athena_checks_on_aws_read_the_temporary_table_and_a_failure_keeps_the_partition() {
    let Some(moto) = cartflow_e2e::Moto::start() else { return };
    moto.boto3("import boto3\nboto3.client('s3').create_bucket(Bucket='lake')\nboto3.client('glue').create_database(DatabaseInput={'Name': 'ecommerce'})\n");
    let p = Project::new();
    p.write("cartflow.yaml", "aws:\n  lake: s3://lake/\n  poll: 200ms\n  max_poll: 1s\n");
    p.write("dags/t.sql", "SELECT {{ params.n }} AS n, '{{ ds }}' AS dt");
    p.dag(
        "a.yaml",
        "id: a\nparams: {n: {type: int, default: 5}}\ntasks:\n  - id: t\n    kind: athena_ctas\n    sql: dags/t.sql\n    table: daily\n    partitioned_by: dt\n    retries: 2\n    retry_delay: 1ms\n    checks:\n\
         \x20     - row_count: {min: 1, max: 1}\n\
         \x20     - {name: small, sql: 'SELECT n FROM {{ this }} WHERE n > 10'}\n\
         \x20     - {name: grew, severity: warn, sql: 'SELECT t.n, p.n AS prev_n FROM {{ this }} t CROSS JOIN {{ previous }} p WHERE t.n > p.n'}\n",
    );
    let run = |args: &[&str]| {
        let mut cmd = p.command(args);
        moto.configure(&mut cmd);
        cartflow_e2e::Run::from(cmd.output().expect("cartflow"))
    };
    run(&["run", "a", "--date", "2019-10-01", "--backend", "aws"]).expect_code(0);
    run(&["run", "a", "--date", "2019-10-02", "-p", "n=7", "--backend", "aws"]).expect_code(0);
    let day2 = "a@2019-10-02T00:00:00Z";
    let r = results(&p, day2);
    let verdicts: Vec<(&str, bool)> = r.iter().map(|x| (x.1.as_str(), x.2)).collect();
    // One staged row (the temporary table is read), 7 > 5 of the partition before.
    assert_eq!(verdicts, [("row_count", true), ("small", true), ("grew", false)], "{r:#?}");
    let read = |day: &str| {
        let q = run(&[
            "sql",
            "--backend",
            "aws",
            "--format",
            "csv",
            &format!("SELECT n FROM ecommerce.daily WHERE dt = '{day}'"),
        ]);
        q.expect_code(0);
        q.stdout
    };
    assert_eq!(read("2019-10-02"), "n\n7\n", "a warning publishes");
    // A failing check: not published, not retried, the temporary table and its objects gone.
    let r = run(&["run", "a", "--date", "2019-10-02", "-p", "n=50", "--rerun", "--backend", "aws"]);
    r.expect_code(1);
    // Attempt 1 was the warned success; attempt 2 failed and was not retried (retries: 2).
    assert_eq!(states(&p, day2)["t"], ("failed".to_string(), 2));
    assert_eq!(read("2019-10-02"), "n\n7\n", "the partition is the one before");
    assert_eq!(read("2019-10-01"), "n\n5\n");
    let left = moto.boto3(
        "import boto3\nprint(sorted(t['Name'] for t in boto3.client('glue').get_tables(DatabaseName='ecommerce')['TableList']))\n\
         print(len(boto3.client('s3').list_objects_v2(Bucket='lake', Prefix='curated/daily/dt=2019-10-02/').get('Contents', [])))",
    );
    assert_eq!(left.lines().collect::<Vec<_>>(), ["['daily']", "1"], "{left}");
}
