//! Parsing `checks:` and running each check on staged Parquet.

use std::collections::BTreeMap;

use std::sync::Arc;

use cartflow_jobs::sql::arrow::array::{ArrayRef, Int64Array, StringArray};
use cartflow_jobs::sql::arrow::record_batch::RecordBatch;

use super::*;
use crate::yaml;

fn parse_as(yaml_text: &str, publishes: Publishes) -> (Vec<Check>, Vec<Problem>) {
    let node = yaml::parse(yaml_text).expect("yaml");
    let params: BTreeMap<String, String> = [("n".to_string(), "1".to_string())].into();
    parse(&node, "clean", "glue_job", publishes, &params)
}

fn problems_text(p: &[Problem]) -> String {
    p.iter()
        .map(|p| {
            format!("{}: {}{}", p.pos, p.message, p.hint.as_deref().map(|h| format!(" [{h}]")).unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_check_kind_parses_with_its_default_name() {
    let (checks, problems) = parse_as(
        "- row_count: {min: 1, max: 10}\n\
         - row_count_change: {max_pct: 50}\n  severity: warn\n\
         - not_null: [user_id, event_time]\n\
         - unique: [user_session]\n  name: sessions_unique\n\
         - accepted_values: {event_type: [view, cart], brand: [a]}\n\
         - freshness: {column: event_time, max_age: 2h}\n\
         - quarantine_rate: {max_pct: 5}\n\
         - sql: \"SELECT * FROM {{ this }} WHERE price < {{ params.n }}\"\n",
        Publishes::TableWithQuarantine,
    );
    assert_eq!(problems_text(&problems), "");
    let names: Vec<(&str, Severity)> = checks.iter().map(|c| (c.name.as_str(), c.severity)).collect();
    assert_eq!(
        names,
        vec![
            ("row_count", Severity::Error),
            ("row_count_change", Severity::Warn),
            ("not_null(user_id,event_time)", Severity::Error),
            ("sessions_unique", Severity::Error),
            ("accepted_values(event_type)", Severity::Error),
            ("accepted_values(brand)", Severity::Error),
            ("freshness(event_time)", Severity::Error),
            ("quarantine_rate", Severity::Error),
            ("sql", Severity::Error),
        ]
    );
    assert_eq!(checks[0].spec, Spec::RowCount { min: Some(1), max: Some(10) });
    assert_eq!(checks[6].spec, Spec::Freshness { column: "event_time".into(), max_age: Duration::from_secs(7200) });
}

#[test]
fn every_problem_of_a_checks_block_is_reported_with_the_task() {
    let (checks, problems) = parse_as(
        "- row_count: {min: -1}\n\
         - row_count: {min: 5, max: 2}\n\
         - row_count: {minimum: 1}\n\
         - row_count_change: {max_pct: lots}\n\
         - quarantine_rate: {max_pct: 150}\n\
         - not_nul: [user_id]\n\
         - not_null: []\n\
         - unique: ['a b']\n\
         - accepted_values: [view]\n\
         - freshness: {column: event_time, max_age: soon}\n\
         - sql: 'DROP TABLE {{ this }}'\n\
         - sql: 'SELECT 1 WHERE x = {{ nope }}'\n\
         - not_null: [a]\n  severity: fatal\n\
         - row_count: {min: 1}\n  not_null: [a]\n\
         - {}\n\
         - not_null: [a]\n\
         - not_null: [a]\n",
        Publishes::TableWithQuarantine,
    );
    assert_eq!(checks.len(), 1, "only the valid check is kept: {checks:?}");
    assert_eq!(checks[0].name, "not_null(a)");
    insta::assert_snapshot!(problems_text(&problems));
}

#[test]
fn checks_are_refused_where_nothing_is_published_and_quarantine_rate_where_nothing_is_quarantined() {
    let (_, problems) = parse_as("- row_count: {min: 1}\n", Publishes::Nothing);
    assert!(problems_text(&problems).contains("task `clean`: `checks`: a task of kind `glue_job` publishes no table"));
    let (checks, problems) = parse_as("- quarantine_rate: {max_pct: 5}\n", Publishes::Table);
    assert!(checks.is_empty());
    assert!(problems_text(&problems).contains("quarantines no rows"), "{}", problems_text(&problems));
}

#[test]
fn this_and_previous_are_replaced_whatever_their_spacing_and_nothing_else_is() {
    assert_eq!(substitute("SELECT * FROM {{this}} JOIN {{  previous }}", "t", "p"), "SELECT * FROM t JOIN p");
    assert_eq!(substitute("a {{ ds }} {{ params.this }} {{ this", "t", "p"), "a {{ ds }} {{ params.this }} {{ this");
}

/// A lake with a staged folder of 6 rows (one null user, one duplicate session, one unknown
/// event type), a previous partition of 4 rows and a quarantine of 2 rows.
fn staged() -> (tempfile::TempDir, Staged) {
    let dir = tempfile::tempdir().expect("tmp");
    let lake = dir.path().join("lake");
    let write = |rel: &str, columns: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let p = lake.join(rel).join("part-00000.parquet");
        cartflow_jobs::sql::write_parquet(&p, batch.schema(), &[batch]).expect("write");
    };
    let strs = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let times: Vec<String> = (0..6).map(|h| format!("2019-10-01 {:02}:00:00", 18 + h)).collect();
    write(
        ".staging/events__dt=2019-10-02.1.tmp",
        vec![
            (
                "user_id",
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4), Some(5), Some(6)])) as ArrayRef,
            ),
            ("user_session", strs(&["a", "b", "c", "c", "e", "f"])),
            ("event_type", strs(&["view", "view", "cart", "click", "view", "purchase"])),
            ("event_time", Arc::new(StringArray::from(times)) as ArrayRef),
        ],
    );
    write("events/dt=2019-10-01", vec![("user_id", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef)]);
    write(".staging/q__dt=2019-10-02.1.tmp", vec![("reason", strs(&["bad_price", "bad_price"]))]);
    let staged = Staged {
        dir: lake.join(".staging/events__dt=2019-10-02.1.tmp"),
        partition: Some(("dt".into(), "2019-10-02".into())),
        previous: Some(lake.join("events/dt=2019-10-01")),
        quarantine: Some(lake.join(".staging/q__dt=2019-10-02.1.tmp")),
    };
    (dir, staged)
}

