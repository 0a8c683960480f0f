//! Load → compile: DAG files become [`Dag`]s, or a list of every problem found.
//!
//! The compile step never stops at the first problem: it walks the whole YAML tree of every
//! file and reports each error with file, line, column and, where it can guess, a hint.
//! One bad file never hides the others, and no input makes it panic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::{Backoff, Dag, RetryPolicy, Task, TriggerRule};
use crate::duration::{HumanDuration, humanize};
use crate::kinds;
use crate::schedule::{self, Schedule};
use crate::task::{CompileEnv, KindEntry};
use crate::template;
use crate::yaml::{self, DeError, Node, Pos, Value, did_you_mean};

/// One compile problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// Where in it.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: error: {}", self.file.display(), self.pos, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  = hint: {h}")?;
        }
        Ok(())
    }
}

/// The result of compiling a folder (or a list of files).
#[derive(Debug, Default)]
pub struct DagSet {
    /// DAGs that compiled, by id.
    pub dags: BTreeMap<String, Arc<Dag>>,
    /// Every problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// The other files the tasks' configs name (SQL files, recipes, rules), read or looked for:
    /// a change to one of them, or to `files`, means the set must be compiled again.
    pub read: Vec<PathBuf>,
    /// For each file that failed, the DAG id it declares (when that much could be read).
    pub failed_ids: BTreeMap<String, PathBuf>,
}

impl DagSet {
    /// Finds a DAG by id, or by the path of its file.
    pub fn get(&self, name: &str) -> Option<&Arc<Dag>> {
        self.dags.get(name).or_else(|| {
            let p = Path::new(name);
            self.dags.values().find(|d| d.file == p || d.file.file_stem().is_some_and(|s| s == name))
        })
    }
}

/// Options of the compile step.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// The pools defined in the project config; `None` skips the pool check.
    pub pools: Option<BTreeSet<String>>,
    /// The project folder, where paths in task configs (recipes, SQL files) resolve; by
    /// default the parent of the DAG file's folder.
    pub project_dir: Option<PathBuf>,
    /// The notify targets defined in the project config; `None` skips the check of target
    /// names.
    pub notify_targets: Option<BTreeSet<String>>,
    /// Where the files the configs name are recorded (see [`DagSet::read`]).
    pub reads: Arc<std::sync::Mutex<BTreeSet<PathBuf>>>,
}

/// Compiles every `*.yaml` / `*.yml` file under `dir` (recursively, in name order).
pub fn compile_dir(dir: &Path, opts: &CompileOptions) -> std::io::Result<DagSet> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    Ok(compile_files(&files, opts))
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compiles a list of files; DAG ids must be unique across them.
pub fn compile_files(files: &[PathBuf], opts: &CompileOptions) -> DagSet {
    let mut set = DagSet { files: files.to_vec(), ..DagSet::default() };
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        match compile_file(file, opts) {
            Ok(dag) => {
                if let Some(first) = seen.get(&dag.id) {
                    set.diagnostics.push(Diagnostic {
                        file: file.clone(),
                        pos: Pos { line: 1, column: 1 },
                        message: format!("duplicate DAG id `{}`", dag.id),
                        hint: Some(format!("`{}` is already defined in {}", dag.id, first.display())),
                    });
                    continue;
                }
                seen.insert(dag.id.clone(), file.clone());
                set.dags.insert(dag.id.clone(), Arc::new(dag));
            }
            Err((id, diags)) => {
                if let Some(id) = id {
                    set.failed_ids.insert(id, file.clone());
                }
                set.diagnostics.extend(diags);
            }
        }
    }
    set.read = opts.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
    set
}

/// Compiles one file.
pub fn compile_file(file: &Path, opts: &CompileOptions) -> Result<Dag, (Option<String>, Vec<Diagnostic>)> {
    match std::fs::read_to_string(file) {
        Ok(src) => compile_source(file, &src, opts),
        Err(e) => Err((
            None,
            vec![Diagnostic {
                file: file.to_path_buf(),
                pos: Pos { line: 1, column: 1 },
                message: format!("cannot read the file: {e}"),
                hint: None,
            }],
        )),
    }
}

/// The most tasks one DAG may have: every run plans, stores and draws each of them.
pub const MAX_TASKS: usize = 10_000;

const DAG_KEYS: &[&str] = &[
    "id",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "params",
    "defaults",
    "tags",
    "notify",
    "deadline",
    "tasks",
];

/// Keys every task has, whatever its kind.
const TASK_KEYS: &[&str] =
    &["id", "kind", "description", "depends_on", "trigger_rule", "notify", "deadline", "refresh", "checks"];

