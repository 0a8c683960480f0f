//! The local window engine: event-time (or ingest-time) tumbling and hopping windows per key,
//! with watermarks, as Flink computes them.
//!
//! Semantics (those of Flink's window aggregation, so that the conformance test can compare):
//! - The watermark of a rule is `max time seen - watermark_delay`, the minimum over the source
//!   partitions (shards): a shard that has delivered nothing yet holds it back, as an idle
//!   Kinesis shard holds back a Flink source. The end of a bounded input ([`Engine::advance_to`]
//!   with a run's interval end, or [`Engine::finish`]) fires what is left. A window `[start, end)` fires once the
//!   watermark reaches `end`; it then emits an alert per key whose value is above the threshold.
//! - An event is added to every window containing it that has not fired. An event whose windows
//!   have all fired is late: it is counted per rule ([`RuleStats::late`]), never silently
//!   lost — it stays in the raw archive, where a reprocess with a larger delay will see it.
//! - Windows align to the epoch: tumbling starts are multiples of the size, hopping starts
//!   multiples of the slide.
//! - Records that are not JSON, or have no readable time, are counted as invalid; records
//!   without the rule's key are skipped by that rule (Flink's `WHERE key IS NOT NULL`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::json::Record;
use crate::rules::{Aggregate, Rule, TimeField};

/// A fast, non-cryptographic hasher for the window state (keys come from our own stream).
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fx = BuildHasherDefault<FxHasher>;

/// The state of one key in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Acc {
    /// Events (count rules).
    n: u64,
    /// Distinct values (count-distinct rules).
    distinct: Option<HashSet<Box<str>, Fx>>,
    /// The earliest event time in the group (ms): the data an alert comes from.
    first_ms: i64,
}

impl Acc {
    fn value(&self) -> u64 {
        match &self.distinct {
            None => self.n,
            Some(s) => s.len() as u64,
        }
    }
}

/// Per-rule counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Events the rule looked at (after its event-type filter, with a key).
    pub events: u64,
    /// Events that came after all their windows had fired.
    pub late: u64,
    /// Windows × keys evaluated.
    pub groups: u64,
    /// Alerts emitted.
    pub alerts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleState {
    #[serde(skip, default = "placeholder_rule")]
    rule: Option<Rule>,
    key_idx: usize,
    distinct_idx: Option<usize>,
    type_mask: u8,
    /// Open windows by start.
    windows: BTreeMap<i64, HashMap<Box<str>, Acc, Fx>>,
    /// Windows ending at or before this have fired.
    watermark: i64,
    stats: RuleStats,
}

fn placeholder_rule() -> Option<Rule> {
    None
}

/// Per source partition: the highest times seen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Part {
    max_event_ms: i64,
    max_ingest_ms: i64,
}

/// Engine-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Records read.
    pub records: u64,
    /// Records that were not JSON objects.
    pub not_json: u64,
    /// Records whose `event_time` could not be read.
    pub bad_time: u64,
}

/// The engine over a rule set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Engine {
    rules: Vec<RuleState>,
    parts: Vec<Part>,
    stats: EngineStats,
    /// The last `event_time` text read and its value (events come in bursts of one second).
    #[serde(skip)]
    time_cache: (String, i64),
}

fn type_bit(t: &str) -> u8 {
    match t {
        "view" => 1,
        "cart" => 2,
        "remove_from_cart" => 4,
        "purchase" => 8,
        _ => 16,
    }
}

fn field_idx(f: &str) -> usize {
    crate::rules::FIELDS.iter().position(|x| *x == f).unwrap_or(0)
}

/// Epoch milliseconds of the dataset's `event_time`.
pub fn event_time_ms(s: &str) -> Option<i64> {
    cartflow_jobs::event::parse_event_time(s).map(|t| t * 1000)
}

impl Engine {
    /// An engine for these rules, reading `partitions` source partitions (shards).
    pub fn new(rules: &[Rule], partitions: usize) -> Engine {
        let rules = rules
            .iter()
            .map(|r| RuleState {
                rule: Some(r.clone()),
                key_idx: field_idx(&r.key),
                distinct_idx: match &r.aggregate {
                    Aggregate::Count => None,
                    Aggregate::CountDistinct(f) => Some(field_idx(f)),
                },
                type_mask: if r.event_types.is_empty() {
                    0xff
                } else {
                    r.event_types.iter().map(|t| type_bit(t)).fold(0, |a, b| a | b)
                },
                windows: BTreeMap::new(),
                watermark: i64::MIN,
                stats: RuleStats::default(),
            })
            .collect();
        Engine {
            rules,
            parts: vec![Part { max_event_ms: i64::MIN, max_ingest_ms: i64::MIN }; partitions.max(1)],
            stats: EngineStats::default(),
            time_cache: (String::new(), 0),
        }
    }

