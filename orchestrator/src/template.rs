//! `{{ variable }}` templates in task configs.
//!
//! The language is deliberately tiny: a placeholder is a variable name, and a date may be moved
//! by whole days (`{{ ds | add_days(-7) }}`, Airflow's `macros.ds_add`; `ds` and `ds_nodash`
//! only, at most 36,500 days either way), nothing else. Every placeholder is checked when the DAG
//! compiles; an unknown variable or filter is a compile error.
//!
//! The text of a template is the DAG author's and trusted; the values are not (a `-p` on the
//! command line, the web UI, an EventBridge input). So rendering knows where each value goes
//! ([`Escaping`]):
//! - **SQL** ([`Escaping::Sql`]): the SQL text is read as the SQL tokenizer reads it (string
//!   literals, quoted identifiers, comments). Inside a `'…'` literal a value is escaped as a
//!   literal (its quotes doubled); outside one only a number or a date/timestamp may stand; an
//!   error names the variable and the placeholder's line and column.
//! - **Paths** ([`Escaping::Path`]): the rendered path as a whole, the DAG's text included, must be
//!   relative and free of `..` components, so that it stays inside its root (lake, project).
//! - **Partition values** ([`Escaping::PartitionValue`]): one plain folder-name value.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The fixed variables every task can use (besides `params.NAME`).
pub const VARIABLES: &[&str] =
    &["ds", "ds_nodash", "data_interval_start", "data_interval_end", "dag.id", "task.id", "run_id", "logical_date"];

/// The fixed variables whose value is a date or a timestamp (so they may stand outside an SQL
/// literal).
pub const DATE_VARIABLES: &[&str] = &["ds", "ds_nodash", "data_interval_start", "data_interval_end", "logical_date"];

/// The variables `add_days(N)` applies to (dates; a timestamp moved by days would need the
/// DAG's timezone to stay at the same wall-clock time).
pub const ADD_DAYS_VARIABLES: &[&str] = &["ds", "ds_nodash"];

/// How far `add_days(N)` may move a date, either way: 100 years.
pub const MAX_ADD_DAYS: i64 = 36_500;

/// The longest value of a `-p NAME=VALUE`, in bytes.
pub const MAX_PARAM_BYTES: usize = 4 * 1024;

/// A template string from a DAG file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Template(pub String);

