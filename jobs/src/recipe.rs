//! DataBrew recipes, interpreted with Polars: the local half of the `databrew_job` kind.
//!
//! A recipe is the JSON that DataBrew itself uses (and `aws databrew describe-recipe` prints):
//! a list of steps `{"Action": {"Operation": …, "Parameters": {…}}, "ConditionExpressions": […]}`,
//! either bare or as the `Steps` of a recipe object. Parameters are strings, as in the
//! DataBrew API. The subset below is what cartflow runs locally; anything else is refused when
//! the recipe is parsed (at DAG compile time), with the step's number and operation.
//!
//! | Operation | Parameters | Local meaning |
//! |---|---|---|
//! | `LOWER_CASE`, `UPPER_CASE`, `TRIM` | `sourceColumn` | string case / surrounding whitespace |
//! | `FILL_WITH_CUSTOM` | `sourceColumn`, `columnDataType` (`string`, `number`), `value` | missing values become `value` |
//! | `FILL_WITH_EMPTY` | `sourceColumn` | missing strings become `""` |
//! | `SPLIT_COLUMN_SINGLE_DELIMITER` | `sourceColumn`, `pattern`, `limit` (1-20), `includeInSplit` (`false`) | new columns `<source>_1` … `<source>_<limit+1>`; the last holds the rest; missing parts are null; the source column stays |
//! | `RENAME` | `sourceColumn`, `targetColumn` | |
//! | `DELETE` | `sourceColumns` (a JSON array of names) | |
//! | `DUPLICATE` | `sourceColumn`, `targetColumn` | a copy of the column |
//! | `CHANGE_DATA_TYPE` | `sourceColumn`, `columnDataType` (`string`, `integer`, `double`, `boolean`) | values that do not convert become null |
//! | `HOUR`, `DAY`, `MONTH`, `YEAR`, `WEEK_DAY` | `sourceColumn` (a timestamp), `targetColumn` | integer parts; `WEEK_DAY` is 1 (Monday) … 7 (Sunday), as Trino's `day_of_week` |
//! | `REMOVE_MISSING` | `sourceColumn` | drops rows where the column is missing |
//! | `REMOVE_DUPLICATES` | `sourceColumn` (optional) | drops rows whose column (or whole row) repeats an earlier one; the first is kept |
//! | `REMOVE_VALUES` | `sourceColumn`, and `ConditionExpressions` `[{"Condition", "Value", "TargetColumn"}]` with `IS`, `IS_NOT`, `LESS_THAN`, `LESS_THAN_EQUAL`, `GREATER_THAN`, `GREATER_THAN_EQUAL` | drops the rows that match every condition |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Deserialize;

/// Every operation the local interpreter runs.
pub const SUPPORTED: &[&str] = &[
    "LOWER_CASE",
    "UPPER_CASE",
    "TRIM",
    "FILL_WITH_CUSTOM",
    "FILL_WITH_EMPTY",
    "SPLIT_COLUMN_SINGLE_DELIMITER",
    "RENAME",
    "DELETE",
    "DUPLICATE",
    "CHANGE_DATA_TYPE",
    "HOUR",
    "DAY",
    "MONTH",
    "YEAR",
    "WEEK_DAY",
    "REMOVE_MISSING",
    "REMOVE_DUPLICATES",
    "REMOVE_VALUES",
];

/// `file:line:column`, or `file` when the parser knows no position (line 0).
fn at(file: &str, line: usize, column: usize) -> String {
    if line == 0 { file.to_string() } else { format!("{file}:{line}:{column}") }
}

