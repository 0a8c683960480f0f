//! Engine overhead: DAGs of `noop` tasks through the real executor and the real SQLite run
//! store (every transition persisted). Prints tasks per second.
//!
//! `cargo bench -p cartflow --bench engine`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cartflow::dag::compile::{CompileOptions, compile_source};
use cartflow::executor::{ExecOptions, Pools, execute};
use cartflow::schedule::DataInterval;
use cartflow::state::RunState;
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cases = [
        ("wide 1,000 (max_active_tasks 64)", wide(1_000, 64)),
        ("wide 10,000 (max_active_tasks 64)", wide(10_000, 64)),
        ("wide 10,000 (max_active_tasks 1,024)", wide(10_000, 1_024)),
        ("chain 1,000 deep", chain(1_000)),
    ];
    println!("{:<40} {:>8} {:>10} {:>12} {:>14}", "dag", "tasks", "compile", "run", "tasks/s");
    for (name, yaml) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = Instant::now();
        let dag =
            Arc::new(compile_source(Path::new("bench.yaml"), &yaml, &CompileOptions::default()).expect("compiles"));
        let compile = t0.elapsed();
        let n = dag.tasks.len();
        let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let opts = ExecOptions { project_dir: dir.path().to_path_buf(), ..ExecOptions::default() };
        let t1 = Instant::now();
        let report = rt
            .block_on(execute(
                dag.clone(),
                interval,
                &dir.path().join("state.db"),
                Arc::new(Pools::default()),
                &opts,
                CancellationToken::new(),
                &mut |_| {},
            ))
            .expect("execute");
        let run = t1.elapsed();
        assert_eq!(report.state, RunState::Success);
        // Every task must be persisted as succeeded.
        let db = rusqlite::Connection::open(dir.path().join("state.db")).expect("db");
        let persisted: i64 = db
            .query_row("SELECT count(*) FROM task_attempts WHERE state = 'success'", [], |r| r.get(0))
            .expect("count");
        assert_eq!(persisted as usize, n, "every task persisted");
        println!("{:<40} {:>8} {:>9.0?} {:>11.0?} {:>14.0}", name, n, compile, run, n as f64 / run.as_secs_f64());
    }
}