impl From<&str> for Template {
    fn from(s: &str) -> Self {
        Template(s.to_string())
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A placeholder; `offset` is its byte offset in the template; `days`: moved by
    /// `add_days(N)` (a date variable only).
    Var { name: &'a str, offset: usize, days: Option<i64> },
}

/// A 1-based line and column (in characters) of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line.
    pub line: usize,
    /// Column.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A template syntax problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed `{{{{` in template")]
    Unclosed { offset: usize },
    /// `{{ }}` or `{{ a b }}`.
    #[error("`{{{{ {text} }}}}` is not a variable name")]
    BadName { text: String, offset: usize },
    /// A filter other than `add_days(N)`, or one on a variable that is not a date.
    #[error("`{{{{ {text} }}}}`: {why}")]
    BadFilter { text: String, offset: usize, why: &'static str },
    /// A variable the context does not define.
    #[error("unknown template variable `{name}`")]
    UnknownVariable { name: String, offset: usize, hint: Option<String> },
    /// A value that may not be placed where it was asked to go.
    #[error("value {} of `{name}` cannot be used {context}{}: {why}", clip(.value), .at.map(|p| format!(" (at {p})")).unwrap_or_default())]
    Unsafe { name: String, value: String, context: &'static str, why: &'static str, at: Option<Position> },
    /// A rendered path or partition value that would leave its root or change its meaning.
    #[error("{what} {} is refused: {why}{}", clip(.rendered), from_values(.values))]
    Refused {
        /// `path`, `partition value`.
        what: &'static str,
        /// The rendered text.
        rendered: String,
        /// Why.
        why: &'static str,
        /// The variables that went into it, with their values.
        values: Vec<(String, String)>,
    },
    /// A rendered value a task kind cannot use (a number that is not a number, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A value for a message: quoted, and cut after 60 characters (a value may be huge).
pub(crate) fn clip(v: &str) -> String {
    if v.chars().count() <= 60 {
        format!("{v:?}")
    } else {
        let head: String = v.chars().take(60).collect();
        format!("{head:?}… ({} bytes)", v.len())
    }
}

/// The variables a template uses, for a message: `` (from `params.n`)``, or nothing.
pub(crate) fn names_in(t: &Template) -> String {
    let names: Vec<String> = parse(&t.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var { name, .. } => Some(format!("`{name}`")),
            Piece::Text(_) => None,
        })
        .collect();
    if names.is_empty() { String::new() } else { format!(" (from {})", names.join(", ")) }
}

fn from_values(values: &[(String, String)]) -> String {
    if values.is_empty() {
        return " (by the DAG's own text)".into();
    }
    let list: Vec<String> = values.iter().map(|(k, v)| format!("`{k}` = {}", clip(v))).collect();
    format!(" (from {})", list.join(", "))
}

/// Splits a template into text and placeholders.
pub fn parse(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed { offset: base + start })?;
        let inner = after[..end].trim();
        let (name, days) = match inner.split_once('|') {
            None => (inner, None),
            Some((n, filter)) => {
                let bad = |why| TemplateError::BadFilter { text: inner.to_string(), offset: base + start, why };
                let n = n.trim();
                if filter.contains('|') {
                    return Err(bad("one filter at most: `add_days(N)`"));
                }
                let arg = filter
                    .trim()
                    .strip_prefix("add_days")
                    .map(str::trim_start)
                    .and_then(|f| f.strip_prefix('('))
                    .and_then(|f| f.strip_suffix(')'))
                    .ok_or_else(|| bad("the only filter is `add_days(N)`, N a whole number of days"))?;
                let days: i64 =
                    arg.trim().parse().map_err(|_| bad("`add_days(N)` takes a whole number of days, like -7"))?;
                if days.abs() > MAX_ADD_DAYS {
                    return Err(bad("`add_days(N)` moves a date by at most 36500 days either way"));
                }
                if !ADD_DAYS_VARIABLES.contains(&n) {
                    return Err(bad("`add_days(N)` applies to `ds` or `ds_nodash`"));
                }
                (n, Some(days))
            }
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            return Err(TemplateError::BadName { text: name.to_string(), offset: base + start });
        }
        out.push(Piece::Var { name, offset: base + start, days });
        let consumed = start + 2 + end + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Checks every placeholder of `s` against the fixed variables and the DAG's params.
pub fn check(s: &str, params: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    for piece in parse(s)? {
        if let Piece::Var { name, offset, .. } = piece {
            let known =
                VARIABLES.contains(&name) || name.strip_prefix("params.").is_some_and(|p| params.contains_key(p));
            if !known {
                let hint = match name.strip_prefix("params.") {
                    Some(p) => Some(match crate::yaml::did_you_mean(p, params.keys().map(String::as_str)) {
                        Some(s) => format!("did you mean `params.{s}`?"),
                        None => format!("`{p}` is not declared under `params:` of this DAG"),
                    }),
                    None => {
                        let candidates: Vec<String> = VARIABLES
                            .iter()
                            .map(|v| v.to_string())
                            .chain(params.keys().map(|k| format!("params.{k}")))
                            .collect();
                        crate::yaml::did_you_mean(name, candidates.iter().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"))
                    }
                };
                return Err(TemplateError::UnknownVariable { name: name.to_string(), offset, hint });
            }
        }
    }
    Ok(())
}

/// Where a rendered value ends up, and so what it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Plain text (argv elements, environment values, log lines): anything goes.
    None,
    /// A relative path inside the lake or a project folder. The rendered path — the template's
    /// text and its values together — must not be absolute, must have no `..` component (`/`
    /// and `\` both separate) and no control characters: then it stays inside its root.
    Path,
    /// SQL text (an SQL file): each placeholder is rendered for where it stands. Inside a
    /// single-quoted string literal the value is escaped as a literal (`'` doubled; control
    /// characters refused; in an `E'…'`/`U&'…'` escape string backslashes refused too). Outside
    /// quotes only a number (`42`, `-1.5`: a negative one in parentheses) or a date/timestamp
    /// (`2019-10-01`, `2019-10-01T00:00:00+00:00`) may stand. In a `"quoted"` identifier only
    /// letters, digits, `_ - .` and spaces; in a comment no line break, `*` or `/`.
    Sql,
    /// A whole value used as one SQL string or name (Glue job arguments): no quotes, no `;`, no
    /// comments, no control characters, checked value by value.
    SqlLiteral,
    /// A partition value naming a folder (`dt=<value>`): the rendered text is one plain value
    /// (letters, digits, `_ . : + -`; no `..`), like a date or a timestamp.
    PartitionValue,
    /// The HTML file a task writes in the project folder (the dashboard): a [`Escaping::Path`]
    /// that also keeps clear of the project's own files ([`html_out_problem`]).
    HtmlOut,
    /// A calendar day (`date` of the data jobs, the dashboard's `from`/`to`): the rendered text
    /// must be one, `YYYY-MM-DD` (years 0001 to 9999), so a value that is not a date is refused
    /// before anything runs (it also names a partition folder `dt=<date>`).
    Date,
    /// A file a task only reads, which may be anywhere (a Kaggle CSV to replay): a relative
    /// [`Escaping::Path`], or an absolute path of a `.csv`, `.csv.gz` or `.csv.zip` file
    /// ([`input_file_problem`]). `none` and `generate` pass as they are.
    InputFile,
}

/// The values of the template variables for one task of one run.
#[derive(Debug, Clone, Default)]
pub struct Context {
    vars: BTreeMap<String, String>,
}

impl Context {
    /// A context with the fixed variables of a run.
    pub fn new(
        dag_id: &str,
        run_id: &str,
        interval: &crate::schedule::DataInterval,
        params: &BTreeMap<String, String>,
    ) -> Self {
        let mut vars = BTreeMap::new();
        vars.insert("ds".into(), interval.ds());
        vars.insert("ds_nodash".into(), interval.ds().replace('-', ""));
        vars.insert("data_interval_start".into(), interval.start_rfc3339());
        vars.insert("data_interval_end".into(), interval.end_rfc3339());
        vars.insert("logical_date".into(), interval.start_rfc3339());
        vars.insert("dag.id".into(), dag_id.to_string());
        vars.insert("run_id".into(), run_id.to_string());
        for (k, v) in params {
            vars.insert(format!("params.{k}"), v.clone());
        }
        Context { vars }
    }

    /// The same context for one task.
    pub fn for_task(&self, task_id: &str) -> Self {
        let mut c = self.clone();
        c.vars.insert("task.id".into(), task_id.to_string());
        c
    }

    /// The value of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn value<'a>(&'a self, name: &str, offset: usize) -> Result<&'a str, TemplateError> {
        self.get(name).ok_or_else(|| TemplateError::UnknownVariable { name: name.to_string(), offset, hint: None })
    }

    /// The value of a placeholder: the variable's, moved by `days` when it has `add_days`.
    fn value_of<'a>(
        &'a self,
        name: &str,
        offset: usize,
        days: Option<i64>,
    ) -> Result<std::borrow::Cow<'a, str>, TemplateError> {
        let value = self.value(name, offset)?;
        let Some(days) = days else { return Ok(std::borrow::Cow::Borrowed(value)) };
        let format = if name == "ds_nodash" { "%Y%m%d" } else { "%Y-%m-%d" };
        chrono::NaiveDate::parse_from_str(value, format)
            .ok()
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(days)))
            .map(|d| std::borrow::Cow::Owned(d.format(format).to_string()))
            .ok_or_else(|| TemplateError::Invalid(format!("`{name}` {value} moved by {days} day(s) is not a date")))
    }

    /// Renders a template.
    pub fn render(&self, t: &Template, escaping: Escaping) -> Result<String, TemplateError> {
        if escaping == Escaping::Sql {
            return self.render_sql(t);
        }
        let (rendered, values) = self.substitute(t)?;
        let problem = match escaping {
            Escaping::Path => path_problem(&rendered).map(|why| ("path", why)),
            Escaping::InputFile => input_file_problem(&rendered).map(|why| ("source file", why)),
            Escaping::Date => (rendered.len() != 10 || crate::schedule::parse_ymd(&rendered).is_none())
                .then_some(("date", "it must be a calendar day, YYYY-MM-DD")),
            Escaping::HtmlOut => {
                path_problem(&rendered).or_else(|| html_out_problem(&rendered)).map(|why| ("output file", why))
            }
            Escaping::PartitionValue => {
                cartflow_jobs::ctas::partition_value_problem(&rendered).map(|why| ("partition value", why))
            }
            Escaping::SqlLiteral => {
                for (name, value) in &values {
                    sql_literal_value(name, value)?;
                }
                // A Glue argument may be a location (`--clean s3://lake/...`): no `..` component,
                // which Spark's paths would resolve out of the lake.
                rendered
                    .split(['/', '\\'])
                    .any(|seg| seg == "..")
                    .then_some(("argument", "`..` components are not allowed (a location must stay inside the lake)"))
            }
            Escaping::None | Escaping::Sql => None,
        };
        match problem {
            Some((what, why)) => Err(TemplateError::Refused { what, rendered, why, values }),
            None => Ok(rendered),
        }
    }

    /// The template with its values put in as they are, and the variables used.
    fn substitute(&self, t: &Template) -> Result<(String, Vec<(String, String)>), TemplateError> {
        let mut out = String::with_capacity(t.0.len());
        let mut values: Vec<(String, String)> = Vec::new();
        for piece in parse(&t.0)? {
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Var { name, offset, days } => {
                    let value = self.value_of(name, offset, days)?;
                    out.push_str(&value);
                    if !values.iter().any(|(k, _)| k == name) {
                        values.push((name.to_string(), value.to_string()));
                    }
                }
            }
        }
        Ok((out, values))
    }

    fn render_sql(&self, t: &Template) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(t.0.len());
        let mut lexer = SqlLexer::default();
        for piece in parse(&t.0)? {
            match piece {
                Piece::Text(s) => {
                    lexer.feed_str(s, offset_in(&t.0, s));
                    out.push_str(s);
                }
                Piece::Var { name, offset, days } => {
                    let value = self.value_of(name, offset, days)?;
                    let value = value.as_ref();
                    let before = last_word(&lexer.code);
                    let place = lexer.placeholder();
                    let unsafe_ = |context, why| TemplateError::Unsafe {
                        name: name.to_string(),
                        value: value.to_string(),
                        context,
                        why,
                        at: Some(Position::of(&t.0, offset)),
                    };
                    out.push_str(&sql_value(value, place, &before).map_err(|(c, w)| unsafe_(c, w))?);
                }
            }
        }
        if let Some((offset, why)) = lexer.refused.first() {
            return Err(TemplateError::Invalid(format!("SQL text at {}: {why}", Position::of(&t.0, *offset))));
        }
        Ok(out)
    }
}

