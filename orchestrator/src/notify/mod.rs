//! Notifications of batch runs: who is told what, and how it gets there.
//!
//! A DAG (and each task) may say `notify:` — rules of events (`on:`) and targets (`to:`). When
//! an event happens, the executor (or, for a missed deadline, the scheduler) records one
//! notification per target in the run store, in the same transaction as the state change that
//! caused it (an outbox); [`dispatch`] then sends what is recorded and marks it sent. Each
//! notification has a dedupe key — run, task, attempt, event — and the store holds one row per
//! key and target, so a crash and resume neither loses a notification (a recorded one that was
//! not marked sent is sent by the next process that owns the run) nor makes a second one. A
//! target that fails is retried with backoff; a notification that still fails is recorded as
//! failed and never fails the run.
//!
//! Targets: a webhook (the [`Notification`] as JSON), a Slack-compatible incoming webhook
//! (`{"text": …}`), a local file (one JSON line per notification) and an SNS topic (the aws
//! backend). Webhook URLs are secrets: they come from the environment (`url_env: NAME`), never
//! from a DAG file or `cartflow.yaml`, and no message or log line prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::schedule::DataInterval;
use crate::yaml::{self, Node, Pos, Value, did_you_mean};

pub mod dispatch;
pub mod send;

pub use dispatch::Dispatcher;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A task's attempt failed and the task has no retry left (or the failure is not
    /// retryable).
    Failure,
    /// A task's attempt failed and the task will be retried.
    Retry,
    /// DAG level: the run succeeded; task level: the task succeeded.
    Success,
    /// A run (or a task with its own `deadline:`) had not succeeded by its deadline.
    DeadlineMiss,
    /// A data check of a task failed (raised by data checks).
    CheckFailed,
}

/// Every event, in the order the docs list them.
pub const EVENTS: &[Event] = &[Event::Failure, Event::Retry, Event::Success, Event::DeadlineMiss, Event::CheckFailed];

impl Event {
    /// The name as DAG files write it and the store keeps it.
    pub fn name(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Retry => "retry",
            Event::Success => "success",
            Event::DeadlineMiss => "deadline_miss",
            Event::CheckFailed => "check_failed",
        }
    }

    /// The event named `s`.
    pub fn parse(s: &str) -> Option<Event> {
        EVENTS.iter().copied().find(|e| e.name() == s)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a notification goes: `webhook:`, `slack:`, `file:` or `sns:` with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSpec {
    /// POSTs the notification as JSON to the URL in an environment variable.
    Webhook(UrlFromEnv),
    /// POSTs `{"text": "…"}` (a Slack-compatible incoming webhook) to the URL in an environment
    /// variable.
    Slack(UrlFromEnv),
    /// Appends the notification as one JSON line to a file (relative to the project folder).
    File(FileTarget),
    /// Publishes the notification to an SNS topic (the aws backend).
    Sns(SnsTarget),
}

impl TargetSpec {
    /// The kind of target, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::Webhook(_) => "webhook",
            TargetSpec::Slack(_) => "slack",
            TargetSpec::File(_) => "file",
            TargetSpec::Sns(_) => "sns",
        }
    }

    /// The name of a target written inline in a DAG file (named targets have their own):
    /// `webhook:ENV_NAME`, `slack:ENV_NAME`, `file:PATH`, `sns:ARN`. Never a secret.
    pub fn inline_name(&self) -> String {
        match self {
            TargetSpec::Webhook(u) => format!("webhook:{}", u.url_env),
            TargetSpec::Slack(u) => format!("slack:{}", u.url_env),
            TargetSpec::File(f) => format!("file:{}", f.path.display()),
            TargetSpec::Sns(s) => format!("sns:{}", s.topic_arn),
        }
    }
}

/// A URL that is a secret: the name of the environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlFromEnv {
    /// The environment variable with the URL (`http://…` or `https://…`).
    pub url_env: String,
}