/// Keys that `defaults:` sets and each task may override.
const OVERRIDE_KEYS: &[&str] =
    &["retries", "retry_delay", "retry_backoff", "max_retry_delay", "retry_jitter", "timeout", "pool"];

/// The most retries a task may have.
pub const MAX_RETRIES: u32 = 100;

/// `defaults:` of a DAG, and the overrides of a task.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    /// How many times a failed attempt is retried (at most [`MAX_RETRIES`]).
    #[serde(default, deserialize_with = "de_retries")]
    retries: Option<u32>,
    /// The delay before the first retry.
    #[serde(default, deserialize_with = "de_retry_delay")]
    retry_delay: Option<HumanDuration>,
    /// `exponential` (default) or `constant`.
    retry_backoff: Option<Backoff>,
    /// The longest delay between retries (default: 10m, or `retry_delay` if that is longer).
    #[serde(default, deserialize_with = "de_max_retry_delay")]
    max_retry_delay: Option<HumanDuration>,
    /// Randomize retry delays (default true).
    retry_jitter: Option<bool>,
    /// Per-attempt time limit.
    #[serde(default, deserialize_with = "de_timeout")]
    timeout: Option<HumanDuration>,
    /// The pool whose slots the task takes.
    pool: Option<String>,
}

fn de_retries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    match Option::<u64>::deserialize(d).map_err(|e| D::Error::custom(format!("`retries`: {e}")))? {
        Some(n) if n > u64::from(MAX_RETRIES) => {
            Err(D::Error::custom(format!("`retries`: {n} is more than the maximum of {MAX_RETRIES}")))
        }
        n => Ok(n.map(|n| n as u32)),
    }
}

/// An optional duration whose errors name its field.
fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D, name: &str) -> Result<Option<HumanDuration>, D::Error> {
    use serde::de::Error;
    match Option::<String>::deserialize(d).map_err(|e| D::Error::custom(format!("`{name}`: {e}")))? {
        None => Ok(None),
        Some(s) => HumanDuration::parse(&s)
            .map(|d| Some(HumanDuration(d)))
            .map_err(|e| D::Error::custom(format!("`{name}`: {e}"))),
    }
}

fn de_retry_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    optional_duration(d, "retry_delay")
}

fn de_max_retry_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    optional_duration(d, "max_retry_delay")
}

fn de_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    use serde::de::Error;
    match optional_duration(d, "timeout")? {
        Some(t) if t.0.is_zero() => {
            Err(D::Error::custom("`timeout`: 0s would stop every attempt as it starts (leave it out for no timeout)"))
        }
        t => Ok(t),
    }
}

impl Overrides {
    fn apply(
        &self,
        base: &(RetryPolicy, Option<std::time::Duration>, Option<String>),
    ) -> (RetryPolicy, Option<std::time::Duration>, Option<String>) {
        let (mut r, mut timeout, mut pool) = base.clone();
        if let Some(v) = self.retries {
            r.retries = v;
        }
        if let Some(v) = self.retry_delay {
            r.delay = v.0;
        }
        if let Some(v) = self.retry_backoff {
            r.backoff = v;
        }
        if let Some(v) = self.max_retry_delay {
            r.max_delay = v.0;
        }
        if let Some(v) = self.retry_jitter {
            r.jitter = v;
        }
        if let Some(v) = self.timeout {
            timeout = Some(v.0);
        }
        if let Some(v) = &self.pool {
            pool = Some(v.clone());
        }
        (r, timeout, pool)
    }
}

/// A task's retries, timeout and pool: `defaults`, then the task's own keys. Without a
/// `max_retry_delay` anywhere, the cap is 10m or `retry_delay` if that is longer, so that a
/// delay never exceeds its cap.
fn task_settings(
    defaults: &Overrides,
    base: &(RetryPolicy, Option<std::time::Duration>, Option<String>),
    task: &Overrides,
) -> (RetryPolicy, Option<std::time::Duration>, Option<String>) {
    let mut out = task.apply(base);
    if defaults.max_retry_delay.is_none() && task.max_retry_delay.is_none() {
        out.0.max_delay = out.0.max_delay.max(out.0.delay);
    }
    out
}

/// Where the value of `key` of a mapping node is.
fn value_pos(map: &Node, key: &str) -> Option<Pos> {
    match &map.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.pos),
        _ => None,
    }
}