/// A recipe that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// The file is not JSON of the recipe's shape.
    #[error("{}: {message}", at(file, *line, *column))]
    Json {
        /// The recipe file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde said.
        message: String,
    },
    /// One step is wrong.
    #[error("{file}: step {step} ({operation}): {message}")]
    Step {
        /// The recipe file.
        file: String,
        /// 1-based step number.
        step: usize,
        /// The step's operation.
        operation: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RecipeFile {
    Steps(Vec<RawStep>),
    Object {
        #[serde(rename = "Steps")]
        steps: Vec<RawStep>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "Action")]
    action: RawAction,
    #[serde(rename = "ConditionExpressions", default)]
    conditions: Vec<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "Operation")]
    operation: String,
    #[serde(rename = "Parameters", default)]
    parameters: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(rename = "Condition")]
    condition: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "TargetColumn")]
    target_column: String,
}

/// A part of a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePart {
    /// 0-23.
    Hour,
    /// Day of month.
    Day,
    /// 1-12.
    Month,
    /// The year.
    Year,
    /// 1 (Monday) - 7 (Sunday).
    WeekDay,
}

/// A comparison of `REMOVE_VALUES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `=`.
    Is,
    /// `<>`.
    IsNot,
    /// `<`.
    LessThan,
    /// `<=`.
    LessThanEqual,
    /// `>`.
    GreaterThan,
    /// `>=`.
    GreaterThanEqual,
}

/// A type of `CHANGE_DATA_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    String,
    /// 64-bit integer.
    Integer,
    /// 64-bit float.
    Double,
    /// true/false.
    Boolean,
}

/// One checked step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Lower-case a string column.
    LowerCase(String),
    /// Upper-case a string column.
    UpperCase(String),
    /// Trim surrounding whitespace.
    Trim(String),
    /// Missing values become a string.
    FillString(String, String),
    /// Missing values become a number.
    FillNumber(String, f64),
    /// Split into `limit + 1` new columns.
    Split {
        /// Source column.
        column: String,
        /// The delimiter.
        pattern: String,
        /// How many splits.
        limit: usize,
    },
    /// Rename a column.
    Rename(String, String),
    /// Drop columns.
    Delete(Vec<String>),
    /// Copy a column.
    Duplicate(String, String),
    /// Cast a column.
    ChangeType(String, ColumnType),
    /// A part of a timestamp into a new column.
    DatePart(DatePart, String, String),
    /// Drop rows where the column is missing.
    RemoveMissing(String),
    /// Drop repeated rows (by a column, or whole rows).
    RemoveDuplicates(Option<String>),
    /// Drop rows matching every condition.
    RemoveValues(Vec<(Comparison, String, String)>),
}

impl Step {
    fn columns_read(&self) -> Vec<&str> {
        match self {
            Step::LowerCase(c)
            | Step::UpperCase(c)
            | Step::Trim(c)
            | Step::FillString(c, _)
            | Step::FillNumber(c, _)
            | Step::Split { column: c, .. }
            | Step::Rename(c, _)
            | Step::Duplicate(c, _)
            | Step::ChangeType(c, _)
            | Step::DatePart(_, c, _)
            | Step::RemoveMissing(c) => vec![c],
            Step::Delete(cs) => cs.iter().map(String::as_str).collect(),
            Step::RemoveDuplicates(c) => c.iter().map(String::as_str).collect(),
            Step::RemoveValues(conds) => conds.iter().map(|(_, c, _)| c.as_str()).collect(),
        }
    }
}

