//! Data checks (write-audit-publish): `checks:` of a task that publishes a table or a
//! partition, run on its staged output after it is written and before it is swapped in.
//!
//! - A failing `error` check (the default severity) discards the staged output — the published
//!   table or partition stays as it was — and fails the task with the check's name and a sample
//!   of the failing rows. Retrying cannot fix data: the failure is not retried, and tasks
//!   downstream become `upstream_failed`.
//! - A failing `warn` check lets the output be published and raises `check_failed`.
//! - The results of every check are kept per task instance (the fact [`FACT`], JSON) and shown
//!   by `cartflow tasks`.
//!
//! Every check is SQL over the staged rows (registered as one table, a partition's rows with
//! their partition column), so that it means the same on every engine: DataFusion locally
//! ([`local`]), Athena on the aws backend (`aws`, for `athena_ctas`: its CTAS's temporary table).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{HumanDuration, humanize};
use crate::template::{self, Template};
use crate::yaml::{Node, Pos, Value, did_you_mean};

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;
pub(crate) mod run;

/// The fact under which a task instance's check results are kept (a JSON list of
/// [`CheckResult`]).
pub const FACT: &str = "checks";

/// The name the staged rows have in a check's SQL: `{{ this }}` in an `sql:` check.
pub const THIS: &str = "cartflow_staged";

/// The name the previous partition (or the published version) has: `{{ previous }}` in an
/// `sql:` check; empty, with the staged rows' columns, when there is none.
pub const PREVIOUS: &str = "cartflow_previous";

/// At most this many failing rows are shown per check.
pub const SAMPLE_ROWS: usize = 5;

/// What a failing check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The output is not published and the task fails (the default).
    Error,
    /// The output is published and `check_failed` is raised.
    Warn,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        })
    }
}

/// One check of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Unique within the task: `name:`, or made from the kind and its columns
    /// (`not_null(user_id)`).
    pub name: String,
    /// What a failure does.
    pub severity: Severity,
    /// What is checked.
    pub spec: Spec,
}

/// What a check checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// `row_count: {min, max}`: the staged rows are at least `min` and at most `max`.
    RowCount {
        /// The fewest rows.
        min: Option<u64>,
        /// The most rows.
        max: Option<u64>,
    },
    /// `row_count_change: {max_pct}`: the staged rows differ from the previous partition's (a
    /// full-refresh table: the version published now) by at most `max_pct` percent either way.
    /// Passes when there is nothing to compare with.
    RowCountChange {
        /// The largest change, in percent.
        max_pct: f64,
    },
    /// `not_null: [cols]`: no staged row has a null in these columns.
    NotNull(Vec<String>),
    /// `unique: [cols]`: no two staged rows have the same values in these columns together
    /// (rows with a null in one of them are not compared, as in dbt).
    Unique(Vec<String>),
    /// `accepted_values: {col: [values]}`: every non-null value of the column (as text) is one
    /// of these.
    AcceptedValues {
        /// The column.
        column: String,
        /// The values allowed.
        values: Vec<String>,
    },
    /// `freshness: {column, max_age}`: the newest value of the timestamp column is at most
    /// `max_age` before the end of the run's data interval.
    Freshness {
        /// The timestamp column.
        column: String,
        /// How old the newest row may be at the interval's end.
        max_age: Duration,
    },
    /// `quarantine_rate: {max_pct}`: quarantined rows / (clean + quarantined rows) of the
    /// staged output is at most `max_pct` percent.
    QuarantineRate {
        /// The highest rate, in percent.
        max_pct: f64,
    },
    /// `sql: SELECT …`: a query that must return no rows (the rows it returns are the failing
    /// ones). The staged rows are `{{ this }}`, the previous partition (or the published
    /// version) `{{ previous }}`; the catalog's tables are there too.
    Sql(String),
}

/// The kinds of check, as DAG files write them.
pub const KINDS: &[&str] =
    &["row_count", "row_count_change", "not_null", "unique", "accepted_values", "freshness", "quarantine_rate", "sql"];