/// Why a rendered relative path could leave its root, if it could.
pub fn path_problem(p: &str) -> Option<&'static str> {
    if p.chars().any(char::is_control) {
        return Some("it has control characters");
    }
    if p.starts_with(['/', '\\']) {
        return Some("absolute paths are not allowed (it must stay inside its root)");
    }
    if p.split(['/', '\\']).any(|seg| seg == "..") {
        return Some("`..` components are not allowed (it must stay inside its root)");
    }
    None
}

/// Why a relative path cannot be the HTML file a task writes into the project folder, if it
/// cannot: it must name an `.html` (or `.htm`) file — so no DAG, SQL, recipe, rules file,
/// `cartflow.yaml` or state database can be replaced — outside the DAGs folder `dags/`, and
/// inside `.cartflow/` only directly (`.cartflow/NAME.html`, where the dashboard goes), never in
/// the lake, the logs or the streaming state under it.
pub fn html_out_problem(p: &str) -> Option<&'static str> {
    let segs: Vec<&str> = p.split(['/', '\\']).filter(|s| !s.is_empty() && *s != ".").collect();
    let Some(name) = segs.last() else { return Some("it names no file") };
    let lower = name.to_ascii_lowercase();
    if !(lower.ends_with(".html") || lower.ends_with(".htm")) || lower == ".html" || lower == ".htm" {
        return Some("it must name an `.html` file (the project's own files are not outputs)");
    }
    if segs[0] == "dags" {
        return Some("the DAGs folder `dags/` holds the project's code, not outputs");
    }
    if segs[0] == ".cartflow" && segs.len() > 2 {
        return Some("inside `.cartflow/` only a file of its own (`.cartflow/NAME.html`) may be written");
    }
    None
}

/// Why a rendered path cannot be a file a task reads, if it cannot: it is `none`, `generate`,
/// a path inside the project ([`path_problem`]), or an absolute path of a Kaggle file
/// (`.csv`, `.csv.gz`, `.csv.zip`) without control characters or `..`. Reading is all that is
/// done with it, and a file that is not the dataset stops at its header.
pub fn input_file_problem(p: &str) -> Option<&'static str> {
    if p == "none" || p == "generate" {
        return None;
    }
    if p.chars().any(char::is_control) {
        return Some("it has control characters");
    }
    let lower = p.to_ascii_lowercase();
    if ![".csv", ".csv.gz", ".csv.zip"].iter().any(|e| lower.ends_with(e)) {
        return Some("it must be `none`, `generate` or a Kaggle file (`.csv`, `.csv.gz`, `.csv.zip`)");
    }
    if p.starts_with('/') {
        return p.split('/').any(|seg| seg == "..").then_some("`..` components are not allowed");
    }
    path_problem(p)
}

fn sql_literal_value(name: &str, value: &str) -> Result<(), TemplateError> {
    let unsafe_ = |why| TemplateError::Unsafe {
        name: name.to_string(),
        value: value.to_string(),
        context: "in an SQL literal",
        why,
        at: None,
    };
    if value.chars().any(char::is_control) {
        return Err(unsafe_("control characters"));
    }
    if value.contains(['\'', '"', ';', '`', '\\']) || value.contains("--") || value.contains("/*") {
        return Err(unsafe_("quotes, `;`, backslashes and comments are not allowed"));
    }
    Ok(())
}

/// Where a placeholder stands in SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlPlace {
    /// Outside quotes and comments.
    Code,
    /// Inside a `'…'` string literal; `escapes` for an `E'…'`/`U&'…'` string, where a backslash
    /// escapes.
    Literal { escapes: bool },
    /// Right after a backslash inside an escape string.
    Escaped,
    /// Inside a `"…"` or `` `…` `` identifier.
    Identifier,
    /// Inside a `--` or `/* */` comment.
    Comment,
}

/// A number (`42`, `-1.5`), a date (`2019-10-01`) or a timestamp (RFC 3339, or
/// `YYYY-MM-DDTHH:MM:SS`): what may stand outside quotes.
pub fn is_number_or_date(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    let number = match unsigned.split_once('.') {
        Some((i, f)) => digits(i) && digits(f),
        None => digits(unsigned),
    };
    if number {
        return v.len() <= 40;
    }
    let b = v.as_bytes();
    let date = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
        && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    if date {
        return true;
    }
    v.len() <= 40
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_digit() || "T:+-.Z".contains(c))
        && (chrono::DateTime::parse_from_rfc3339(v).is_ok()
            || chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").is_ok())
}

/// The last word of SQL code, lowercased (`date` of `WHERE d = DATE `).
fn last_word(code: &str) -> String {
    let t = code.trim_end();
    let start = t.char_indices().rev().take_while(|(_, c)| word_char(*c)).last().map_or(t.len(), |(i, _)| i);
    t[start..].to_lowercase()
}

/// A value rendered for its place in SQL, or why it cannot stand there. `before` is the word of
/// code right before the placeholder.
///
/// Outside quotes a number stands as it is (a negative one in parentheses) and a date or a
/// timestamp as a typed literal: `2019-10-01` bare would be arithmetic (2019 - 10 - 1 = 2008),
/// so `{{ ds }}` renders `DATE '2019-10-01'` (`'2019-10-01'` after the author's own `DATE`),
/// and a timestamp `TIMESTAMP '2019-10-01 00:00:00+00:00'`, which Trino and DataFusion read
/// alike.
fn sql_value(value: &str, place: SqlPlace, before: &str) -> Result<String, (&'static str, &'static str)> {
    match place {
        SqlPlace::Code => {
            if !is_number_or_date(value) {
                return Err((
                    "outside a quoted SQL literal",
                    "only a number (42, -1.5) or a date/timestamp (2019-10-01) may stand there; \
                     quote the placeholder ('{{ … }}') to use the value as text",
                ));
            }
            let number = value.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
                && !value.get(1..).is_some_and(|rest| rest.contains('-'));
            if number {
                return Ok(if value.starts_with('-') { format!("({value})") } else { value.to_string() });
            }
            if value.len() == 10 {
                return Ok(if before == "date" { format!("'{value}'") } else { format!("DATE '{value}'") });
            }
            let ts = value.replacen('T', " ", 1);
            let ts = ts.strip_suffix('Z').map_or(ts.clone(), |t| format!("{t}+00:00"));
            Ok(if before == "timestamp" { format!("'{ts}'") } else { format!("TIMESTAMP '{ts}'") })
        }
        SqlPlace::Literal { escapes } => {
            if value.chars().any(char::is_control) {
                return Err(("in an SQL string literal", "control characters (line breaks, NUL, …) are not allowed"));
            }
            if escapes && value.contains('\\') {
                return Err(("in an SQL escape string", "backslashes are not allowed"));
            }
            Ok(value.replace('\'', "''"))
        }
        SqlPlace::Escaped => Err(("after a backslash in an SQL escape string", "a placeholder may not stand there")),
        SqlPlace::Identifier => {
            let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c));
            if !ok {
                return Err(("in a quoted SQL identifier", "only letters, digits, `_ - .` and spaces are allowed"));
            }
            Ok(value.to_string())
        }
        SqlPlace::Comment => {
            if value.chars().any(|c| c.is_control() || c == '*' || c == '/') {
                return Err(("in an SQL comment", "line breaks, `*` and `/` are not allowed"));
            }
            // Never nothing: `*{{ v }}/` would close the comment.
            Ok(if value.is_empty() { " ".to_string() } else { value.to_string() })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Code,
    /// After a `-` in code: a comment if another follows.
    Dash,
    /// After a `/` in code: a comment if `*` follows.
    Slash,
    Str {
        escapes: bool,
    },
    /// After a `'` in a string: its end unless another `'` follows.
    StrQuote {
        escapes: bool,
    },
    /// After a backslash in an escape string.
    StrBackslash,
    Ident(char),
    IdentQuote(char),
    LineComment,
    /// After a `\r` in a `--` comment.
    LineCommentCr,
    BlockComment,
    /// After a `*` in a block comment.
    BlockStar,
    /// After a `/` in a block comment (`/*` there is refused: engines disagree on nesting).
    BlockSlash,
}

