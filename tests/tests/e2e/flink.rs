//! The Flink SQL generated from the streaming rules, run in a real Flink (PyFlink) and compared
//! with the local engine.

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