/// A problem in a `checks:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

/// Whether `s` is a plain column name (letters, digits, `_`, not starting with a digit).
fn is_column(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// `{{ this }}` and `{{ previous }}` (any spacing inside the braces) replaced by `this` and
/// `previous`; nothing else changes.
pub fn substitute(sql: &str, this: &str, previous: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let name = after.find("}}").map(|j| (after[..j].trim(), j));
        match name {
            Some(("this", j)) | Some(("previous", j)) => {
                out.push_str(&rest[..i]);
                out.push_str(if after[..j].trim() == "this" { this } else { previous });
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses `checks:` of task `task` whose kind publishes `publishes`; every problem is
/// reported, with the task's name.
pub fn parse(
    node: &Node,
    task: &str,
    task_kind: &str,
    publishes: Publishes,
    params: &BTreeMap<String, String>,
) -> (Vec<Check>, Vec<Problem>) {
    let mut checks: Vec<Check> = Vec::new();
    let mut problems = Vec::new();
    let mut err = |pos: Pos, message: String, hint: Option<String>| {
        problems.push(Problem { pos, message: format!("task `{task}`: {message}"), hint });
    };
    if publishes == Publishes::Nothing {
        err(
            node.pos,
            format!(
                "`checks`: a task of kind `{task_kind}` publishes no table, so there is nothing to check before a swap"
            ),
            Some("checks go on tasks that publish a table or partition: athena_ctas, glue_job, databrew_job".into()),
        );
        return (checks, problems);
    }
    let items: Vec<&Node> = match &node.value {
        Value::Null => Vec::new(),
        Value::Seq(items) => items.iter().collect(),
        other => {
            err(
                node.pos,
                format!("`checks` must be a list of checks, found {}", other.type_name()),
                Some("write `checks: [{row_count: {min: 1}}, {not_null: [user_id]}]`".into()),
            );
            return (checks, problems);
        }
    };
    let mut positions: BTreeMap<String, Pos> = BTreeMap::new();
    for item in items {
        let Value::Map(entries) = &item.value else {
            err(
                item.pos,
                format!(
                    "a check must be a mapping such as `{{not_null: [user_id]}}`, found {}",
                    item.value.type_name()
                ),
                Some(format!("check kinds: {}", KINDS.join(", "))),
            );
            continue;
        };
        let mut severity = Severity::Error;
        let mut name: Option<String> = None;
        let mut found: Vec<(&str, &Node, Pos)> = Vec::new();
        // A problem with the item's own keys: the check is not kept (the problem says why).
        let mut broken = false;
        for (k, v) in entries {
            let key = k.scalar_text().unwrap_or_default();
            match key.as_str() {
                "severity" => match v.as_str() {
                    Some("error") => severity = Severity::Error,
                    Some("warn") => severity = Severity::Warn,
                    _ => {
                        err(v.pos, "`severity` is `error` or `warn`".into(), None);
                        broken = true;
                    }
                },
                "name" => match v.scalar_text() {
                    Some(n) if crate::ids::valid_id(&n) => name = Some(n),
                    _ => {
                        err(v.pos, "a check's `name` is a plain name (letters, digits, `_ - .`)".into(), None);
                        broken = true;
                    }
                },
                k2 => match KINDS.iter().find(|x| **x == k2) {
                    Some(kind) => found.push((*kind, v, k.pos)),
                    None => {
                        let hint = did_you_mean(k2, KINDS.iter().copied().chain(["severity", "name"]))
                            .map(|s| format!("did you mean `{s}`?"))
                            .or_else(|| Some(format!("check kinds: {}", KINDS.join(", "))));
                        err(k.pos, format!("unknown check `{k2}`"), hint);
                        broken = true;
                    }
                },
            }
        }
        let (kind, v, kpos) = match found.as_slice() {
            _ if broken => continue,
            [one] => *one,
            [] => {
                err(
                    item.pos,
                    "a check names one check kind".into(),
                    Some(format!("check kinds: {}", KINDS.join(", "))),
                );
                continue;
            }
            [_, second, ..] => {
                err(second.2, "one check kind per check: write each as its own list item".into(), None);
                continue;
            }
        };
        let mut made: Vec<(String, Spec)> = Vec::new();
        let mut bad = |pos: Pos, m: String| err(pos, format!("check `{kind}`: {m}"), None);
        let example = match kind {
            "row_count" => Some("{min: 1}"),
            "row_count_change" => Some("{max_pct: 50}"),
            "quarantine_rate" => Some("{max_pct: 5}"),
            "freshness" => Some("{column: event_time, max_age: 2h}"),
            _ => None,
        };
        if let Some(example) = example
            && !matches!(v.value, Value::Map(_))
        {
            bad(v.pos, format!("a mapping, e.g. `{example}`, found {}", v.value.type_name()));
            continue;
        }
        match kind {
            "row_count" => {
                let f = fields(v, &["min", "max"], &mut bad);
                let min = f.get("min").and_then(|n| count(n, &mut bad));
                let max = f.get("max").and_then(|n| count(n, &mut bad));
                if f.is_empty() {
                    bad(v.pos, "give `min`, `max` or both, e.g. `{min: 1}`".into());
                } else if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    bad(v.pos, format!("`min` ({a}) is above `max` ({b})"));
                } else if f.len() == usize::from(min.is_some()) + usize::from(max.is_some()) {
                    made.push(("row_count".into(), Spec::RowCount { min, max }));
                }
            }
            "row_count_change" | "quarantine_rate" => {
                let f = fields(v, &["max_pct"], &mut bad);
                match f.get("max_pct") {
                    None => bad(v.pos, "`max_pct` is required, e.g. `{max_pct: 50}`".into()),
                    Some(n) => {
                        if let Some(p) = pct(n, kind == "quarantine_rate", &mut bad) {
                            let spec = if kind == "quarantine_rate" {
                                Spec::QuarantineRate { max_pct: p }
                            } else {
                                Spec::RowCountChange { max_pct: p }
                            };
                            made.push((kind.to_string(), spec));
                        }
                    }
                }
                if kind == "quarantine_rate" && publishes != Publishes::TableWithQuarantine {
                    err(
                        kpos,
                        format!("check `quarantine_rate`: a task of kind `{task_kind}` quarantines no rows"),
                        Some("`quarantine_rate` is for a task that quarantines rows (glue_job clean_events)".into()),
                    );
                    made.clear();
                }
            }
            "not_null" | "unique" => {
                if let Some(cols) = columns(v, &mut bad) {
                    let label = format!("{kind}({})", cols.join(","));
                    made.push((label, if kind == "not_null" { Spec::NotNull(cols) } else { Spec::Unique(cols) }));
                }
            }
            "accepted_values" => match &v.value {
                Value::Map(cols) if !cols.is_empty() => {
                    for (c, list) in cols {
                        let col = c.scalar_text().unwrap_or_default();
                        if !is_column(&col) {
                            bad(c.pos, format!("`{col}` is not a column name"));
                            continue;
                        }
                        let values: Option<Vec<String>> = match &list.value {
                            Value::Seq(items) if !items.is_empty() => items
                                .iter()
                                .map(|i| {
                                    i.scalar_text().filter(|t| !t.chars().any(char::is_control)).or_else(|| {
                                        bad(i.pos, "a value is a scalar without control characters".into());
                                        None
                                    })
                                })
                                .collect(),
                            _ => {
                                bad(list.pos, format!("`{col}` needs a non-empty list of values"));
                                None
                            }
                        };
                        if let Some(values) = values {
                            made.push((
                                format!("accepted_values({col})"),
                                Spec::AcceptedValues { column: col, values },
                            ));
                        }
                    }
                }
                _ => bad(v.pos, "a mapping of a column to its values, e.g. `{event_type: [view, cart]}`".into()),
            },
            "freshness" => {
                let f = fields(v, &["column", "max_age"], &mut bad);
                let column = match f.get("column").and_then(|n| n.scalar_text()) {
                    Some(c) if is_column(&c) => Some(c),
                    Some(c) => {
                        bad(v.pos, format!("`column`: `{c}` is not a column name"));
                        None
                    }
                    None => {
                        bad(v.pos, "`column` (a timestamp column) is required".into());
                        None
                    }
                };
                let max_age = match f.get("max_age").and_then(|n| n.scalar_text()) {
                    Some(s) => match HumanDuration::parse(&s) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            bad(v.pos, format!("`max_age`: {e}"));
                            None
                        }
                    },
                    None => {
                        bad(v.pos, "`max_age` (e.g. `2h`) is required".into());
                        None
                    }
                };
                if let (Some(column), Some(max_age)) = (column, max_age) {
                    made.push((format!("freshness({column})"), Spec::Freshness { column, max_age }));
                }
            }
            "sql" => match v.as_str() {
                Some(text) if !text.trim().is_empty() => {
                    let sql = substitute(text, THIS, PREVIOUS);
                    let mut ok = true;
                    if let Err(e) = template::check(&sql, params) {
                        bad(v.pos, e.to_string());
                        ok = false;
                    }
                    for p in template::check_sql(&sql) {
                        bad(v.pos, p);
                        ok = false;
                    }
                    if ok {
                        made.push(("sql".into(), Spec::Sql(text.to_string())));
                    }
                }
                _ => bad(v.pos, "a SELECT (the staged rows are `{{ this }}`) that must return no rows".into()),
            },
            _ => {}
        }
        let many = made.len() > 1;
        for (label, spec) in made {
            let name = match (&name, many) {
                (Some(n), false) => n.clone(),
                (Some(n), true) => format!("{n}.{label}"),
                (None, _) => label,
            };
            if let Some(first) = positions.get(&name) {
                err(
                    item.pos,
                    format!("two checks named `{name}` (the first at line {})", first.line),
                    Some("give one of them a `name:`".into()),
                );
                continue;
            }
            positions.insert(name.clone(), item.pos);
            checks.push(Check { name, severity, spec });
        }
    }
    (checks, problems)
}

/// The entries of a mapping, unknown keys reported.
fn fields<'a>(v: &'a Node, known: &[&str], bad: &mut dyn FnMut(Pos, String)) -> BTreeMap<String, &'a Node> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &v.value else {
        bad(v.pos, format!("a mapping with {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")));
        return out;
    };
    for (k, val) in entries {
        let key = k.scalar_text().unwrap_or_default();
        if known.contains(&key.as_str()) {
            out.insert(key, val);
        } else {
            let hint = did_you_mean(&key, known.iter().copied()).map(|s| format!(" (did you mean `{s}`?)"));
            bad(k.pos, format!("unknown key `{key}`{}", hint.unwrap_or_default()));
        }
    }
    out
}