impl<'de> Deserialize<'de> for UrlFromEnv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            url_env: Option<String>,
            url: Option<serde::de::IgnoredAny>,
        }
        let raw = Raw::deserialize(d)?;
        if raw.url.is_some() {
            return Err(D::Error::custom(
                "`url`: a webhook URL is a secret and is never written in a file; put it in an environment variable and name that with `url_env: NAME`",
            ));
        }
        let Some(url_env) = raw.url_env else {
            return Err(D::Error::missing_field("url_env"));
        };
        if !valid_env_name(&url_env) {
            return Err(D::Error::custom(format!(
                "`url_env`: `{url_env}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        Ok(UrlFromEnv { url_env })
    }
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// A JSON-lines file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTarget {
    /// The file, relative to the project folder (created with its folders).
    pub path: PathBuf,
}

/// An SNS topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnsTarget {
    /// The topic's ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`).
    pub topic_arn: String,
}

impl<'de> Deserialize<'de> for SnsTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            topic_arn: String,
        }
        let raw = Raw::deserialize(d)?;
        let parts: Vec<&str> = raw.topic_arn.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].is_empty() {
            return Err(D::Error::custom(format!(
                "`topic_arn`: `{}` is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
                raw.topic_arn
            )));
        }
        Ok(SnsTarget { topic_arn: raw.topic_arn })
    }
}

/// A target of a rule: a name defined under `notify.targets` in `cartflow.yaml`, or written in
/// the DAG file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    /// A named target of `cartflow.yaml`.
    Named(String),
    /// A target written in the DAG file.
    Inline(TargetSpec),
}

impl TargetRef {
    /// The name the store records the target by.
    pub fn name(&self) -> String {
        match self {
            TargetRef::Named(n) => n.clone(),
            TargetRef::Inline(s) => s.inline_name(),
        }
    }
}

/// One `notify:` rule: these events go to these targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The events (`on:`).
    pub on: BTreeSet<Event>,
    /// The targets (`to:`).
    pub to: Vec<TargetRef>,
}

/// `notify:` in `cartflow.yaml`: the named targets and how notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The web UI's address: the start of the log link in every notification.
    #[serde(default = "default_base_url", deserialize_with = "de_base_url")]
    pub base_url: String,
    /// The time limit of one delivery (connect, send, answer).
    #[serde(default = "default_timeout", deserialize_with = "de_timeout")]
    pub timeout: HumanDuration,
    /// How many times a failed delivery is retried (at most 20).
    #[serde(default = "default_retries", deserialize_with = "de_retries")]
    pub retries: u32,
    /// The delay before the first retry of a delivery; it doubles each retry, up to a minute.
    #[serde(default = "default_retry_delay", deserialize_with = "de_retry_delay")]
    pub retry_delay: HumanDuration,
    /// Named targets that DAGs refer to by name in `to:`.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSpec>,
}

/// The web UI's default address (`cartflow ui`).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8787";

/// The most retries of one delivery.
pub const MAX_DELIVERY_RETRIES: u32 = 20;

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_retries() -> u32 {
    3
}

fn default_retry_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn de_base_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.contains(char::is_whitespace) {
        return Err(D::Error::custom(format!("`base_url`: `{s}` is not an http:// or https:// URL")));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn de_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    use serde::de::Error;
    let t = HumanDuration::field(d, "timeout")?;
    if t.0.is_zero() {
        return Err(D::Error::custom("`timeout`: a delivery needs more than 0s"));
    }
    Ok(t)
}

fn de_retry_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    HumanDuration::field(d, "retry_delay")
}

