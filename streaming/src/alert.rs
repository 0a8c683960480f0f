//! An alert: what the detector emits to stream2 and the alert handler stores.
//!
//! The record on stream2 is the JSON object the Flink SQL's sink writes (see
//! [`crate::flink`]), so the handler reads Flink's output and the local engine's alike:
//!
//! ```json
//! {"rule":"ddos_user_burst","severity":"high","key_field":"user_id","key":"900123456",
//!  "window_start":"2019-10-01 13:20:10","window_end":"2019-10-01 13:20:20",
//!  "first_event":"2019-10-01 13:20:10","value":412,"threshold":20,"notify":true}
//! ```
//!
//! Its id is deterministic — `rule|key|window_start` — so a redelivered alert is recognised.

use serde::{Deserialize, Serialize};

use crate::rules::Severity;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule that fired.
    pub rule: String,
    /// The field the rule keys on.
    pub key_field: String,
    /// The key's value (a user id, a session, ...).
    pub key: String,
    /// Window start, epoch milliseconds.
    pub window_start_ms: i64,
    /// Window end (exclusive), epoch milliseconds.
    pub window_end_ms: i64,
    /// The aggregate's value.
    pub value: u64,
    /// The earliest event time in the group (ms): which day's data the alert comes from.
    pub first_event_ms: i64,
    /// The rule's threshold at the time.
    pub threshold: u64,
    /// Severity.
    pub severity: Severity,
    /// Whether it is above the notification threshold.
    pub notify: bool,
}

/// `YYYY-MM-DD HH:MM:SS` of epoch milliseconds (UTC), as Flink's `DATE_FORMAT` writes it.
pub fn format_ms(ms: i64) -> String {
    let mut s = String::new();
    cartflow_jobs::event::format_event_time(ms.div_euclid(1000), &mut s);
    s.truncate(19);
    s
}

/// Epoch milliseconds of `YYYY-MM-DD HH:MM:SS[.fff]` (UTC).
pub fn parse_ms(s: &str) -> Option<i64> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, f)) => (a, f),
        None => (s, ""),
    };
    let ms: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<3}")[..3].parse().ok()? };
    cartflow_jobs::event::parse_event_time(secs).map(|t| t * 1000 + ms)
}

/// The stream2 record.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    rule: String,
    severity: Severity,
    key_field: String,
    key: String,
    window_start: String,
    window_end: String,
    /// `YYYY-MM-DD HH:MM:SS` of the earliest event (absent in old records: the window start).
    #[serde(default)]
    first_event: String,
    value: u64,
    threshold: u64,
    notify: bool,
}

/// A stream2 record that is not an alert.
#[derive(Debug, thiserror::Error)]
#[error("not an alert record: {0}")]
pub struct BadAlert(String);

impl Alert {
    /// The deterministic id: `rule|key|window start`.
    pub fn id(&self) -> String {
        format!("{}|{}|{}", self.rule, self.key, format_ms(self.window_start_ms))
    }

    /// The date (`YYYY-MM-DD`) of the data the alert comes from (its earliest event).
    pub fn date(&self) -> String {
        format_ms(self.first_event_ms)[..10].to_string()
    }

    /// The stream2 record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Wire {
            rule: self.rule.clone(),
            severity: self.severity,
            key_field: self.key_field.clone(),
            key: self.key.clone(),
            window_start: format_ms(self.window_start_ms),
            window_end: format_ms(self.window_end_ms),
            first_event: format_ms(self.first_event_ms),
            value: self.value,
            threshold: self.threshold,
            notify: self.notify,
        })
        .unwrap_or_default()
    }

    /// Reads a stream2 record.
    pub fn from_json(b: &[u8]) -> Result<Alert, BadAlert> {
        let w: Wire = serde_json::from_slice(b).map_err(|e| BadAlert(e.to_string()))?;
        let start = parse_ms(&w.window_start).ok_or_else(|| BadAlert(format!("window_start `{}`", w.window_start)))?;
        let end = parse_ms(&w.window_end).ok_or_else(|| BadAlert(format!("window_end `{}`", w.window_end)))?;
        let first = if w.first_event.is_empty() { start } else { parse_ms(&w.first_event).unwrap_or(start) };
        Ok(Alert {
            first_event_ms: first,
            rule: w.rule,
            key_field: w.key_field,
            key: w.key,
            window_start_ms: start,
            window_end_ms: end,
            value: w.value,
            threshold: w.threshold,
            severity: w.severity,
            notify: w.notify,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_round_trips() {
        let a = Alert {
            rule: "r".into(),
            key_field: "user_id".into(),
            key: "9".into(),
            window_start_ms: 1_569_888_010_000,
            window_end_ms: 1_569_888_020_000,
            value: 40,
            first_event_ms: 1_569_888_011_000,
            threshold: 20,
            severity: Severity::High,
            notify: false,
        };
        let j = a.to_json();
        assert!(j.contains(r#""window_start":"2019-10-01 00:00:10""#), "{j}");
        assert_eq!(Alert::from_json(j.as_bytes()).expect("parses"), a);
        assert_eq!(a.id(), "r|9|2019-10-01 00:00:10");
        assert_eq!(parse_ms("2019-10-01 00:00:10.500"), Some(1_569_888_010_500));
        assert!(Alert::from_json(b"{}").is_err());
    }
}