/// A parsed, checked recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Where it came from (for messages).
    pub file: String,
    /// The steps, in order, with their operation names.
    pub steps: Vec<(String, Step)>,
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Json {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            message: e.to_string(),
        })?;
        Recipe::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks recipe JSON.
    pub fn parse(file: &str, text: &str) -> Result<Recipe, RecipeError> {
        let raw: RecipeFile = serde_json::from_str(text).map_err(|e| RecipeError::Json {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: if e.is_data() {
                format!(
                    "{}; a recipe is a list of steps {{\"Action\": {{\"Operation\": …, \"Parameters\": {{…}}}}}}",
                    crate::words::plain(&e.to_string())
                )
            } else {
                crate::words::plain(&e.to_string())
            },
        })?;
        let steps = match raw {
            RecipeFile::Steps(s) | RecipeFile::Object { steps: s } => s,
        };
        let mut out = Vec::with_capacity(steps.len());
        for (i, s) in steps.into_iter().enumerate() {
            let op = s.action.operation.clone();
            let step = parse_step(&s).map_err(|message| RecipeError::Step {
                file: file.to_string(),
                step: i + 1,
                operation: op.clone(),
                message,
            })?;
            out.push((op, step));
        }
        Ok(Recipe { file: file.to_string(), steps: out })
    }

    /// The recipe as Polars expressions over `lf`, checking every column a step reads exists
    /// at that point.
    pub fn apply(&self, mut lf: LazyFrame) -> Result<LazyFrame, RecipeError> {
        for (i, (op, step)) in self.steps.iter().enumerate() {
            let err = |message: String| RecipeError::Step {
                file: self.file.clone(),
                step: i + 1,
                operation: op.clone(),
                message,
            };
            let schema = lf.collect_schema().map_err(|e| err(e.to_string()))?;
            for c in step.columns_read() {
                if schema.get(c).is_none() {
                    let names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
                    return Err(err(format!("no column `{c}` at this step; the columns are {}", names.join(", "))));
                }
            }
            lf = apply_step(lf, step, &schema).map_err(err)?;
        }
        Ok(lf)
    }
}

fn param(s: &RawStep, name: &str) -> Result<String, String> {
    match s.action.parameters.get(name) {
        Some(serde_json::Value::String(v)) => Ok(v.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(other) => Err(format!("parameter `{name}` must be a string, found {other}")),
        None => Err(format!("missing parameter `{name}`")),
    }
}

fn only(s: &RawStep, allowed: &[&str]) -> Result<(), String> {
    if let Some(k) = s.action.parameters.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown parameter `{k}` (this operation takes {})", allowed.join(", ")));
    }
    if !s.conditions.is_empty() && s.action.operation != "REMOVE_VALUES" {
        return Err("ConditionExpressions are only supported on REMOVE_VALUES".into());
    }
    Ok(())
}