    /// Restores an engine from [`Engine::snapshot`] for the same rules; `None` when the
    /// snapshot does not fit them (rules changed: start empty) or is damaged.
    pub fn restore(rules: &[Rule], snapshot: &[u8]) -> Option<Engine> {
        let mut e: Engine = serde_json::from_slice(snapshot).ok()?;
        // A snapshot without a shard (damaged: every engine has at least one) cannot be read.
        if e.rules.len() != rules.len() || e.parts.is_empty() {
            return None;
        }
        let fresh = Engine::new(rules, e.parts.len());
        for (s, f) in e.rules.iter_mut().zip(fresh.rules) {
            if s.key_idx != f.key_idx || s.distinct_idx != f.distinct_idx || s.type_mask != f.type_mask {
                return None;
            }
            s.rule = f.rule;
        }
        Some(e)
    }

    /// The state (open windows, watermarks, counters) as JSON, for a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Per-rule counters, in rule order.
    pub fn rule_stats(&self) -> Vec<(String, RuleStats)> {
        self.rules.iter().map(|r| (r.rule.as_ref().map(|r| r.name.clone()).unwrap_or_default(), r.stats)).collect()
    }

    /// Reads one record (a JSON line) from source `partition`, which reached the stream at
    /// `ingest_ms`; windows that close are emitted into `out`.
    pub fn push_line(&mut self, line: &[u8], partition: usize, ingest_ms: i64, out: &mut Vec<Alert>) {
        self.stats.records += 1;
        match crate::json::parse(line) {
            Ok(rec) => self.push(&rec, partition, ingest_ms, out),
            Err(_) => self.stats.not_json += 1,
        }
    }

    /// Reads one parsed record (counted in `records` by [`Engine::push_line`] only).
    pub fn push(&mut self, rec: &Record<'_>, partition: usize, ingest_ms: i64, out: &mut Vec<Alert>) {
        let Some(text) = rec.event_time.as_deref() else {
            self.stats.bad_time += 1;
            return;
        };
        let event_ms = if self.time_cache.0 == text {
            self.time_cache.1
        } else {
            let Some(ms) = event_time_ms(text) else {
                self.stats.bad_time += 1;
                return;
            };
            self.time_cache.0.clear();
            self.time_cache.0.push_str(text);
            self.time_cache.1 = ms;
            ms
        };
        let part = partition.min(self.parts.len() - 1);
        let p = &mut self.parts[part];
        let mut advanced = false;
        if event_ms > p.max_event_ms {
            p.max_event_ms = event_ms;
            advanced = true;
        }
        if ingest_ms > p.max_ingest_ms {
            p.max_ingest_ms = ingest_ms;
            advanced = true;
        }
        let tbit = rec.fields[0].as_deref().map_or(16, type_bit);
        for r in &mut self.rules {
            if r.type_mask & tbit == 0 {
                continue;
            }
            let Some(key) = rec.fields[r.key_idx].as_deref() else { continue };
            let distinct = match r.distinct_idx {
                Some(i) => match rec.fields[i].as_deref() {
                    Some(v) => Some(v),
                    None => continue, // COUNT(DISTINCT x) ignores nulls: nothing to add
                },
                None => None,
            };
            let rule = r.rule.as_ref().expect("rule set");
            let t = match rule.time {
                TimeField::EventTime => event_ms,
                TimeField::IngestTime => ingest_ms,
            };
            r.stats.events += 1;
            let (size, slide) = (rule.window.size_ms, rule.window.slide_ms);
            let last_start = t.div_euclid(slide) * slide;
            let mut added = false;
            let mut start = last_start;
            while start > t - size {
                if start + size > r.watermark {
                    let group = match r.windows.get_mut(&start) {
                        Some(g) => g,
                        None => r.windows.entry(start).or_default(),
                    };
                    match group.get_mut(key) {
                        Some(acc) => {
                            acc.n += 1;
                            acc.first_ms = acc.first_ms.min(event_ms);
                            if let (Some(set), Some(v)) = (acc.distinct.as_mut(), distinct)
                                && !set.contains(v)
                            {
                                set.insert(v.into());
                            }
                        }
                        None => {
                            let acc = Acc {
                                n: 1,
                                distinct: distinct.map(|v| std::iter::once(Box::<str>::from(v)).collect()),
                                first_ms: event_ms,
                            };
                            group.insert(key.into(), acc);
                        }
                    }
                    added = true;
                }
                start -= slide;
            }
            if !added {
                r.stats.late += 1;
            }
        }
        if advanced {
            self.advance(out);
        }
    }

