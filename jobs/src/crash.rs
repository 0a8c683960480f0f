//! Named crash points, for the crash-point harness: `CARTFLOW_CRASH_AT=<name>[:<n>]` makes the
//! process `abort()` the `n`-th time (1-based, default 1) it reaches [`point`]`(<name>)`. Unset,
//! a point costs one load of a cached value. The variable is read once per process.
//!
//! Every point sits at a write boundary: what comes before it is written (and, where the code
//! says so, fsynced), what comes after it is not. The e2e test `crash` runs the daily DAG
//! once uninterrupted, then once per point: crashed there, resumed with the same command, and
//! compared with the uninterrupted run (tables, catalog, quarantine, raw zone, alerts).
//!
//! The points of the jobs crate ([`POINTS`]):
//!
//! | name | where |
//! |---|---|
//! | `swap.staged` | [`swap_in`]: the fresh folder is written and fsynced, before the exchange |
//! | `swap.exchanged` | [`swap_in`]: the new version is live, the old one not yet deleted |
//! | `swap.together.staged` | [`publish_together`]: every fresh folder fsynced and the pointers written, before the intent is committed |
//! | `swap.together.committed` | [`publish_together`]: the intent is durable, nothing exchanged yet |
//! | `swap.together.exchanged` | [`publish_together`]: after each pair is exchanged (`:1` = only the first is live) |
//! | `swap.together.published` | [`publish_together`]: every pair live, the old versions and the intent not yet removed |
//! | `compact.written` | compaction: every part written into the fresh folder, before the publish |
//! | `clean.written` | cleaning: the clean and quarantine parts written, before they are published together |
//! | `crawl.table_written` | the crawler: the table created or its schema updated in the catalog, its partitions not yet added |
//! | `crawl.partitions_written` | the crawler: the partitions added or repointed (the crawl's last write) |
//! | `enrich.written` | the recipe job: the enriched part written into the fresh folder, before the publish |
//! | `ctas.written` | local CTAS: the query's rows written (fresh partition folder, or new version folder) and fsynced, before anything is published |
//! | `ctas.swapped` | local CTAS, partitioned: the partition's data is live, the catalog not yet updated |
//! | `ctas.cataloged` | local CTAS: the catalog names the new data; a full refresh's old versions not yet pruned |
//! | `ctas.pruned` | local CTAS, full refresh: the versions beyond `keep_versions` deleted (the task's last write) |
//! | `dashboard.written` | the dashboard: the temporary file written and fsynced, before its rename |
//!
//! The engine's points ([`ENGINE_POINTS`], in `orchestrator/src/engine/store/` and the AWS job
//! runs of `orchestrator/src/kinds/aws_job.rs`):
//!
//! | name | where |
//! |---|---|
//! | `store.claimed` | a run created, or taken over for a resume, and its tasks' states committed |
//! | `store.attempt_started` | each attempt start committed (`:n` = the n-th attempt of the process) |
//! | `store.attempt_ended` | each attempt end committed, with the task's new state |
//! | `store.finished` | a run's end committed and the run released |
//! | `store.backfill_created` | a backfill job and its planned runs committed |
//! | `store.backfill_run_done` | a backfill job's record of one run's outcome committed |
//! | `store.backfill_finished` | a backfill job closed |
//!
//! The engine's points on the aws backend ([`AWS_POINTS`]; the local crash harness cannot reach
//! them: the e2e tests against moto do, `aws_store.rs` and `state_transfer.rs`):
//!
//! | name | where |
//! |---|---|
//! | `job.started` | an AWS job run (Glue, DataBrew) started, its id not yet saved in the run store |
//! | `store.import_children` | `state import` into DynamoDB: a run's task, attempt and fact items written, its run item not yet |
//!
//! The streaming stage's points ([`STREAMING_POINTS`], in `streaming/src/`):
//!
//! | name | where |
//! |---|---|
//! | `producer.appended` | the producer: each record appended to stream1's buffer (`:n` = mid-interval, buffered records lost) |
//! | `producer.flushed` | the producer: every record of the interval in stream1, fsynced |
//! | `archiver.staged` | the archiver: its buffers written to hidden, fsynced objects, not yet named in a checkpoint |
//! | `archiver.checkpointed` | the archiver: the checkpoint names the hidden objects, none published yet |
//! | `archiver.published` | the archiver: the objects published, the checkpoint not yet cleared |
//! | `detector.flushed` | the detector: its alerts fsynced in stream2, its checkpoint not yet saved |
//! | `detector.checkpointed` | the detector: its offsets and open windows saved |
//! | `alerts.stored` | the alert handler: a new alert put in the alerts table |
//! | `alerts.notified` | the alert handler: a notification sent, the alert not yet marked notified |
//! | `alerts.marked` | the alert handler: the alert marked notified |
//! | `alerts.checkpointed` | the alert handler: its stream2 offsets saved after a batch |
//!
//! [`swap_in`]: crate::swap::swap_in
//! [`publish_together`]: crate::swap::publish_together

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that names the point to crash at.
pub const ENV: &str = "CARTFLOW_CRASH_AT";

