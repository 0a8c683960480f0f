//! `{{ variable }}` templates in task configs.
//!
//! The language is deliberately tiny: a placeholder is a variable name, nothing else (no
//! expressions, no filters). Every placeholder is checked when the DAG compiles; an unknown
//! variable is a compile error. Rendering substitutes values as text; a kind that puts a
//! rendered value into a path or into SQL renders with [`Escaping::Path`] or
//! [`Escaping::SqlLiteral`], which refuse values that could change the meaning of the result.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The fixed variables every task can use (besides `params.NAME`).
pub const VARIABLES: &[&str] =
    &["ds", "ds_nodash", "data_interval_start", "data_interval_end", "dag.id", "task.id", "run_id", "logical_date"];

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
    /// A placeholder; `offset` is its byte offset in the template.
    Var { name: &'a str, offset: usize },
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
    /// A variable the context does not define.
    #[error("unknown template variable `{name}`")]
    UnknownVariable { name: String, offset: usize, hint: Option<String> },
    /// A value that may not be placed where it was asked to go.
    #[error("value {value:?} of `{name}` cannot be used in a {context}: {why}")]
    Unsafe { name: String, value: String, context: &'static str, why: &'static str },
    /// A rendered value a task kind cannot use (a number that is not a number, ...).
    #[error("{0}")]
    Invalid(String),
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
        let name = after[..end].trim();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            return Err(TemplateError::BadName { text: name.to_string(), offset: base + start });
        }
        out.push(Piece::Var { name, offset: base + start });
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
        if let Piece::Var { name, offset } = piece {
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
    /// A relative path segment inside the lake or a project folder: no `..`, no absolute
    /// paths, no control characters.
    Path,
    /// Inside a single-quoted SQL string literal or an identifier: no quotes, no `;`, no
    /// comments, no control characters.
    SqlLiteral,
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

    /// Renders a template.
    pub fn render(&self, t: &Template, escaping: Escaping) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(t.0.len());
        for piece in parse(&t.0)? {
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Var { name, offset } => {
                    let value = self.get(name).ok_or_else(|| TemplateError::UnknownVariable {
                        name: name.to_string(),
                        offset,
                        hint: None,
                    })?;
                    validate(name, value, escaping)?;
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

fn validate(name: &str, value: &str, escaping: Escaping) -> Result<(), TemplateError> {
    let unsafe_ =
        |context, why| Err(TemplateError::Unsafe { name: name.to_string(), value: value.to_string(), context, why });
    match escaping {
        Escaping::None => Ok(()),
        Escaping::Path => {
            if value.chars().any(char::is_control) {
                return unsafe_("path", "control characters");
            }
            if value.starts_with('/') || value.starts_with('\\') {
                return unsafe_("path", "absolute paths are not allowed");
            }
            if value.split(['/', '\\']).any(|seg| seg == "..") {
                return unsafe_("path", "`..` segments are not allowed");
            }
            Ok(())
        }
        Escaping::SqlLiteral => {
            if value.chars().any(char::is_control) {
                return unsafe_("SQL literal", "control characters");
            }
            if value.contains(['\'', '"', ';', '`', '\\']) || value.contains("--") || value.contains("/*") {
                return unsafe_("SQL literal", "quotes, `;`, backslashes and comments are not allowed");
            }
            Ok(())
        }
    }
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
        assert!(matches!(c.render(&"raw/{{ params.up }}".into(), Escaping::Path), Err(TemplateError::Unsafe { .. })));
        assert_eq!(c.render(&"raw/dt={{ ds }}".into(), Escaping::Path).expect("safe"), "raw/dt=2019-10-01");
    }
}