    /// Recomputes the watermarks from the partitions and fires what closed.
    fn advance(&mut self, out: &mut Vec<Alert>) {
        let event_max = self.parts.iter().map(|p| p.max_event_ms).min().unwrap_or(i64::MIN);
        let ingest_max = self.parts.iter().map(|p| p.max_ingest_ms).min().unwrap_or(i64::MIN);
        for r in &mut self.rules {
            let rule = r.rule.as_ref().expect("rule set");
            let max = match rule.time {
                TimeField::EventTime => event_max,
                TimeField::IngestTime => ingest_max,
            };
            let wm = max.saturating_sub(rule.watermark_delay_ms);
            if wm > r.watermark {
                r.watermark = wm;
                fire(r, out);
            }
        }
    }

    /// The input is complete up to `ms` (the end of a run's interval): event-time watermarks
    /// move there, and ingest-time windows all fire (the input has all arrived). Fires what
    /// closed.
    pub fn advance_to(&mut self, ms: i64, out: &mut Vec<Alert>) {
        for r in &mut self.rules {
            let to = match r.rule.as_ref().map(|x| x.time) {
                Some(TimeField::IngestTime) => i64::MAX,
                _ => ms,
            };
            if to > r.watermark {
                r.watermark = to;
                fire(r, out);
            }
        }
    }

    /// The end of the input: every open window fires (Flink's final watermark).
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        self.advance_to(i64::MAX, out);
    }

    /// Open windows (all rules), for tests and metrics.
    pub fn open_windows(&self) -> usize {
        self.rules.iter().map(|r| r.windows.len()).sum()
    }
}