fn parse_step(s: &RawStep) -> Result<Step, String> {
    let op = s.action.operation.as_str();
    let src = || param(s, "sourceColumn");
    Ok(match op {
        "LOWER_CASE" | "UPPER_CASE" | "TRIM" | "FILL_WITH_EMPTY" | "REMOVE_MISSING" => {
            only(s, &["sourceColumn"])?;
            let c = src()?;
            match op {
                "LOWER_CASE" => Step::LowerCase(c),
                "UPPER_CASE" => Step::UpperCase(c),
                "TRIM" => Step::Trim(c),
                "FILL_WITH_EMPTY" => Step::FillString(c, String::new()),
                _ => Step::RemoveMissing(c),
            }
        }
        "FILL_WITH_CUSTOM" => {
            only(s, &["sourceColumn", "columnDataType", "value"])?;
            let value = param(s, "value")?;
            match param(s, "columnDataType")?.as_str() {
                "string" => Step::FillString(src()?, value),
                "number" => {
                    Step::FillNumber(src()?, value.parse().map_err(|_| format!("value `{value}` is not a number"))?)
                }
                other => return Err(format!("columnDataType `{other}` is not supported locally (string, number)")),
            }
        }
        "SPLIT_COLUMN_SINGLE_DELIMITER" => {
            only(s, &["sourceColumn", "pattern", "limit", "includeInSplit"])?;
            let pattern = param(s, "pattern")?;
            if pattern.is_empty() {
                return Err("pattern must not be empty".into());
            }
            let limit = param(s, "limit")?;
            let limit: usize = limit.parse().map_err(|_| format!("limit `{limit}` is not a number"))?;
            if !(1..=20).contains(&limit) {
                return Err(format!("limit must be between 1 and 20, found {limit}"));
            }
            if s.action.parameters.contains_key("includeInSplit") && param(s, "includeInSplit")? != "false" {
                return Err("only includeInSplit = false is supported locally".into());
            }
            Step::Split { column: src()?, pattern, limit }
        }
        "RENAME" | "DUPLICATE" => {
            only(s, &["sourceColumn", "targetColumn"])?;
            let (a, b) = (src()?, param(s, "targetColumn")?);
            if op == "RENAME" { Step::Rename(a, b) } else { Step::Duplicate(a, b) }
        }
        "DELETE" => {
            only(s, &["sourceColumns"])?;
            let v = param(s, "sourceColumns")?;
            let cols: Vec<String> = serde_json::from_str(&v)
                .map_err(|_| format!("sourceColumns must be a JSON array of column names, found `{v}`"))?;
            Step::Delete(cols)
        }
        "CHANGE_DATA_TYPE" => {
            only(s, &["sourceColumn", "columnDataType"])?;
            let t = match param(s, "columnDataType")?.as_str() {
                "string" => ColumnType::String,
                "integer" | "long" | "int" => ColumnType::Integer,
                "double" | "number" | "float" => ColumnType::Double,
                "boolean" => ColumnType::Boolean,
                other => {
                    return Err(format!(
                        "columnDataType `{other}` is not supported locally (string, integer, double, boolean)"
                    ));
                }
            };
            Step::ChangeType(src()?, t)
        }
        "HOUR" | "DAY" | "MONTH" | "YEAR" | "WEEK_DAY" => {
            only(s, &["sourceColumn", "targetColumn"])?;
            let part = match op {
                "HOUR" => DatePart::Hour,
                "DAY" => DatePart::Day,
                "MONTH" => DatePart::Month,
                "YEAR" => DatePart::Year,
                _ => DatePart::WeekDay,
            };
            Step::DatePart(part, src()?, param(s, "targetColumn")?)
        }
        "REMOVE_DUPLICATES" => {
            only(s, &["sourceColumn"])?;
            Step::RemoveDuplicates(s.action.parameters.contains_key("sourceColumn").then(src).transpose()?)
        }
        "REMOVE_VALUES" => {
            only(s, &["sourceColumn"])?;
            if s.conditions.is_empty() {
                return Err("REMOVE_VALUES needs ConditionExpressions".into());
            }
            let mut conds = Vec::new();
            for c in &s.conditions {
                let cmp = match c.condition.as_str() {
                    "IS" => Comparison::Is,
                    "IS_NOT" => Comparison::IsNot,
                    "LESS_THAN" => Comparison::LessThan,
                    "LESS_THAN_EQUAL" => Comparison::LessThanEqual,
                    "GREATER_THAN" => Comparison::GreaterThan,
                    "GREATER_THAN_EQUAL" => Comparison::GreaterThanEqual,
                    other => {
                        return Err(format!(
                            "condition `{other}` is not supported locally (IS, IS_NOT, LESS_THAN, LESS_THAN_EQUAL, GREATER_THAN, GREATER_THAN_EQUAL)"
                        ));
                    }
                };
                let value = c.value.clone().ok_or_else(|| format!("condition {} needs a Value", c.condition))?;
                conds.push((cmp, c.target_column.clone(), value));
            }
            Step::RemoveValues(conds)
        }
        other => {
            return Err(format!(
                "`{other}` is not supported by the local interpreter; supported operations: {}",
                SUPPORTED.join(", ")
            ));
        }
    })
}

fn is_string(schema: &Schema, c: &str) -> bool {
    matches!(schema.get(c), Some(DataType::String))
}

