//! Engine overhead: DAGs of `noop` tasks through the real executor and a real run store
//! (every transition persisted), on both stores: the SQLite file, and the DynamoDB store
//! against moto's server (informative only: an emulator in Python on this machine, not
//! DynamoDB's latency or throughput). Prints tasks per second for each.
//!
//! `cargo bench -p cartflow --bench engine` (the DynamoDB half needs `CARTFLOW_VENV` with moto,
//! as the tests do; without it, it says so and is left out).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cartflow::dag::compile::{CompileOptions, compile_source};
use cartflow::engine::backfill::{self, Existing, Reprocess};
use cartflow::engine::executor::{ExecOptions, Pools, execute};
use cartflow::engine::state::{AttemptOutcome, AttemptState, RunState};
use cartflow::engine::store::{RunStore, StoreAt};
use cartflow::schedule::DataInterval;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

fn wide(n: usize, max_active: usize) -> String {
    let mut y = format!("id: wide_{n}\nmax_active_tasks: {max_active}\ntasks:\n  - id: start\n    kind: noop\n");
    for i in 0..n - 2 {
        y.push_str(&format!("  - id: t{i}\n    kind: noop\n    depends_on: start\n"));
    }
    y.push_str("  - id: end\n    kind: noop\n    trigger_rule: all_done\n    depends_on: [");
    y.push_str(&(0..n - 2).map(|i| format!("t{i}")).collect::<Vec<_>>().join(", "));
    y.push_str("]\n");
    y
}

fn chain(n: usize) -> String {
    let mut y = format!("id: chain_{n}\ntasks:\n  - id: t0\n    kind: noop\n");
    for i in 1..n {
        y.push_str(&format!("  - id: t{i}\n    kind: noop\n    depends_on: t{}\n", i - 1));
    }
    y
}

/// Backfill planning: 3,650 daily intervals for each of 20 DAGs (assorted schedules and
/// timezones, half of the intervals already run), interval generation included.
fn planning() {
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"];
    let exprs = ["@daily", "0 2 * * *", "30 5 * * *", "15 23 * * *"];
    let dags: Vec<_> = (0..20)
        .map(|i| {
            let yaml = format!(
                "id: plan_{i}\nschedule: '{}'\ntimezone: {}\ntasks:\n  - id: a\n    kind: noop\n",
                exprs[i % exprs.len()],
                zones[i % zones.len()]
            );
            compile_source(Path::new("p.yaml"), &yaml, &CompileOptions::default()).expect("compiles")
        })
        .collect();
    let from = DateTime::parse_from_rfc3339("2016-01-01T00:00:00Z").expect("ts").with_timezone(&Utc);
    let to = from + chrono::Duration::days(3650);
    let mut best = std::time::Duration::MAX;
    let mut parts = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut planned = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (mut in_intervals, mut in_plan) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        planned = 0;
        for dag in &dags {
            let ti = Instant::now();
            let intervals = dag.schedule.intervals_between(from, to, dag.timezone);
            in_intervals += ti.elapsed();
            let existing: Existing =
                intervals.iter().step_by(2).map(|i| (i.start, (RunState::Success, false))).collect();
            let tp = Instant::now();
            planned += backfill::plan(&dag.id, &intervals, &existing, Reprocess::Failed).len();
            in_plan += tp.elapsed();
        }
        if t.elapsed() < best {
            best = t.elapsed();
            parts = (in_intervals, in_plan);
        }
    }
    println!();
    println!(
        "planning: {planned} intervals of 20 DAGs (10 years of daily runs each) in {best:.1?} \
         (intervals {:.1?}, plan {:.1?}; best of 5; target < 50 ms)",
        parts.0, parts.1
    );
}