/// A row count: a whole number, 0 or more.
fn count(n: &Node, bad: &mut dyn FnMut(Pos, String)) -> Option<u64> {
    match n.value {
        Value::Int(i) if i >= 0 => Some(i as u64),
        Value::UInt(u) => Some(u),
        _ => {
            bad(
                n.pos,
                format!("a row count is a whole number, 0 or more, found `{}`", n.scalar_text().unwrap_or_default()),
            );
            None
        }
    }
}

/// A percentage: a number, 0 or more (at most 100 for a rate).
fn pct(n: &Node, rate: bool, bad: &mut dyn FnMut(Pos, String)) -> Option<f64> {
    let v = match n.value {
        Value::Int(i) => i as f64,
        Value::UInt(u) => u as f64,
        Value::Float(x) => x,
        _ => f64::NAN,
    };
    if !v.is_finite() || v < 0.0 || (rate && v > 100.0) {
        let range = if rate { "from 0 to 100" } else { "0 or more" };
        bad(n.pos, format!("`max_pct` is a percentage {range}, found `{}`", n.scalar_text().unwrap_or_default()));
        return None;
    }
    Some(v)
}

/// A non-empty list of column names (or one name).
fn columns(v: &Node, bad: &mut dyn FnMut(Pos, String)) -> Option<Vec<String>> {
    let items: Vec<&Node> = match &v.value {
        Value::Str(_) => vec![v],
        Value::Seq(items) if !items.is_empty() => items.iter().collect(),
        _ => {
            bad(v.pos, "a list of column names, e.g. `[user_id]`".into());
            return None;
        }
    };
    let mut out = Vec::new();
    for i in items {
        match i.scalar_text() {
            Some(c) if is_column(&c) => out.push(c),
            other => {
                bad(i.pos, format!("`{}` is not a column name", other.unwrap_or_default()));
                return None;
            }
        }
    }
    Some(out)
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Its severity.
    pub severity: Severity,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured, against what.
    pub detail: String,
    /// Some failing rows, as `column=value` text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
}

