//! `cartflow sql`: one read-only SELECT over the catalog's tables. Locally its rows are compared
//! with DuckDB reading the same Parquet files of the demo's lake; anything but a SELECT is
//! refused with exit 2 before it runs, and the lake is unchanged. On the aws backend (moto with
//! the Athena emulator), the Athena calls: see the last test for what it proves.

use std::collections::BTreeMap;
use std::path::Path;

use cartflow_e2e::{Moto, Project, Run};
use serde_json::Value;

use super::lake::repo_path;

pub(super) type Rows = Vec<Vec<Option<String>>>;

/// The demo's two days in a fresh project.
fn demo() -> Project {
    let p = Project::new();
    p.run(&["demo", "--days", "2", "--events-per-day", "2500", "--max-active-runs", "1"]).expect_code(0);
    p
}

/// `cartflow sql ARGS --format json`: the parsed result.
fn sql_json(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["sql", "--format", "json"];
    all.extend_from_slice(args);
    let r = p.run(&all);
    r.expect_code(0);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn rows_of(v: &Value) -> Rows {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_str().map(str::to_string)).collect())
        .collect()
}

/// The rows DuckDB gives for each query, over the lake's Parquet files: `ecommerce.events`
/// (the clean zone) and `ecommerce.enriched_events` (tests/python/lake_duckdb.py), and
/// `enriched_events` unqualified. Each value as text (`str()`), NULL as None.
pub(super) fn duckdb(python: &Path, lake: &Path, queries: &[&str]) -> Vec<Rows> {
    let code = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import lake_duckdb
lake = sys.argv[2]
con = lake_duckdb.connect(lake)
con.execute(f"""CREATE VIEW ecommerce.events AS
  SELECT * FROM read_parquet('{lake}/clean/events/*/*.parquet', hive_partitioning = true,
                             hive_types = {{'dt': 'VARCHAR'}})""")
con.execute("SET search_path = 'ecommerce'")
out = []
for q in json.loads(sys.argv[3]):
    out.append([[None if v is None else str(v) for v in row] for row in con.execute(q).fetchall()])
print(json.dumps(out))
"#;
    let queries = serde_json::to_string(queries).expect("json");
    let out = std::process::Command::new(python)
        .args(["-c", code, &repo_path("tests/python"), &lake.display().to_string(), &queries])
        .output()
        .expect("python");
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("duckdb json")
}

/// Every file under `dir` with its size and modification time.
fn files(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).expect("under").display().to_string();
                out.insert(rel, (m.len(), m.modified().expect("mtime")));
            }
        }
    }
    out
}

const PER_DAY_CLEAN: &str = "SELECT dt, count(*) AS events FROM ecommerce.events GROUP BY dt ORDER BY dt";
const PER_DAY_ENRICHED: &str =
    "SELECT dt, count(*) AS events, count(DISTINCT user_id) AS users FROM enriched_events GROUP BY dt ORDER BY dt";
const BRANDS: &str = "SELECT brand, count(*) AS n, count(*) FILTER (WHERE event_type = 'purchase') AS purchases
     FROM ecommerce.enriched_events GROUP BY brand ORDER BY n DESC, brand NULLS LAST";
const NULLS: &str = "SELECT dt, max(CASE WHEN event_type = 'no_such_type' THEN price END) AS never,
            count(*) FILTER (WHERE brand IS NULL) AS no_brand, NULL AS nothing
     FROM ecommerce.enriched_events GROUP BY dt ORDER BY dt";

