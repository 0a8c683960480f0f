//! Detection rules, declared once in YAML: they become both the Flink SQL deployed to AWS
//! ([`crate::flink`]) and the parameters of the local window engine ([`crate::window`]).
//!
//! ```yaml
//! rules:
//!   - name: ddos_user_burst
//!     key: user_id                  # user_id, user_session, product_id, category_id, brand, ...
//!     window: { size: 10s }         # tumbling; add `slide: 5s` for hopping windows
//!     time: event_time              # or ingest_time (when the event reached the stream)
//!     watermark_delay: 5s
//!     event_types: [view]           # optional filter
//!     aggregate: count              # or count_distinct(product_id)
//!     threshold: 20                 # an alert when the value is above it
//!     notify_above: 100             # a notification when the value is above it
//!     severity: high                # low | medium | high | critical
//! ```

use std::path::Path;

use serde::Deserialize;

/// The event fields a rule may key on or count.
pub const FIELDS: [&str; 7] =
    ["event_type", "product_id", "category_id", "category_code", "brand", "user_id", "user_session"];

/// The event types of the data.
pub const EVENT_TYPES: [&str; 4] = ["view", "cart", "remove_from_cart", "purchase"];

/// A rules file that cannot be used, with where.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", if *line == 0 { file.clone() } else { format!("{file}:{line}:{column}") })]
pub struct RulesError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// Which clock a rule's windows run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeField {
    /// When the event happened (`event_time` in the data), with a watermark.
    EventTime,
    /// When the event reached the stream (Kinesis' approximate arrival time). Only a live
    /// stream has it: the raw archive does not, so such a rule cannot be reprocessed.
    IngestTime,
}

/// What a rule computes per key and window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Aggregate {
    /// The number of events.
    Count,
    /// The number of distinct values of a field.
    CountDistinct(String),
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Aggregate::Count => f.write_str("count"),
            Aggregate::CountDistinct(c) => write!(f, "count_distinct({c})"),
        }
    }
}

/// A window: tumbling (no slide) or hopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// Length in milliseconds.
    pub size_ms: i64,
    /// Hop in milliseconds; equal to the size for a tumbling window.
    pub slide_ms: i64,
}

impl Window {
    /// Whether the windows overlap (hopping).
    pub fn is_hopping(&self) -> bool {
        self.slide_ms != self.size_ms
    }
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One detection rule, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rule {
    /// Name (`[a-z][a-z0-9_]*`), part of every alert id.
    pub name: String,
    /// What the rule is for.
    pub description: String,
    /// The field alerts are keyed by.
    pub key: String,
    /// The window.
    pub window: Window,
    /// The clock of the windows.
    pub time: TimeField,
    /// How long to wait for out-of-order events, in milliseconds.
    pub watermark_delay_ms: i64,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
    /// What is computed.
    pub aggregate: Aggregate,
    /// An alert when the value is above this.
    pub threshold: u64,
    /// A notification when the value is above this.
    pub notify_above: u64,
    /// Severity of the alerts.
    pub severity: Severity,
}

/// A checked rules file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleSet {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rules: Vec<serde_saphyr::Spanned<RawRule>>,
}

/// A rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Name.
    name: String,
    /// What the rule is for.
    #[serde(default)]
    description: String,
    /// Key field.
    key: String,
    /// The window.
    window: RawWindow,
    /// The clock.
    #[serde(default = "default_time")]
    time: TimeField,
    /// Out-of-orderness allowed.
    #[serde(default = "default_delay")]
    watermark_delay: String,
    /// Event type filter.
    #[serde(default)]
    event_types: Vec<String>,
    /// `count` or `count_distinct(FIELD)`.
    #[serde(default = "default_aggregate")]
    aggregate: String,
    /// Alert threshold.
    threshold: u64,
    /// Notification threshold (default: the alert threshold, so every alert notifies).
    #[serde(default)]
    notify_above: Option<u64>,
    /// Severity.
    #[serde(default = "default_severity")]
    severity: Severity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    /// Length, e.g. `10s`.
    size: String,
    /// Hop (hopping windows), e.g. `5s`.
    #[serde(default)]
    slide: Option<String>,
}