fn fire(r: &mut RuleState, out: &mut Vec<Alert>) {
    let rule = r.rule.as_ref().expect("rule set");
    let size = rule.window.size_ms;
    while let Some((&start, _)) = r.windows.first_key_value() {
        if start.saturating_add(size) > r.watermark {
            break;
        }
        let Some((start, group)) = r.windows.pop_first() else { break };
        r.stats.groups += group.len() as u64;
        let first = out.len();
        for (key, acc) in group {
            let value = acc.value();
            if value > rule.threshold {
                out.push(Alert {
                    rule: rule.name.clone(),
                    key_field: rule.key.clone(),
                    key: key.into(),
                    window_start_ms: start,
                    window_end_ms: start + size,
                    value,
                    first_event_ms: acc.first_ms,
                    threshold: rule.threshold,
                    severity: rule.severity,
                    notify: value > rule.notify_above,
                });
            }
        }
        r.stats.alerts += (out.len() - first) as u64;
        out[first..].sort_by(|a, b| a.key.cmp(&b.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn rules(extra: &str) -> Vec<Rule> {
        let src =
            format!("rules:\n  - name: r\n    key: user_id\n    window: {{ size: 10s }}\n    threshold: 2\n{extra}");
        RuleSet::parse(&src, "t.yaml").expect("rules").rules
    }

    fn line(t: i64, user: &str) -> String {
        let mut s = String::new();
        cartflow_jobs::event::format_event_time(t, &mut s);
        format!(r#"{{"event_time":"{s}","event_type":"view","product_id":{t},"user_id":"{user}"}}"#)
    }

    const T0: i64 = 1_569_888_000; // 2019-10-01 00:00:00

    #[test]
    fn tumbling_window_boundaries_are_start_inclusive_end_exclusive() {
        let mut e = Engine::new(&rules("    watermark_delay: 0s\n"), 1);
        let mut out = Vec::new();
        // 3 events in [0, 10), the 4th at 10 s belongs to the next window.
        for t in [0, 5, 9, 10] {
            e.push_line(line(T0 + t, "u").as_bytes(), 0, 0, &mut out);
        }
        assert_eq!(out.len(), 1, "the first window fired when the watermark reached its end");
        assert_eq!(out[0].window_start_ms, T0 * 1000);
        assert_eq!(out[0].window_end_ms, (T0 + 10) * 1000);
        assert_eq!(out[0].value, 3);
        for t in [11, 19] {
            e.push_line(line(T0 + t, "u").as_bytes(), 0, 0, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].window_start_ms, out[1].value), ((T0 + 10) * 1000, 3));
    }

    #[test]
    fn watermark_delay_admits_out_of_order_events_and_late_ones_are_counted() {
        let mut e = Engine::new(&rules("    watermark_delay: 5s\n"), 1);
        let mut out = Vec::new();
        for t in [1, 2, 14, 3] {
            // 3 arrives after 14: watermark 9 < 10, the window is still open.
            e.push_line(line(T0 + t, "u").as_bytes(), 0, 0, &mut out);
        }
        assert!(out.is_empty());
        e.push_line(line(T0 + 15, "u").as_bytes(), 0, 0, &mut out); // watermark 10: [0,10) fires
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 3);
        e.push_line(line(T0 + 4, "u").as_bytes(), 0, 0, &mut out); // too late
        e.finish(&mut out);
        let stats = e.rule_stats()[0].1;
        assert_eq!(stats.late, 1, "late events are counted");
        assert_eq!(stats.events, 6);
        assert_eq!(out.len(), 1, "[10,20) has only 2 events: not above the threshold");
    }

    #[test]
    fn hopping_windows_count_an_event_in_each_window() {
        let r = "rules:\n  - name: h\n    key: user_id\n    window: { size: 10s, slide: 5s }\n    watermark_delay: 0s\n    threshold: 0\n";
        let rules = RuleSet::parse(r, "t.yaml").expect("rules").rules;
        let mut e = Engine::new(&rules, 1);
        let mut out = Vec::new();
        e.push_line(line(T0 + 7, "u").as_bytes(), 0, 0, &mut out);
        e.finish(&mut out);
        let starts: Vec<i64> = out.iter().map(|a| a.window_start_ms / 1000 - T0).collect();
        assert_eq!(starts, vec![0, 5], "t=7 is in [0,10) and [5,15)");
    }

    #[test]
    fn distinct_counts_filters_and_keys() {
        let r = "rules:\n  - name: d\n    key: user_id\n    window: { size: 10s }\n    event_types: [view]\n    aggregate: count_distinct(product_id)\n    threshold: 1\n";
        let rules = RuleSet::parse(r, "t.yaml").expect("rules").rules;
        let mut e = Engine::new(&rules, 1);
        let mut out = Vec::new();
        let mut ts = String::new();
        cartflow_jobs::event::format_event_time(T0, &mut ts);
        for (ty, p, u) in [("view", 1, "a"), ("view", 1, "a"), ("cart", 2, "a"), ("view", 1, "b"), ("view", 2, "b")] {
            let l = format!(r#"{{"event_time":"{ts}","event_type":"{ty}","product_id":{p},"user_id":{u:?}}}"#);
            e.push_line(l.as_bytes(), 0, 0, &mut out);
        }
        e.push_line(b"not json", 0, 0, &mut out);
        e.push_line(br#"{"event_time":"yesterday","user_id":"a"}"#, 0, 0, &mut out);
        e.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].key.as_str(), out[0].value), ("b", 2), "a saw one distinct viewed product");
        assert_eq!(e.stats().not_json, 1);
        assert_eq!(e.stats().bad_time, 1);
    }

    #[test]
    fn the_watermark_is_the_slowest_shard() {
        let mut e = Engine::new(&rules("    watermark_delay: 0s\n"), 2);
        let mut out = Vec::new();
        e.push_line(line(T0, "w").as_bytes(), 1, 0, &mut out);
        for t in [0, 1, 2, 30] {
            e.push_line(line(T0 + t, "u").as_bytes(), 0, 0, &mut out);
        }
        assert!(out.is_empty(), "shard 1 (at 0 s) holds the watermark back");
        e.push_line(line(T0 + 31, "w").as_bytes(), 1, 0, &mut out);
        assert_eq!(out.len(), 1, "both shards past 10 s: [0,10) fires");
        assert_eq!(out[0].key, "u");
    }

    #[test]
    fn ingest_time_rules_window_on_arrival() {
        let mut e = Engine::new(&rules("    time: ingest_time\n    watermark_delay: 0s\n"), 1);
        let mut out = Vec::new();
        // Events an hour apart that arrived within one second: the seed's false alert.
        for h in 0..3 {
            e.push_line(line(T0 + h * 3600, "u").as_bytes(), 0, 1_000_000 + h, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 3);
    }

    #[test]
    fn a_snapshot_restores_open_windows() {
        let rs = rules("    watermark_delay: 0s\n");
        let mut e = Engine::new(&rs, 1);
        let mut out = Vec::new();
        for t in [0, 1] {
            e.push_line(line(T0 + t, "u").as_bytes(), 0, 0, &mut out);
        }
        let snap = e.snapshot();
        let mut e2 = Engine::restore(&rs, &snap).expect("restores");
        e2.push_line(line(T0 + 2, "u").as_bytes(), 0, 0, &mut out);
        e2.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 3);
        assert!(Engine::restore(&rules("    watermark_delay: 0s\n    event_types: [cart]\n"), &snap).is_none());
    }
}
