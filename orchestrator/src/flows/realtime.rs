//! The real-time stage as the web UI shows it: how far each consumer is behind each shard of its
//! stream, the alerts per day and rule (notified, retracted), the last notifications sent, and
//! the last reprocess's diff. Everything is read without a lock or a write: a page never waits
//! for the stage, and never creates its files.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};

use cartflow_streaming::handler::{AlertFilter, SqliteAlerts};
use cartflow_streaming::log::{Checkpoint, end_offsets};
use cartflow_streaming::pipeline::{ALERT_HANDLER, ARCHIVER, DETECTOR};

use super::FlowError;
use super::reprocess::{LastReprocess, last};
use crate::project::Project;

/// How much of the notifications file's end is read for the last notifications.
const NOTIFICATIONS_TAIL: u64 = 64 * 1024;
/// How many notifications are shown.
const NOTIFICATIONS_SHOWN: usize = 10;

/// One shard of a stream and how far behind each of its consumers is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLag {
    /// `stream1` (events) or `stream2` (alerts).
    pub stream: &'static str,
    /// The shard.
    pub shard: usize,
    /// Records appended to it.
    pub records: u64,
    /// (consumer, records it has not read yet).
    pub behind: Vec<(&'static str, u64)>,
}

/// The alerts of one day (window start) and rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The rule.
    pub rule: String,
    /// Active alerts.
    pub active: u64,
    /// Of those, the ones a notification went out for.
    pub notified: u64,
    /// Alerts a reprocess retracted.
    pub retracted: u64,
}

/// What the real-time page shows (besides the stage's runs, which are in the run store).
#[derive(Debug, Clone, Default)]
pub struct Realtime {
    /// Per stream and shard.
    pub lag: Vec<ShardLag>,
    /// Per day and rule, oldest first.
    pub alerts: Vec<AlertDay>,
    /// The last notifications (JSON lines), newest last.
    pub notifications: Vec<String>,
    /// The last reprocess (or dry run).
    pub last_reprocess: Option<LastReprocess>,
}

/// Reads the local stage's streams, checkpoints, alerts and notifications.
pub fn overview(project: &Project) -> Result<Realtime, FlowError> {
    let paths = project.streaming_paths();
    let step = |e: &dyn std::fmt::Display| FlowError::Step(e.to_string());
    let mut lag = Vec::new();
    for (stream, dir, consumers) in
        [("stream1", paths.stream1(), &[ARCHIVER, DETECTOR][..]), ("stream2", paths.stream2(), &[ALERT_HANDLER][..])]
    {
        let ends = end_offsets(&dir).map_err(|e| step(&e))?;
        let mut read: Vec<(&'static str, Vec<u64>)> = Vec::new();
        for &c in consumers {
            read.push((c, Checkpoint::load(&dir, c).map_err(|e| step(&e))?.offsets));
        }
        for (shard, &records) in ends.iter().enumerate() {
            let behind = read
                .iter()
                .map(|(c, offsets)| (*c, records.saturating_sub(offsets.get(shard).copied().unwrap_or(0))))
                .collect();
            lag.push(ShardLag { stream, shard, records, behind });
        }
    }
    let mut alerts = Vec::new();
    if paths.alerts_db.exists() {
        let store = SqliteAlerts::open(&paths.alerts_db).map_err(|e| step(&e))?;
        let list =
            store.list(&AlertFilter { include_retracted: true, ..AlertFilter::default() }).map_err(|e| step(&e))?;
        let mut by: BTreeMap<(String, String), AlertDay> = BTreeMap::new();
        for a in list {
            let day = a.window_start.get(..10).unwrap_or(&a.window_start).to_string();
            let e = by.entry((day.clone(), a.rule.clone())).or_insert_with(|| AlertDay {
                day,
                rule: a.rule.clone(),
                ..AlertDay::default()
            });
            if a.status == "retracted" {
                e.retracted += 1;
            } else {
                e.active += 1;
                e.notified += u64::from(a.notified);
            }
        }
        alerts = by.into_values().collect();
    }
    Ok(Realtime {
        lag,
        alerts,
        notifications: tail_lines(&paths.notifications, NOTIFICATIONS_SHOWN).map_err(|e| step(&e))?,
        last_reprocess: last(project)?,
    })
}

/// The last `n` lines of a file (none if it does not exist), reading only its end.
fn tail_lines(path: &std::path::Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(NOTIFICATIONS_TAIL);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    Ok(lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_whole_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("n.jsonl");
        assert!(tail_lines(&f, 3).expect("missing").is_empty());
        let text: String = (0..20_000).map(|i| format!("{{\"n\": {i}}}\n")).collect();
        std::fs::write(&f, text).expect("write");
        assert_eq!(tail_lines(&f, 2).expect("tail"), vec!["{\"n\": 19998}".to_string(), "{\"n\": 19999}".to_string()]);
        std::fs::write(&f, "one\n\ntwo").expect("write");
        assert_eq!(tail_lines(&f, 10).expect("tail"), vec!["one".to_string(), "two".to_string()]);
    }
}
