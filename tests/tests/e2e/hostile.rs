//! Input as attackers give it: hostile `-p` values and DAG settings that aim outside the lake,
//! into SQL or into a shell. Each is refused with a message naming what is wrong, or rendered
//! harmlessly; nothing outside the lake is written or deleted and no command is injected.

use std::path::Path;

use cartflow_e2e::{Project, Run};

/// A DAG `h` of one `athena_ctas` task `q` over `q.sql` (`extra`: more YAML lines of the task).
fn ctas_project(sql: &str, extra: &str, params: &str) -> Project {
    let p = Project::new();
    p.write("q.sql", sql);
    p.dag(
        "h.yaml",
        &format!(
            "id: h\nschedule: '@daily'\nstart_date: 2019-10-01\nparams:\n{params}\ntasks:\n  - id: q\n    kind: athena_ctas\n    sql: q.sql\n    table: h\n{extra}"
        ),
    );
    p
}

/// A folder with a file in it, to be left alone.
fn sentinel(dir: &Path) {
    std::fs::create_dir_all(dir.join("version-1")).expect("sentinel");
    std::fs::write(dir.join("keep.txt"), "precious").expect("sentinel file");
}

#[track_caller]
fn assert_sentinel(dir: &Path, r: &Run) {
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).ok().as_deref(),
        Some("precious"),
        "{} was touched\n{}{}",
        dir.display(),
        r.stdout,
        r.stderr
    );
    let names: Vec<_> = std::fs::read_dir(dir).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 2, "nothing was added to {}: {names:?}", dir.display());
}