/// Every crash point of the jobs crate (the first table above).
pub const POINTS: &[&str] = &[
    "swap.staged",
    "swap.exchanged",
    "swap.together.staged",
    "swap.together.committed",
    "swap.together.exchanged",
    "swap.together.published",
    "compact.written",
    "clean.written",
    "crawl.table_written",
    "crawl.partitions_written",
    "enrich.written",
    "ctas.written",
    "ctas.swapped",
    "ctas.cataloged",
    "ctas.pruned",
    "dashboard.written",
];

/// Every crash point of the engine's run store (the second table; a test of the orchestrator
/// checks them against its code).
pub const ENGINE_POINTS: &[&str] = &[
    "store.claimed",
    "store.attempt_started",
    "store.attempt_ended",
    "store.finished",
    "store.backfill_created",
    "store.backfill_run_done",
    "store.backfill_finished",
];

/// The engine's crash points on the aws backend (the third table): not in [`all`], which the
/// local crash harness runs through; the aws e2e tests reach each.
pub const AWS_POINTS: &[&str] = &["job.started", "store.import_children"];

/// Every crash point of the streaming stage (the fourth table; a test of the streaming crate
/// checks them against its code).
pub const STREAMING_POINTS: &[&str] = &[
    "producer.appended",
    "producer.flushed",
    "archiver.staged",
    "archiver.checkpointed",
    "archiver.published",
    "detector.flushed",
    "detector.checkpointed",
    "alerts.stored",
    "alerts.notified",
    "alerts.marked",
    "alerts.checkpointed",
];

/// Every crash point of cartflow, all crates.
pub fn all() -> impl Iterator<Item = &'static str> {
    POINTS.iter().chain(ENGINE_POINTS).chain(STREAMING_POINTS).copied()
}

/// The names of the crash points a source file reaches (`crash::point("…")` or
/// `crash_point("…")` calls), sorted and deduplicated: what the tests compare with the lists.
#[doc(hidden)]
pub fn names_in(sources: &[&str]) -> Vec<String> {
    let mut used: Vec<String> = sources
        .iter()
        .flat_map(|s| s.split("crash::point(\"").skip(1).chain(s.split("crash_point(\"").skip(1)))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    used.sort_unstable();
    used.dedup();
    used
}

/// Where to crash: a point's name and the hit (1-based) that aborts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    nth: u64,
}

/// Reads `name` or `name:n` (n ≥ 1). `None` when unset or empty.
fn parse(value: Option<&str>) -> Result<Option<Target>, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let (name, nth) = match v.rsplit_once(':') {
        Some((name, n)) => match n.parse::<u64>() {
            Ok(n) if n >= 1 && !name.is_empty() => (name, n),
            _ => return Err(format!("{ENV}={v}: expected `point` or `point:n` with n ≥ 1")),
        },
        None => (v, 1),
    };
    Ok(Some(Target { name: name.to_string(), nth }))
}