async fn results(yaml_text: &str) -> Vec<CheckResult> {
    let (dir, staged) = staged();
    let (checks, problems) = parse_as(yaml_text, Publishes::TableWithQuarantine);
    assert_eq!(problems_text(&problems), "");
    let interval =
        crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let ctx = template::Context::new("d", "r", &interval, &BTreeMap::new());
    let lake = dir.path().join("lake");
    local::run(&lake, &dir.path().join("catalog.db"), &checks, &staged, &ctx, interval.end).await.expect("checks ran")
}

fn verdicts(r: &[CheckResult]) -> Vec<(String, bool)> {
    r.iter().map(|r| (r.name.clone(), r.passed)).collect()
}

#[tokio::test]
async fn each_check_passes_or_fails_on_what_the_staged_rows_hold() {
    let r = results(
        "- row_count: {min: 6, max: 6}\n\
         - {row_count: {min: 7}, name: too_few}\n\
         - row_count_change: {max_pct: 50}\n\
         - {row_count_change: {max_pct: 49}, name: change_49}\n\
         - not_null: [user_session]\n\
         - not_null: [user_id]\n\
         - unique: [user_id]\n\
         - unique: [user_session]\n\
         - accepted_values: {event_type: [view, cart, purchase, click]}\n\
         - {accepted_values: {event_type: [view, cart, purchase]}, name: types}\n\
         - freshness: {column: event_time, max_age: 1h}\n\
         - {freshness: {column: event_time, max_age: 30m}, name: fresh_30m}\n\
         - quarantine_rate: {max_pct: 25}\n\
         - {quarantine_rate: {max_pct: 24}, name: rate_24}\n\
         - sql: \"SELECT * FROM {{ this }} WHERE dt <> '{{ ds }}'\"\n\
         - {sql: \"SELECT user_id FROM {{ this }} WHERE user_id > 4 ORDER BY user_id;\", name: big_users}\n\
         - {not_null: [no_such_column], name: broken}\n\
         - {accepted_values: {user_id: [1, 2, 4, 5, 6]}, name: users_known}\n\
         - {sql: \"SELECT user_id FROM {{ this }}\", name: all_rows}\n\
         - {sql: \"SELECT t.n, p.n AS prev_n FROM (SELECT count(*) AS n FROM {{ this }}) t CROSS JOIN (SELECT count(*) AS n FROM {{ previous }} WHERE dt = '2019-10-01') p WHERE t.n > p.n\", name: grew}\n",
    )
    .await;
    // 6 rows against 4: +50%. The newest row is 23:00, the interval ends at 00:00 the next day.
    // 2 of 8 rows quarantined: 25%. The staged rows have their partition column.
    let expected = [
        ("row_count", true),
        ("too_few", false),
        ("row_count_change", true),
        ("change_49", false),
        ("not_null(user_session)", true),
        ("not_null(user_id)", false),
        ("unique(user_id)", true),
        ("unique(user_session)", false),
        ("accepted_values(event_type)", true),
        ("types", false),
        ("freshness(event_time)", true),
        ("fresh_30m", false),
        ("quarantine_rate", true),
        ("rate_24", false),
        ("sql", false),
        ("big_users", false),
        ("broken", false),
        ("users_known", true),
        ("all_rows", false),
        ("grew", false),
    ];
    let want: Vec<(String, bool)> = expected.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    // `sql` fails: the staged rows' dt is 2019-10-02, the run's ds 2019-10-01.
    assert_eq!(verdicts(&r), want, "{r:#?}");
    let by = |n: &str| r.iter().find(|x| x.name == n).expect(n);
    assert_eq!(by("too_few").detail, "6 rows staged; at least 7 required");
    assert_eq!(by("change_49").detail, "6 rows staged against 4 in dt=2019-10-01: +50.0%; at most ±49% allowed");
    assert_eq!(
        by("not_null(user_id)").sample,
        vec!["user_id=NULL, user_session=c, event_type=cart, event_time=2019-10-01 20:00:00, dt=2019-10-02"]
    );
    assert_eq!(by("unique(user_session)").sample, vec!["user_session=c, copies=2"]);
    assert_eq!(by("types").sample, vec!["event_type=click, rows=1"]);
    assert_eq!(by("rate_24").detail, "2 of 8 rows quarantined (25.0%); at most 24% allowed");
    assert_eq!(by("rate_24").sample, vec!["reason=bad_price, rows=2"]);
    assert_eq!(by("big_users").detail, "the query returned 2 rows (it must return none)");
    assert_eq!(by("big_users").sample, vec!["user_id=5", "user_id=6"]);
    assert_eq!(by("grew").sample, vec!["n=6, prev_n=4"], "the previous partition, with its dt");
    assert_eq!(by("all_rows").sample.len(), SAMPLE_ROWS, "a sample, not every failing row");
    assert!(by("broken").detail.starts_with("the check's query failed:"), "{}", by("broken").detail);
    assert!(by("fresh_30m").detail.contains("newest event_time 2019-10-01 23:00:00"), "{}", by("fresh_30m").detail);
}

#[tokio::test]
async fn without_a_previous_partition_row_count_change_passes() {
    let (dir, mut staged) = staged();
    staged.previous = None;
    let (checks, _) = parse_as(
        "- row_count_change: {max_pct: 0}\n- sql: 'SELECT t.user_id FROM {{ previous }} p CROSS JOIN {{ this }} t'\n",
        Publishes::Table,
    );
    let interval =
        crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let ctx = template::Context::new("d", "r", &interval, &BTreeMap::new());
    let r = local::run(&dir.path().join("lake"), &dir.path().join("c.db"), &checks, &staged, &ctx, interval.end)
        .await
        .expect("ran");
    assert!(r[0].passed && r[0].detail.contains("no previous partition"), "{r:?}");
    assert!(r[1].passed, "without a previous partition, {{{{ previous }}}} has no rows: {r:?}");
}