#[test]
fn sql_returns_the_rows_duckdb_reads_from_the_same_parquet_files() {
    let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
    let p = demo();
    let lake = p.path().join(".cartflow/lake");
    let expected = duckdb(&python, &lake, &[PER_DAY_CLEAN, PER_DAY_ENRICHED, BRANDS, NULLS]);
    for (sql, want) in [PER_DAY_CLEAN, PER_DAY_ENRICHED, BRANDS, NULLS].iter().zip(&expected) {
        let got = sql_json(&p, &[sql]);
        assert_eq!(&rows_of(&got), want, "{sql}");
        assert_eq!(got["truncated"], false, "{sql}");
        // Counting rows needs no column (the footers were read when the table was registered).
        let reads_columns = *sql != PER_DAY_CLEAN;
        assert!(got["bytes_scanned"].as_u64().is_some_and(|b| (b > 0) == reads_columns), "{sql}: {got}");
        assert!(got["elapsed_ms"].as_f64().is_some_and(|t| t > 0.0), "{sql}: {got}");
        assert_eq!(got["backend"], "local");
    }
    // The queries are not trivially equal: two days of 2,500 events, brands with a NULL one.
    assert_eq!(expected[0].len(), 2, "{:?}", expected[0]);
    assert!(expected[0].iter().all(|r| r[1].as_deref().is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 2000))));
    assert!(expected[2].len() > 5 && expected[2].iter().any(|r| r[0].is_none()), "{:?}", expected[2]);
    assert!(expected[3].iter().all(|r| r[1].is_none() && r[3].is_none()), "{:?}", expected[3]);
    let columns = sql_json(&p, &[BRANDS])["columns"].clone();
    assert_eq!(columns, serde_json::json!(["brand", "n", "purchases"]));

    // --limit cuts and says so; the rows shown are the first ones.
    let cut = sql_json(&p, &[BRANDS, "--limit", "3"]);
    assert_eq!(rows_of(&cut), expected[2][..3].to_vec());
    assert_eq!((cut["truncated"].clone(), cut["limit"].clone()), (Value::Bool(true), Value::from(3)));
    let table = p.run(&["sql", BRANDS, "--limit", "3"]);
    table.expect_code(0);
    assert!(table.stdout.contains("first 3 rows shown: the result has more"), "{}", table.stdout);
    assert!(table.stdout.contains("| brand") && table.stdout.contains(" scanned ("), "{}", table.stdout);
    let all = p.run(&["sql", NULLS]);
    all.expect_code(0);
    assert!(all.stdout.contains("NULL") && all.stdout.contains("2 rows ·"), "{}", all.stdout);

    // CSV: a header, NULL as an empty field; the summary on stderr.
    let csv = p.run(&["sql", PER_DAY_CLEAN, "--format", "csv"]);
    csv.expect_code(0);
    let lines: Vec<String> = expected[0]
        .iter()
        .map(|r| format!("{},{}", r[0].as_deref().unwrap_or(""), r[1].as_deref().unwrap_or("")))
        .collect();
    assert_eq!(csv.stdout, format!("dt,events\n{}\n", lines.join("\n")));
    assert!(csv.stderr.contains("2 rows"), "{}", csv.stderr);
    let nulls = p.run(&["sql", "SELECT NULL AS a, '' AS b, 'x,y' AS c", "--format", "csv"]);
    assert_eq!(nulls.stdout, "a,b,c\n,\"\",\"x,y\"\n");

    // --file, --save and --saved run the same query.
    p.write("q.sql", &format!("-- per day\n{PER_DAY_CLEAN};\n"));
    assert_eq!(rows_of(&sql_json(&p, &["--file", "q.sql"])), expected[0]);
    let saved = p.run(&["sql", "--file", "q.sql", "--save", "per_day"]);
    saved.expect_code(0);
    assert!(saved.stderr.contains("saved query `per_day`"), "{}", saved.stderr);
    assert!(p.read("queries/per_day.sql").contains(PER_DAY_CLEAN));
    assert_eq!(rows_of(&sql_json(&p, &["--saved", "per_day"])), expected[0]);
    let list = p.run(&["sql", "--list"]);
    assert_eq!(list.stdout, "per_day\n");
    for bad in ["../per_day", "per day", "a.b"] {
        let r = p.run(&["sql", "SELECT 1", "--save", bad]);
        r.expect_code(2);
        assert!(r.stderr.contains("is not a saved-query name"), "{bad}: {}", r.stderr);
    }
    let missing = p.run(&["sql", "--saved", "per_dya"]);
    missing.expect_code(2);
    assert!(missing.stderr.contains("did you mean `per_day`"), "{}", missing.stderr);
    // A query that is allowed but fails is a failure (1), not a refusal.
    let unknown = p.run(&["sql", "SELECT * FROM ecommerce.no_such_table"]);
    unknown.expect_code(1);
    assert!(unknown.stderr.contains("no_such_table"), "{}", unknown.stderr);
}