struct Ctx<'a> {
    file: &'a Path,
    diags: Vec<Diagnostic>,
    env: CompileEnv,
    notify_targets: Option<&'a BTreeSet<String>>,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic { file: self.file.to_path_buf(), pos, message: message.into(), hint });
    }

    fn de(&mut self, what: &str, e: DeError, fallback: Pos) {
        let message = if what.is_empty() { e.message } else { format!("{what}: {}", e.message) };
        self.err(e.pos.unwrap_or(fallback), message, e.hint);
    }

    /// A `notify:` block, every problem reported.
    fn notify(&mut self, node: &Node) -> Vec<crate::notify::Rule> {
        let (rules, problems) = crate::notify::parse_rules(node, self.notify_targets);
        for p in problems {
            self.err(p.pos, p.message, p.hint);
        }
        rules
    }

    /// A `deadline:`: a duration after the interval's end, longer than 0s.
    fn deadline(&mut self, what: &str, node: &Node) -> Option<std::time::Duration> {
        let s = match &node.value {
            Value::Int(_) | Value::UInt(_) => node.scalar_text()?,
            _ => self.typed::<String>(&format!("{what}`deadline`"), node)?,
        };
        match HumanDuration::parse(&s) {
            Ok(d) if d.is_zero() => {
                self.err(
                    node.pos,
                    format!(
                        "{what}`deadline` is 0s: a run starts when its interval ends, so it cannot be done by then"
                    ),
                    Some("give it the time a run needs after the interval's end, e.g. `deadline: 3h`".into()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(node.pos, format!("{what}`deadline`: {e}"), None);
                None
            }
        }
    }

    /// `params:`: each a scalar (its default, any text), or `{type: string|int|date|path, default: V}`
    /// or `{enum: [A, B, …], default: V}`; a default that is not of its type is an error.
    fn params(
        &mut self,
        entries: &[(Node, Node)],
        types: &mut BTreeMap<String, crate::dag::ParamType>,
    ) -> BTreeMap<String, String> {
        use crate::dag::ParamType;
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.scalar_text() else {
                self.err(k.pos, "`params`: a param's name is a plain word", None);
                continue;
            };
            let Value::Map(spec) = &v.value else {
                match v.scalar_text() {
                    Some(text) => {
                        out.insert(name, text);
                    }
                    None => self.err(
                        v.pos,
                        format!("param `{name}`: a scalar value, or {{type: …, default: …}}"),
                        Some("types: string, int, date, path, or enum: [A, B]".into()),
                    ),
                }
                continue;
            };
            let field = |key: &str| spec.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v);
            for (key, _) in spec {
                if !matches!(key.as_str(), Some("type" | "default" | "enum" | "description")) {
                    self.err(
                        key.pos,
                        format!("param `{name}`: unknown key `{}`", key.scalar_text().unwrap_or_default()),
                        Some("a typed param has `type` (or `enum`), `default` and `description`".into()),
                    );
                }
            }
            let ty = match (field("type"), field("enum")) {
                (Some(t), None) => match t.as_str() {
                    Some("string") => ParamType::String,
                    Some("int") => ParamType::Int,
                    Some("date") => ParamType::Date,
                    Some("path") => ParamType::Path,
                    _ => {
                        self.err(
                            t.pos,
                            format!("param `{name}`: unknown type"),
                            Some("string, int, date or path (or enum: [A, B])".into()),
                        );
                        continue;
                    }
                },
                (None, Some(e)) => match &e.value {
                    Value::Seq(items) if !items.is_empty() && items.iter().all(|i| i.scalar_text().is_some()) => {
                        ParamType::Enum(items.iter().filter_map(Node::scalar_text).collect())
                    }
                    _ => {
                        self.err(e.pos, format!("param `{name}`: `enum` is a list of values"), None);
                        continue;
                    }
                },
                (Some(t), Some(_)) => {
                    self.err(t.pos, format!("param `{name}`: `type` or `enum`, not both"), None);
                    continue;
                }
                (None, None) => ParamType::String,
            };
            let Some(default) = field("default") else {
                self.err(v.pos, format!("param `{name}` has no `default`"), None);
                continue;
            };
            let Some(text) = default.scalar_text() else {
                self.err(default.pos, format!("param `{name}`: the default is a scalar"), None);
                continue;
            };
            if let Some(why) = ty.problem(&text) {
                self.err(default.pos, format!("param `{name}` ({}): the default {why}", ty.name()), None);
                continue;
            }
            out.insert(name.clone(), text);
            types.insert(name, ty);
        }
        out
    }

    /// [`Ctx::typed`] for a mapping: every entry's problem is reported, not only the first, and
    /// the entries without one are kept.
    fn typed_all<T: serde::de::DeserializeOwned>(&mut self, what: &str, node: &Node) -> Option<T> {
        match yaml::from_node_all::<T>(node) {
            Ok(v) => Some(v),
            Err((errors, rest)) => {
                for e in errors {
                    self.de(what, e, node.pos);
                }
                rest
            }
        }
    }

    fn typed<T: serde::de::DeserializeOwned>(&mut self, what: &str, node: &Node) -> Option<T> {
        match yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.de(what, e, node.pos);
                None
            }
        }
    }
}