fn de_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let n = u64::deserialize(d).map_err(|e| D::Error::custom(format!("`retries`: {e}")))?;
    if n > u64::from(MAX_DELIVERY_RETRIES) {
        return Err(D::Error::custom(format!("`retries`: {n} is more than the maximum of {MAX_DELIVERY_RETRIES}")));
    }
    Ok(n as u32)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_url: default_base_url(),
            timeout: default_timeout(),
            retries: default_retries(),
            retry_delay: default_retry_delay(),
            targets: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// The delay before retry `n` (1-based) of a delivery: `retry_delay * 2^(n-1)`, at most a
    /// minute.
    pub fn retry_delay_for(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.retry_delay.0.saturating_mul(factor).min(Duration::from_secs(60))
    }

    /// The spec of the target `t` refers to (`None`: a name `cartflow.yaml` does not define).
    pub fn resolve(&self, t: &TargetRef) -> Option<TargetSpec> {
        match t {
            TargetRef::Named(n) => self.targets.get(n).cloned(),
            TargetRef::Inline(s) => Some(s.clone()),
        }
    }
}

/// The data interval as a notification carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalInfo {
    /// `{{ ds }}`: the start date in the DAG's timezone.
    pub ds: String,
    /// Start, RFC 3339 in the DAG's timezone.
    pub start: String,
    /// End (exclusive), RFC 3339 in the DAG's timezone.
    pub end: String,
}

impl From<&DataInterval> for IntervalInfo {
    fn from(i: &DataInterval) -> Self {
        IntervalInfo { ds: i.ds(), start: i.start_rfc3339(), end: i.end.with_timezone(&i.tz).to_rfc3339() }
    }
}

/// One notification: what every target receives (a webhook the JSON of this, a file one line
/// of it, Slack its `message` and link, SNS this as the message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What happened.
    pub event: Event,
    /// The DAG.
    pub dag: String,
    /// The run id.
    pub run: String,
    /// The run's data interval.
    pub interval: IntervalInfo,
    /// The task, for a task's event.
    pub task: Option<String>,
    /// The task's attempt (a run's event: the attempts of all its tasks; a deadline: 0).
    pub attempt: u32,
    /// Why it failed, or what the deadline found.
    pub error: Option<String>,
    /// The attempt's log (or the run) in the web UI.
    pub log_url: String,
    /// `run/task/attempt/event` (`-` for no task): the same for every delivery of this
    /// notification, so that a receiver can drop a repeat.
    pub dedupe_key: String,
    /// One line for people (Slack's text, SNS's subject).
    pub message: String,
    /// When the event happened.
    pub at: DateTime<Utc>,
}

/// The dedupe key of a notification: `run/task/attempt/event`, `-` standing for no task.
pub fn dedupe_key(run_id: &str, task: Option<&str>, attempt: u32, event: Event) -> String {
    format!("{run_id}/{}/{attempt}/{}", task.unwrap_or("-"), event.name())
}

/// `s` as one URL path segment (ids are letters, digits, `_ - . @ :` already; anything else is
/// percent-encoded).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'@' | b':' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The web UI's page of an attempt (`/runs/RUN/tasks/TASK/attempts/N`), or of the run.
pub fn log_url(base: &str, run_id: &str, task: Option<&str>, attempt: u32) -> String {
    let base = base.trim_end_matches('/');
    match task {
        Some(t) if attempt > 0 => format!("{base}/runs/{}/tasks/{}/attempts/{attempt}", seg(run_id), seg(t)),
        Some(t) => format!("{base}/runs/{}/tasks/{}", seg(run_id), seg(t)),
        None => format!("{base}/runs/{}", seg(run_id)),
    }
}

/// What happened, for [`Notification::new`].
#[derive(Debug, Clone)]
pub struct Happened<'a> {
    /// The event.
    pub event: Event,
    /// The DAG.
    pub dag_id: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// Its interval.
    pub interval: &'a DataInterval,
    /// The task, for a task's event.
    pub task: Option<&'a str>,
    /// The attempt (see [`Notification::attempt`]).
    pub attempt: u32,
    /// The error, or what the deadline found.
    pub error: Option<&'a str>,
    /// When.
    pub at: DateTime<Utc>,
}