fn default_time() -> TimeField {
    TimeField::EventTime
}

fn default_delay() -> String {
    "5s".into()
}

fn default_aggregate() -> String {
    "count".into()
}

fn default_severity() -> Severity {
    Severity::Medium
}

/// Parses `500ms`, `10s`, `2m`, `1h` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl RuleSet {
    /// Reads and checks a rules file.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let src = std::fs::read_to_string(path).map_err(|e| RulesError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        RuleSet::parse(&src, &path.display().to_string())
    }

    /// Parses and checks the text of a rules file; `file` names it in errors.
    pub fn parse(src: &str, file: &str) -> Result<RuleSet, RulesError> {
        let raw: RawFile = serde_saphyr::from_str(src).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            // The message without the location and snippet serde-saphyr adds (we print our
            // own) and without Rust type names (`invalid u64`).
            let message = cartflow_jobs::words::plain(&e.without_snippet().to_string());
            RulesError { file: file.into(), line, column, message }
        })?;
        let mut rules = Vec::new();
        for spanned in raw.rules {
            let loc = spanned.referenced;
            let err =
                |message: String| RulesError { file: file.into(), line: loc.line(), column: loc.column(), message };
            let r = spanned.value;
            let ctx = |m: String| err(format!("rule `{}`: {m}", r.name));
            let name_ok = r.name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && r.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return Err(err(format!("rule name `{}` must match [a-z][a-z0-9_]*", r.name)));
            }
            if rules.iter().any(|x: &Rule| x.name == r.name) {
                return Err(err(format!("duplicate rule name `{}`", r.name)));
            }
            if !FIELDS.contains(&r.key.as_str()) {
                return Err(ctx(format!("unknown key field `{}` (one of: {})", r.key, FIELDS.join(", "))));
            }
            let dur = |what: &str, s: &str| -> Result<i64, RulesError> {
                match parse_duration_ms(s) {
                    Some(ms) if ms >= 1000 && ms % 1000 == 0 => Ok(ms),
                    Some(_) => Err(ctx(format!("`{what}` must be whole seconds, at least 1s (got `{s}`)"))),
                    None => Err(ctx(format!("`{what}`: `{s}` is not a duration like 10s, 5m or 1h"))),
                }
            };
            let size_ms = dur("window.size", &r.window.size)?;
            let slide_ms = match &r.window.slide {
                Some(s) => dur("window.slide", s)?,
                None => size_ms,
            };
            if slide_ms > size_ms {
                return Err(ctx(format!("window slide {slide_ms} ms is longer than its size {size_ms} ms")));
            }
            if size_ms % slide_ms != 0 {
                return Err(ctx(
                    "a hopping window's size must be a whole multiple of its slide (as Flink requires)".into()
                ));
            }
            if 86_400_000 % slide_ms != 0 {
                return Err(ctx("the window slide must divide a day, so that windows align to dates".into()));
            }
            let watermark_delay_ms = match parse_duration_ms(&r.watermark_delay) {
                Some(ms) if ms % 1000 == 0 => ms,
                _ => {
                    return Err(ctx(format!(
                        "`watermark_delay`: `{}` is not whole seconds like 5s",
                        r.watermark_delay
                    )));
                }
            };
            for t in &r.event_types {
                if !EVENT_TYPES.contains(&t.as_str()) {
                    return Err(ctx(format!("unknown event type `{t}` (one of: {})", EVENT_TYPES.join(", "))));
                }
            }
            let aggregate = match r.aggregate.trim() {
                "count" => Aggregate::Count,
                a => match a.strip_prefix("count_distinct(").and_then(|x| x.strip_suffix(')')) {
                    Some(f) if FIELDS.contains(&f.trim()) => Aggregate::CountDistinct(f.trim().to_string()),
                    Some(f) => return Err(ctx(format!("unknown field `{f}` in `{a}`"))),
                    None => return Err(ctx(format!("aggregate `{a}` is not `count` or `count_distinct(FIELD)`"))),
                },
            };
            let notify_above = r.notify_above.unwrap_or(r.threshold);
            if notify_above < r.threshold {
                return Err(ctx(format!(
                    "`notify_above` ({notify_above}) is below `threshold` ({}): it would notify alerts that do not exist",
                    r.threshold
                )));
            }
            rules.push(Rule {
                name: r.name,
                description: r.description,
                key: r.key,
                window: Window { size_ms, slide_ms },
                time: r.time,
                watermark_delay_ms,
                event_types: r.event_types,
                aggregate,
                threshold: r.threshold,
                notify_above,
                severity: r.severity,
            });
        }
        if rules.is_empty() {
            return Err(RulesError { file: file.into(), line: 1, column: 1, message: "no rules".into() });
        }
        Ok(RuleSet { rules })
    }

    /// The rule of a name.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_parse() {
        for f in ["rules/ddos.yaml", "rules/ddos_seed_bug.yaml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let set = RuleSet::load(&p).expect("parses");
            let r = &set.rules[0];
            assert_eq!(r.window, Window { size_ms: 10_000, slide_ms: 10_000 });
            assert_eq!(r.threshold, 20);
            assert_eq!(r.notify_above, 100);
        }
    }

    #[test]
    fn errors_name_no_rust_type_and_say_their_position_once() {
        let src = "rules:\n  - name: a\n    key: user_id\n    window: { size: 10s }\n    threshold: lots\n";
        let e = RuleSet::parse(src, "r.yaml").expect_err("not a number");
        assert_eq!(e.to_string(), "r.yaml:5:16: not a whole number ≥ 0");
        let e = RuleSet::load(Path::new("/nonexistent/r.yaml")).expect_err("no file");
        assert!(e.to_string().starts_with("/nonexistent/r.yaml: cannot read: "), "{e}");
    }

    #[test]
    fn errors_point_at_the_line_and_column() {
        let src =
            "rules:\n  - name: a\n    key: user_id\n    window: { size: 10s }\n    threshold: 3\n    treshold: 4\n";
        let e = RuleSet::parse(src, "r.yaml").expect_err("unknown key");
        assert_eq!((e.line, e.column), (6, 5), "{e}");
        assert!(e.to_string().starts_with("r.yaml:6:5: unknown field"), "{e}");
        assert!(e.message.contains("treshold"), "{e}");

        let src = "rules:\n  - name: a\n    key: user_id\n    window: { size: 10s, slide: 3s }\n    threshold: 3\n";
        let e = RuleSet::parse(src, "r.yaml").expect_err("size not a multiple of slide");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("whole multiple"), "{e}");

        let src = "rules:\n  - name: a\n    key: password\n    window: { size: 10s }\n    threshold: 3\n";
        assert!(RuleSet::parse(src, "r.yaml").expect_err("bad key").message.contains("unknown key field `password`"));
        let src = "rules:\n  - name: a\n    key: user_id\n    window: { size: 10 }\n    threshold: 3\n";
        assert!(RuleSet::parse(src, "r.yaml").expect_err("no unit").message.contains("not a duration"));
        let src = "rules:\n  - name: a\n    key: user_id\n    window: { size: 10s }\n    aggregate: sum(price)\n    threshold: 3\n";
        assert!(RuleSet::parse(src, "r.yaml").expect_err("bad aggregate").message.contains("sum(price)"));
        let src = "rules:\n  - name: a\n    key: user_id\n    window: { size: 10s }\n    threshold: 30\n    notify_above: 3\n";
        assert!(RuleSet::parse(src, "r.yaml").expect_err("notify below").message.contains("notify_above"));
    }

    #[test]
    fn hopping_windows_and_distinct_counts() {
        let src = "rules:\n  - name: scan\n    key: user_session\n    window: { size: 1m, slide: 10s }\n    aggregate: count_distinct(product_id)\n    event_types: [view]\n    threshold: 30\n";
        let set = RuleSet::parse(src, "r.yaml").expect("parses");
        let r = &set.rules[0];
        assert!(r.window.is_hopping());
        assert_eq!(r.window, Window { size_ms: 60_000, slide_ms: 10_000 });
        assert_eq!(r.aggregate, Aggregate::CountDistinct("product_id".into()));
        assert_eq!(r.notify_above, 30);
        assert_eq!(r.severity, Severity::Medium);
        assert_eq!(r.watermark_delay_ms, 5000);
    }
}