pub use crate::task::valid_id;

const ID_HINT: &str = "ids may use letters, digits, `_`, `-` and `.` (they name folders and run ids)";

struct RawTask {
    id: String,
    pos: Pos,
    id_pos: Pos,
    kind: Option<&'static KindEntry>,
    config: Node,
    depends_on: Vec<(String, Pos)>,
    trigger_rule: TriggerRule,
    refresh: crate::dag::Refresh,
    overrides: Overrides,
    /// The task's own `defaults` keys, with their values' positions.
    overrides_node: Node,
    notify: Vec<crate::notify::Rule>,
    deadline: Option<(std::time::Duration, Pos)>,
    checks: Vec<crate::checks::Check>,
}

/// Compiles DAG source text (`file` is only used in messages).
pub fn compile_source(file: &Path, src: &str, opts: &CompileOptions) -> Result<Dag, (Option<String>, Vec<Diagnostic>)> {
    let project_dir = opts.project_dir.clone().unwrap_or_else(|| {
        file.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
    });
    let mut cx = Ctx {
        file,
        diags: Vec::new(),
        env: CompileEnv { project_dir, reads: opts.reads.clone() },
        notify_targets: opts.notify_targets.as_ref(),
    };
    let root = match yaml::parse(src) {
        Ok(n) => n,
        Err(e) => {
            cx.err(e.pos.unwrap_or(Pos { line: 1, column: 1 }), format!("invalid YAML: {}", e.message), None);
            return Err((None, cx.diags));
        }
    };
    let Value::Map(entries) = &root.value else {
        let found =
            if root.value == Value::Null { "an empty file".to_string() } else { root.value.type_name().to_string() };
        cx.err(root.pos, format!("a DAG file must be a mapping with `id` and `tasks`, found {found}"), None);
        return Err((None, cx.diags));
    };

    let mut fields: HashMap<&'static str, &Node> = HashMap::new();
    let mut key_pos: HashMap<&'static str, Pos> = HashMap::new();
    for (k, v) in entries {
        let Some(name) = k.scalar_text() else {
            cx.err(k.pos, "keys must be plain names", None);
            continue;
        };
        match DAG_KEYS.iter().find(|d| **d == name) {
            Some(known) => {
                fields.insert(known, v);
                key_pos.insert(known, k.pos);
            }
            None => {
                let hint = did_you_mean(&name, DAG_KEYS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(format!(
                            "a DAG has {}",
                            DAG_KEYS.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        ))
                    });
                cx.err(k.pos, format!("unknown key `{name}` in DAG"), hint);
            }
        }
    }

    let id = match fields.get("id") {
        None => {
            cx.err(root.pos, "missing required key `id`", Some("add `id: my_dag` at the top of the file".into()));
            None
        }
        Some(n) => match cx.typed::<String>("`id`", n) {
            Some(id) if valid_id(&id) => Some(id),
            Some(id) => {
                cx.err(n.pos, format!("invalid DAG id `{id}`"), Some(ID_HINT.into()));
                None
            }
            None => None,
        },
    };
    let description =
        fields.get("description").and_then(|n| cx.typed::<String>("`description`", n)).unwrap_or_default();

    let timezone: Tz = match fields.get("timezone") {
        None => Tz::UTC,
        Some(n) => match cx.typed::<String>("`timezone`", n) {
            Some(s) => match s.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    let hint = did_you_mean(&s, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| {
                            Some("use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`".into())
                        });
                    cx.err(n.pos, format!("invalid timezone `{s}`"), hint);
                    Tz::UTC
                }
            },
            None => Tz::UTC,
        },
    };

    let schedule = match fields.get("schedule") {
        None => Schedule::Manual,
        Some(n) if n.value == Value::Null => Schedule::Manual,
        Some(n) => match cx.typed::<String>("`schedule`", n) {
            Some(s) => match Schedule::parse(&s) {
                Ok(s) => s,
                Err(e) => {
                    cx.err(n.pos, e.message, e.hint);
                    Schedule::Manual
                }
            },
            None => Schedule::Manual,
        },
    };

    let date_field = |cx: &mut Ctx, key: &str| -> Option<DateTime<Utc>> {
        let n = fields.get(key)?;
        let s = cx.typed::<String>(&format!("`{key}`"), n)?;
        match schedule::parse_date_arg(&s, timezone) {
            Ok(d) => Some(d),
            Err(m) => {
                cx.err(n.pos, format!("invalid `{key}`: {m}"), None);
                None
            }
        }
    };
    let start_date = date_field(&mut cx, "start_date");
    let end_date = date_field(&mut cx, "end_date");
    if let (Some(s), Some(e)) = (start_date, end_date)
        && e <= s
    {
        let pos = key_pos.get("end_date").copied().unwrap_or(root.pos);
        cx.err(pos, "`end_date` is not after `start_date`", None);
    }
    let catchup = fields.get("catchup").and_then(|n| cx.typed::<bool>("`catchup`", n)).unwrap_or(false);
    let positive = |cx: &mut Ctx, key: &str, default: u32| -> u32 {
        match fields.get(key) {
            None => default,
            Some(n) => match cx.typed::<u32>(&format!("`{key}`"), n) {
                Some(0) => {
                    cx.err(n.pos, format!("`{key}` must be at least 1"), None);
                    default
                }
                Some(v) => v,
                None => default,
            },
        }
    };
    let max_active_runs = positive(&mut cx, "max_active_runs", 1);
    let max_active_tasks = positive(&mut cx, "max_active_tasks", 16);
    let mut param_types = BTreeMap::new();
    let params: BTreeMap<String, String> = fields
        .get("params")
        .and_then(|n| match &n.value {
            Value::Null => Some(BTreeMap::new()),
            Value::Map(entries) => Some(cx.params(entries, &mut param_types)),
            _ => cx.typed::<BTreeMap<String, String>>("`params` (a mapping of names to scalar values)", n),
        })
        .unwrap_or_default();
    let tags: Vec<String> = fields.get("tags").and_then(|n| cx.typed::<Vec<String>>("`tags`", n)).unwrap_or_default();
    let notify = fields.get("notify").map(|n| cx.notify(n)).unwrap_or_default();
    let deadline = fields.get("deadline").and_then(|n| cx.deadline("", n).map(|d| (d, n.pos)));
    let defaults: Overrides =
        fields.get("defaults").and_then(|n| cx.typed_all::<Overrides>("`defaults`", n)).unwrap_or_default();
    let base = defaults.apply(&(RetryPolicy::default(), None, None));
    if let (Some(max), Some(n)) = (defaults.max_retry_delay, fields.get("defaults"))
        && max.0 < base.0.delay
    {
        let pos = value_pos(n, "max_retry_delay").unwrap_or(n.pos);
        let delay = defaults.retry_delay.map_or(format!("{}, the default", humanize(base.0.delay)), |d| humanize(d.0));
        cx.err(
            pos,
            format!("`defaults`: `max_retry_delay` ({}) is shorter than `retry_delay` ({delay})", humanize(max.0)),
            Some("a retry never waits longer than `max_retry_delay`: raise it or lower `retry_delay`".into()),
        );
    }

    // Tasks.
    let mut raw: Vec<RawTask> = Vec::new();
    match fields.get("tasks") {
        None => cx.err(root.pos, "missing required key `tasks`", Some("add `tasks:` with a list of tasks".into())),
        Some(n) => match &n.value {
            Value::Seq(items) if items.is_empty() => {
                cx.err(n.pos, "`tasks` is empty", Some("a DAG needs at least one task".into()))
            }
            Value::Seq(items) if items.len() > MAX_TASKS => cx.err(
                n.pos,
                format!("`tasks` has {} tasks; a DAG may have at most {MAX_TASKS}", items.len()),
                Some("split it into several DAGs".into()),
            ),
            Value::Seq(items) => {
                for item in items {
                    if let Some(t) = read_task(&mut cx, item, &params) {
                        raw.push(t);
                    }
                }
            }
            other => cx.err(n.pos, format!("`tasks` must be a list of tasks, found {}", other.type_name()), None),
        },
    }

    // Duplicate ids, unknown upstream, pools.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut dup = vec![false; raw.len()];
    for (i, t) in raw.iter().enumerate() {
        if let Some(&first) = index.get(t.id.as_str()) {
            cx.err(
                t.id_pos,
                format!("duplicate task id `{}`", t.id),
                Some(format!("first defined at line {}", raw[first].id_pos.line)),
            );
            dup[i] = true;
        } else {
            index.insert(&t.id, i);
        }
    }
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); raw.len()];
    for (i, t) in raw.iter().enumerate() {
        for (up, pos) in &t.depends_on {
            match index.get(up.as_str()) {
                Some(&j) => {
                    if !upstream[i].contains(&j) {
                        upstream[i].push(j);
                    }
                }
                None => {
                    let hint = did_you_mean(up, raw.iter().map(|t| t.id.as_str()))
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| {
                            Some(format!(
                                "tasks of this DAG: {}",
                                raw.iter().map(|t| format!("`{}`", t.id)).collect::<Vec<_>>().join(", ")
                            ))
                        });
                    cx.err(*pos, format!("task `{}` depends on unknown task `{up}`", t.id), hint);
                }
            }
        }
        let (retry, _, _) = task_settings(&defaults, &base, &t.overrides);
        let own_delay = value_pos(&t.overrides_node, "retry_delay");
        let own_max = value_pos(&t.overrides_node, "max_retry_delay");
        if retry.max_delay < retry.delay
            && let Some(pos) = own_max.or(own_delay)
        {
            cx.err(
                pos,
                format!(
                    "task `{}`: `max_retry_delay` ({}) is shorter than `retry_delay` ({})",
                    t.id,
                    humanize(retry.max_delay),
                    humanize(retry.delay)
                ),
                Some("a retry never waits longer than `max_retry_delay`: raise it or lower `retry_delay`".into()),
            );
        }
        if let (Some(pools), Some(pool)) = (&opts.pools, &t.overrides.pool.clone().or(base.2.clone()))
            && !pools.contains(pool)
        {
            let hint = did_you_mean(pool, pools.iter().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| Some("define it under `pools:` in cartflow.yaml".into()));
            cx.err(t.pos, format!("task `{}` uses unknown pool `{pool}`", t.id), hint);
        }
    }

    // Deadlines are checked by the scheduler: a DAG without a schedule has none.
    if matches!(schedule, Schedule::Manual) {
        let own = raw.iter().find_map(|t| t.deadline.map(|(_, p)| (p, format!("task `{}`: ", t.id))));
        if let Some((pos, what)) = deadline.map(|(_, p)| (p, String::new())).or(own) {
            cx.err(
                pos,
                format!(
                    "{what}`deadline` needs a `schedule`: deadlines are checked by the scheduler for scheduled runs"
                ),
                Some("add a `schedule:`, or remove the `deadline:`".into()),
            );
        }
    }

    // Cycles: report each strongly connected component once, as a whole chain.
    let order = topo_order(&upstream, &dup);
    if order.len() < raw.iter().enumerate().filter(|(i, _)| !dup[*i]).count() {
        for cycle in cycles(&upstream, &dup) {
            let chain: Vec<&str> = cycle.iter().map(|&i| raw[i].id.as_str()).collect();
            let first = cycle[0];
            cx.err(
                raw[first].id_pos,
                format!("dependency cycle: {} -> {}", chain.join(" -> "), chain[0]),
                Some("remove one of these `depends_on` entries".into()),
            );
        }
    }

    if !cx.diags.is_empty() {
        cx.diags.sort_by_key(|d| d.pos);
        return Err((id, cx.diags));
    }
    let Some(id) = id else {
        return Err((None, cx.diags));
    };

    // Build the DAG in topological order.
    let mut new_index = vec![usize::MAX; raw.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut tasks: Vec<Task> = Vec::with_capacity(order.len());
    for &old in &order {
        let t = &raw[old];
        let Some(kind) = t.kind else {
            return Err((Some(id), cx.diags));
        };
        let config = match (kind.compile)(&t.config, &cx.env) {
            Ok(c) => c,
            Err(e) => {
                // Already reported in read_task; unreachable in practice.
                for e in e.errors {
                    cx.de("", e, t.pos);
                }
                continue;
            }
        };
        let (retry, timeout, pool) = task_settings(&defaults, &base, &t.overrides);
        let mut ups: Vec<usize> = upstream[old].iter().map(|&u| new_index[u]).collect();
        ups.sort_unstable();
        tasks.push(Task {
            id: t.id.clone(),
            config,
            upstream: ups,
            downstream: Vec::new(),
            trigger_rule: t.trigger_rule,
            retry,
            timeout,
            pool,
            notify: t.notify.clone(),
            deadline: t.deadline.map(|(d, _)| d),
            refresh: t.refresh,
            checks: t.checks.clone().into(),
            pos: t.pos,
        });
    }
    for i in 0..tasks.len() {
        for u in tasks[i].upstream.clone() {
            tasks[u].downstream.push(i);
        }
    }
    if !cx.diags.is_empty() {
        return Err((Some(id), cx.diags));
    }
    Ok(Dag {
        id,
        description,
        file: file.to_path_buf(),
        schedule,
        timezone,
        start_date,
        end_date,
        catchup,
        max_active_runs,
        max_active_tasks,
        params,
        param_types,
        tags,
        notify,
        deadline: deadline.map(|(d, _)| d),
        tasks,
    })
}

