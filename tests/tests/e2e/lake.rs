//! The local data plane end to end: generated raw events through the daily DAG.

use cartflow_e2e::Project;

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

/// [`install_daily`] with the DAG's `checks:` blocks left out, for the aws backend: it refuses
/// those of clean and enrich (glue_job and databrew_job checks are not yet supported there), and
/// the insights' would add Athena queries to what a test counts.
pub(crate) fn install_daily_without_checks(p: &Project) {
    install_daily(p);
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in repo_file("dags/ecommerce_daily.yaml").lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skipping {
            if line.trim().is_empty() || indent > depth {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "checks:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(!out.contains("checks:") && out.contains("id: clean"), "{out}");
    p.write("dags/ecommerce_daily.yaml", &out);
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
    let r =
        p.run(&["backfill", "ecommerce_daily", "--from", "2019-10-01", "--to", "2019-10-09", "--max-active-runs", "1"]);
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad.sql:2:"), "{}", String::from_utf8_lossy(&out.stdout));
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
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "self-contained");
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"application/json\" id=\"cartflow-dashboard-data\">").count(),
        "no script but the data block, which is JSON and never runs"
    );
    // The data behind the charts, read back: what the insight tables hold (asked by another query).
    let data = cartflow_jobs::dashboard::chart_data(&html).expect("chart data");
    let sql =
        p.run(&["sql", "--format", "json", "SELECT dt, unique_visitors FROM ecommerce.daily_visitors ORDER BY dt"]);
    sql.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&sql.stdout).expect("json");
    let visitors = data.visitors.expect("chart 1 has data");
    let want: Vec<(String, f64)> = rows["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r[0].as_str().expect("dt").to_string(), r[1].as_str().expect("n").parse().expect("number")))
        .collect();
    assert_eq!(visitors.days.iter().cloned().zip(visitors.unique_visitors.iter().copied()).collect::<Vec<_>>(), want);
    assert!(data.abandonment.is_some() && data.categories.is_some() && data.brands.is_some(), "every chart's data");
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
    // The user's input errors are exit 2, said once: a missing file, a CSV that is not the dataset.
    let missing = p.run(&["ingest", "missing.csv"]);
    missing.expect_code(2);
    assert_eq!(missing.stderr.matches("No such file").count(), 1, "{}", missing.stderr);
    p.write("other.csv", "a,b\n1,2\n");
    let other = p.run(&["ingest", "other.csv"]);
    other.expect_code(2);
    assert!(other.stderr.contains("other.csv:1: expected the header"), "{}", other.stderr);
    p.run(&["run", "ecommerce_daily", "--date", "2019-10-01"]).expect_code(0);
    let compact = numbers(&summaries(&p, "compact")[0].1);
    assert_eq!((compact[0], compact[1]), (rows, rows), "re-ingesting replaced the first ingest");
    let clean = numbers(&summaries(&p, "clean")[0].1);
    assert_eq!(clean[0], clean[1] + clean[2] + clean[3]);
    assert_eq!(clean[2], 0, "generated rows are valid");
    let bad = p.run(&["ingest", "dags/ecommerce_daily.yaml"]);
    bad.expect_code(2);
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
    assert!(ls.stdout.contains("ecommerce.events") && ls.stdout.contains("ecommerce.staged_events"), "{}", ls.stdout);
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

/// Conservation counted independently of the code's own counters: the generator's truth (rows,
/// malformed rows and exact duplicates per day, computed while generating) against what DuckDB
/// reads back from the clean and quarantine files, with blank lines added to the raw zone.
/// Every raw line is a clean row, a quarantined row or a dropped duplicate — none is lost,
/// none is counted twice — and a blank line is counted as skipped, not as a row.
#[test]
fn raw_lines_are_clean_quarantined_or_duplicates_as_the_files_read_back_say() {
    let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
    let p = Project::new();
    install_daily(&p);
    let generate = [
        "generate",
        "--days",
        "2",
        "--events-per-day",
        "3000",
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--malformed-rate",
        "0.03",
        "--seed",
        "7",
    ];
    p.run(&generate).expect_code(0);
    let truth: serde_json::Value =
        serde_json::from_str(&p.read(".cartflow/lake/raw/events/_truth.json")).expect("truth");
    let per_day = |key: &str| -> Vec<u64> {
        truth[key].as_array().expect(key).iter().map(|d| d[1].as_u64().expect("n")).collect()
    };
    let (rows, malformed, duplicates) =
        (per_day("rows_per_day"), per_day("malformed_per_day"), per_day("duplicates_per_day"));
    assert!(malformed.iter().all(|&n| n > 0) && duplicates.iter().all(|&n| n > 0), "{truth}");
    // Blank lines (an empty gzip member's worth, and a CRLF one) in the first raw object of each day.
    let py = |code: &str| {
        let out = std::process::Command::new(&python).args(["-c", code]).output().expect("python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lake = p.path().join(".cartflow/lake").display().to_string();
    py(&format!(
        "import glob, gzip\nfor d in ['2019-10-01', '2019-10-02']:\n    f = sorted(glob.glob('{lake}/raw/events/dt=' + d + '/*/*.gz'))[0]\n    gzip.open(f, 'ab').write(b'\\n\\n\\r\\n')"
    ));
    p.run(&["backfill", "ecommerce_daily", "--from", "2019-10-01", "--to", "2019-10-02"]).expect_code(0);
    let counts = py(&format!(
        "import duckdb\nfor d in ['2019-10-01', '2019-10-02']:\n    n = lambda z: duckdb.sql(f\"SELECT count(*) FROM read_parquet('{lake}/{{z}}/events/dt={{d}}/*.parquet')\").fetchall()[0][0]\n    print(n('clean'), n('quarantine'))"
    ));
    let counts: Vec<Vec<u64>> = counts.lines().map(|l| l.split(' ').map(|n| n.parse().expect("n")).collect()).collect();
    for (i, c) in counts.iter().enumerate() {
        let day = i + 1;
        assert_eq!(c[1], malformed[i], "day {day}: quarantine holds the malformed rows");
        assert_eq!(c[0], rows[i] - malformed[i] - duplicates[i], "day {day}: clean = rows - malformed - duplicates");
    }
    for ((_, s), n) in summaries(&p, "compact").iter().zip(&rows) {
        assert!(s.starts_with(&format!("rows in {n} = rows out {n} ")), "the blank lines are not rows: {s}");
        assert!(s.ends_with("; 3 blank line(s) skipped"), "and are counted: {s}");
    }
}

/// The real files' quirks, in Kaggle's CSV format: views by known users with an empty
/// `user_session` (one with a session too, one without any), a cart and a purchase without a
/// session, no brand, no category code, a price of 0. None of them is an error: every row
/// reaches clean, and every user is a visitor of the day.
#[test]
fn rows_without_a_session_reach_clean_and_count_as_visitors() {
    let p = Project::new();
    install_daily(&p);
    p.write(
        "2019-Oct.csv",
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
         2019-10-01 00:00:04 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c\n\
         2019-10-01 00:00:05 UTC,view,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,541312140,\n\
         2019-10-01 00:00:06 UTC,view,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,\n\
         2019-10-01 00:01:00 UTC,cart,1307067,2053013558920217191,computers.notebook,lenovo,251.74,550050854,\n\
         2019-10-01 00:02:00 UTC,purchase,1307067,2053013558920217191,computers.notebook,lenovo,251.74,550050854,\n\
         2019-10-01 00:03:00 UTC,view,1004237,2053013555631882655,electronics.smartphone,apple,0,535871217,c6bd7419-2748-4c56-95b4-8cec9ff8b80d\n",
    );
    let r = p.run(&["ingest", "2019-Oct.csv"]);
    r.expect_code(0);
    assert!(r.stdout.contains("6 records (0 malformed"), "{}", r.stdout);
    p.run(&["run", "ecommerce_daily", "--date", "2019-10-01"]).expect_code(0);
    let clean = numbers(&summaries(&p, "clean")[0].1);
    assert_eq!((clean[0], clean[1], clean[2]), (6, 6, 0), "in, clean, quarantined: {clean:?}");
    let q = p.run(&[
        "sql",
        "--format",
        "csv",
        "SELECT unique_visitors, sessions, events, views, carts, purchases FROM daily_visitors WHERE dt = '2019-10-01'",
    ]);
    q.expect_code(0);
    assert_eq!(
        q.stdout.lines().nth(1),
        Some("4,2,6,4,1,1"),
        "4 users, 2 sessions (a null session is none), 6 events:\n{}",
        q.stdout
    );
    let n = p.run(&["sql", "--format", "csv", "SELECT count(*) FROM events WHERE user_session IS NULL"]);
    assert_eq!(n.stdout.lines().nth(1), Some("4"), "{}", n.stdout);
}

/// The shipped DAGs are what users copy: `cartflow validate dags/` in the repository passes
/// without a warning or an error (every task rendered with its params' defaults).
#[test]
fn validate_of_the_shipped_dags_is_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(cartflow_e2e::cartflow_bin())
        .current_dir(&root)
        .args(["validate", "dags/"])
        .output()
        .expect("cartflow validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(" 0 error(s)"), "{text}");
    let lower = text.to_lowercase();
    assert!(!lower.contains("warn") && !lower.contains("error:"), "validate printed a warning:\n{text}");
}
