//! The Flink SQL generated from the streaming rules, run in a real Flink (PyFlink) and compared
//! with the local engine: the filesystem-source script over a generated day, and the deployed
//! Kinesis script (connectors swapped) over out-of-order and late events.

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
            // A reprocess does not notify (it replaces alerts already sent), so the flag is the
            // rule's `notify_above` here; the deployed-SQL test below reads what the handler sent.
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

/// One event of the out-of-order fixture: seconds after 2019-10-01 10:00:00, type, product, user,
/// session.
#[derive(Clone)]
struct Ev {
    t: i64,
    kind: &'static str,
    product: String,
    user: String,
    session: String,
}

impl Ev {
    fn new(t: i64, kind: &'static str, product: impl ToString, user: impl ToString, session: impl ToString) -> Ev {
        Ev { t, kind, product: product.to_string(), user: user.to_string(), session: session.to_string() }
    }

    fn time(&self) -> String {
        let s = 10 * 3600 + self.t;
        format!("2019-10-01 {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
    }

    /// A Kaggle CSV line (what `cartflow produce --input` replays).
    fn csv(&self) -> String {
        format!(
            "{},{},{},2053013555631882655,electronics.smartphone,acme,9.99,{},{}\n",
            self.time(),
            self.kind,
            self.product,
            self.user,
            self.session
        )
    }

    /// The JSON record the producer puts on stream1 for that line (every field a string).
    fn json(&self) -> String {
        serde_json::json!({
            "event_time": self.time(), "event_type": self.kind, "product_id": self.product,
            "category_id": "2053013555631882655", "category_code": "electronics.smartphone", "brand": "acme",
            "price": "9.99", "user_id": self.user, "user_session": self.session,
        })
        .to_string()
            + "\n"
    }
}

/// Events in arrival order: sorted by event time plus a jitter of 0-3 s (seeded), so events
/// arrive out of order within every shard and across shards, but never later than the smallest
/// watermark delay of RULES (5 s) allows: none of them is late, whatever the shards' interleaving.
fn arrival_order(mut evs: Vec<Ev>, seed: &mut u64) -> Vec<Ev> {
    let mut keyed: Vec<(i64, usize, Ev)> = evs
        .drain(..)
        .enumerate()
        .map(|(i, e)| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((e.t * 1000) + (*seed >> 33) as i64 % 3001, i, e)
        })
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

/// The id of background user `u` (ids like the real file's: short ones all hash to one shard).
fn user(u: i64) -> i64 {
    541_000_000 + u * 104_729
}

/// 40 users browsing from `from` to `to` (seconds), a few events a minute each.
fn background(from: i64, to: i64, seed: &mut u64) -> Vec<Ev> {
    let mut out = Vec::new();
    for u in 0..40i64 {
        let mut t = from + (u * 7) % 30;
        while t < to {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = *seed >> 33;
            let kind = if r.is_multiple_of(10) { "cart" } else { "view" };
            out.push(Ev::new(t, kind, 2000 + r % 300, user(u), format!("s{u}")));
            t += 20 + (r % 25) as i64;
        }
    }
    out
}

#[test]
fn the_deployed_kinesis_sql_with_only_its_connectors_swapped_gives_the_local_engines_alerts_on_out_of_order_and_late_events()
 {
    let Some(python) = flink_python() else { return };
    let p = Project::new();
    p.write("streaming/rules/conf.yaml", RULES);
    let mut seed = 7u64;

    // On time (the first 30 minutes): background traffic and one burst per rule.
    let mut first = background(0, 1800, &mut seed);
    first.extend((0..30).map(|i| Ev::new(300 + i / 3, "view", 3000 + i % 5, 560000101, "sb1"))); // ddos: 30
    first.extend((0..150).map(|i| Ev::new(480 + i / 15, "view", 3000 + i % 5, 560000102, "sb2"))); // ddos: 150, notifies
    first.extend((0..20).map(|i| Ev::new(720 + i, "view", 4000 + i, 560000103, "scan1"))); // session_scan: 20 distinct
    first.extend((0..6).map(|i| Ev::new(900 + i, "cart", 5000, user(i), format!("s{i}")))); // hot_product: 6
    first.extend((0..10).map(|i| Ev::new(1200 + i / 2, "view", 3000, 560000104, "sb4"))); // 10: below the threshold
    let first = arrival_order(first, &mut seed);

    // Then late events, far behind every shard's watermark: each would change an alert if it were
    // counted (user ...101's window 30 -> 40; ...104's window 10 -> 25, above the threshold; product 5001
    // would get 5 carts). Then more traffic on time, with a last burst.
    let mut late = Vec::new();
    late.extend((0..10).map(|_| Ev::new(303, "view", 3001, 560000101, "sb1")));
    late.extend((0..15).map(|i| Ev::new(1201 + i % 4, "view", 3000, 560000104, "sb4")));
    late.extend((0..5).map(|i| Ev::new(600, "cart", 5001, user(10 + i), format!("s{}", 10 + i))));
    let mut more = background(1800, 1920, &mut seed);
    more.extend((0..25).map(|i| Ev::new(1850 + i / 4, "view", 3002, 560000105, "sb5"))); // ddos: 25
    let second: Vec<Ev> = late.into_iter().chain(arrival_order(more, &mut seed)).collect();

    let header = format!("{}\n", cartflow_jobs::event::COLUMNS.join(","));
    p.write("first.csv", &(header.clone() + &first.iter().map(Ev::csv).collect::<String>()));
    p.write("second.csv", &(header + &second.iter().map(Ev::csv).collect::<String>()));
    let flink_src = p.path().join("flink_src");
    std::fs::create_dir_all(&flink_src).expect("mkdir");
    std::fs::write(flink_src.join("part.json"), first.iter().chain(&second).map(Ev::json).collect::<String>())
        .expect("fixture");

    // The local engine, as the stage runs it: the events produced into 4 shards, the detector
    // consuming the first part, then the second (the late events reach a detector whose every
    // shard is 30 minutes ahead of them), then the day closed.
    p.run(&["produce", "--input", "first.csv", "--shards", "4"]).expect_code(0);
    p.run(&["streaming", "run", "--rules", "streaming/rules/conf.yaml"]).expect_code(0);
    let offsets = p.read(".cartflow/streaming/streams/stream1/checkpoints/detector.ckpt");
    let offsets: Vec<u64> = serde_json::from_str(offsets.lines().next().expect("offsets")).expect("offsets");
    assert!(offsets.len() == 4 && offsets.iter().all(|&n| n > 100), "every shard has events: {offsets:?}");
    p.run(&["produce", "--input", "second.csv"]).expect_code(0);
    let run = p.run(&["streaming", "run", "--rules", "streaming/rules/conf.yaml", "--close", "2019-10-01"]);
    run.expect_code(0);
    let late_of = |rule: &str| -> u64 {
        let line =
            run.stdout.lines().find(|l| l.trim_start().starts_with(&format!("rule {rule}:"))).expect("rule line");
        line.split(", ").find_map(|f| f.strip_suffix(" late")).and_then(|n| n.parse().ok()).expect("late count")
    };
    assert_eq!(
        late_of("ddos_user_burst"),
        10 + 15 + 5,
        "every late event is late for the local engine:\n{}",
        run.stdout
    );
    assert_eq!(late_of("hot_product"), 5, "{}", run.stdout);
    let local = p.run(&["alerts", "--json"]);
    local.expect_code(0);
    let mut got: Vec<Row> = local
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            // Whether the local alert handler notified it: the engine's decision, not a formula.
            row(&v, v["notified"].as_bool().expect("notified"))
        })
        .collect();
    got.sort();

    // Flink: the statements the aws backend deploys (Kinesis source and sink, as `streaming sql`
    // prints them and as the stage bundles them: see aws_batch's stage test), with only their
    // connector clauses swapped for a filesystem source over the same events in arrival order.
    let deployed = p.run(&[
        "streaming",
        "sql",
        "streaming/rules/conf.yaml",
        "--stream1",
        "shop-stream1",
        "--stream2",
        "shop-stream2",
        "--region",
        "eu-west-1",
    ]);
    deployed.expect_code(0);
    let swapped = swap_kinesis_connectors(&deployed.stdout, &flink_src, &p.path().join("flink_sink"));
    assert_eq!(
        without_connectors(&swapped),
        without_connectors(&deployed.stdout),
        "nothing but the connector clauses differs"
    );
    assert!(
        !swapped.contains("'kinesis'") && deployed.stdout.matches("'connector' = 'kinesis'").count() == 3,
        "{swapped}"
    );
    p.write("swapped.sql", &swapped);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/flink_conformance.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(p.path().join("swapped.sql"))
        .arg(p.path().join("flink.json"))
        .output()
        .expect("run pyflink");
    assert!(out.status.success(), "flink failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let flink: Vec<serde_json::Value> = serde_json::from_str(&p.read("flink.json")).expect("flink output");
    let mut want: Vec<Row> = flink.iter().map(|v| row(v, v["notify"].as_bool().expect("notify"))).collect();
    want.sort();

    // What the fixture is made to give, so that an engine counting the late events differs.
    let alert = |rule: &str, key: &str| {
        got.iter().filter(|r| r.0 == rule && r.1 == key).map(|r| (r.2.clone(), r.5, r.7)).collect::<Vec<_>>()
    };
    assert_eq!(
        alert("ddos_user_burst", "560000101"),
        [("2019-10-01 10:05:00".to_string(), 30, false)],
        "late events not counted"
    );
    assert_eq!(alert("ddos_user_burst", "560000102"), [("2019-10-01 10:08:00".to_string(), 150, true)]);
    assert_eq!(alert("ddos_user_burst", "560000104"), [], "late events do not make a window fire");
    assert_eq!(alert("ddos_user_burst", "560000105"), [("2019-10-01 10:30:50".to_string(), 25, false)]);
    assert_eq!(alert("session_scan", "scan1").len(), 3, "the three 1-minute windows over the 20 views");
    assert_eq!(alert("hot_product", "5000"), [("2019-10-01 10:15:00".to_string(), 6, true)]);
    assert_eq!(alert("hot_product", "5001"), []);
    assert_eq!(got, want, "Flink and the local engine give identical alerts");
}

/// Replaces each `WITH (…)` clause of a Kinesis table with a filesystem one: the sources read
/// `src`, the sink writes `sink`. Everything else stays as generated.
fn swap_kinesis_connectors(sql: &str, src: &Path, sink: &Path) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(" WITH (\n  'connector' = 'kinesis'") {
        let end = at + rest[at..].find("\n);").expect("end of WITH");
        let table = rest[..at].rsplit("CREATE TABLE ").next().unwrap_or("");
        let (path, extra) =
            if table.starts_with("stream2") { (sink, "") } else { (src, ",\n  'json.ignore-parse-errors' = 'true'") };
        out.push_str(&rest[..at]);
        out.push_str(&format!(
            " WITH (\n  'connector' = 'filesystem',\n  'path' = '{}',\n  'format' = 'json'{extra}",
            path.display()
        ));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The script with its `WITH (…)` clauses removed.
fn without_connectors(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(" WITH (\n") {
        out.push_str(&rest[..at]);
        rest = &rest[at + rest[at..].find("\n);").expect("end of WITH")..];
    }
    out.push_str(rest);
    out
}