#[test]
fn sql_refuses_anything_but_one_select_before_it_runs_and_the_lake_is_unchanged() {
    let p = demo();
    let lake = p.path().join(".cartflow/lake");
    let before = files(&lake);
    let count = |p: &Project| rows_of(&sql_json(p, &[PER_DAY_CLEAN]));
    let counts = count(&p);
    let out = lake.join("clean/events/copied.parquet");
    let ext = lake.join("clean");
    let statements = [
        "CREATE TABLE ecommerce.copy AS SELECT * FROM ecommerce.events".to_string(),
        format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}'", ext.display()),
        "INSERT INTO ecommerce.events SELECT * FROM ecommerce.events".to_string(),
        format!("COPY (SELECT * FROM ecommerce.events) TO '{}'", out.display()),
        format!("COPY ecommerce.events TO '{}'", out.display()),
        "DROP TABLE ecommerce.events".to_string(),
        "UPDATE ecommerce.events SET brand = 'x'".to_string(),
        "DELETE FROM ecommerce.events".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT 1; DROP TABLE ecommerce.events".to_string(),
        "WITH a AS (SELECT * FROM ecommerce.events) INSERT INTO ecommerce.events SELECT * FROM a".to_string(),
        format!("EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{}'", out.display()),
    ];
    for sql in &statements {
        let r = p.run(&["sql", sql]);
        r.expect_code(2);
        assert!(r.stderr.contains("refused before running"), "{sql}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{sql}: nothing printed as a result: {}", r.stdout);
    }
    // The message says why.
    let r = p.run(&["sql", "DROP TABLE ecommerce.events"]);
    assert!(r.stderr.contains("a query must be one SELECT (or WITH … SELECT); it starts with `DROP`"), "{}", r.stderr);
    let r = p.run(&["sql", "SELECT 1; SELECT 2"]);
    assert!(r.stderr.contains("more than one statement"), "{}", r.stderr);
    // Refused from a file or when saving too; a refused query is not saved.
    p.write("bad.sql", "COPY (SELECT 1 AS a) TO 'x.csv'");
    p.run(&["sql", "--file", "bad.sql"]).expect_code(2);
    p.run(&["sql", "DROP TABLE ecommerce.events", "--save", "oops"]).expect_code(2);
    assert!(!p.path().join("queries/oops.sql").exists());
    assert!(!p.path().join("x.csv").exists());
    assert_eq!(files(&lake), before, "the lake is unchanged");
    assert_eq!(count(&p), counts, "the table still answers the same");
}

/// What this proves on the aws backend, against moto with cartflow's Athena emulator (which
/// parses the SQL as Trino and runs it with DuckDB, but keeps no result set of a plain
/// SELECT): the query is started in the `ecommerce` database and the configured workgroup,
/// polled to its end, its DataScannedInBytes reported, its result read with GetQueryResults
/// (the header row skipped, a NULL datum shown as NULL, `--limit` cutting) — the rows
/// themselves are moto's seeded result, not computed; Athena's error for a failing query is
/// shown with exit 1; a refused statement exits 2 without any Athena call. Not proved:
/// pagination over several pages (moto answers in one page; a unit test of the page reader
/// covers it) and real Athena's result values.
#[test]
fn sql_on_the_aws_backend_runs_one_athena_query_and_reads_its_result() {
    let Some(moto) = Moto::start() else { return };
    let p = Project::new();
    p.write("cartflow.yaml", "aws:\n  lake: s3://lake/\n  poll: 200ms\n  max_poll: 1s\n");
    let run = |args: &[&str]| {
        let mut cmd = p.command(args);
        moto.configure(&mut cmd);
        Run::from(cmd.output().expect("cartflow"))
    };
    let datum = |v: Option<&str>| v.map_or(serde_json::json!({}), |s| serde_json::json!({ "VarCharValue": s }));
    let row = |vals: &[Option<&str>]| serde_json::json!({ "Data": vals.iter().map(|v| datum(*v)).collect::<Vec<_>>() });
    let column = |name: &str| serde_json::json!({ "Name": name, "Label": name, "Type": "varchar" });
    let seeded = serde_json::json!({ "results": [{
        "rows": [row(&[Some("brand"), Some("n")]), row(&[Some("acme"), Some("3")]), row(&[None, Some("2")]), row(&[Some("zeta"), Some("1")])],
        "column_info": [column("brand"), column("n")],
    }]});
    moto.post("/moto-api/static/athena/query-results", &seeded.to_string());
    let r = run(&["sql", "--backend", "aws", "--format", "json", "--limit", "2", "SELECT 'acme' AS brand, 3 AS n"]);
    r.expect_code(0);
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["columns"], serde_json::json!(["brand", "n"]));
    assert_eq!(
        rows_of(&v),
        vec![vec![Some("acme".to_string()), Some("3".to_string())], vec![None, Some("2".to_string())]]
    );
    assert_eq!((v["truncated"].clone(), v["backend"].clone()), (Value::Bool(true), Value::from("aws")));
    assert!(v["query_id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
    assert_eq!(moto.calls("AmazonAthena.StartQueryExecution"), 1);
    assert!(moto.calls("AmazonAthena.GetQueryResults") >= 1);
    // Athena's error for a query that fails (a function Trino does not have), exit 1.
    let r = run(&["sql", "--backend", "aws", "SELECT strftime(now(), '%Y') AS y"]);
    r.expect_code(1);
    assert!(r.stderr.contains("FUNCTION_NOT_FOUND"), "{}", r.stderr);
    // Refused before any call.
    let r = run(&["sql", "--backend", "aws", "DROP TABLE ecommerce.events"]);
    r.expect_code(2);
    assert_eq!(moto.calls("AmazonAthena.StartQueryExecution"), 2, "the refused statement was never sent");
}