/// Whether `c` continues a word (an identifier, a keyword or a number) in DataFusion's
/// (sqlparser's generic dialect) tokenizer.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '$' | '#' | '@')
}

/// Reads SQL text as Trino's and DataFusion's tokenizers do, as far as quoting goes: string
/// literals (`''` inside; `E'…'`, `U&'…'` and `X'…'` escape strings when the prefix is a token
/// of its own), quoted identifiers, `--` and `/* */` comments. What those engines read
/// differently — nested comments (DataFusion nests them, Trino does not), dollar-quoted
/// (`$$…$$`, `$tag$…$tag$`) and quote-delimited (`q'…'`) strings, a backslash in an escape
/// string's text, a lone carriage return in a `--` comment — is refused ([`SqlLexer::refused`]),
/// so that where the lexer says a placeholder stands is where every engine reads it. The code
/// outside literals and comments is kept (literals as `''`, identifiers as `""`, comments as a
/// space) for [`check_sql`].
#[derive(Debug, Default)]
struct SqlLexer {
    state: Lex,
    /// The word (identifier characters) of code right before this point, lowercased (for the
    /// `E'`, `X'`, `q'` prefixes).
    word: String,
    /// The code right before this point is `&` after the word `U` (for `U&'`).
    unicode_amp: bool,
    /// The byte offset in the template of the character being read.
    pos: usize,
    /// The constructs refused, with their byte offsets.
    refused: Vec<(usize, &'static str)>,
    /// The code outside literals and comments.
    code: String,
}

impl SqlLexer {
    /// Reads `s`, which starts at byte `base` of the template.
    fn feed_str(&mut self, s: &str, base: usize) {
        for (i, c) in s.char_indices() {
            self.pos = base + i;
            self.feed(c);
        }
    }

    fn refuse(&mut self, why: &'static str) {
        self.refused.push((self.pos, why));
    }

    /// Code that is not a quote: the word before the next character.
    fn code_char(&mut self, c: char) {
        self.code.push(c);
        self.unicode_amp = c == '&' && self.token_word() == "u";
        if word_char(c) {
            self.word.extend(c.to_lowercase());
        } else {
            self.word.clear();
        }
    }

    /// The word right before this point as sqlparser reads it: `1e` is the number 1, then `e`.
    fn token_word(&self) -> &str {
        self.word.trim_start_matches(|c: char| c.is_ascii_digit())
    }

    /// The prefix of a string literal starting here: whether it is an escape string. A prefix is
    /// one only as a token of its own: `LIKE'%'` is `LIKE` and a plain literal.
    fn string_prefix(&mut self) -> bool {
        if std::mem::take(&mut self.unicode_amp) {
            return true;
        }
        match self.token_word() {
            "e" | "x" => true,
            "q" | "nq" => {
                self.refuse("quote-delimited strings (`q'…'`, `nq'…'`) are not allowed: write a '…' literal");
                false
            }
            _ => false,
        }
    }

    fn feed(&mut self, c: char) {
        match self.state {
            Lex::Code => match c {
                '\'' => {
                    let escapes = self.string_prefix();
                    self.state = Lex::Str { escapes };
                    self.code_char(' ');
                    self.code.pop();
                    self.code.push_str("''");
                }
                '"' | '`' => {
                    self.state = Lex::Ident(c);
                    self.code_char(' ');
                    self.code.pop();
                    self.code.push_str("\"\"");
                }
                '-' => self.state = Lex::Dash,
                '/' => self.state = Lex::Slash,
                '$' => {
                    self.refuse(
                        "`$` outside quotes is not allowed: dollar-quoted strings (`$$…$$`, `$tag$…$tag$`) are read \
                         differently by different engines; write a '…' literal",
                    );
                    self.code_char(c);
                }
                _ => self.code_char(c),
            },
            Lex::Dash | Lex::Slash => {
                let (first, opens) = if self.state == Lex::Dash { ('-', '-') } else { ('/', '*') };
                if c == opens {
                    self.state = if first == '-' { Lex::LineComment } else { Lex::BlockComment };
                    self.code_char(' ');
                } else {
                    self.state = Lex::Code;
                    self.code_char(first);
                    self.feed(c);
                }
            }
            Lex::Str { escapes } => match c {
                '\'' => self.state = Lex::StrQuote { escapes },
                '\\' if escapes => {
                    self.refuse(
                        "a backslash in the text of an `E'…'`, `U&'…'` or `X'…'` string is read differently by \
                         different engines; write a plain '…' literal",
                    );
                    self.state = Lex::StrBackslash;
                }
                _ => {}
            },
            Lex::StrQuote { escapes } => {
                if c == '\'' {
                    self.state = Lex::Str { escapes };
                } else {
                    self.state = Lex::Code;
                    self.feed(c);
                }
            }
            Lex::StrBackslash => self.state = Lex::Str { escapes: true },
            Lex::Ident(q) => {
                if c == q {
                    self.state = Lex::IdentQuote(q);
                }
            }
            Lex::IdentQuote(q) => {
                if c == q {
                    self.state = Lex::Ident(q);
                } else {
                    self.state = Lex::Code;
                    self.feed(c);
                }
            }
            Lex::LineComment => match c {
                '\n' => {
                    self.state = Lex::Code;
                    self.code_char('\n');
                }
                '\r' => self.state = Lex::LineCommentCr,
                _ => {}
            },
            Lex::LineCommentCr => {
                if c == '\n' {
                    self.state = Lex::LineComment;
                } else {
                    // Trino ends a `--` comment there, DataFusion does not.
                    self.refuse(
                        "a carriage return not followed by a line feed ends a `--` comment in some engines only",
                    );
                    self.state = Lex::LineComment;
                }
                self.feed(c);
            }
            Lex::BlockComment | Lex::BlockSlash | Lex::BlockStar => {
                if self.state == Lex::BlockSlash && c == '*' {
                    self.refuse(
                        "`/*` inside a comment: DataFusion nests comments and Trino does not, so they would read \
                         what follows differently; remove the inner `/*`",
                    );
                }
                self.state = match c {
                    '/' if self.state == Lex::BlockStar => {
                        self.code_char(' ');
                        Lex::Code
                    }
                    '*' if self.state != Lex::BlockSlash => Lex::BlockStar,
                    '/' => Lex::BlockSlash,
                    _ => Lex::BlockComment,
                };
            }
        }
    }