impl Notification {
    /// The notification of `h`, with links under `base_url`.
    pub fn new(h: &Happened<'_>, base_url: &str) -> Notification {
        let what = match h.task {
            Some(t) => format!("task `{t}` of {}", h.run_id),
            None => format!("run {}", h.run_id),
        };
        let error = h.error.map(|e| format!(": {}", clip(e, 300))).unwrap_or_default();
        let message = match h.event {
            Event::Failure => format!("{what} failed (attempt {}){error}", h.attempt),
            Event::Retry => format!("{what} failed (attempt {}) and will be retried{error}", h.attempt),
            Event::Success => format!("{what} succeeded"),
            Event::DeadlineMiss => format!("{what} missed its deadline{error}"),
            Event::CheckFailed => format!("{what}: a data check failed{error}"),
        };
        Notification {
            event: h.event,
            dag: h.dag_id.to_string(),
            run: h.run_id.to_string(),
            interval: IntervalInfo::from(h.interval),
            task: h.task.map(str::to_string),
            attempt: h.attempt,
            error: h.error.map(str::to_string),
            log_url: log_url(base_url, h.run_id, h.task, h.attempt),
            dedupe_key: dedupe_key(h.run_id, h.task, h.attempt, h.event),
            message: format!("cartflow: {message}"),
            at: h.at,
        }
    }
}

/// At most `n` characters of `s`, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace(['\r', '\n'], " ");
    if one_line.chars().count() <= n {
        return one_line;
    }
    let mut out: String = one_line.chars().take(n).collect();
    out.push('…');
    out
}

/// The targets that get `event` of the task `task` (or of the run), by the rules of the DAG
/// (`dag`) and of the task (`task_rules`), each target once, in rule order.
///
/// DAG-level rules get every task's `failure`, `retry`, `check_failed` and `deadline_miss`,
/// and the run's `success` and `deadline_miss`; a task's own rules get that task's events
/// (its `success` included).
pub fn targets_for<'a>(
    dag: &'a [Rule],
    task_rules: Option<&'a [Rule]>,
    task: bool,
    event: Event,
) -> Vec<&'a TargetRef> {
    let dag_level = !(task && event == Event::Success);
    let mut out: Vec<&TargetRef> = Vec::new();
    let mut seen = BTreeSet::new();
    let rules = dag.iter().filter(|_| dag_level).chain(task_rules.into_iter().flatten());
    for r in rules.filter(|r| r.on.contains(&event)) {
        for t in &r.to {
            if seen.insert(t.name()) {
                out.push(t);
            }
        }
    }
    out
}

/// A problem in a `notify:` block, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

