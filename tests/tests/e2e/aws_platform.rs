//! The AWS platform's code outside Rust: the PySpark Glue job under a real local Spark,
//! compared with the local job; the CloudFormation of infra/ linted and deployed to moto.

use std::io::Write;
use std::process::Command;

use cartflow_e2e::Project;

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Raw lines that exercise every rule of clean_events, and the corners where Spark and Rust
/// could disagree (white space, signs, number spellings, calendars, -0.0, duplicates).
fn edge_lines() -> Vec<String> {
    let ev = |t: &str, ty: &str, p: &str, c: &str, price: &str, u: &str, s: &str| {
        serde_json::json!({
            "event_time": t, "event_type": ty, "product_id": p, "category_id": c,
            "category_code": "electronics.smartphone", "brand": " apple ", "price": price,
            "user_id": u, "user_session": s,
        })
        .to_string()
    };
    let ok = "2019-10-01 10:00:00 UTC";
    let mut v = vec![
        ev(ok, "  view  ", "1", "2", "10.5", "7", "s-1"),
        ev(ok, "\u{a0}cart\u{a0}", "+5", "2", "1e2", "7", "s-2"),
        ev("2019-10-01T11:00:00Z", "purchase", "-3", "2", ".5", "7", "s-3"),
        ev("2019-10-01 12:00:00", "view", "1", "2", "5.", "7", "s-4"),
        ev(ok, "view", "1", "2", "-0.0", "7", "s-5"),
        ev(ok, "view", "1", "2", "0.0", "7", "s-5"),
        ev(ok, "view", "1", "2", "0x1p3", "7", "s-6"),
        ev(ok, "view", "1", "2", "1.5d", "7", "s-6"),
        ev(ok, "view", "1", "2", "inf", "7", "s-6"),
        ev(ok, "view", "1", "2", "1e999", "7", "s-6"),
        ev(ok, "view", "1", "2", "-1", "7", "s-6"),
        ev(ok, "view", "1", "2", "", "7", "s-6"),
        ev("2019-02-30 10:00:00", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-01 24:00:00", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-01 10:00:00  UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-05 10:00:00 UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-09-30 00:00:00 UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("   ", "view", "1", "2", "1", "7", "s-7"),
        ev(ok, "click", "1", "2", "1", "7", "s-8"),
        ev(ok, "", "1", "2", "1", "7", "s-8"),
        ev(ok, "view", "1.0", "2", "1", "7", "s-8"),
        ev(ok, "view", "1", "99999999999999999999", "1", "7", "s-8"),
        ev(ok, "view", "1", "2", "1", "7x", "s-8"),
        ev(ok, "view", "1", "2", "1", "", "s-8"),
        ev(ok, "view", "1", "2", "1", "7", "  "),
        ev(ok, "view", "1", "", "1", "7", "s-8"),
        ev(ok, "view", "", "2", "1", "7", "s-8"),
        "not json at all".to_string(),
        "[1, 2, 3]".to_string(),
    ];
    // Exact duplicates (after trimming and typing) of the first row.
    v.push(ev(ok, "view", "1", "2", "10.5", "7", "s-1"));
    v.push(ev(" 2019-10-01 10:00:00 UTC", "view", "01", "2", "10.50", "7", "s-1"));
    v
}

#[test]
fn the_pyspark_clean_events_job_equals_the_local_job_row_for_row() {
    let Some(python) = cartflow_e2e::venv_python_with("pyspark") else { return };
    let p = Project::new();
    p.run(&[
        "generate",
        "--days",
        "1",
        "--events-per-day",
        "3000",
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--seed",
        "4",
        "--malformed-rate",
        "0.05",
    ])
    .expect_code(0);
    let edge = p.path().join(".cartflow/lake/raw/events/dt=2019-10-01/hour=10/edge-cases.json.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&edge).expect("edge"), flate2::Compression::fast());
    for line in edge_lines() {
        writeln!(gz, "{line}").expect("write");
    }
    gz.finish().expect("gzip");
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ntasks:\n  - id: compact\n    kind: polars_job\n    job: compact\n  - id: clean\n    kind: glue_job\n    depends_on: compact\n    job_name: ecommerce-clean-events\n    local: clean_events\n",
    );
    p.run(&["run", "c", "--date", "2019-10-01"]).expect_code(0);

    let out = p.path().join("spark");
    let spark = Command::new(&python)
        .arg(repo("glue-scripts/clean_events.py"))
        .args(["--date", "2019-10-01", "--staged"])
        .arg(p.path().join(".cartflow/lake/staged/events"))
        .arg("--clean")
        .arg(out.join("clean/events"))
        .arg("--quarantine")
        .arg(out.join("quarantine/events"))
        .env("PYSPARK_PYTHON", &python)
        .output()
        .expect("spark");
    let stdout = String::from_utf8_lossy(&spark.stdout);
    assert!(spark.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&spark.stderr));
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the job's JSON report");
    let n = |k: &str| report[k].as_u64().expect("count");
    assert_eq!(n("rows_in"), n("clean") + n("quarantined") + n("duplicates"), "{report}");
    assert!(n("duplicates") >= 2, "{report}");

    let cmp = Command::new(&python)
        .arg(repo("tests/python/compare_clean.py"))
        .arg(p.path().join(".cartflow/lake"))
        .arg(&out)
        .arg("2019-10-01")
        .output()
        .expect("compare");
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(cmp.status.success(), "the outputs differ:\n{text}{}", String::from_utf8_lossy(&cmp.stderr));
    // Every rule was exercised.
    for reason in [
        "unparsable_record",
        "missing_event_time",
        "bad_event_time",
        "implausible_event_time",
        "missing_event_type",
        "unknown_event_type",
        "missing_product_id",
        "bad_product_id",
        "missing_category_id",
        "bad_category_id",
        "missing_user_id",
        "bad_user_id",
        "missing_user_session",
        "missing_price",
        "bad_price",
        "negative_price",
    ] {
        assert!(text.contains(reason), "{reason} not exercised: {text}");
    }
}