#[test]
fn a_value_outside_sql_quotes_cannot_add_a_union() {
    let p = ctas_project("SELECT {{ params.num }} AS n\n", "", "  num: '1'");
    let r = p.run(&["run", "h", "--date", "2019-10-01", "-p", "num=1 UNION ALL SELECT 2"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("`params.num`") && r.stderr.contains("outside a quoted SQL literal (at line 1, column 8)"),
        "{}",
        r.stderr
    );
    let b = p.run(&["backfill", "h", "--from", "2019-10-01", "--to", "2019-10-03", "-p", "num=1 UNION ALL SELECT 2"]);
    b.expect_code(2);
    assert!(b.stderr.contains("`params.num`"), "{}", b.stderr);
    assert!(!p.path().join(".cartflow/lake/curated/h").exists(), "no table was made");
    // A number is what may stand there.
    p.run(&["run", "h", "--date", "2019-10-01", "-p", "num=-7"]).expect_code(0);
    let log = p.run(&["logs", "h@2019-10-01T00:00:00Z", "q"]);
    assert!(log.stdout.contains("1 rows -> ecommerce.h"), "{}", log.stdout);
}

#[test]
fn a_quote_in_a_value_stays_inside_its_literal() {
    let p = ctas_project("SELECT x FROM (VALUES ('a'), ('b')) v(x) WHERE x = '{{ params.who }}'\n", "", "  who: a");
    // Escaped, the value is one string that no row equals: no row, not every row.
    p.run(&["run", "h", "--date", "2019-10-01", "-p", "who=nobody' OR '1'='1"]).expect_code(0);
    let log = p.run(&["logs", "h@2019-10-01T00:00:00Z", "q"]);
    assert!(log.stdout.contains("0 rows -> ecommerce.h"), "{}", log.stdout);
    p.run(&["run", "h", "--date", "2019-10-02"]).expect_code(0);
    assert!(p.run(&["logs", "h@2019-10-02T00:00:00Z", "q"]).stdout.contains("1 rows -> ecommerce.h"));
}

#[test]
fn an_insight_file_that_writes_is_refused_and_writes_nothing() {
    for sql in [
        "COPY (SELECT 1 AS a) TO '$OUT'",
        "CREATE EXTERNAL TABLE x (a INT) STORED AS CSV LOCATION '$OUT'",
        "INSERT INTO ecommerce.h SELECT 1",
        "SELECT 1 AS a; COPY (SELECT 1 AS a) TO '$OUT'",
        "DROP TABLE ecommerce.h",
    ] {
        let p = ctas_project("", "", "  x: '1'");
        let out = p.path().join("pwned.csv");
        p.write("q.sql", &sql.replace("$OUT", &out.display().to_string()));
        let v = p.run(&["validate"]);
        v.expect_code(2);
        assert!(v.stderr.contains("must be one SELECT"), "{sql}: {}", v.stderr);
        p.run(&["run", "h", "--date", "2019-10-01"]).expect_code(2);
        assert!(!out.exists(), "{sql} wrote {}", out.display());
    }
}

/// Writing SQL that starts like a query passes the compile check; DataFusion's read-only check
/// of the plan refuses it when the task runs, before anything is written.
#[test]
fn a_query_that_writes_after_with_or_into_is_refused_when_it_runs() {
    for (sql, refusal) in [
        // DataFusion cannot plan an INSERT after WITH at all.
        ("WITH x AS (SELECT 1 AS a) INSERT INTO ecommerce.h SELECT a FROM x", "not implemented"),
        // SELECT … INTO plans as a CREATE TABLE: the read-only check refuses it.
        ("SELECT 1 AS a INTO pwned", "a query only reads (SELECT)"),
    ] {
        let p = ctas_project(sql, "", "  x: '1'");
        p.run(&["validate"]).expect_code(0);
        let r = p.run(&["run", "h", "--date", "2019-10-01"]);
        assert_ne!(r.code, Some(0), "{sql}: {}{}", r.stdout, r.stderr);
        let log = p.run(&["logs", "h@2019-10-01T00:00:00Z", "q"]);
        assert!(log.stdout.contains(refusal), "{sql}: {}", log.stdout);
        assert!(!p.path().join(".cartflow/lake/curated/h").exists(), "{sql}: no table was made");
    }
}

/// SQL text that DataFusion (or Trino) reads differently from cartflow's lexer is refused at
/// compile time, and a placeholder after `LIKE'…'` is known to stand in code.
#[test]
fn sql_the_engines_would_read_differently_cannot_splice_a_value_as_code() {
    let union = "*/ UNION ALL SELECT CAST(current_date() AS VARCHAR) /*";
    let nested = "SELECT x FROM (VALUES ('a'), ('b')) v(x) WHERE x = 'a'\n/* disabled:\n AND x = /* the kind */ '{{ params.who }}'\n*/\n";
    let p = ctas_project(nested, "", "  who: a");
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(v.stderr.contains("line 3, column 11: `/*` inside a comment"), "{}", v.stderr);
    p.run(&["run", "h", "--date", "2019-10-01", "-p", &format!("who={union}")]).expect_code(2);
    assert!(!p.path().join(".cartflow/lake/curated/h").exists(), "no table was made");

    let p = ctas_project("SELECT $$it's$$ AS a, '{{ params.who }}' AS b\n", "", "  who: a");
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(v.stderr.contains("dollar-quoted"), "{}", v.stderr);

    let like = "SELECT x FROM (VALUES ('a\\'), ('b')) v(x) WHERE x NOT LIKE'%\\' AND length(x) = {{ params.who }} AND x <> 'z'\n";
    let p = ctas_project(like, "", "  who: '1'");
    p.run(&["validate"]).expect_code(0);
    let r =
        p.run(&["run", "h", "--date", "2019-10-01", "-p", "who=1 UNION ALL SELECT CAST(current_date() AS VARCHAR)"]);
    r.expect_code(2);
    assert!(r.stderr.contains("`params.who`") && r.stderr.contains("outside a quoted SQL literal"), "{}", r.stderr);
    assert!(!p.path().join(".cartflow/lake/curated/h").exists(), "no table was made");
    p.run(&["run", "h", "--date", "2019-10-01", "-p", "who=1"]).expect_code(0);
    let log = p.run(&["logs", "h@2019-10-01T00:00:00Z", "q"]);
    assert!(log.stdout.contains("1 rows -> ecommerce.h"), "{}", log.stdout);
}

#[test]
fn validate_refuses_a_param_spliced_into_a_shell_script() {
    let p = Project::new();
    p.dag(
        "s.yaml",
        "id: s\nschedule: '@daily'\nparams:\n  x: a\ntasks:\n  - id: t\n    kind: command\n    program: sh\n    args: [-c, \"echo {{ params.x }}\"]\n",
    );
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(
        v.stderr.contains("s.yaml:6:") && v.stderr.contains("`{{ params.x }}` is spliced into the `sh -c` script"),
        "{}",
        v.stderr
    );
    assert!(v.stderr.contains("\"$1\"") && v.stderr.contains("`env:`"), "{}", v.stderr);
    let r = p.run(&["run", "s", "--date", "2019-10-01", "-p", "x=$(touch PWNED)"]);
    r.expect_code(2);
    assert!(!p.path().join("PWNED").exists());
    // Dates may stand there; a param as an argument or in `env:` is data.
    p.dag(
        "s.yaml",
        "id: s\nschedule: '@daily'\nparams:\n  x: a\ntasks:\n  - id: t\n    kind: command\n    program: sh\n    args: [-c, 'echo {{ ds }} \"$1\" \"$X\"', t, '{{ params.x }}']\n    env:\n      X: '{{ params.x }}'\n",
    );
    p.run(&["validate"]).expect_code(0);
    p.run(&["run", "s", "--date", "2019-10-01", "-p", "x=$(touch PWNED)"]).expect_code(0);
    assert!(!p.path().join("PWNED").exists());
}

#[test]
fn a_rendered_path_cannot_climb_out_of_its_root() {
    let p = Project::new();
    p.dag(
        "d.yaml",
        "id: d\nschedule: '@daily'\nparams:\n  p: x.html\ntasks:\n  - id: dash\n    kind: dashboard\n    out: '.{{ params.p }}'\n",
    );
    let name = format!("{}-outside.html", p.path().file_name().and_then(|n| n.to_str()).expect("name"));
    let outside = p.path().parent().expect("parent").join(&name);
    let r = p.run(&["run", "d", "--date", "2019-10-01", "-p", &format!("p=./{name}")]);
    let wrote = outside.exists();
    let _ = std::fs::remove_file(&outside);
    assert!(!wrote, "the dashboard was written outside the project: {}", outside.display());
    r.expect_code(2);
    assert!(
        r.stderr.contains(&format!("output file \"../{name}\" is refused")) && r.stderr.contains("`params.p`"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_absolute_or_climbing_location_is_refused_at_compile_time() {
    let p = ctas_project("SELECT 1 AS n\n", "", "  x: '1'");
    // Each sentinel where its location aims: a location is relative to the lake, .cartflow/lake.
    let victim = p.path().join("victim");
    let beside_lake = p.path().join(".cartflow/victim");
    sentinel(&victim);
    sentinel(&beside_lake);
    for (loc, aim) in [
        (victim.display().to_string(), &victim),
        ("../victim".to_string(), &beside_lake),
        ("curated/../../../victim".to_string(), &victim),
    ] {
        p.dag(
            "h.yaml",
            &format!(
                "id: h\nschedule: '@daily'\ntasks:\n  - id: q\n    kind: athena_ctas\n    sql: q.sql\n    table: h\n    location: '{loc}'\n"
            ),
        );
        let v = p.run(&["validate"]);
        v.expect_code(2);
        assert!(v.stderr.contains("`location`"), "{loc}: {}", v.stderr);
        let r = p.run(&["run", "h", "--date", "2019-10-01"]);
        r.expect_code(2);
        assert_sentinel(aim, &r);
    }
}

#[test]
fn a_partition_value_cannot_name_a_folder_outside_the_lake() {
    let p = ctas_project(
        "SELECT 1 AS n, '{{ params.pv }}' AS dt\n",
        "    partitioned_by: dt\n    partition_value: '{{ params.pv }}'\n",
        "  pv: '2019-10-01'",
    );
    // Five folders up from .cartflow/lake/curated/h/dt=.. is the project folder.
    let victim = p.path().join("v/victim");
    sentinel(&victim);
    for pv in ["../../../../../../v/victim", "a/b", "..", "x\\..\\y"] {
        let r = p.run(&["run", "h", "--date", "2019-10-01", "-p", &format!("pv={pv}")]);
        assert_sentinel(&victim, &r);
        r.expect_code(2);
        assert!(r.stderr.contains("partition value") && r.stderr.contains("`params.pv`"), "{pv}: {}", r.stderr);
    }
    assert!(!p.path().join(".staging").exists(), "no staging folder outside the lake");
    p.run(&["run", "h", "--date", "2019-10-01"]).expect_code(0);
    assert!(p.path().join(".cartflow/lake/curated/h/dt=2019-10-01").is_dir());
}

#[test]
fn the_example_dag_never_runs_a_param_as_shell_code() {
    let p = Project::new();
    p.dag("example_etl.yaml", &crate::lake::repo_file("dags/example_etl.yaml"));
    let values =
        ["x; touch PWNED", "$(touch PWNED)", "x\"; touch PWNED; \"", "`touch PWNED`", "x' ; touch PWNED ; '", "-x"];
    for (day, v) in values.iter().enumerate() {
        let date = format!("2019-10-{:02}", day + 1);
        let r = p.run(&["run", "example_etl", "--date", &date, "-p", &format!("out_dir={v}")]);
        assert!(!p.path().join("PWNED").exists(), "{v:?} ran as shell code\n{}{}", r.stdout, r.stderr);
        r.expect_code(0);
        assert!(p.read(&format!("{v}/latest.txt")).contains("3 view"), "{v:?}: the value was used as data");
    } // A folder outside the project is refused by the script, before it writes anything.
    let outside = p
        .path()
        .parent()
        .expect("parent")
        .join(format!("{}-outside", p.path().file_name().and_then(|n| n.to_str()).expect("name")));
    let beside = format!("../{}", outside.file_name().and_then(|n| n.to_str()).expect("name"));
    // The empty value too: the script's "$OUT/latest.txt" would then be /latest.txt.
    for (day, v) in
        [outside.display().to_string(), beside, "a/../../x".to_string(), String::new()].into_iter().enumerate()
    {
        let date = format!("2019-10-{}", 20 + day);
        let r = p.run(&["run", "example_etl", "--date", &date, "-p", &format!("out_dir={v}")]);
        let wrote = outside.exists() || p.path().parent().expect("parent").join("x").exists();
        let _ = std::fs::remove_dir_all(&outside);
        assert!(!wrote, "{v:?}: the example wrote outside the project\n{}{}", r.stdout, r.stderr);
        r.expect_code(1);
        let log = p.run(&["logs", &format!("example_etl@{date}T00:00:00Z"), "extract"]);
        assert!(log.stdout.contains("out_dir must be a relative folder inside the project"), "{v:?}: {}", log.stdout);
    }
}

#[test]
fn oversized_input_is_refused_with_a_clear_message() {
    let p = Project::new();
    p.dag("example_etl.yaml", &crate::lake::repo_file("dags/example_etl.yaml"));
    let r = p.run(&["run", "example_etl", "--date", "2019-10-01", "-p", &format!("out_dir={}", "x".repeat(5000))]);
    r.expect_code(2);
    assert!(r.stderr.contains("a param value may have at most 4096 bytes"), "{}", &r.stderr[..r.stderr.len().min(500)]);
    let p = ctas_project(&format!("SELECT 1 AS n -- {}\n", "x".repeat(1 << 20)), "", "  x: '1'");
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(v.stderr.contains("is larger than 1 MiB"), "{}", v.stderr);
}

/// Settings that would spin, stall or stop everything are refused with what the bound is: a
/// scheduler tick of 0s (a core at 100%), 0 or a million runs at once, a task timeout of 0s.
#[test]
fn settings_that_would_spin_stall_or_stop_everything_are_refused() {
    let p = Project::new();
    p.dag("q.yaml", "id: q\nschedule: '@daily'\ntasks:\n  - id: a\n    kind: noop\n");
    for (args, why) in [
        (vec!["scheduler", "--once", "--tick", "0s"], "shorter than 10ms"),
        (vec!["scheduler", "--once", "--tick", "1ms"], "shorter than 10ms"),
        (
            vec!["backfill", "q", "--from", "2019-10-01", "--to", "2019-10-02", "--max-active-runs", "0"],
            "from 1 to 256",
        ),
        (
            vec!["backfill", "q", "--from", "2019-10-01", "--to", "2019-10-02", "--max-active-runs", "1000000"],
            "from 1 to 256",
        ),
        (vec!["demo", "--days", "1", "--max-active-runs", "0"], "from 1 to 256"),
        (vec!["backfill", "q", "--from", "0000-01-01", "--to", "2019-10-02"], "years 0001 to 9999"),
    ] {
        let r = p.run(&args);
        r.expect_code(2);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }
    assert!(!p.path().join(".cartflow/state.db").exists(), "nothing ran");
    p.dag("t.yaml", "id: t\ntasks:\n  - id: a\n    kind: noop\n    timeout: 0s\n");
    let r = p.run(&["validate"]);
    r.expect_code(2);
    assert!(r.stderr.contains("t.yaml:5:14: error: task `a`: `timeout`: 0s would stop every attempt"), "{}", r.stderr);
}

/// A symbolic link planted in the lake does not lead a writer out of it: the table's folder,
/// a partition or the staging folder linked to a folder outside the lake, the task fails
/// naming the link, and the folder it points at is left as it was.
#[test]
fn a_link_in_the_lake_does_not_lead_a_write_or_a_delete_out_of_it() {
    let p = ctas_project(
        "SELECT 1 AS n, '{{ ds }}' AS dt\n",
        "    partitioned_by: dt\n    partition_value: '{{ ds }}'\n",
        "  x: '1'",
    );
    let victim = p.path().join("victim");
    let curated = p.path().join(".cartflow/lake/curated");
    std::fs::create_dir_all(&curated).expect("curated");
    for (link, day) in [
        (curated.join("h"), "2019-10-01"),
        (curated.join("h/dt=2019-10-02"), "2019-10-02"),
        (curated.join(".staging"), "2019-10-03"),
    ] {
        sentinel(&victim);
        // What a swap or a recovery would replace or delete, were the link followed.
        std::fs::create_dir_all(victim.join("dt=2019-10-01")).expect("partition");
        std::fs::create_dir_all(victim.join(format!("h__dt={day}.1-2.tmp"))).expect("staged");
        if link.ends_with("dt=2019-10-02") {
            std::fs::create_dir_all(curated.join("h")).expect("table");
        }
        std::os::unix::fs::symlink(&victim, &link).expect("link");
        let r = p.run(&["run", "h", "--date", day]);
        r.expect_code(1);
        let log = p.run(&["logs", &format!("h@{day}T00:00:00Z"), "q"]);
        assert!(
            log.stdout.contains("is a symbolic link to") && log.stdout.contains("outside the lake"),
            "{}: {}",
            link.display(),
            log.stdout
        );
        let names: Vec<_> = std::fs::read_dir(&victim).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 4, "{}: the folder outside the lake changed: {names:?}", link.display());
        assert_eq!(std::fs::read_to_string(victim.join("keep.txt")).ok().as_deref(), Some("precious"));
        std::fs::remove_file(&link).expect("unlink");
        std::fs::remove_dir_all(&victim).expect("clean up");
    }
    // Without the link, the same run writes its partition.
    let _ = std::fs::remove_dir_all(curated.join("h"));
    p.run(&["run", "h", "--date", "2019-10-04"]).expect_code(0);
    assert!(curated.join("h/dt=2019-10-04").is_dir());
}

/// A param naming the dashboard's file cannot make it replace the project's own files: the DAGs,
/// SQL, `cartflow.yaml`, the state database, or what lives under `.cartflow/` (lake, logs,
/// streaming state); a file of the user's that has the name is not replaced either.
#[test]
fn a_dashboard_param_cannot_overwrite_the_projects_own_files() {
    let p = Project::new();
    let dag = "id: d\nschedule: '@daily'\nparams:\n  out: report.html\ntasks:\n  - id: dash\n    kind: dashboard\n    out: '{{ params.out }}'\n";
    p.dag("d.yaml", dag);
    p.write("q.sql", "SELECT 1\n");
    p.write("cartflow.yaml", "dags: dags\n");
    p.write("dags/x.html", "<p>a page of the user's</p>");
    let own = ["dags/d.yaml", "q.sql", "cartflow.yaml", "dags/x.html"];
    let before: Vec<String> = own.iter().map(|f| p.read(f)).collect();
    for v in [
        "dags/d.yaml",
        "dags/x.html",
        "./dags/y.html",
        "cartflow.yaml",
        "q.sql",
        ".cartflow/state.db",
        ".cartflow/lake/curated/x.html",
        ".cartflow/logs/x.html",
        "report",
        ".html",
    ] {
        let r = p.run(&["run", "d", "--date", "2019-10-01", "-p", &format!("out={v}")]);
        r.expect_code(2);
        assert!(r.stderr.contains("output file") && r.stderr.contains("`params.out`"), "{v}: {}", r.stderr);
    }
    let after: Vec<String> = own.iter().map(|f| p.read(f)).collect();
    assert_eq!(before, after, "the project's files were changed");
    // The DAG's own text is held to the same rule, by `validate` already.
    p.dag("e.yaml", "id: e\ntasks:\n  - id: dash\n    kind: dashboard\n    out: dags/e.yaml\n");
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(
        v.stderr.contains("e.yaml:3:5") && v.stderr.contains("output file \"dags/e.yaml\" is refused"),
        "{}",
        v.stderr
    );
    std::fs::remove_file(p.path().join("dags/e.yaml")).expect("rm");
    // A file that is not a dashboard keeps its content.
    p.write("index.html", "<p>mine</p>");
    let r = p.run(&["run", "d", "--date", "2019-10-02", "-p", "out=index.html"]);
    r.expect_code(1);
    assert_eq!(p.read("index.html"), "<p>mine</p>");
    let log = p.run(&["logs", "d@2019-10-02T00:00:00Z", "dash"]);
    assert!(log.stdout.contains("index.html exists and is not a cartflow dashboard"), "{}", log.stdout);
}

/// `validate` says what `run` will say: a path in the DAG's own text (or a param's default)
/// that a run refuses is a compile error; an absolute `program` written in the DAG is trusted
/// by both; a param may not choose the program; the daily DAG's `stream_source` takes the
/// absolute path of a Kaggle file, and nothing else from outside the project.
#[test]
fn validate_and_run_agree_on_paths() {
    let p = Project::new();
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ntasks:\n  - id: t\n    kind: command\n    program: /bin/echo\n    args: [hi]\n    working_dir: /tmp\n",
    );
    p.run(&["validate"]).expect_code(0);
    p.run(&["run", "c", "--date", "2019-10-01"]).expect_code(0);
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\nparams:\n  tool: echo\ntasks:\n  - id: t\n    kind: command\n    program: '{{ params.tool }}'\n",
    );
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(v.stderr.contains("would let a param choose the program"), "{}", v.stderr);
    p.run(&["run", "c", "--date", "2019-10-02", "-p", "tool=/bin/touch"]).expect_code(2);
    std::fs::remove_file(p.path().join("dags/c.yaml")).expect("rm");
    for (dag, what) in [
        ("id: w\ntasks:\n  - id: w\n    kind: wait_for_partition\n    path: ../outside\n", "path \"../outside\""),
        (
            "id: w\nparams:\n  day: ../../x\ntasks:\n  - id: w\n    kind: wait_for_partition\n    path: 'raw/{{ params.day }}'\n",
            "`params.day`",
        ),
        ("id: w\ntasks:\n  - id: d\n    kind: dashboard\n    out: /tmp/x.html\n", "output file \"/tmp/x.html\""),
    ] {
        p.dag("w.yaml", dag);
        let v = p.run(&["validate"]);
        v.expect_code(2);
        assert!(v.stderr.contains(what) && v.stderr.contains("is refused"), "{dag}: {}", v.stderr);
        let r = p.run(&["run", "w", "--date", "2019-10-01"]);
        r.expect_code(2);
    }
    std::fs::remove_file(p.path().join("dags/w.yaml")).expect("rm");
    // The daily DAG invites a Kaggle file: anywhere, as long as it is one.
    let q = Project::new();
    crate::lake::install_daily(&q);
    let elsewhere = tempfile::tempdir().expect("tmp");
    let csv = elsewhere.path().join("2019-Oct.csv");
    std::fs::write(
        &csv,
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n",
    )
    .expect("csv");
    q.run(&["validate"]).expect_code(0);
    let plan =
        q.run(&["plan", "ecommerce_daily", "--date", "2019-10-01", "-p", &format!("stream_source={}", csv.display())]);
    plan.expect_code(0);
    assert!(plan.stdout.contains(&csv.display().to_string()), "{}", plan.stdout);
    for v in ["/etc/passwd", "/x/../etc/y.csv", "../outside.csv", "a.csv\n"] {
        let r = q.run(&["run", "ecommerce_daily", "--date", "2019-10-01", "-p", &format!("stream_source={v}")]);
        r.expect_code(2);
        assert!(r.stderr.contains("`params.stream_source`") && r.stderr.contains("source file"), "{v:?}: {}", r.stderr);
    }
    assert!(!q.path().join(".cartflow/lake/raw").exists(), "nothing ran");
}

/// The templated fields of every kind, one task each (task id = param name), with a harmless
/// default: `(field, default, the task's YAML after its id)`.
const FIELDS: [(&str, &str, &str); 18] = [
    ("cmd_arg", "x", "kind: command\n    program: sh\n    args: [-c, 'true', t, '{{ params.cmd_arg }}']"),
    ("cmd_env", "x", "kind: command\n    program: sh\n    args: [-c, 'true']\n    env: {X: '{{ params.cmd_env }}'}"),
    ("cmd_wd", "x", "kind: command\n    program: 'true'\n    working_dir: 'w/{{ params.cmd_wd }}'"),
    ("sql_lit", "x", "kind: athena_ctas\n    sql: lit.sql\n    table: t1"),
    ("sql_num", "1", "kind: athena_ctas\n    sql: num.sql\n    table: t2"),
    ("sql_ident", "x", "kind: athena_ctas\n    sql: ident.sql\n    table: t3"),
    (
        "ctas_pv",
        "2019-10-01",
        "kind: athena_ctas\n    sql: pv.sql\n    table: t4\n    partitioned_by: dt\n    partition_value: '{{ params.ctas_pv }}'",
    ),
    ("wait_path", "dt=2019-10-01", "kind: wait_for_partition\n    path: 'raw/events/{{ params.wait_path }}'"),
    (
        "crawl_path",
        "events",
        "kind: glue_crawler\n    name: c\n    table: tc\n    path: 'staged/{{ params.crawl_path }}'",
    ),
    (
        "glue_date",
        "2019-10-01",
        "kind: glue_job\n    job_name: j\n    local: clean_events\n    date: '{{ params.glue_date }}'",
    ),
    (
        "glue_arg",
        "x",
        "kind: glue_job\n    job_name: j\n    local: clean_events\n    arguments: {'--x': '{{ params.glue_arg }}'}",
    ),
    ("polars_date", "2019-10-01", "kind: polars_job\n    job: compact\n    date: '{{ params.polars_date }}'"),
    (
        "brew_date",
        "2019-10-01",
        "kind: databrew_job\n    job_name: b\n    recipe: r.json\n    input: clean/events\n    output: enriched/events\n    date: '{{ params.brew_date }}'",
    ),
    ("dash_out", "r.html", "kind: dashboard\n    out: '{{ params.dash_out }}'"),
    ("dash_from", "2019-10-01", "kind: dashboard\n    from: '{{ params.dash_from }}'"),
    ("stream_source", "none", "kind: streaming_stage\n    rules: r.yaml\n    source: '{{ params.stream_source }}'"),
    (
        "stream_events",
        "10",
        "kind: streaming_stage\n    rules: r.yaml\n    events_per_day: '{{ params.stream_events }}'",
    ),
    ("stream_seed", "1", "kind: streaming_stage\n    rules: r.yaml\n    seed: '{{ params.stream_seed }}'"),
];

/// The hostile values: SQL fragments, climbing and absolute paths, control characters (NUL
/// too), huge strings, Unicode look-alikes, shell metacharacters.
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        // SQL
        "1 UNION ALL SELECT 2",
        "x' OR '1'='1",
        "'; DROP TABLE t1; --",
        "1; COPY (SELECT 1) TO '/tmp/pwned'",
        "*/ UNION SELECT 1 /*",
        "1 -- comment",
        "1--",
        "$$x$$",
        "1) UNION SELECT (1",
        "E'\\x41'",
        "\" OR \"1\"=\"1",
        "x\\' OR 1=1",
        // paths
        "..",
        "../x",
        "../../../../../../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "/tmp/x.html",
        "//server/share",
        "..\\..\\x",
        "C:\\Windows\\x",
        "./.././x",
        "a/./../..",
        "~/x",
        ".cartflow/state.db",
        "dags/h.yaml",
        "/abs/../../x.csv",
        // control characters
        "a\nb",
        "a\rb",
        "a\tb",
        "\u{1b}[31mred",
        "a\u{0}b",
        "x\u{0}",
        // sizes
        // Unicode look-alikes
        "..\u{2215}x",
        "\u{ff0e}\u{ff0e}/x",
        "\u{202e}lmth.exe",
        "\u{2024}\u{2024}/x",
        "\u{ff0f}etc\u{ff0f}passwd",
        "\u{200b}../x",
        "x\u{2028}y",
        "\u{ff07} OR 1=1",
        // shell
        "; touch PWNED",
        "$(touch PWNED)",
        "`touch PWNED`",
        "| touch PWNED",
        "&& touch PWNED",
        "x > PWNED",
        "-rf",
        "--help",
        "*",
        "$HOME",
        "%s%n",
        // plain values, for contrast
        "2019-10-01",
        "42",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(4097));
    v.push("x".repeat(1 << 20));
    v.push(format!("{}'; DROP TABLE t1; --", "a".repeat(1 << 20)));
    v
}