fn events_hint() -> String {
    format!("events are {}", EVENTS.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "))
}

/// Reads a `notify:` block: a list of `{on: EVENT | [EVENTS], to: TARGET | [TARGETS]}`, where a
/// target is a name of `cartflow.yaml`'s `notify.targets` (checked against `known` when given)
/// or a `webhook:` / `slack:` / `file:` / `sns:` mapping. Every problem is reported.
pub fn parse_rules(node: &Node, known: Option<&BTreeSet<String>>) -> (Vec<Rule>, Vec<Problem>) {
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let items: Vec<&Node> = match &node.value {
        Value::Null => Vec::new(),
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => vec![node],
        other => {
            problem(
                &mut problems,
                node.pos,
                format!("`notify` must be a list of rules, found {}", other.type_name()),
                Some("write `notify: [{on: [failure], to: my_target}]`".into()),
            );
            Vec::new()
        }
    };
    for item in items {
        let before = problems.len();
        let Value::Map(entries) = &item.value else {
            problem(
                &mut problems,
                item.pos,
                format!("a `notify` rule must be a mapping with `on` and `to`, found {}", item.value.type_name()),
                None,
            );
            continue;
        };
        let mut on: Option<BTreeSet<Event>> = None;
        let mut to: Option<Vec<TargetRef>> = None;
        for (k, v) in entries {
            // YAML 1.1 reads a bare `on` as true; accept both spellings of the key.
            let key = match &k.value {
                Value::Bool(true) => Some("on".to_string()),
                _ => k.scalar_text(),
            };
            match key.as_deref() {
                Some("on") => {
                    let names: Vec<&Node> = match &v.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    let mut set = BTreeSet::new();
                    for n in names {
                        match n.as_str() {
                            Some(s) => match Event::parse(s) {
                                Some(e) => {
                                    set.insert(e);
                                }
                                None => {
                                    let hint = did_you_mean(s, EVENTS.iter().map(|e| e.name()))
                                        .map(|s| format!("did you mean `{s}`?"))
                                        .unwrap_or_else(events_hint);
                                    problem(&mut problems, n.pos, format!("unknown notify event `{s}`"), Some(hint));
                                }
                            },
                            None => problem(
                                &mut problems,
                                n.pos,
                                format!("`on` must name events, found {}", n.value.type_name()),
                                Some(events_hint()),
                            ),
                        }
                    }
                    if set.is_empty() && matches!(&v.value, Value::Seq(s) if s.is_empty()) {
                        problem(&mut problems, v.pos, "`on` is empty".into(), Some(events_hint()));
                    }
                    on = Some(set);
                }
                Some("to") => {
                    let targets: Vec<&Node> = match &v.value {
                        Value::Seq(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    if targets.is_empty() {
                        problem(&mut problems, v.pos, "`to` is empty".into(), Some("name at least one target".into()));
                    }
                    let mut list = Vec::new();
                    for t in targets {
                        if let Some(t) = parse_target(t, known, &mut problems) {
                            list.push(t);
                        }
                    }
                    to = Some(list);
                }
                Some(other) => {
                    let hint = did_you_mean(other, ["on", "to"]).map(|s| format!("did you mean `{s}`?"));
                    problem(
                        &mut problems,
                        k.pos,
                        format!("unknown key `{other}` in a `notify` rule"),
                        hint.or_else(|| Some("a rule has `on` and `to`".into())),
                    );
                }
                None => problem(&mut problems, k.pos, "keys must be plain names".into(), None),
            }
        }
        match (on, to) {
            (Some(on), Some(to)) if problems.len() == before => rules.push(Rule { on, to }),
            (Some(_), Some(_)) => {}
            (on, to) => {
                if on.is_none() {
                    problem(&mut problems, item.pos, "a `notify` rule is missing `on`".into(), Some(events_hint()));
                }
                if to.is_none() {
                    problem(
                        &mut problems,
                        item.pos,
                        "a `notify` rule is missing `to`".into(),
                        Some(
                            "name a target of cartflow.yaml, or write one (`webhook:`, `slack:`, `file:`, `sns:`)"
                                .into(),
                        ),
                    );
                }
            }
        }
    }
    (rules, problems)
}

fn parse_target(node: &Node, known: Option<&BTreeSet<String>>, problems: &mut Vec<Problem>) -> Option<TargetRef> {
    match &node.value {
        Value::Str(name) => {
            if let Some(known) = known
                && !known.contains(name)
            {
                let hint = did_you_mean(name, known.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| {
                        "define it under `notify: targets:` in cartflow.yaml, or write the target here (`webhook:`, `slack:`, `file:`, `sns:`)".into()
                    });
                problem(problems, node.pos, format!("unknown notify target `{name}`"), Some(hint));
                return None;
            }
            Some(TargetRef::Named(name.clone()))
        }
        Value::Map(_) => match yaml::from_node::<TargetSpec>(node) {
            Ok(spec) => Some(TargetRef::Inline(spec)),
            Err(e) => {
                problem(problems, e.pos.unwrap_or(node.pos), format!("notify target: {}", e.message), e.hint);
                None
            }
        },
        other => {
            problem(
                problems,
                node.pos,
                format!("a notify target is a name or a mapping, found {}", other.type_name()),
                None,
            );
            None
        }
    }
}

fn problem(problems: &mut Vec<Problem>, pos: Pos, message: String, hint: Option<String>) {
    problems.push(Problem { pos, message, hint });
}

#[cfg(test)]
mod tests;