impl CheckResult {
    /// One line: `not_null(user_id) failed (error): 3 rows … — e.g. user_id=NULL, …`.
    pub fn line(&self) -> String {
        let verdict = if self.passed { "passed".to_string() } else { format!("failed ({})", self.severity) };
        let mut s = format!("check `{}` {verdict}: {}", self.name, self.detail);
        if !self.sample.is_empty() {
            s.push_str(&format!("; failing rows: {}", self.sample.join(" | ")));
        }
        s
    }
}

/// Where the staged output of a task is, for its checks.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The folder of the staged rows (Parquet).
    pub dir: PathBuf,
    /// A partition's key and value (its rows are written without the column).
    pub partition: Option<(String, String)>,
    /// What the staged rows replace, for `row_count_change`: the previous partition, or the
    /// published version of a full-refresh table.
    pub previous: Option<PathBuf>,
    /// The staged quarantine (Parquet), for `quarantine_rate`.
    pub quarantine: Option<PathBuf>,
}

impl Staged {
    /// Output `i` of a staged partition (`<table>/<key>=<value>`): its key and value from
    /// the live folder's name, the previous partition beside it.
    pub fn partition(staged: &cartflow_jobs::swap::Staged, i: usize) -> Staged {
        let live = staged.live(i).map(std::path::Path::to_path_buf).unwrap_or_default();
        let partition = live
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()));
        Staged {
            dir: staged.fresh(i).map(std::path::Path::to_path_buf).unwrap_or_default(),
            partition,
            previous: cartflow_jobs::swap::previous_partition(&live),
            quarantine: None,
        }
    }
}

/// `, checks: 4 passed, 1 warned` for a task's summary.
pub fn summary(results: &[CheckResult]) -> String {
    if results.is_empty() {
        return String::new();
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let warned = results.len() - passed;
    if warned == 0 {
        format!("; checks: {passed} passed")
    } else {
        format!("; checks: {passed} passed, {warned} warned")
    }
}

/// How a duration is written in a check's detail.
fn age(d: Duration) -> String {
    humanize(d)
}

/// `s` cut to at most `n` characters (with `…`).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A check's text in SQL (a string literal).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A column name quoted.
fn ident(c: &str) -> String {
    format!("\"{c}\"")
}

/// The template for an `sql:` check with `{{ this }}` and `{{ previous }}` replaced.
fn sql_template(text: &str, this: &str, previous: &str) -> Template {
    Template::from(substitute(text, this, previous).as_str())
}

/// What a kind publishes, and so which data checks (`checks:`) its tasks may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishes {
    /// No table: `checks:` is refused.
    Nothing,
    /// A table or a partition, staged before it is swapped in: every check but
    /// `quarantine_rate`.
    Table,
    /// A partition and the quarantine of the rows it refused: every check.
    TableWithQuarantine,
}

#[cfg(test)]
mod tests;