/// Runs `yaml` once against the store `at`; (tasks, compile, run).
fn run_on(
    rt: &tokio::runtime::Runtime,
    yaml: &str,
    dir: &Path,
    at: &StoreAt,
) -> (usize, std::time::Duration, std::time::Duration) {
    let t0 = Instant::now();
    let dag = Arc::new(compile_source(Path::new("bench.yaml"), yaml, &CompileOptions::default()).expect("compiles"));
    let compile = t0.elapsed();
    let n = dag.tasks.len();
    let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let opts = ExecOptions { project_dir: dir.to_path_buf(), ..ExecOptions::default() };
    let t1 = Instant::now();
    let report = rt
        .block_on(execute(
            dag.clone(),
            interval,
            at,
            Arc::new(Pools::default()),
            &opts,
            CancellationToken::new(),
            &mut |_| {},
        ))
        .expect("execute");
    let run = t1.elapsed();
    assert_eq!(report.state, RunState::Success);
    // Every task must be persisted as succeeded: counted in what the store holds.
    let store = RunStore::open(at).expect("open the store");
    let run_id = cartflow::engine::store::run_id(&dag.id, interval.start);
    let persisted = store
        .attempts(&run_id, None)
        .expect("attempts")
        .iter()
        .filter(|a| a.state == AttemptState::Ended(AttemptOutcome::Success))
        .count();
    assert_eq!(persisted, n, "every task persisted");
    (n, compile, run)
}

fn main() {
    planning();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cases = [
        ("wide 1,000 (max_active_tasks 64)", wide(1_000, 64)),
        ("wide 10,000 (max_active_tasks 64)", wide(10_000, 64)),
        ("wide 10,000 (max_active_tasks 1,024)", wide(10_000, 1_024)),
        ("chain 1,000 deep", chain(1_000)),
    ];
    println!("{:<10} {:<40} {:>8} {:>10} {:>12} {:>14}", "store", "dag", "tasks", "compile", "run", "tasks/s");
    for (name, yaml) in &cases {
        let dir = tempfile::tempdir().expect("tmp");
        let at = StoreAt::File(dir.path().join("state.db"));
        let (n, compile, run) = run_on(&rt, yaml, dir.path(), &at);
        println!(
            "{:<10} {:<40} {:>8} {:>9.0?} {:>11.0?} {:>14.0}",
            "sqlite",
            name,
            n,
            compile,
            run,
            n as f64 / run.as_secs_f64()
        );
    }
    #[cfg(feature = "aws")]
    dynamodb(&rt);
}

/// The same executor against the DynamoDB store in moto: smaller DAGs (each transition is an
/// HTTP call to a Python server), beside SQLite on the same DAGs.
#[cfg(feature = "aws")]
fn dynamodb(rt: &tokio::runtime::Runtime) {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use cartflow::stores::dynamodb::DynamoTable;
    let Some(moto) = cartflow_e2e::Moto::start() else {
        println!("dynamodb: left out (moto is not installed: set CARTFLOW_VENV to the tests' venv)");
        return;
    };
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    let cases = [("wide 200 (max_active_tasks 64)", wide(200, 64)), ("chain 100 deep", chain(100))];
    println!();
    println!("{:<10} {:<40} {:>8} {:>10} {:>12} {:>14}", "store", "dag", "tasks", "compile", "run", "tasks/s");
    for (i, (name, yaml)) in cases.iter().enumerate() {
        let mut rates = Vec::new();
        for store in ["sqlite", "dynamodb"] {
            let dir = tempfile::tempdir().expect("tmp");
            let at = if store == "sqlite" {
                StoreAt::File(dir.path().join("state.db"))
            } else {
                let table = format!("bench-{i}");
                let c = client.clone();
                rt.block_on(cartflow::stores::dynamodb::create_table(&c, &table)).expect("create the table");
                StoreAt::Remote(Arc::new(DynamoTable::with_client(&table, client.clone())))
            };
            let units = cartflow::stores::dynamodb::write_units();
            let (n, compile, run) = run_on(rt, yaml, dir.path(), &at);
            let units = cartflow::stores::dynamodb::write_units() - units;
            let rate = n as f64 / run.as_secs_f64();
            rates.push(rate);
            let cost = if store == "dynamodb" {
                format!("  {:.1} write request units per task ({units} for the run)", units as f64 / n as f64)
            } else {
                String::new()
            };
            println!("{:<10} {:<40} {:>8} {:>9.0?} {:>11.0?} {:>14.0}{cost}", store, name, n, compile, run, rate);
        }
        println!("{:<10} {:<40} sqlite/dynamodb(moto) = {:.1}x", "", name, rates[0] / rates[1]);
    }
}
