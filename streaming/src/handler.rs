//! The alert handler — the Lambda's job: for each alert record from stream2, store it under its
//! deterministic id with a conditional put (so a redelivery never duplicates), publish a
//! notification for alerts above the notification threshold (once, even across retries), and
//! count metrics. [`handle`] is the one function; the store, notifier and metrics are traits
//! with local implementations here (SQLite, a JSON-lines file + log + optional webhook, a
//! counters file) and AWS ones (DynamoDB, SNS, CloudWatch) in the AWS backend.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::alert::{Alert, format_ms};

/// Errors of the handler's dependencies.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The alerts table.
    #[error("alerts store {path}: {source}")]
    Store {
        /// The database.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// An AWS call failed (DynamoDB, SNS).
    #[error("{call} on {resource}: {message}")]
    Aws {
        /// The call, e.g. `DynamoDB PutItem`.
        call: &'static str,
        /// The table or topic.
        resource: String,
        /// What AWS said.
        message: String,
    },
    /// A notification could not be delivered (the batch is retried; stored alerts are not
    /// duplicated and the notification is sent again).
    #[error("notification: {0}")]
    Notify(String),
}

/// What a conditional put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The alert is new.
    New,
    /// It was stored before; `notified` tells whether its notification went out.
    Duplicate {
        /// Whether the notification was delivered.
        notified: bool,
    },
}

/// The alerts table.
pub trait AlertStore {
    /// Stores the alert unless its id exists.
    fn put_if_absent(&mut self, a: &Alert) -> Result<Put, HandlerError>;
    /// Records that the alert's notification was delivered.
    fn mark_notified(&mut self, id: &str) -> Result<(), HandlerError>;
}

/// Where notifications go.
pub trait Notifier {
    /// Publishes one alert.
    fn notify(&mut self, a: &Alert) -> Result<(), HandlerError>;
}

/// Where metrics go.
pub trait Metrics {
    /// Adds `n` to a counter.
    fn count(&mut self, name: &str, n: u64);
}

/// What one [`handle`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HandleReport {
    /// Records received.
    pub received: u64,
    /// Alerts stored for the first time.
    pub stored: u64,
    /// Redelivered alerts (already stored).
    pub duplicates: u64,
    /// Notifications published.
    pub notified: u64,
    /// Records that were not alerts (logged and skipped).
    pub invalid: u64,
}

impl std::ops::AddAssign for HandleReport {
    fn add_assign(&mut self, o: HandleReport) {
        self.received += o.received;
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.notified += o.notified;
        self.invalid += o.invalid;
    }
}

/// Handles a batch of stream2 records. An error means the batch should be redelivered (the
/// stream's at-least-once contract); what was done before the error is not done twice.
pub fn handle(
    records: &[&[u8]],
    store: &mut dyn AlertStore,
    notifier: &mut dyn Notifier,
    metrics: &mut dyn Metrics,
) -> Result<HandleReport, HandlerError> {
    let mut rep = HandleReport::default();
    for rec in records {
        rep.received += 1;
        let a = match Alert::from_json(rec) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("skipping a stream2 record: {e}");
                rep.invalid += 1;
                continue;
            }
        };
        let notified = match store.put_if_absent(&a)? {
            Put::New => {
                cartflow_jobs::crash::point("alerts.stored");
                rep.stored += 1;
                false
            }
            Put::Duplicate { notified } => {
                rep.duplicates += 1;
                notified
            }
        };
        if a.notify && !notified {
            notifier.notify(&a)?;
            cartflow_jobs::crash::point("alerts.notified");
            store.mark_notified(&a.id())?;
            cartflow_jobs::crash::point("alerts.marked");
            rep.notified += 1;
        }
    }
    metrics.count("AlertsReceived", rep.received);
    metrics.count("AlertsStored", rep.stored);
    metrics.count("AlertsDuplicate", rep.duplicates);
    metrics.count("Notifications", rep.notified);
    Ok(rep)
}