fn read_task(cx: &mut Ctx, node: &Node, params: &BTreeMap<String, String>) -> Option<RawTask> {
    let Value::Map(entries) = &node.value else {
        cx.err(
            node.pos,
            format!("a task must be a mapping with `id` and `kind`, found {}", node.value.type_name()),
            None,
        );
        return None;
    };
    let mut id: Option<(String, Pos)> = None;
    let mut kind_node: Option<&Node> = None;
    let mut depends_on = Vec::new();
    let mut trigger_rule = TriggerRule::AllSuccess;
    let mut refresh = crate::dag::Refresh::Every;
    let mut override_entries = Vec::new();
    let mut config_entries = Vec::new();
    let mut notify = Vec::new();
    let mut deadline_node = None;
    let mut checks_node = None;
    for (k, v) in entries {
        let Some(name) = k.scalar_text() else {
            cx.err(k.pos, "keys must be plain names", None);
            continue;
        };
        match name.as_str() {
            "id" => {
                if let Some(s) = cx.typed::<String>("task `id`", v) {
                    if valid_id(&s) {
                        id = Some((s, v.pos));
                    } else {
                        cx.err(v.pos, format!("invalid task id `{s}`"), Some(ID_HINT.into()));
                    }
                }
            }
            "kind" => kind_node = Some(v),
            "description" => {
                let _ = cx.typed::<String>("`description`", v);
            }
            "depends_on" => match &v.value {
                Value::Null => {}
                Value::Str(s) => depends_on.push((s.clone(), v.pos)),
                Value::Seq(items) => {
                    for item in items {
                        match item.scalar_text() {
                            Some(s) => depends_on.push((s, item.pos)),
                            None => cx.err(item.pos, "`depends_on` entries must be task ids", None),
                        }
                    }
                }
                other => cx.err(
                    v.pos,
                    format!("`depends_on` must be a task id or a list of them, found {}", other.type_name()),
                    None,
                ),
            },
            "trigger_rule" => {
                if let Some(r) = cx.typed::<TriggerRule>("`trigger_rule`", v) {
                    trigger_rule = r;
                }
            }
            "refresh" => {
                if let Some(r) = cx.typed::<crate::dag::Refresh>("`refresh`", v) {
                    refresh = r;
                }
            }
            "notify" => notify = cx.notify(v),
            "deadline" => deadline_node = Some(v),
            "checks" => checks_node = Some(v),
            n if OVERRIDE_KEYS.contains(&n) => override_entries.push((k.clone(), v.clone())),
            _ => config_entries.push((k.clone(), v.clone())),
        }
    }
    let Some((id, id_pos)) = id else {
        if !entries.iter().any(|(k, _)| k.as_str() == Some("id")) {
            cx.err(node.pos, "task is missing required key `id`", Some("add `id: my_task`".into()));
        }
        return None;
    };
    let deadline = deadline_node.and_then(|v| cx.deadline(&format!("task `{id}`: "), v).map(|d| (d, v.pos)));
    let overrides_node = Node { pos: node.pos, value: Value::Map(override_entries) };
    let overrides = cx.typed_all::<Overrides>(&format!("task `{id}`"), &overrides_node).unwrap_or_default();
    let kind = match kind_node {
        None => {
            cx.err(node.pos, format!("task `{id}` is missing required key `kind`"), Some(kinds_hint()));
            None
        }
        Some(n) => match n.as_str() {
            Some(k) => match kinds::lookup(k) {
                Some(entry) => Some(entry),
                None => {
                    let hint = did_you_mean(k, kinds::REGISTRY.iter().map(|e| e.name))
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(kinds_hint);
                    cx.err(n.pos, format!("unknown task kind `{k}`"), Some(hint));
                    None
                }
            },
            None => {
                cx.err(n.pos, format!("`kind` must be a name, found {}", n.value.type_name()), Some(kinds_hint()));
                None
            }
        },
    };
    let mut checks = Vec::new();
    if let (Some(v), Some(entry)) = (checks_node, kind) {
        let (parsed, problems) = crate::checks::parse(v, &id, entry.name, entry.publishes, params);
        for p in problems {
            cx.err(p.pos, p.message, p.hint);
        }
        checks = parsed;
    }
    let config = Node { pos: node.pos, value: Value::Map(config_entries) };
    if let Some(entry) = kind {
        // What `run` checks when it renders, checked here with the params' defaults: a path the
        // DAG's own text (or a default) sends out of its root fails `validate` as it would fail
        // the run — also beside the kind's own problems, so that they do not hide it. (Template
        // syntax errors are reported below, once.)
        let render_check = |cx: &mut Ctx<'_>, task: &Arc<dyn crate::task::CompiledTask>| {
            let interval = crate::schedule::DataInterval::daily_utc(
                chrono::NaiveDate::from_ymd_opt(2019, 10, 1).unwrap_or_default(),
            );
            let ctx = template::Context::new("validate", "validate", &interval, params).for_task(&id);
            match task.render_json(&ctx) {
                Err(
                    template::TemplateError::Unclosed { .. }
                    | template::TemplateError::BadName { .. }
                    | template::TemplateError::BadFilter { .. }
                    | template::TemplateError::UnknownVariable { .. },
                )
                | Ok(_) => {}
                Err(e) => cx.err(node.pos, format!("task `{id}` ({}): {e}", entry.name), None),
            }
        };
        match (entry.compile)(&config, &cx.env) {
            Err(crate::task::CompileErrors { errors, as_written }) => {
                for mut e in errors {
                    if let Some(field) = e.message.strip_prefix("unknown key `").and_then(|s| s.strip_suffix('`')) {
                        let all: Vec<&str> = TASK_KEYS.iter().chain(OVERRIDE_KEYS).copied().collect();
                        if let Some(s) = did_you_mean(field, all) {
                            e.hint = Some(format!("did you mean `{s}`?"));
                        }
                    }
                    cx.de(&format!("task `{id}` ({})", entry.name), e, node.pos);
                }
                if let Some(task) = as_written {
                    render_check(cx, &task);
                }
            }
            Ok(task) => render_check(cx, &task),
        }
    }
    // Templates: every string of the kind's config.
    let mut template_errors = Vec::new();
    config.walk_strings(&mut |s, pos| {
        if let Err(e) = template::check(s, params) {
            template_errors.push((e, pos));
        }
    });
    for (e, pos) in template_errors {
        let hint = match &e {
            template::TemplateError::UnknownVariable { hint, .. } => {
                hint.clone().or_else(|| Some(format!("available: {}, params.NAME", template::VARIABLES.join(", "))))
            }
            _ => None,
        };
        cx.err(pos, format!("task `{id}`: {e}"), hint);
    }
    Some(RawTask {
        id,
        pos: node.pos,
        id_pos,
        kind,
        config,
        depends_on,
        trigger_rule,
        refresh,
        overrides,
        overrides_node,
        notify,
        deadline,
        checks,
    })
}

