//! Flink SQL from the rules: what the AWS backend deploys to Managed Service for Apache Flink,
//! and, with a filesystem source over the raw zone, the batch reprocessing job.
//!
//! One source table per distinct (clock, watermark delay) — Flink allows one watermark per
//! table —, the stream2 sink, and one `INSERT` per rule in one statement set:
//!
//! ```sql
//! INSERT INTO stream2
//! SELECT 'ddos_user_burst', 'high', 'user_id', user_id, DATE_FORMAT(window_start, ...), ...,
//!        COUNT(*), CAST(20 AS BIGINT), COUNT(*) > 100
//! FROM TABLE(TUMBLE(TABLE events_event_time_5s, DESCRIPTOR(ts), INTERVAL '10' SECOND))
//! WHERE user_id IS NOT NULL
//! GROUP BY window_start, window_end, user_id
//! HAVING COUNT(*) > 20;
//! ```
//!
//! Every field is read as `STRING` (Flink's JSON format turns numbers into their text), so keys
//! compare as the local engine compares them. An unreadable `event_time` becomes the epoch:
//! such a row is late and dropped, as the local engine drops it. Ingest-time rules window on
//! Kinesis' arrival timestamp (`METADATA FROM 'timestamp'`); a filesystem source has none, so
//! they run on processing time there.

use std::fmt::Write as _;

use crate::rules::{Aggregate, Rule, RuleSet, TimeField};

/// Where the events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Kinesis stream1.
    Kinesis {
        /// Stream name.
        stream: String,
        /// Region.
        region: String,
    },
    /// The raw zone (`.../raw/events/`, Hive partitions `dt`, `hour`), for reprocessing.
    Filesystem {
        /// The folder or `s3://` prefix of `raw/events`.
        path: String,
        /// Only these dates (`dt` from, to; inclusive).
        dates: Option<(String, String)>,
    },
}

/// Where the alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// Kinesis stream2 (the alert handler's event source).
    Kinesis {
        /// Stream name.
        stream: String,
        /// Region.
        region: String,
    },
    /// JSON files in a folder or `s3://` prefix.
    Filesystem {
        /// The folder.
        path: String,
    },
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn interval(ms: i64) -> String {
    format!("INTERVAL '{}' SECOND", ms / 1000)
}

/// The name of the source table of a (clock, delay).
fn table_name(time: TimeField, delay_ms: i64) -> String {
    match time {
        TimeField::EventTime => format!("events_event_time_{}s", delay_ms / 1000),
        TimeField::IngestTime => format!("events_ingest_time_{}s", delay_ms / 1000),
    }
}

fn source_ddl(out: &mut String, time: TimeField, delay_ms: i64, source: &SourceKind) {
    let name = table_name(time, delay_ms);
    let _ = writeln!(out, "CREATE TABLE {name} (");
    for c in cartflow_jobs::event::COLUMNS {
        let _ = writeln!(out, "  `{c}` STRING,");
    }
    let _ = writeln!(
        out,
        "  ts AS COALESCE(TO_TIMESTAMP(REPLACE(`event_time`, ' UTC', ''), 'yyyy-MM-dd HH:mm:ss'), TIMESTAMP '1970-01-01 00:00:00'),"
    );
    let partitioned = matches!(source, SourceKind::Filesystem { .. });
    if partitioned {
        let _ = writeln!(out, "  dt STRING,\n  `hour` STRING,");
    }
    match (time, source) {
        (TimeField::EventTime, _) => {
            let _ = writeln!(out, "  WATERMARK FOR ts AS ts - {}", interval(delay_ms));
        }
        (TimeField::IngestTime, SourceKind::Kinesis { .. }) => {
            let _ = writeln!(out, "  ingest_time TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,");
            let _ = writeln!(out, "  WATERMARK FOR ingest_time AS ingest_time - {}", interval(delay_ms));
        }
        (TimeField::IngestTime, SourceKind::Filesystem { .. }) => {
            let _ = writeln!(out, "  ingest_time AS PROCTIME()");
        }
    }
    out.push(')');
    if partitioned {
        out.push_str(" PARTITIONED BY (dt, `hour`)");
    }
    out.push_str(" WITH (\n");
    match source {
        SourceKind::Kinesis { stream, region } => {
            let _ = writeln!(out, "  'connector' = 'kinesis',");
            let _ = writeln!(out, "  'stream' = {},", quote(stream));
            let _ = writeln!(out, "  'aws.region' = {},", quote(region));
            let _ = writeln!(out, "  'scan.stream.initpos' = 'LATEST',");
        }
        SourceKind::Filesystem { path, .. } => {
            let _ = writeln!(out, "  'connector' = 'filesystem',");
            let _ = writeln!(out, "  'path' = {},", quote(path));
        }
    }
    let _ = writeln!(out, "  'format' = 'json',");
    let _ = writeln!(out, "  'json.ignore-parse-errors' = 'true'");
    let _ = writeln!(out, ");\n");
}