    /// Where a placeholder at this point stands; the lexer then moves past its value.
    fn placeholder(&mut self) -> SqlPlace {
        // A pending `-`, `/`, `'` or `"` ends here: the value follows it.
        if matches!(self.state, Lex::Dash | Lex::Slash | Lex::StrQuote { .. } | Lex::IdentQuote(_)) {
            self.feed(' ');
            self.code.pop();
        }
        match self.state {
            Lex::Code => {
                // The value is a number or a date: code that opens nothing.
                self.code_char('0');
                SqlPlace::Code
            }
            Lex::Str { escapes } => SqlPlace::Literal { escapes },
            Lex::StrBackslash => SqlPlace::Escaped,
            Lex::Ident(_) => SqlPlace::Identifier,
            Lex::LineComment => SqlPlace::Comment,
            Lex::LineCommentCr => {
                self.feed('x');
                SqlPlace::Comment
            }
            Lex::BlockComment | Lex::BlockStar | Lex::BlockSlash => {
                // The value (never empty there: see `sql_value`) has no `*` or `/`.
                self.state = Lex::BlockComment;
                SqlPlace::Comment
            }
            Lex::Dash | Lex::Slash | Lex::StrQuote { .. } | Lex::IdentQuote(_) => SqlPlace::Code,
        }
    }

    fn finish(&mut self) {
        if matches!(self.state, Lex::Dash | Lex::Slash) {
            self.feed(' ');
        }
    }
}

/// The byte offset of `piece`, a slice of `text`, in `text`.
fn offset_in(text: &str, piece: &str) -> usize {
    (piece.as_ptr() as usize).saturating_sub(text.as_ptr() as usize)
}

/// Checks the SQL text of an insight file (its own text: the author's) at compile time: it is
/// one query — `SELECT`, `WITH … SELECT`, `VALUES` or a parenthesized query, with at most a
/// trailing `;` — and every placeholder outside quotes is a date variable or a param (whose
/// value is checked when the run renders it). Returns every problem, each with its position.
pub fn check_sql(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(pieces) = parse(text) else { return problems };
    let mut lexer = SqlLexer::default();
    for piece in pieces {
        match piece {
            Piece::Text(s) => lexer.feed_str(s, offset_in(text, s)),
            Piece::Var { name, offset, .. } => {
                let place = lexer.placeholder();
                let text_var = !DATE_VARIABLES.contains(&name) && !name.starts_with("params.");
                if place == SqlPlace::Code && text_var {
                    problems.push(format!(
                        "{}: `{{{{ {name} }}}}` stands outside a quoted SQL literal, where only numbers and dates may; \
                         write '{{{{ {name} }}}}'",
                        Position::of(text, offset)
                    ));
                }
            }
        }
    }
    lexer.finish();
    for (offset, why) in &lexer.refused {
        problems.push(format!("{}: {why}", Position::of(text, *offset)));
    }
    if let Some(why) = one_query(&lexer.code) {
        problems.push(why);
    }
    problems
}

/// Why SQL code (literals and comments blanked) is not one query, if it is not.
fn one_query(code: &str) -> Option<String> {
    let body = code.trim();
    let body = body.strip_suffix(';').unwrap_or(body).trim_end();
    if body.contains(';') {
        return Some("the SQL file must be one SELECT: it has more than one statement (`;`)".into());
    }
    if body.starts_with('(') {
        return None;
    }
    let word: String = body.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if ["SELECT", "WITH", "VALUES"].iter().any(|k| word.eq_ignore_ascii_case(k)) {
        return None;
    }
    let shown = if word.is_empty() { body.chars().take(20).collect() } else { word };
    Some(format!("the SQL file must be one SELECT (or WITH … SELECT); it starts with `{shown}`"))
}

/// The shells whose `-c` argument is a script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"];

/// Interpreters that run the text of an option as a program, with that option: `python3 -c`,
/// `perl -e`, `node -e`, ...
const INTERPRETERS: &[(&str, &[&str])] = &[
    ("python", &["-c"]),
    ("pypy", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "-p", "--eval", "--print"]),
    ("nodejs", &["-e", "-p", "--eval", "--print"]),
    ("php", &["-r"]),
    ("Rscript", &["-e"]),
];

/// Programs that run another program given as one of their arguments (`env X=1 sh -c …`,
/// `timeout 60 bash -c …`, `nice -n 5 sh -c …`): the check looks through them.
const WRAPPERS: &[&str] = &[
    "env",
    "nice",
    "nohup",
    "timeout",
    "stdbuf",
    "setsid",
    "sudo",
    "doas",
    "exec",
    "time",
    "ionice",
    "chrt",
    "taskset",
    "xargs",
    "flock",
    "unbuffer",
    "chroot",
    "runuser",
    "su",
    "command",
    "builtin",
    "find",
    "watch",
    "parallel",
    "strace",
    "firejail",
    "unshare",
    "nsenter",
    "systemd-run",
    "script",
];

/// A program's name without its folder and an interpreter's version (`/usr/bin/python3.11` is
/// `python`).
fn program_name(program: &str) -> &str {
    let name = program.rsplit('/').next().unwrap_or(program);
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if INTERPRETERS.iter().any(|(i, _)| *i == base) { base } else { name }
}

/// The argument that holds a program's code, if the program runs code given as an argument:
/// the one after `-c` (or `-ec`, `-euxc`, …) of a shell, after `-e` of perl, `-c` of python, ...
fn code_argument(name: &str, args: &[&str]) -> Option<(usize, String)> {
    if SHELLS.contains(&name) {
        let args_from = usize::from(name == "busybox");
        let rest = args.get(args_from..).unwrap_or_default();
        let i = rest.iter().position(|a| {
            a.strip_prefix('-')
                .is_some_and(|o| !o.starts_with('-') && o.chars().all(|c| c.is_ascii_alphabetic()) && o.contains('c'))
        })?;
        return rest.get(i + 1).map(|_| (args_from + i + 1, format!("{name} {}", rest[i])));
    }
    // `flock FILE -c CMD`, `su -c CMD`, `runuser -c CMD`: the command is a shell script.
    if matches!(name, "flock" | "su" | "runuser") {
        let i = args.iter().position(|a| *a == "-c" || *a == "--command")?;
        return args.get(i + 1).map(|_| (i + 1, format!("{name} {}", args[i])));
    }
    // awk's program is its first argument that is not an option (or the one after `-e`).
    if matches!(name, "awk" | "gawk" | "mawk" | "nawk") {
        let mut i = 0;
        while let Some(a) = args.get(i) {
            match *a {
                "-f" => return None,
                "-F" | "-v" => i += 2,
                "-e" | "--source" => return args.get(i + 1).map(|_| (i + 1, format!("{name} {a}"))),
                a if a.starts_with('-') && a.len() > 1 => i += 1,
                _ => return Some((i, name.to_string())),
            }
        }
        return None;
    }
    let (_, flags) = INTERPRETERS.iter().find(|(i, _)| *i == name)?;
    // The flag alone (`-c`), or last in a cluster of short options (`-Ic`, `-le`).
    let i = args.iter().position(|a| {
        flags.contains(a)
            || flags.iter().any(|f| {
                f.len() == 2
                    && a.len() > 2
                    && a.starts_with('-')
                    && !a.starts_with("--")
                    && a.chars().skip(1).all(|c| c.is_ascii_alphabetic())
                    && a.ends_with(&f[1..])
            })
    })?;
    args.get(i + 1).map(|_| (i + 1, format!("{name} {}", args[i])))
}