/// Counts a hit of `name` against the target; true when this hit is the one to crash at.
fn hit(target: Option<&Target>, hits: &AtomicU64, name: &str) -> bool {
    match target {
        Some(t) if t.name == name => hits.fetch_add(1, Ordering::SeqCst) + 1 == t.nth,
        _ => false,
    }
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var(ENV).ok();
            parse(value.as_deref()).unwrap_or_else(|e| {
                // No crash rather than a wrong one; the harness sees the process finish.
                tracing::warn!(error = %e, "crash point ignored");
                None
            })
        })
        .as_ref()
}

/// A crash point: aborts the process here if `CARTFLOW_CRASH_AT` names it (and this is its
/// n-th hit). Only one point is armed per process, so one counter suffices.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if hit(target(), &HITS, name) {
        eprintln!("cartflow: crash point `{name}` reached ({ENV}), aborting");
        std::process::abort();
    }
}

/// Runs a test of this crate in a child process armed with a crash point.
#[cfg(test)]
pub(crate) mod child {
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;

    /// The variable that hands the child its folder; a child test without it does nothing.
    pub(crate) const DIR: &str = "CARTFLOW_TEST_CHILD_DIR";

    /// Runs the ignored test `test` (its full path, e.g. `swap::tests::child`) of this test
    /// binary with `CARTFLOW_CRASH_AT=at` and [`DIR`]` = dir`. True if it aborted at the point,
    /// false if it finished without reaching it; any other end fails the calling test.
    pub(crate) fn crashes(test: &str, at: &str, dir: &Path) -> bool {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
            .env(super::ENV, at)
            .env(DIR, dir)
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(String::from_utf8_lossy(&out.stdout).contains("running 1 test"), "no test {test}: {stderr}");
        if out.status.signal() == Some(6) {
            assert!(stderr.contains(&format!("crash point `{}`", at.split(':').next().unwrap_or(at))), "{stderr}");
            return true;
        }
        assert!(
            out.status.success(),
            "{test} at {at}: {}\n{}{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_a_point_and_its_hit() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("  ")), Ok(None));
        assert_eq!(parse(Some("swap.staged")), Ok(Some(Target { name: "swap.staged".into(), nth: 1 })));
        assert_eq!(parse(Some("swap.exchanged:3")), Ok(Some(Target { name: "swap.exchanged".into(), nth: 3 })));
        for bad in ["swap.staged:0", "swap.staged:x", ":2", "swap.staged:"] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_nth_hit_of_the_named_point_crashes() {
        let t = Target { name: "a.b".into(), nth: 3 };
        let hits = AtomicU64::new(0);
        let seq: Vec<bool> = ["a.b", "other", "a.b", "a.b", "a.b"].iter().map(|n| hit(Some(&t), &hits, n)).collect();
        assert_eq!(seq, [false, false, false, true, false]);
        assert!(!hit(None, &AtomicU64::new(0), "a.b"), "unset: never");
    }

    #[test]
    fn the_list_is_the_points_in_the_code() {
        let sources = [
            include_str!("swap.rs"),
            include_str!("compact.rs"),
            include_str!("clean.rs"),
            include_str!("crawl.rs"),
            include_str!("recipe.rs"),
            include_str!("ctas.rs"),
            include_str!("dashboard.rs"),
        ];
        let mut listed: Vec<String> = POINTS.iter().map(|s| s.to_string()).collect();
        listed.sort_unstable();
        assert_eq!(names_in(&sources), listed);
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut all: Vec<&str> = all().chain(AWS_POINTS.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name in two lists");
        let doc = include_str!("crash.rs");
        for name in &all {
            assert!(doc.contains(&format!("//! | `{name}` |")), "{name} is not in the module doc's tables");
        }
    }
}