fn apply_step(lf: LazyFrame, step: &Step, schema: &Schema) -> Result<LazyFrame, String> {
    let need_string = |c: &str| {
        if is_string(schema, c) {
            Ok(())
        } else {
            Err(format!("column `{c}` is {:?}, not a string", schema.get(c).cloned().unwrap_or(DataType::Null)))
        }
    };
    Ok(match step {
        Step::LowerCase(c) => {
            need_string(c)?;
            lf.with_column(col(c.as_str()).str().to_lowercase())
        }
        Step::UpperCase(c) => {
            need_string(c)?;
            lf.with_column(col(c.as_str()).str().to_uppercase())
        }
        Step::Trim(c) => {
            need_string(c)?;
            lf.with_column(col(c.as_str()).str().strip_chars(lit(NULL)))
        }
        Step::FillString(c, v) => {
            need_string(c)?;
            lf.with_column(col(c.as_str()).fill_null(lit(v.clone())))
        }
        Step::FillNumber(c, v) => {
            let dt = schema.get(c).cloned().unwrap_or(DataType::Float64);
            if !dt.is_primitive_numeric() {
                return Err(format!("column `{c}` is {dt:?}, not a number"));
            }
            lf.with_column(col(c.as_str()).fill_null(lit(*v).cast(dt)))
        }
        Step::Split { column, pattern, limit } => {
            need_string(column)?;
            // Parts 1..=limit, then the rest of the string (the remaining parts with their
            // delimiters) as part limit+1 — one pass per part over the text, no list column.
            let n = *limit + 1;
            let exprs: Vec<Expr> = (0..n)
                .map(|i| {
                    let pat = pattern.clone();
                    col(column.as_str())
                        .map(
                            move |c: Column| {
                                let ca = c.str()?;
                                let out: StringChunked =
                                    ca.iter().map(|v| v.and_then(|s| s.splitn(n, pat.as_str()).nth(i))).collect();
                                Ok(out.with_name(c.name().clone()).into_column())
                            },
                            |_, f| Ok(Field::new(f.name().clone(), DataType::String)),
                        )
                        .alias(format!("{column}_{}", i + 1))
                })
                .collect();
            lf.with_columns(exprs)
        }
        Step::Rename(a, b) => {
            if schema.get(b).is_some() {
                return Err(format!("a column `{b}` already exists"));
            }
            lf.rename([a.as_str()], [b.as_str()], true)
        }
        Step::Delete(cols) => lf.drop(by_name(cols.iter().map(String::as_str), true, false)),
        Step::Duplicate(a, b) => lf.with_column(col(a.as_str()).alias(b.as_str())),
        Step::ChangeType(c, t) => {
            let dt = match t {
                ColumnType::String => DataType::String,
                ColumnType::Integer => DataType::Int64,
                ColumnType::Double => DataType::Float64,
                ColumnType::Boolean => DataType::Boolean,
            };
            lf.with_column(col(c.as_str()).cast(dt))
        }
        Step::DatePart(part, c, target) => {
            if !matches!(schema.get(c), Some(DataType::Datetime(..) | DataType::Date)) {
                return Err(format!("column `{c}` is not a timestamp"));
            }
            let e = col(c.as_str()).dt();
            let e = match part {
                DatePart::Hour => e.hour(),
                DatePart::Day => e.day(),
                DatePart::Month => e.month(),
                DatePart::Year => e.year(),
                DatePart::WeekDay => e.weekday(),
            };
            lf.with_column(e.cast(DataType::Int32).alias(target.as_str()))
        }
        Step::RemoveMissing(c) => lf.filter(col(c.as_str()).is_not_null()),
        Step::RemoveDuplicates(c) => {
            let subset = c.as_ref().map(|c| by_name([c.as_str()], true, false));
            lf.unique_stable(subset, UniqueKeepStrategy::First)
        }
        Step::RemoveValues(conds) => {
            let mut all: Option<Expr> = None;
            for (cmp, c, v) in conds {
                let dt = schema.get(c).cloned().ok_or_else(|| format!("no column `{c}`"))?;
                let value = if dt.is_primitive_numeric() {
                    lit(v.parse::<f64>().map_err(|_| format!("`{v}` is not a number (column `{c}` is numeric)"))?)
                } else {
                    lit(v.clone())
                };
                let x = col(c.as_str());
                let e = match cmp {
                    Comparison::Is => x.eq(value),
                    Comparison::IsNot => x.neq(value),
                    Comparison::LessThan => x.lt(value),
                    Comparison::LessThanEqual => x.lt_eq(value),
                    Comparison::GreaterThan => x.gt(value),
                    Comparison::GreaterThanEqual => x.gt_eq(value),
                };
                all = Some(match all {
                    None => e,
                    Some(a) => a.and(e),
                });
            }
            match all {
                Some(e) => lf.filter(e.fill_null(lit(false)).not()),
                None => lf,
            }
        }
    })
}