/// The `{{ params.* }}` placeholders spliced into code: the script after `-c` (or `-ec`,
/// `-euxc`, …) of a shell, the program text after `python3 -c`, `perl -e`, `node -e`, …, also
/// behind a wrapper (`env X=1 sh -c …`, `timeout 60 bash -c …`). A param there is untrusted text
/// run as code (`-p out_dir='x; rm -rf ~'`); it belongs in an argument (`"$1"`) or in `env:`.
/// Returns one message per placeholder, for the compile step of `command` to report.
pub fn params_in_shell_script(program: &str, args: &[&str]) -> Vec<String> {
    let mut name = program_name(program);
    let mut args = args;
    // Through the wrappers: the first argument that names a shell or an interpreter is the
    // program they run.
    while WRAPPERS.contains(&name) && code_argument(name, args).is_none() {
        let Some(i) = args.iter().position(|a| {
            let n = program_name(a);
            SHELLS.contains(&n)
                || INTERPRETERS.iter().any(|(i, _)| *i == n)
                || WRAPPERS.contains(&n)
                || matches!(n, "awk" | "gawk" | "mawk" | "nawk")
        }) else {
            return Vec::new();
        };
        name = program_name(args[i]);
        args = &args[i + 1..];
    }
    let Some((at, how)) = code_argument(name, args) else { return Vec::new() };
    let script = args[at];
    let Ok(pieces) = parse(script) else { return Vec::new() };
    let shell = SHELLS.contains(&name);
    pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var { name: var, offset, .. } if var.starts_with("params.") => Some(if shell {
                format!(
                    "`{{{{ {var} }}}}` is spliced into the `{how}` script (at {}): a param is untrusted text and \
                     would run as shell code: pass it as an argument (`{name} -c '... \"$1\" ...' NAME '{{{{ {var} }}}}'`) \
                     or through `env:` and quote it (\"$VAR\")",
                    Position::of(script, offset)
                )
            } else {
                format!(
                    "`{{{{ {var} }}}}` is spliced into the `{how}` program (at {}): a param is untrusted text and \
                     would run as code: pass it as an argument (`sys.argv`, `process.argv`, `@ARGV`) or through `env:`",
                    Position::of(script, offset)
                )
            }),
            _ => None,
        })
        .collect()
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        let interval =
            crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let mut params = BTreeMap::new();
        params.insert("bucket".to_string(), "lake".to_string());
        params.insert("evil".to_string(), "x'; DROP TABLE t; --".to_string());
        params.insert("up".to_string(), "../etc".to_string());
        Context::new("daily", "daily@2019-10-01T00:00:00Z", &interval, &params).for_task("load")
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::from(
            "{{ds}} {{ ds_nodash }} {{ data_interval_start }} {{ data_interval_end }} {{ dag.id }} {{ task.id }} {{ run_id }} {{ params.bucket }}",
        );
        assert_eq!(
            ctx().render(&t, Escaping::None).expect("renders"),
            "2019-10-01 20191001 2019-10-01T00:00:00+00:00 2019-10-02T00:00:00+00:00 daily load daily@2019-10-01T00:00:00Z lake"
        );
    }

    #[test]
    fn a_date_moves_by_whole_days_and_nothing_else_has_a_filter() {
        let r = |t: &str| ctx().render(&Template::from(t), Escaping::None);
        assert_eq!(r("{{ ds | add_days(-7) }}").expect("renders"), "2019-09-24");
        assert_eq!(r("{{ds|add_days(31)}} {{ ds_nodash | add_days( -1 ) }}").expect("renders"), "2019-11-01 20190930");
        assert_eq!(r("{{ ds | add_days(0) }}").expect("renders"), "2019-10-01");
        assert_eq!(r("{{ ds | add_days(-36500) }}").expect("renders"), "1919-10-26"); // (Python: date(2019,10,1) - timedelta(36500))
        // In SQL, inside a literal and outside (a date may stand there).
        let sql =
            Template::from("SELECT * FROM t WHERE dt >= '{{ ds | add_days(-6) }}' AND d < DATE {{ ds | add_days(1) }}");
        assert_eq!(
            ctx().render(&sql, Escaping::Sql).expect("renders"),
            "SELECT * FROM t WHERE dt >= '2019-09-25' AND d < DATE '2019-10-02'"
        );
        assert!(check_sql("SELECT '{{ ds | add_days(-7) }}'").is_empty());
        let params = BTreeMap::new();
        assert!(check("{{ ds | add_days(-7) }}", &params).is_ok());
        for (bad, why) in [
            ("{{ run_id | add_days(1) }}", "applies to `ds` or `ds_nodash`"),
            ("{{ data_interval_start | add_days(1) }}", "applies to `ds` or `ds_nodash`"),
            ("{{ ds | upper }}", "the only filter is `add_days(N)`"),
            ("{{ ds | add_days(1.5) }}", "whole number of days"),
            ("{{ ds | add_days() }}", "whole number of days"),
            ("{{ ds | add_days(99999999999999999999) }}", "whole number of days"),
            ("{{ ds | add_days(36501) }}", "at most 36500 days"),
            ("{{ ds | add_days(-1000000000000000) }}", "at most 36500 days"),
            ("{{ ds | add_days(1) | add_days(1) }}", "one filter at most"),
        ] {
            let e = check(&format!("x {bad}"), &params).expect_err(bad);
            assert!(matches!(e, TemplateError::BadFilter { offset: 2, .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn check_names_unknown_variables_with_a_hint() {
        let mut params = BTreeMap::new();
        params.insert("bucket".to_string(), "x".to_string());
        assert_eq!(check("a {{ ds }} b {{params.bucket}}", &params), Ok(()));
        let Err(TemplateError::UnknownVariable { name, offset, hint }) = check("x {{ dss }}", &params) else {
            panic!("expected unknown variable")
        };
        assert_eq!((name.as_str(), offset, hint.as_deref()), ("dss", 2, Some("did you mean `ds`?")));
        assert!(matches!(check("{{ params.buckt }}", &params), Err(TemplateError::UnknownVariable { .. })));
        assert!(matches!(check("{{ ds", &params), Err(TemplateError::Unclosed { offset: 0 })));
        assert!(matches!(check("{{ a b }}", &params), Err(TemplateError::BadName { .. })));
    }

    #[test]
    fn unsafe_values_are_refused_where_they_matter() {
        let c = ctx();
        assert!(c.render(&"{{ params.evil }}".into(), Escaping::None).is_ok());
        assert!(matches!(
            c.render(&"select '{{ params.evil }}'".into(), Escaping::SqlLiteral),
            Err(TemplateError::Unsafe { .. })
        ));
        assert!(matches!(c.render(&"raw/{{ params.up }}".into(), Escaping::Path), Err(TemplateError::Refused { .. })));
        assert_eq!(c.render(&"raw/dt={{ ds }}".into(), Escaping::Path).expect("safe"), "raw/dt=2019-10-01");
    }

    #[test]
    fn params_spliced_into_a_shell_script_are_found() {
        let found = params_in_shell_script("sh", &["-c", "rm -rf {{ params.dir }}/x; echo {{ ds }}"]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("`{{ params.dir }}` is spliced into the `sh -c` script (at line 1, column 8)"),
            "{found:?}"
        );
        assert_eq!(params_in_shell_script("/bin/bash", &["-euc", "a\n{{ params.x }} {{ params.y }}"]).len(), 2);
        // As an argument or in env, a param is data.
        assert!(params_in_shell_script("sh", &["-c", "test -s \"$1\"", "check", "{{ params.dir }}"]).is_empty());
        // Code of an interpreter is code too.
        let py = params_in_shell_script("/usr/bin/python3.11", &["-c", "print('{{ params.x }}')"]);
        assert_eq!(py.len(), 1, "{py:?}");
        assert!(py[0].contains("spliced into the `python -c` program"), "{py:?}");
        assert_eq!(params_in_shell_script("perl", &["-w", "-e", "print '{{ params.x }}'"]).len(), 1);
        assert_eq!(params_in_shell_script("node", &["--eval", "x('{{ params.x }}')"]).len(), 1);
        assert!(params_in_shell_script("python3", &["job.py", "{{ params.x }}"]).is_empty());
        // Behind a wrapper, the shell is still a shell.
        for (program, args) in [
            ("/usr/bin/env", &["sh", "-c", "echo {{ params.x }}"][..]),
            ("env", &["-i", "A=1", "bash", "-ec", "echo {{ params.x }}"]),
            ("timeout", &["60", "/bin/sh", "-c", "echo {{ params.x }}"]),
            ("nice", &["-n", "5", "env", "dash", "-c", "echo {{ params.x }}"]),
            ("sudo", &["-u", "etl", "python3", "-c", "print({{ params.x }})"]),
        ] {
            assert_eq!(params_in_shell_script(program, args).len(), 1, "{program} {args:?}");
        }
        // Option clusters, wrappers with a command of their own, awk programs, find -exec.
        for (program, args) in [
            ("perl", &["-le", "print '{{ params.x }}'"][..]),
            ("python3", &["-Ic", "print('{{ params.x }}')"]),
            ("flock", &["/tmp/lock", "-c", "echo {{ params.x }}"]),
            ("su", &["etl", "-c", "echo {{ params.x }}"]),
            ("awk", &["-F", ",", "BEGIN { system(\"{{ params.x }}\") }"]),
            ("find", &[".", "-exec", "sh", "-c", "echo {{ params.x }}", ";"]),
        ] {
            assert_eq!(params_in_shell_script(program, args).len(), 1, "{program} {args:?}");
        }
        assert!(params_in_shell_script("awk", &["-f", "prog.awk", "{{ params.x }}"]).is_empty());
        assert!(params_in_shell_script("env", &["A={{ params.x }}", "./run.sh"]).is_empty());
        assert!(params_in_shell_script("timeout", &["60", "./run.sh", "{{ params.x }}"]).is_empty());
        assert!(params_in_shell_script("sh", &["script.sh", "{{ params.x }}"]).is_empty());
    }

    #[test]
    fn sql_placeholders_are_rendered_for_where_they_stand() {
        let c = with(&[("v", "a'b"), ("n", "-2"), ("d", "2019-10-01")]);
        let r = |t: &str| c.render(&t.into(), Escaping::Sql);
        assert_eq!(
            r("SELECT '{{ params.v }}', {{ params.n }}, {{ params.d }}").expect("ok"),
            "SELECT 'a''b', (-2), DATE '2019-10-01'"
        );
        // A date outside quotes is a typed literal, never arithmetic (2019-10-01 is 2008 bare).
        assert_eq!(r("SELECT DATE {{ ds }}, date{{ ds }}").expect("ok"), "SELECT DATE '2019-10-01', date'2019-10-01'");
        assert_eq!(r("WHERE dt = {{ ds_nodash }}").expect("ok"), "WHERE dt = 20191001");
        assert_eq!(
            r("WHERE t >= {{ data_interval_start }} AND t < TIMESTAMP {{ data_interval_end }}").expect("ok"),
            "WHERE t >= TIMESTAMP '2019-10-01 00:00:00+00:00' AND t < TIMESTAMP '2019-10-02 00:00:00+00:00'"
        );
        let z = with(&[("t", "2019-10-01T05:06:07Z"), ("naive", "2019-10-01T05:06:07")]);
        assert_eq!(
            z.render(&"SELECT {{ params.t }}, {{ params.naive }}".into(), Escaping::Sql).expect("ok"),
            "SELECT TIMESTAMP '2019-10-01 05:06:07+00:00', TIMESTAMP '2019-10-01 05:06:07'"
        );
        assert_eq!(last_word("x = DATE  \n"), "date");
        assert_eq!(last_word(""), "");
        // A quote doubled in the text does not end the literal; the literal's end does.
        assert_eq!(r("SELECT 'it''s {{ params.v }}'").expect("ok"), "SELECT 'it''s a''b'");
        assert!(r("SELECT 'x' || {{ params.v }}").is_err());
        assert!(r("SELECT 'x''{{ params.v }}'").is_ok());
        assert_eq!(r("SELECT x -{{ params.n }}").expect("ok"), "SELECT x -(-2)");
        // Comments and quoted identifiers.
        assert_eq!(r("SELECT 1 -- {{ params.v }}\n, {{ ds }}").expect("ok"), "SELECT 1 -- a'b\n, DATE '2019-10-01'");
        assert!(r("SELECT 1 -- x\n, {{ params.v }}").is_err(), "the comment ended at the line break");
        assert!(r("SELECT /* {{ params.v }} */ {{ params.v }}").is_err());
        assert_eq!(r("SELECT \"{{ params.d }}\" FROM t").expect("ok"), "SELECT \"2019-10-01\" FROM t");
        assert!(r("SELECT \"{{ params.v }}\" FROM t").is_err());
        for (v, t) in [
            ("x\nDROP TABLE t", "SELECT 1 -- {{ params.v }}"),
            ("*/ UNION SELECT 2 /*", "SELECT 1 /* {{ params.v }} */"),
            ("\\' OR 1=1 --", "SELECT E'{{ params.v }}'"),
            ("x", "SELECT E'\\{{ params.v }}'"),
            ("a\u{0}b", "SELECT '{{ params.v }}'"),
        ] {
            let err = with(&[("v", v)]).render(&t.into(), Escaping::Sql).expect_err(t).to_string();
            assert!(err.contains("`params.v`") && err.contains("(at line 1, column "), "{err}");
        }
        // Without the E prefix a backslash is an ordinary character (Trino, DataFusion).
        let bs = with(&[("v", "\\' OR 1=1 --")]);
        assert_eq!(bs.render(&"SELECT '{{ params.v }}'".into(), Escaping::Sql).expect("ok"), "SELECT '\\'' OR 1=1 --'");
        let long = "x".repeat(100_000);
        let err =
            with(&[("v", &long)]).render(&"SELECT {{ params.v }}".into(), Escaping::Sql).expect_err("long").to_string();
        assert!(err.len() < 600 && err.contains("(100000 bytes)"), "a huge value is cut in the message: {err}");
    }

    /// Text that DataFusion or Trino read differently from the lexer, so that a value the lexer
    /// places in a literal would stand in code.
    #[test]
    fn sql_nested_comments_are_refused() {
        // (a) DataFusion nests comments: the inner `*/` does not end the outer one, so there
        // the placeholder's quotes are comment and the value is code.
        let nested = "SELECT x FROM t WHERE x = 'a'\n/* disabled:\n AND x = /* the kind */ '{{ params.who }}'\n*/";
        let problems = check_sql(nested);
        assert!(
            problems.iter().any(|p| p.contains("line 3, column 11") && p.contains("`/*` inside a comment")),
            "{problems:?}"
        );
        let union = "*/ UNION ALL SELECT CAST(current_date() AS VARCHAR) /*";
        assert!(with(&[("who", union)]).render(&nested.into(), Escaping::Sql).is_err());
        assert!(check_sql("SELECT 1 /* a * / b -- c */ -- /* d\n").is_empty(), "no nesting there");
    }

    #[test]
    fn sql_dollar_and_quote_delimited_strings_are_refused() {
        // (b) Dollar-quoted strings.
        for text in
            ["SELECT $$it's$$ AS a, '{{ params.who }}' AS b", "SELECT $tag$it's$tag$ AS a, '{{ params.who }}' AS b"]
        {
            let problems = check_sql(text);
            assert!(
                problems.iter().any(|p| p.contains("line 1, column 8") && p.contains("dollar-quoted")),
                "{problems:?}"
            );
            assert!(with(&[("who", "x")]).render(&text.into(), Escaping::Sql).is_err(), "{text}");
        }
        // Quote-delimited strings (sqlparser's generic dialect reads q'[…]').
        for text in ["SELECT q'[it's]' AS a", "SELECT nQ'[it's]' AS a"] {
            let problems = check_sql(text);
            assert!(problems.iter().any(|p| p.contains("quote-delimited")), "{text}: {problems:?}");
        }
    }

    #[test]
    fn sql_an_escape_prefix_is_one_only_as_a_token_of_its_own() {
        // (c) A keyword ending in `e` before a quote is no `E'…'` prefix: `'%\'` is a plain
        // literal ending with a backslash, and the placeholder stands in code.
        let like = "SELECT x FROM t WHERE x NOT LIKE'%\\' AND length(x) = {{ params.who }} AND x <> 'z'";
        assert!(check_sql(like).is_empty(), "{:?}", check_sql(like));
        let err = with(&[("who", "1 UNION ALL SELECT 2")]).render(&like.into(), Escaping::Sql).expect_err("code");
        assert!(err.to_string().contains("outside a quoted SQL literal"), "{err}");
        assert!(with(&[("who", "3")]).render(&like.into(), Escaping::Sql).is_ok());
        for text in ["SELECT due'{{ params.who }}'", "SELECT _e'{{ params.who }}'", "SELECT nu&'{{ params.who }}'"] {
            assert_eq!(
                with(&[("who", "a\\b")]).render(&text.into(), Escaping::Sql).expect(text),
                text.replace("{{ params.who }}", "a\\b"),
                "a plain literal: a backslash is a character"
            );
        }
        // A prefix standing alone is one; its string's text may have no backslash.
        for text in [
            "SELECT E'{{ params.who }}'",
            "SELECT 1 e'{{ params.who }}'",
            "SELECT 1e'{{ params.who }}'",
            "SELECT (x)U&'{{ params.who }}'",
            "SELECT X'{{ params.who }}'",
        ] {
            assert!(with(&[("who", "a\\b")]).render(&text.into(), Escaping::Sql).is_err(), "{text}");
            assert!(with(&[("who", "ab")]).render(&text.into(), Escaping::Sql).is_ok(), "{text}");
        }
        let problems = check_sql("SELECT E'it\\'s' AS a, '{{ params.who }}' AS b");
        assert!(problems.iter().any(|p| p.contains("line 1, column 12") && p.contains("backslash")), "{problems:?}");
        // A lone carriage return ends a `--` comment in Trino only.
        assert!(!check_sql("SELECT 1 -- x\r, '{{ params.who }}'\n").is_empty());
        assert!(check_sql("SELECT 1 -- x\r\n, '{{ params.who }}'\r\n").is_empty());
        // An empty value does not join a comment's `*` and `/`.
        let t = "SELECT 1 /* a *{{ params.who }}/ b */";
        assert_eq!(with(&[("who", "")]).render(&t.into(), Escaping::Sql).expect("ok"), "SELECT 1 /* a * / b */");
    }

    #[test]
    fn numbers_and_dates_are_told_from_text() {
        for v in [
            "0",
            "42",
            "-1",
            "2.50",
            "2019-10-01",
            "20191001",
            "2019-10-01T00:00:00+00:00",
            "2019-10-01T05:06:07Z",
            "2019-10-01T05:06:07",
        ] {
            assert!(is_number_or_date(v), "{v}");
        }
        for v in [
            "",
            "-",
            "1.",
            ".5",
            "1e5",
            "0x1f",
            "2019-13-01",
            "2019-10-1",
            "1 ",
            "NaN",
            "inf",
            "2019-10-01 00:00:00",
            "١٢",
        ] {
            assert!(!is_number_or_date(v), "{v}");
        }
    }

    fn with(params: &[(&str, &str)]) -> Context {
        let interval =
            crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Context::new("daily", "daily@2019-10-01T00:00:00Z", &interval, &params).for_task("load")
    }

    #[test]
    fn a_date_field_must_render_a_calendar_day_and_a_glue_argument_no_climb() {
        let c = with(&[("d", "a/b"), ("ok", "2019-10-03"), ("up", "../../other-bucket/x")]);
        let e = c.render(&"{{ params.d }}".into(), Escaping::Date).expect_err("a/b").to_string();
        assert!(e.contains("date \"a/b\" is refused: it must be a calendar day") && e.contains("`params.d`"), "{e}");
        for bad in [".", "~/x", "2019-10-1", "2019-13-01", "20191001", "2019-10-01' OR '1'='1"] {
            assert!(with(&[("d", bad)]).render(&"{{ params.d }}".into(), Escaping::Date).is_err(), "{bad}");
        }
        assert_eq!(c.render(&"{{ params.ok }}".into(), Escaping::Date).expect("a day"), "2019-10-03");
        assert_eq!(c.render(&"{{ ds | add_days(-1) }}".into(), Escaping::Date).expect("a day"), "2019-09-30");
        let e = c.render(&"s3://lake/{{ params.up }}".into(), Escaping::SqlLiteral).expect_err("climb").to_string();
        assert!(e.contains("argument") && e.contains("`..` components"), "{e}");
        assert!(c.render(&"s3://lake/clean/{{ ds }}".into(), Escaping::SqlLiteral).is_ok());
    }

    #[test]
    fn the_rendered_path_is_checked_not_each_value() {
        let c = with(&[("p", "./x"), ("dot", "."), ("sub", "a/b")]);
        let err = c.render(&".{{ params.p }}".into(), Escaping::Path).expect_err("`../x`").to_string();
        assert!(err.contains("path \"../x\" is refused") && err.contains("`params.p` = \"./x\""), "{err}");
        assert!(c.render(&"raw/.{{ params.dot }}/x".into(), Escaping::Path).is_err(), "`raw/../x`");
        // The DAG's own text is checked too.
        assert!(c.render(&"../{{ ds }}".into(), Escaping::Path).is_err());
        assert!(c.render(&"/etc/{{ ds }}".into(), Escaping::Path).is_err());
        assert!(c.render(&"raw/\\..\\x".into(), Escaping::Path).is_err());
        assert_eq!(
            c.render(&"raw/{{ params.sub }}/{{ params.p }}".into(), Escaping::Path).expect("inside"),
            "raw/a/b/./x"
        );
    }
}