/// One stored alert.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredAlert {
    /// The id.
    pub id: String,
    /// Rule.
    pub rule: String,
    /// Key field.
    pub key_field: String,
    /// Key.
    pub key: String,
    /// Window start (`YYYY-MM-DD HH:MM:SS`).
    pub window_start: String,
    /// Window end.
    pub window_end: String,
    /// The earliest event of the group (which day's data the alert comes from).
    pub first_event: String,
    /// Value.
    pub value: u64,
    /// Threshold.
    pub threshold: u64,
    /// Severity.
    pub severity: String,
    /// `active`, or `retracted` by a reprocess.
    pub status: String,
    /// Whether a notification went out.
    pub notified: bool,
}

/// The local alerts table (DynamoDB's twin), in SQLite.
#[derive(Debug)]
pub struct SqliteAlerts {
    conn: Connection,
    path: PathBuf,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Window start on or after this date (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Window start on or before this date.
    pub to: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Retracted ones too.
    pub include_retracted: bool,
}

impl SqliteAlerts {
    /// Opens (creating) the alerts database.
    pub fn open(path: &Path) -> Result<SqliteAlerts, HandlerError> {
        let err = |source| HandlerError::Store { path: path.to_path_buf(), source };
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS alerts (
               id TEXT PRIMARY KEY,
               rule TEXT NOT NULL,
               key_field TEXT NOT NULL,
               key TEXT NOT NULL,
               window_start TEXT NOT NULL,
               window_end TEXT NOT NULL,
               value INTEGER NOT NULL,
               first_event TEXT NOT NULL,
               threshold INTEGER NOT NULL,
               severity TEXT NOT NULL,
               status TEXT NOT NULL DEFAULT 'active',
               notified INTEGER NOT NULL DEFAULT 0,
               stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))
             );
             CREATE INDEX IF NOT EXISTS alerts_by_window ON alerts(rule, window_start);
             CREATE INDEX IF NOT EXISTS alerts_by_data ON alerts(rule, first_event);",
        )
        .map_err(err)?;
        Ok(SqliteAlerts { conn, path: path.to_path_buf() })
    }

    fn err(&self, source: rusqlite::Error) -> HandlerError {
        HandlerError::Store { path: self.path.clone(), source }
    }

    /// Alerts matching a filter, by window start then rule then key.
    pub fn list(&self, f: &AlertFilter) -> Result<Vec<StoredAlert>, HandlerError> {
        let to_end = f.to.as_ref().map(|d| format!("{d} 99"));
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, rule, key_field, key, window_start, window_end, value, threshold, severity, status, notified, first_event
                 FROM alerts
                 WHERE (?1 IS NULL OR window_start >= ?1) AND (?2 IS NULL OR window_start < ?2)
                   AND (?3 IS NULL OR rule = ?3) AND (?4 OR status = 'active')
                 ORDER BY window_start, rule, key",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![f.from, to_end, f.rule, f.include_retracted], |r| {
                Ok(StoredAlert {
                    id: r.get(0)?,
                    rule: r.get(1)?,
                    key_field: r.get(2)?,
                    key: r.get(3)?,
                    window_start: r.get(4)?,
                    window_end: r.get(5)?,
                    value: r.get::<_, i64>(6)? as u64,
                    threshold: r.get::<_, i64>(7)? as u64,
                    severity: r.get(8)?,
                    status: r.get(9)?,
                    notified: r.get(10)?,
                    first_event: r.get(11)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// Replaces, in one transaction.
impl RangeStore for SqliteAlerts {
    fn replace_range(
        &mut self,
        rule: &str,
        from_ms: i64,
        to_ms: i64,
        fresh: &[Alert],
        dry_run: bool,
    ) -> Result<Diff, HandlerError> {
        let (from, to) = (format_ms(from_ms), format_ms(to_ms));
        let path = self.path.clone();
        let err = |source| HandlerError::Store { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        let mut old: BTreeMap<String, Stored> = BTreeMap::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, value, status, first_event FROM alerts WHERE rule = ?1 AND first_event >= ?2 AND first_event < ?3",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(params![rule, from, to], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Stored { value: r.get::<_, i64>(1)? as u64, status: r.get(2)?, first_event: r.get(3)? },
                    ))
                })
                .map_err(err)?;
            for row in rows {
                let (id, st) = row.map_err(err)?;
                old.insert(id, st);
            }
        }
        let (diff, changes) = plan_replace(&old, fresh);
        if !dry_run {
            for c in changes {
                match c {
                    Change::Insert(a) => {
                        insert(&tx, a, "active").map_err(err)?;
                    }
                    Change::Update(a) => {
                        tx.execute(
                            "UPDATE alerts SET value = ?2, threshold = ?3, severity = ?4, status = 'active' WHERE id = ?1",
                            params![a.id(), a.value as i64, a.threshold as i64, a.severity.as_str()],
                        )
                        .map_err(err)?;
                    }
                    Change::Retract(id) => {
                        tx.execute("UPDATE alerts SET status = 'retracted' WHERE id = ?1", params![id]).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(diff)
    }
}

/// An alert as a store keeps it, for [`plan_replace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: u64,
    /// `active` or `retracted`.
    pub status: String,
    /// `YYYY-MM-DD HH:MM:SS.mmm` of the first event.
    pub first_event: String,
}

/// One change of a replace.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<'a> {
    /// A new alert.
    Insert(&'a Alert),
    /// An alert whose value changed, or that comes back after a retraction.
    Update(&'a Alert),
    /// An alert the fixed rules no longer raise.
    Retract(String),
}

/// What replacing the alerts of a range with `fresh` changes, given what the store holds in
/// that range (by id): the per-day diff and the changes to apply.
pub fn plan_replace<'a>(old: &BTreeMap<String, Stored>, fresh: &'a [Alert]) -> (Diff, Vec<Change<'a>>) {
    let mut diff = Diff::default();
    let mut changes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for a in fresh {
        let id = a.id();
        let date = a.date();
        let what = match old.get(&id) {
            Some(s) if s.value == a.value && s.status == "active" => "unchanged",
            Some(s) => {
                changes.push(Change::Update(a));
                if s.status == "active" { "changed" } else { "added" }
            }
            None => {
                changes.push(Change::Insert(a));
                "added"
            }
        };
        *diff.per_day.entry(date).or_default().entry(what).or_default() += 1;
        seen.insert(id);
    }
    for (id, s) in old {
        if seen.contains(id) || s.status != "active" {
            continue;
        }
        let date = s.first_event.get(..10).unwrap_or("").to_string();
        *diff.per_day.entry(date).or_default().entry("retracted").or_default() += 1;
        changes.push(Change::Retract(id.clone()));
    }
    (diff, changes)
}

/// A store whose alerts of one rule and range of first-event times can be replaced (what a
/// reprocess does): new ones added, changed ones updated, the ones the fixed rules no longer
/// raise retracted — never duplicated, since ids are deterministic.
pub trait RangeStore {
    /// Replaces the alerts of `rule` whose first event is in `[from_ms, to_ms)` by `fresh`;
    /// with `dry_run`, only the diff.
    fn replace_range(
        &mut self,
        rule: &str,
        from_ms: i64,
        to_ms: i64,
        fresh: &[Alert],
        dry_run: bool,
    ) -> Result<Diff, HandlerError>;
}

/// What a reprocess changed, per day: `added`, `retracted`, `changed`, `unchanged` counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    /// Day → change → count.
    pub per_day: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

impl Diff {
    /// The total of one change.
    pub fn total(&self, what: &str) -> u64 {
        self.per_day.values().filter_map(|m| m.get(what)).sum()
    }
}

fn insert(conn: &Connection, a: &Alert, status: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO alerts (id, rule, key_field, key, window_start, window_end, value, threshold, severity, status, first_event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT(id) DO NOTHING",
        params![
            a.id(),
            a.rule,
            a.key_field,
            a.key,
            format_ms(a.window_start_ms),
            format_ms(a.window_end_ms),
            a.value as i64,
            a.threshold as i64,
            a.severity.as_str(),
            status,
            format_ms(a.first_event_ms)
        ],
    )
}

impl AlertStore for SqliteAlerts {
    fn put_if_absent(&mut self, a: &Alert) -> Result<Put, HandlerError> {
        if insert(&self.conn, a, "active").map_err(|e| self.err(e))? == 1 {
            return Ok(Put::New);
        }
        let notified: Option<bool> = self
            .conn
            .query_row("SELECT notified FROM alerts WHERE id = ?1", params![a.id()], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(Put::Duplicate { notified: notified.unwrap_or(false) })
    }

    fn mark_notified(&mut self, id: &str) -> Result<(), HandlerError> {
        self.conn.execute("UPDATE alerts SET notified = 1 WHERE id = ?1", params![id]).map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The local notifier (SNS's twin): a log line, a line in a JSON-lines file, and an optional
/// webhook (`http://host:port/path`, POSTed the alert's JSON).
#[derive(Debug)]
pub struct LocalNotifier {
    /// The JSON-lines file.
    pub file: PathBuf,
    /// The webhook.
    pub webhook: Option<String>,
}

impl Notifier for LocalNotifier {
    fn notify(&mut self, a: &Alert) -> Result<(), HandlerError> {
        tracing::warn!(
            rule = %a.rule, key = %a.key, window = %format_ms(a.window_start_ms), value = a.value,
            "ALERT {} {}={} had {} in [{}, {})", a.severity.as_str(), a.key_field, a.key, a.value,
            format_ms(a.window_start_ms), format_ms(a.window_end_ms)
        );
        if let Some(d) = self.file.parent() {
            std::fs::create_dir_all(d).map_err(|e| HandlerError::Notify(format!("{}: {e}", d.display())))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(|e| HandlerError::Notify(format!("{}: {e}", self.file.display())))?;
        writeln!(f, "{}", a.to_json()).map_err(|e| HandlerError::Notify(format!("{}: {e}", self.file.display())))?;
        if let Some(url) = &self.webhook {
            post_json(url, &a.to_json(), &[(DEDUPE_HEADER, &a.id())])
                .map_err(|e| HandlerError::Notify(format!("webhook {url}: {e}")))?;
        }
        Ok(())
    }
}

/// The webhook header that carries the alert's id: a notification is sent at least once (a
/// crash between sending and marking the alert notified sends it again), and a receiver drops
/// a repeat by this key. On SNS it is the `dedupe_key` message attribute.
pub const DEDUPE_HEADER: &str = "X-Cartflow-Dedupe-Key";

/// POSTs JSON to a plain `http://` URL with extra headers and expects a 2xx answer.
pub fn post_json(url: &str, body: &str, headers: &[(&str, &str)]) -> Result<(), String> {
    if headers.iter().any(|(k, v)| [k, v].iter().any(|s| s.contains(['\r', '\n']))) {
        return Err("a header may not contain a line break".into());
    }
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let rest = url.strip_prefix("http://").ok_or("only http:// webhooks are supported locally")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    let mut s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') { Ok(()) } else { Err(format!("answered `{}`", resp.lines().next().unwrap_or(""))) }
}

/// Local metrics (CloudWatch's twin): counters kept in memory and added to a JSON file.
#[derive(Debug, Default)]
pub struct LocalMetrics {
    /// Counter → value.
    pub counters: BTreeMap<String, u64>,
}

impl Metrics for LocalMetrics {
    fn count(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_string()).or_default() += n;
    }
}

impl LocalMetrics {
    /// Adds the counters to those in `path` (a JSON object).
    pub fn flush_to(&mut self, path: &Path) -> std::io::Result<()> {
        let mut all: BTreeMap<String, u64> =
            std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        for (k, v) in std::mem::take(&mut self.counters) {
            *all.entry(k).or_default() += v;
        }
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&all).unwrap_or_default())?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Severity;

    fn alert(key: &str, start_s: i64, value: u64, notify: bool) -> Alert {
        Alert {
            rule: "r".into(),
            key_field: "user_id".into(),
            key: key.into(),
            window_start_ms: start_s * 1000,
            window_end_ms: (start_s + 10) * 1000,
            value,
            first_event_ms: start_s * 1000,
            threshold: 20,
            severity: Severity::High,
            notify,
        }
    }

    struct FlakyNotifier {
        fail_next: bool,
        sent: Vec<String>,
    }

    impl Notifier for FlakyNotifier {
        fn notify(&mut self, a: &Alert) -> Result<(), HandlerError> {
            if std::mem::take(&mut self.fail_next) {
                return Err(HandlerError::Notify("down".into()));
            }
            self.sent.push(a.id());
            Ok(())
        }
    }

    #[test]
    fn redelivery_never_duplicates_and_a_failed_notification_is_retried_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteAlerts::open(&dir.path().join("alerts.db")).expect("open");
        let mut n = FlakyNotifier { fail_next: true, sent: vec![] };
        let mut m = LocalMetrics::default();
        let t = 1_569_888_000;
        let recs: Vec<String> =
            vec![alert("1", t, 30, false).to_json(), alert("2", t, 300, true).to_json(), "garbage".into()];
        let refs: Vec<&[u8]> = recs.iter().map(|s| s.as_bytes()).collect();
        assert!(handle(&refs, &mut store, &mut n, &mut m).is_err(), "the notifier failed: redeliver");
        let rep = handle(&refs, &mut store, &mut n, &mut m).expect("redelivered");
        assert_eq!(rep, HandleReport { received: 3, stored: 0, duplicates: 2, notified: 1, invalid: 1 });
        let rep = handle(&refs, &mut store, &mut n, &mut m).expect("again");
        assert_eq!(rep.notified, 0, "notified once");
        assert_eq!(n.sent, vec![alert("2", t, 300, true).id()]);
        let all = store.list(&AlertFilter::default()).expect("list");
        assert_eq!(all.len(), 2, "no duplicates");
        assert!(all.iter().any(|a| a.key == "2" && a.notified));
        assert_eq!(m.counters["AlertsDuplicate"], 4);
    }

    #[test]
    fn replace_range_adds_retracts_and_reports_per_day() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteAlerts::open(&dir.path().join("alerts.db")).expect("open");
        let d1 = 1_569_888_000; // 2019-10-01
        let mut nn = FlakyNotifier { fail_next: false, sent: vec![] };
        let mut m = LocalMetrics::default();
        let old = [alert("a", d1, 30, false), alert("b", d1 + 10, 30, false), alert("c", d1 + 86_400, 30, false)];
        let recs: Vec<String> = old.iter().map(Alert::to_json).collect();
        let refs: Vec<&[u8]> = recs.iter().map(|s| s.as_bytes()).collect();
        handle(&refs, &mut store, &mut nn, &mut m).expect("handled");
        let fresh = [alert("a", d1, 30, false), alert("b", d1 + 10, 31, false), alert("z", d1 + 20, 25, false)];
        let dry = store.replace_range("r", d1 * 1000, (d1 + 86_400) * 1000, &fresh, true).expect("dry run");
        assert_eq!(store.list(&AlertFilter::default()).expect("list").len(), 3, "a dry run changes nothing");
        let diff = store.replace_range("r", d1 * 1000, (d1 + 86_400) * 1000, &fresh, false).expect("replace");
        assert_eq!(dry, diff);
        assert_eq!(
            (diff.total("added"), diff.total("changed"), diff.total("unchanged"), diff.total("retracted")),
            (1, 1, 1, 0)
        );
        let diff = store.replace_range("r", d1 * 1000, (d1 + 86_400) * 1000, &fresh[..1], false).expect("retract");
        assert_eq!(diff.total("retracted"), 2);
        let active = store.list(&AlertFilter::default()).expect("list");
        assert_eq!(
            active.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            vec!["a", "c"],
            "c is another day: untouched"
        );
        let all = store.list(&AlertFilter { include_retracted: true, ..AlertFilter::default() }).expect("list");
        assert_eq!(all.len(), 4);
        let day2 =
            store.list(&AlertFilter { from: Some("2019-10-02".into()), ..AlertFilter::default() }).expect("list");
        assert_eq!(day2.len(), 1);
    }

    #[test]
    fn the_webhook_gets_the_alert() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("\"notify\":true}") {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let dir = tempfile::tempdir().expect("tmp");
        let mut n =
            LocalNotifier { file: dir.path().join("n.jsonl"), webhook: Some(format!("http://127.0.0.1:{port}/hook")) };
        let a = alert("9", 1_569_888_000, 500, true);
        n.notify(&a).expect("delivered");
        let req = server.join().expect("server");
        assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
        assert!(
            req.contains(&format!("\r\nX-Cartflow-Dedupe-Key: {}\r\n", a.id())),
            "the alert id as the dedupe key: {req}"
        );
        assert!(std::fs::read_to_string(dir.path().join("n.jsonl")).expect("file").contains("\"key\":\"9\""));
    }
}