/// Where enriched events live under the lake root.
pub const ENRICHED_EVENTS: &str = "enriched/events";

/// What a local DataBrew job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipeReport {
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Rows removed by REMOVE_* steps (`rows_in - rows_out`).
    pub removed: u64,
    /// The output's columns.
    pub columns: Vec<String>,
    /// Where the output is, relative to the lake.
    pub location: String,
}

/// Errors of a local DataBrew job.
#[derive(Debug, thiserror::Error)]
pub enum RecipeJobError {
    /// The recipe.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// No input.
    #[error("no input at {0} (run the step before)")]
    Empty(String),
    /// Polars or files.
    #[error("{path}: {message}")]
    Data {
        /// Where.
        path: PathBuf,
        /// What.
        message: String,
    },
}

/// Runs a recipe over the Parquet partition `<lake>/<input>/dt=<date>` and publishes the result
/// to `<lake>/<output>/dt=<date>` (fresh folder, then swap).
pub fn run_job(
    lake: &Path,
    recipe: &Recipe,
    input: &str,
    output: &str,
    date: &str,
) -> Result<RecipeReport, RecipeJobError> {
    let (report, staged) = stage_job(lake, recipe, input, output, date)?;
    let live = lake.join(&report.location);
    staged.publish().map_err(|e| RecipeJobError::Data { path: live, message: e })?;
    Ok(report)
}