fn kinds_hint() -> String {
    format!("known kinds: {}", kinds::REGISTRY.iter().map(|k| format!("`{}`", k.name)).collect::<Vec<_>>().join(", "))
}

/// Kahn's algorithm, taking the lowest declaration index first among ready tasks.
/// Returns fewer tasks than there are when a cycle exists.
fn topo_order(upstream: &[Vec<usize>], skip: &[bool]) -> Vec<usize> {
    let n = upstream.len();
    let mut indeg = vec![0usize; n];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ups) in upstream.iter().enumerate() {
        if skip[i] {
            continue;
        }
        for &u in ups {
            indeg[i] += 1;
            down[u].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| !skip[i] && indeg[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &down[i] {
            indeg[d] -= 1;
            if indeg[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

/// One cycle per strongly connected component that has one, in data-flow order
/// (upstream first), starting at the earliest declared task of the component.
fn cycles(upstream: &[Vec<usize>], skip: &[bool]) -> Vec<Vec<usize>> {
    use petgraph::graph::{DiGraph, NodeIndex};
    let n = upstream.len();
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(n, n);
    let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for (i, ups) in upstream.iter().enumerate() {
        if skip[i] {
            continue;
        }
        for &u in ups {
            g.add_edge(nodes[u], nodes[i], ());
        }
    }
    let mut out = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&g) {
        let members: BTreeSet<usize> = scc.iter().map(|ix| g[*ix]).collect();
        let Some(&start) = members.iter().next() else {
            continue;
        };
        let self_loop = members.len() == 1 && upstream[start].contains(&start);
        if members.len() < 2 && !self_loop {
            continue;
        }
        // Shortest path start -> ... -> start inside the component (BFS over downstream edges).
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut found = false;
        'bfs: while let Some(x) = queue.pop_front() {
            for e in g.neighbors(nodes[x]) {
                let y = g[e];
                if !members.contains(&y) {
                    continue;
                }
                if y == start {
                    parent.insert(start, x);
                    found = true;
                    break 'bfs;
                }
                if let std::collections::hash_map::Entry::Vacant(v) = parent.entry(y) {
                    v.insert(x);
                    queue.push_back(y);
                }
            }
        }
        if !found {
            continue;
        }
        let mut chain = vec![];
        let mut x = parent[&start];
        while x != start {
            chain.push(x);
            x = parent[&x];
        }
        chain.push(start);
        chain.reverse();
        out.push(chain);
    }
    out.sort();
    out
}

/// Used by `validate` to describe a set of DAGs.
pub fn summary(set: &DagSet) -> String {
    let tasks: usize = set.dags.values().map(|d| d.tasks.len()).sum();
    format!(
        "{} file(s), {} DAG(s), {} task(s), {} error(s)",
        set.files.len(),
        set.dags.len(),
        tasks,
        set.diagnostics.len()
    )
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