/// One task's block of `cartflow plan`: its rendered config (JSON), or why it cannot render.
fn plan_block(plan: &str, task: &str) -> Result<serde_json::Value, String> {
    // A task's head line: `N. id [kind] after: …`.
    let head_of =
        |l: &str| l.split_once(". ").filter(|(n, _)| n.parse::<u32>().is_ok()).map(|(_, rest)| rest.to_string());
    let mut lines = plan.lines().skip_while(|l| head_of(l).is_none_or(|h| !h.starts_with(&format!("{task} ["))));
    lines.next().ok_or_else(|| format!("no task {task} in the plan"))?;
    let body: Vec<&str> = lines.take_while(|l| head_of(l).is_none()).collect();
    let text = body.join("\n");
    match text.trim().strip_prefix("cannot render: ") {
        Some(why) => Err(why.to_string()),
        None => Ok(serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{task}: {e}: {text}"))),
    }
}

/// Relative, without `..`, without control characters: stays inside its root.
fn stays_inside(p: &str) -> bool {
    !p.starts_with(['/', '\\']) && !p.split(['/', '\\']).any(|s| s == "..") && !p.chars().any(char::is_control)
}

/// Whether a rendered config is harmless for the hostile value `v` in `field`.
fn harmless(field: &str, v: &str, r: &serde_json::Value) -> bool {
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    let plain_sql = !v.chars().any(char::is_control);
    match field {
        "cmd_arg" => r["args"][3] == v,
        "cmd_env" => r["env"]["X"] == v,
        "cmd_wd" => stays_inside(&s("working_dir")),
        "sql_lit" => plain_sql && s("sql") == format!("SELECT '{}' AS v\n", v.replace('\'', "''")),
        "sql_num" => {
            // A number as it is; a date or a timestamp as a typed literal (bare, `2019-10-01`
            // would be arithmetic), its text only digits and `- + . : T Z`.
            let sql = s("sql");
            let ts = v.replacen('T', " ", 1);
            let ts = ts.strip_suffix('Z').map_or(ts.clone(), |t| format!("{t}+00:00"));
            let literal = [
                format!("SELECT {v} AS n\n"),
                format!("SELECT ({v}) AS n\n"),
                format!("SELECT DATE '{v}' AS n\n"),
                format!("SELECT TIMESTAMP '{ts}' AS n\n"),
            ];
            literal.contains(&sql) && v.chars().all(|c| c.is_ascii_digit() || "-+.:TZ".contains(c)) && !v.contains("--")
        }
        "sql_ident" => plain_sql && !v.contains('"') && s("sql") == format!("SELECT 1 AS \"{v}\"\n"),
        "ctas_pv" => {
            r["partition"][1] == v
                && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.:+-".contains(c))
                && !v.contains("..")
        }
        "wait_path" | "crawl_path" => stays_inside(&s("path")),
        "glue_date" | "polars_date" | "brew_date" => stays_inside(&s("date")),
        "glue_arg" => {
            r["arguments"]["--x"] == v
                && !v.contains(['\'', '"', ';', '`', '\\'])
                && !v.contains("--")
                && !v.contains("/*")
                && plain_sql
        }
        "dash_out" => {
            let out = s("out");
            stays_inside(&out) && out.ends_with(".html") && !out.starts_with("dags/")
        }
        "dash_from" => stays_inside(&s("from")),
        "stream_source" => {
            let src = s("source");
            src == "none" || src == "generate" || (src.ends_with(".csv") && !src.split('/').any(|x| x == ".."))
        }
        "stream_events" => r["events_per_day"].is_u64(),
        "stream_seed" => r["seed"].is_u64(),
        _ => false,
    }
}

/// The project of the table-driven test: the DAG `h` of [`FIELDS`] (params' defaults given),
/// its SQL files, recipe and rules; a sentinel folder beside the lake.
fn fields_project(defaults: Option<(&str, &[&str])>) -> Project {
    let p = Project::new();
    let params: String = FIELDS
        .iter()
        .map(|(f, d, _)| match defaults {
            Some((v, these)) if these.contains(f) => format!("  {f}: {}\n", serde_json::to_string(v).expect("json")),
            _ => format!("  {f}: '{d}'\n"),
        })
        .collect();
    let tasks: String = FIELDS.iter().map(|(f, _, t)| format!("  - id: {f}\n    {t}\n")).collect();
    p.dag("h.yaml", &format!("id: h\nschedule: '@daily'\nparams:\n{params}tasks:\n{tasks}"));
    p.write("lit.sql", "SELECT '{{ params.sql_lit }}' AS v\n");
    p.write("num.sql", "SELECT {{ params.sql_num }} AS n\n");
    p.write("ident.sql", "SELECT 1 AS \"{{ params.sql_ident }}\"\n");
    p.write("pv.sql", "SELECT 1 AS n, '{{ ds }}' AS dt\n");
    p.write("r.json", &crate::lake::repo_file("glue-scripts/databrew/enrich_events.json"));
    p.write("r.yaml", &crate::lake::repo_file("streaming/rules/ddos.yaml"));
    sentinel(&p.path().join("victim"));
    p
}

/// "Done means" of issue #23: every hostile value through every kind's templated field (by
/// `-p`, or — for what no command line can carry, NUL and a megabyte — as the param's
/// default), and through the daily DAG's params. Each is refused naming the param, or rendered
/// harmlessly (a path inside its root, a literal escaped, a number a number, an argument passed
/// as it is); then the values that rendered are run: the command gets them as data (no marker
/// file appears), the query returns the value as one string, nothing beside the lake changes.
#[test]
fn every_hostile_value_through_every_templated_field_is_refused_or_harmless() {
    let values = hostile_values();
    let p = fields_project(None);
    p.dag(
        "hc.yaml",
        "id: hc\nparams:\n  a: x\ntasks:\n  - id: c\n    kind: command\n    program: sh\n    args: [-c, 'printf %s \"$1\" > arg.out; printf %s \"$X\" > env.out', t, '{{ params.a }}']\n    env: {X: '{{ params.a }}'}\n",
    );
    p.dag(
        "hq.yaml",
        "id: hq\nparams:\n  sql_lit: x\ntasks:\n  - id: q\n    kind: athena_ctas\n    sql: lit.sql\n    table: t1\n",
    );
    let daily = Project::new();
    crate::lake::install_daily(&daily);
    let (mut refused, mut rendered, mut ran) = (0usize, 0usize, 0usize);
    for v in &values {
        let shown: String = v.chars().take(40).collect();
        let mut outcomes: Vec<(&str, Result<serde_json::Value, String>)> = Vec::new();
        if v.contains('\0') || v.len() > 100_000 {
            // No command line carries it: it reaches the tasks as the params' default.
            let all: Vec<&str> = FIELDS.iter().map(|(f, _, _)| *f).collect();
            let q = fields_project(Some((v, &all)));
            let r = q.run(&["plan", "h", "--date", "2019-10-01"]);
            let error_of = |f: &str| r.stderr.lines().find(|l| l.contains(&format!("task `{f}`"))).map(str::to_string);
            // The fields the compile (which renders every task) did not refuse: their plan, with
            // the value in them alone.
            let passed: Vec<&str> = all.iter().copied().filter(|f| error_of(f).is_none()).collect();
            let q2 = fields_project(Some((v, &passed)));
            let r2 = q2.run(&["plan", "h", "--date", "2019-10-01"]);
            r2.expect_code(0);
            for f in &all {
                outcomes.push((f, error_of(f).map_or_else(|| plan_block(&r2.stdout, f), Err)));
            }
            assert_sentinel(&q.path().join("victim"), &r);
        } else if v.len() > 4096 {
            for (f, _, _) in FIELDS {
                let r = p.run(&["plan", "h", "--date", "2019-10-01", "-p", &format!("{f}={v}")]);
                r.expect_code(2);
                outcomes.push((f, Err(r.stderr.replace(&format!("the value of `{f}`"), &format!("`params.{f}`")))));
            }
        } else {
            let mut args = vec!["plan".to_string(), "h".into(), "--date".into(), "2019-10-01".into()];
            for (f, _, _) in FIELDS {
                args.push("-p".into());
                args.push(format!("{f}={v}"));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = p.run(&args);
            for (f, _, _) in FIELDS {
                outcomes.push((f, plan_block(&r.stdout, f)));
            }
            // `plan` fails as `run` would when a task cannot render (and says which, by name).
            let refusals = outcomes.iter().filter(|(_, o)| o.is_err()).count();
            r.expect_code(if refusals > 0 { 2 } else { 0 });
            for (f, o) in &outcomes {
                assert_eq!(o.is_err(), r.stderr.contains(&format!("task `{f}`")), "{f} = {shown:?}: {}", r.stderr);
            }
            // Through the daily DAG: its three params, one at a time.
            for param in ["stream_source", "events_per_day", "seed"] {
                let r = daily.run(&["plan", "ecommerce_daily", "--date", "2019-10-01", "-p", &format!("{param}={v}")]);
                let block = plan_block(&r.stdout, "stream");
                r.expect_code(if block.is_err() { 2 } else { 0 });
                match block {
                    Err(why) => {
                        assert!(why.contains(&format!("`params.{param}`")), "daily {param} = {shown:?}: {why}");
                        refused += 1;
                    }
                    Ok(cfg) => {
                        let field = match param {
                            "stream_source" => "stream_source",
                            "events_per_day" => "stream_events",
                            _ => "stream_seed",
                        };
                        assert!(harmless(field, v, &cfg), "daily {param} = {shown:?} rendered as {cfg}");
                        rendered += 1;
                    }
                }
            }
            // Run what rendered: the command gets the value as data, the query as one string.
            let day = format!("2019-{:02}-{:02}", 1 + ran / 28, 1 + ran % 28);
            ran += 1;
            let c = p.run(&["run", "hc", "--date", &day, "-p", &format!("a={v}")]);
            c.expect_code(0);
            assert_eq!((p.read("arg.out"), p.read("env.out")), (v.clone(), v.clone()), "{shown:?}");
            if outcomes.iter().any(|(f, o)| *f == "sql_lit" && o.is_ok())
                && v.contains(['\'', '"', ';', '-', '/', '$', '\\'])
            {
                p.run(&["run", "hq", "--date", &day, "-p", &format!("sql_lit={v}")]).expect_code(0);
                let got = p.run(&["sql", "--format", "json", "SELECT v FROM t1"]);
                got.expect_code(0);
                let rows: serde_json::Value = serde_json::from_str(&got.stdout).expect("json");
                assert_eq!(rows["rows"], serde_json::json!([[v]]), "the query's meaning changed for {shown:?}");
            }
        }
        for (f, outcome) in outcomes {
            match outcome {
                Err(why) => {
                    assert!(
                        why.contains(&format!("`params.{f}`")),
                        "{f} = {shown:?}: refused without naming the param: {why}"
                    );
                    refused += 1;
                }
                Ok(serde_json::Value::Null) => rendered += 1,
                Ok(cfg) => {
                    assert!(harmless(f, v, &cfg), "{f} = {shown:?} rendered as {cfg}");
                    rendered += 1;
                }
            }
        }
        assert!(!p.path().join("PWNED").exists() && !Path::new("PWNED").exists(), "{shown:?} ran a command");
    }
    let r = p.run(&["runs"]);
    assert_sentinel(&p.path().join("victim"), &r);
    let checks = refused + rendered;
    let long = values.iter().filter(|v| v.contains('\0') || v.len() > 4096).count();
    eprintln!(
        "hostile values x fields: {} values x {} fields of the kinds + {} values x 3 params of the daily DAG (not the {long} values over 4 KiB or with NUL: `-p` refuses or cannot carry them, they go through the kinds as defaults) = {checks} checks: {refused} refused naming the param, {rendered} rendered harmlessly; {ran} runs of the command with the value, none ran it",
        values.len(),
        FIELDS.len(),
        values.len() - long,
    );
    assert!(values.len() >= 40 && checks >= 40 * FIELDS.len(), "{checks}");
}