/// [`run_job`] up to the swap: the result is in a fresh folder (output 0 of the
/// [`Staged`](crate::swap::Staged)), not yet published — audit it, then publish, or drop to
/// discard.
pub fn stage_job(
    lake: &Path,
    recipe: &Recipe,
    input: &str,
    output: &str,
    date: &str,
) -> Result<(RecipeReport, crate::swap::Staged), RecipeJobError> {
    let in_dir = lake.join(input).join(format!("dt={date}"));
    let files = crate::parquet_files(&in_dir);
    if files.is_empty() {
        return Err(RecipeJobError::Empty(format!("{input}/dt={date}")));
    }
    let derr = |path: &Path| {
        let path = path.to_path_buf();
        move |e: PolarsError| RecipeJobError::Data { path: path.clone(), message: e.to_string() }
    };
    let mut frames = Vec::with_capacity(files.len());
    let mut rows_in = 0u64;
    for f in &files {
        let file =
            std::fs::File::open(f).map_err(|e| RecipeJobError::Data { path: f.clone(), message: e.to_string() })?;
        let df = ParquetReader::new(file).finish().map_err(derr(f))?;
        rows_in += df.height() as u64;
        frames.push(df.lazy());
    }
    let lf = concat(frames, UnionArgs::default()).map_err(derr(&in_dir))?;
    let mut df = recipe.apply(lf)?.collect().map_err(derr(&in_dir))?;
    let live = lake.join(output).join(format!("dt={date}"));
    let write = |df: &mut DataFrame| -> Result<crate::swap::Staged, String> {
        crate::swap::guard(lake, &live)?;
        crate::swap::recover(&live)?;
        let fresh = crate::swap::fresh(&live)?;
        // Owned at once: an error below deletes what was written.
        let staged = crate::swap::Staged::new(vec![(fresh.clone(), live.clone())]);
        crate::write_part(df, &fresh.join("part-00000.parquet"))?;
        crate::crash::point("enrich.written");
        Ok(staged)
    };
    let staged = write(&mut df).map_err(|e| RecipeJobError::Data { path: live.clone(), message: e })?;
    let rows_out = df.height() as u64;
    let report = RecipeReport {
        rows_in,
        rows_out,
        removed: rows_in.saturating_sub(rows_out),
        columns: df.get_column_names().iter().map(|c| c.to_string()).collect(),
        location: format!("{output}/dt={date}"),
    };
    Ok((report, staged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        let t =
            Series::new("event_time".into(), [1_569_888_004_000_000i64, 1_570_300_000_000_000, 1_569_974_400_000_000])
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .expect("time");
        DataFrame::new(
            3,
            vec![
                t.into_column(),
                Column::new("category_code".into(), [Some("electronics.smartphone"), None, Some("a.b.c.d")]),
                Column::new("brand".into(), [Some("Samsung"), None, Some("apple")]),
                Column::new("price".into(), [Some(10.5), None, Some(-1.0)]),
                Column::new("user_id".into(), [Some("1"), Some("2"), Some("x")]),
            ],
        )
        .expect("frame")
    }

    #[test]
    fn a_json_that_is_not_a_recipe_is_said_in_words() {
        let e = Recipe::parse("r.json", r#"{"steps":[{"Action":{"Operation":5}}]}"#).expect_err("not a recipe");
        let text = e.to_string();
        assert!(text.starts_with("r.json: not of the expected shape; a recipe is a list of steps"), "{text}");
        assert!(!text.contains("enum") && !text.contains(":0:0"), "{text}");
        let e = Recipe::parse("r.json", r#"[{"Action":{"Operation":"X","Parameters":5}}]"#).expect_err("bad type");
        assert!(!e.to_string().contains("struct") && !e.to_string().contains("at line"), "{e}");
    }

    fn run(json: &str) -> Result<DataFrame, RecipeError> {
        let r = Recipe::parse("r.json", json)?;
        Ok(r.apply(frame().lazy())?.collect().expect("collect"))
    }

    fn strs(df: &DataFrame, c: &str) -> Vec<Option<String>> {
        let ca = df.column(c).expect(c).str().expect("str");
        (0..ca.len()).map(|i| ca.get(i).map(str::to_string)).collect()
    }

    fn s(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(str::to_string)).collect()
    }

    #[test]
    fn split_fill_and_case_give_exact_rows() {
        let df = run(r#"[
            {"Action": {"Operation": "SPLIT_COLUMN_SINGLE_DELIMITER",
                        "Parameters": {"sourceColumn": "category_code", "pattern": ".", "limit": "2", "includeInSplit": "false"}}},
            {"Action": {"Operation": "LOWER_CASE", "Parameters": {"sourceColumn": "brand"}}},
            {"Action": {"Operation": "FILL_WITH_CUSTOM", "Parameters": {"sourceColumn": "brand", "columnDataType": "string", "value": "unknown"}}},
            {"Action": {"Operation": "FILL_WITH_CUSTOM", "Parameters": {"sourceColumn": "price", "columnDataType": "number", "value": "0"}}},
            {"Action": {"Operation": "RENAME", "Parameters": {"sourceColumn": "category_code_1", "targetColumn": "category_main"}}}
        ]"#)
        .expect("runs");
        assert_eq!(strs(&df, "category_main"), s(&[Some("electronics"), None, Some("a")]));
        assert_eq!(strs(&df, "category_code_2"), s(&[Some("smartphone"), None, Some("b")]));
        assert_eq!(strs(&df, "category_code_3"), s(&[None, None, Some("c.d")]), "the last part keeps the rest");
        assert_eq!(strs(&df, "brand"), s(&[Some("samsung"), Some("unknown"), Some("apple")]));
        let p: Vec<Option<f64>> = {
            let ca = df.column("price").expect("p").f64().expect("f");
            (0..ca.len()).map(|i| ca.get(i)).collect()
        };
        assert_eq!(p, vec![Some(10.5), Some(0.0), Some(-1.0)]);
    }

    #[test]
    fn date_parts_types_deletes_and_row_filters() {
        let df = run(r#"{"Steps": [
            {"Action": {"Operation": "HOUR", "Parameters": {"sourceColumn": "event_time", "targetColumn": "event_hour"}}},
            {"Action": {"Operation": "WEEK_DAY", "Parameters": {"sourceColumn": "event_time", "targetColumn": "event_weekday"}}},
            {"Action": {"Operation": "CHANGE_DATA_TYPE", "Parameters": {"sourceColumn": "user_id", "columnDataType": "integer"}}},
            {"Action": {"Operation": "DELETE", "Parameters": {"sourceColumns": "[\"category_code\"]"}}},
            {"Action": {"Operation": "REMOVE_VALUES", "Parameters": {"sourceColumn": "price"}},
             "ConditionExpressions": [{"Condition": "LESS_THAN", "Value": "0", "TargetColumn": "price"}]}
        ]}"#)
        .expect("runs");
        assert_eq!(df.height(), 2, "the negative price is removed, the missing one kept");
        let hours: Vec<Option<i32>> = {
            let ca = df.column("event_hour").expect("h").i32().expect("i");
            (0..ca.len()).map(|i| ca.get(i)).collect()
        };
        assert_eq!(hours, vec![Some(0), Some(18)]);
        // 2019-10-01 was a Tuesday; 2019-10-05 a Saturday.
        let wd: Vec<Option<i32>> = {
            let ca = df.column("event_weekday").expect("w").i32().expect("i");
            (0..ca.len()).map(|i| ca.get(i)).collect()
        };
        assert_eq!(wd, vec![Some(2), Some(6)]);
        let users: Vec<Option<i64>> = {
            let ca = df.column("user_id").expect("u").i64().expect("i");
            (0..ca.len()).map(|i| ca.get(i)).collect()
        };
        assert_eq!(users, vec![Some(1), Some(2)]);
        assert!(df.column("category_code").is_err());
        let df = run(r#"[{"Action": {"Operation": "REMOVE_MISSING", "Parameters": {"sourceColumn": "brand"}}},
                         {"Action": {"Operation": "REMOVE_DUPLICATES", "Parameters": {}}}]"#)
        .expect("runs");
        assert_eq!(df.height(), 2);
    }

    #[test]
    fn unsupported_operations_and_bad_parameters_name_the_step() {
        let e = Recipe::parse(
            "enrich.json",
            r#"[{"Action": {"Operation": "LOWER_CASE", "Parameters": {"sourceColumn": "brand"}}},
                {"Action": {"Operation": "PIVOT", "Parameters": {}}}]"#,
        )
        .expect_err("pivot");
        assert!(e.to_string().starts_with("enrich.json: step 2 (PIVOT): `PIVOT` is not supported"), "{e}");
        let e = Recipe::parse(
            "r.json",
            r#"[{"Action": {"Operation": "SPLIT_COLUMN_SINGLE_DELIMITER", "Parameters": {"sourceColumn": "a", "pattern": ".", "limit": "40"}}}]"#,
        )
        .expect_err("limit");
        assert_eq!(
            e.to_string(),
            "r.json: step 1 (SPLIT_COLUMN_SINGLE_DELIMITER): limit must be between 1 and 20, found 40"
        );
        let e =
            Recipe::parse("r.json", "[{\"Action\": {\"Operation\": \"TRIM\",\n \"Parameters\": {\"column\": \"a\"}}}]")
                .expect_err("param");
        assert!(e.to_string().contains("unknown parameter `column`"), "{e}");
        let e = Recipe::parse("r.json", "[\n  {\"Action\": 3}\n]").expect_err("shape");
        assert!(e.to_string().starts_with("r.json:"), "{e}");
        let e = run(r#"[{"Action": {"Operation": "LOWER_CASE", "Parameters": {"sourceColumn": "brnd"}}}]"#)
            .expect_err("column");
        assert!(e.to_string().contains("step 1 (LOWER_CASE): no column `brnd`"), "{e}");
    }

    #[test]
    fn the_repository_recipe_is_supported() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glue-scripts/databrew/enrich_events.json");
        let r = Recipe::load(&path).expect("the shipped recipe parses");
        assert!(!r.steps.is_empty());
    }
}