/// The `CREATE TABLE stream2` statement.
fn sink_ddl(out: &mut String, sink: &SinkKind) {
    out.push_str(
        "CREATE TABLE stream2 (\n  `rule` STRING,\n  severity STRING,\n  key_field STRING,\n  `key` STRING,\n  window_start STRING,\n  window_end STRING,\n  first_event STRING,\n  `value` BIGINT,\n  threshold BIGINT,\n  notify BOOLEAN\n)",
    );
    match sink {
        SinkKind::Kinesis { stream, region } => {
            let _ = write!(
                out,
                " PARTITIONED BY (`key`) WITH (\n  'connector' = 'kinesis',\n  'stream' = {},\n  'aws.region' = {},\n  'format' = 'json'\n);\n\n",
                quote(stream),
                quote(region)
            );
        }
        SinkKind::Filesystem { path } => {
            let _ = write!(
                out,
                " WITH (\n  'connector' = 'filesystem',\n  'path' = {},\n  'format' = 'json'\n);\n\n",
                quote(path)
            );
        }
    }
}

/// The `SELECT` of one rule (what its `INSERT INTO stream2` inserts).
pub fn rule_select(r: &Rule, source: &SourceKind) -> String {
    let table = table_name(r.time, r.watermark_delay_ms);
    let col = match (r.time, source) {
        (TimeField::EventTime, _) => "ts",
        (TimeField::IngestTime, _) => "ingest_time",
    };
    let tvf = if r.window.is_hopping() {
        format!(
            "HOP(TABLE {table}, DESCRIPTOR({col}), {}, {})",
            interval(r.window.slide_ms),
            interval(r.window.size_ms)
        )
    } else {
        format!("TUMBLE(TABLE {table}, DESCRIPTOR({col}), {})", interval(r.window.size_ms))
    };
    let agg = match &r.aggregate {
        Aggregate::Count => "COUNT(*)".to_string(),
        Aggregate::CountDistinct(f) => format!("COUNT(DISTINCT `{f}`)"),
    };
    let mut wh = vec![format!("`{}` IS NOT NULL", r.key)];
    if !r.event_types.is_empty() {
        wh.push(format!("`event_type` IN ({})", r.event_types.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")));
    }
    if let SourceKind::Filesystem { dates: Some((from, to)), .. } = source {
        wh.push(format!("dt BETWEEN {} AND {}", quote(from), quote(to)));
    }
    format!(
        "SELECT\n  {rule} AS `rule`,\n  {sev} AS severity,\n  {kf} AS key_field,\n  `{key}` AS `key`,\n  DATE_FORMAT(window_start, 'yyyy-MM-dd HH:mm:ss') AS window_start_text,\n  DATE_FORMAT(window_end, 'yyyy-MM-dd HH:mm:ss') AS window_end_text,\n  DATE_FORMAT(MIN(ts), 'yyyy-MM-dd HH:mm:ss') AS first_event_text,\n  {agg} AS `value`,\n  CAST({th} AS BIGINT) AS threshold,\n  {agg} > {na} AS notify\nFROM TABLE({tvf})\nWHERE {wh}\nGROUP BY window_start, window_end, `{key}`\nHAVING {agg} > {th}",
        rule = quote(&r.name),
        sev = quote(r.severity.as_str()),
        kf = quote(&r.key),
        key = r.key,
        th = r.threshold,
        na = r.notify_above,
        wh = wh.join(" AND "),
    )
}

/// The whole Flink SQL script for a rule set.
pub fn generate(rules: &RuleSet, source: &SourceKind, sink: &SinkKind, origin: &str) -> String {
    let mut out = String::new();
    let src = match source {
        SourceKind::Kinesis { .. } => "kinesis",
        SourceKind::Filesystem { .. } => "filesystem",
    };
    let _ = writeln!(
        out,
        "-- Generated by `cartflow streaming sql` from {origin} (source: {src}). Do not edit: edit the rules."
    );
    let _ = writeln!(out, "SET 'table.local-time-zone' = 'UTC';\n");
    let mut tables: Vec<(TimeField, i64)> = Vec::new();
    for r in &rules.rules {
        if !tables.contains(&(r.time, r.watermark_delay_ms)) {
            tables.push((r.time, r.watermark_delay_ms));
            source_ddl(&mut out, r.time, r.watermark_delay_ms, source);
        }
    }
    sink_ddl(&mut out, sink);
    out.push_str("EXECUTE STATEMENT SET\nBEGIN\n");
    for r in &rules.rules {
        let _ = writeln!(out, "-- rule {}: {}", r.name, r.description.replace('\n', " "));
        let _ = writeln!(out, "INSERT INTO stream2\n{};", rule_select(r, source));
    }
    out.push_str("END;\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_rule_becomes_a_tumbling_window_insert() {
        let set =
            RuleSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ddos.yaml")).expect("rules");
        let sql = generate(
            &set,
            &SourceKind::Kinesis { stream: "cartflow-stream1".into(), region: "eu-west-1".into() },
            &SinkKind::Kinesis { stream: "cartflow-stream2".into(), region: "eu-west-1".into() },
            "rules/ddos.yaml",
        );
        assert!(sql.contains("WATERMARK FOR ts AS ts - INTERVAL '5' SECOND"), "{sql}");
        assert!(
            sql.contains("FROM TABLE(TUMBLE(TABLE events_event_time_5s, DESCRIPTOR(ts), INTERVAL '10' SECOND))"),
            "{sql}"
        );
        assert!(sql.contains("HAVING COUNT(*) > 20;"), "{sql}");
        assert!(sql.contains("COUNT(*) > 100 AS notify"), "{sql}");
        assert!(sql.contains("'stream' = 'cartflow-stream1'"), "{sql}");
        assert!(sql.contains("PARTITIONED BY (`key`)"), "{sql}");

        let bug = RuleSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ddos_seed_bug.yaml"))
            .expect("rules");
        let sql = generate(
            &bug,
            &SourceKind::Filesystem {
                path: "s3://lake/raw/events".into(),
                dates: Some(("2019-10-01".into(), "2019-10-02".into())),
            },
            &SinkKind::Filesystem { path: "/tmp/out".into() },
            "x",
        );
        assert!(sql.contains("ingest_time AS PROCTIME()"), "{sql}");
        assert!(sql.contains("dt BETWEEN '2019-10-01' AND '2019-10-02'"), "{sql}");
        assert!(sql.contains("PARTITIONED BY (dt, `hour`)"), "{sql}");
    }

    #[test]
    fn hopping_and_distinct_rules() {
        let src = "rules:\n  - name: scan\n    key: user_session\n    window: { size: 1m, slide: 10s }\n    aggregate: count_distinct(product_id)\n    event_types: [view, cart]\n    threshold: 30\n";
        let set = RuleSet::parse(src, "r.yaml").expect("rules");
        let s = rule_select(&set.rules[0], &SourceKind::Filesystem { path: "p".into(), dates: None });
        assert!(
            s.contains("HOP(TABLE events_event_time_5s, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '60' SECOND)"),
            "{s}"
        );
        assert!(s.contains("COUNT(DISTINCT `product_id`)"), "{s}");
        assert!(s.contains("`event_type` IN ('view', 'cart')"), "{s}");
    }
}
