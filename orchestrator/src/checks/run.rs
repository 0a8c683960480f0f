//! The checks as SQL, on any engine: each check is one or two counting queries and, when it
//! fails, a query for a sample of the failing rows. The engine ([`Engine`]) says where the
//! staged rows are ([`Names`]).

use chrono::{DateTime, Utc};

use super::{Check, CheckResult, SAMPLE_ROWS, Spec, age, ident, literal, sql_template};
use crate::template::{self, Escaping};

/// What runs the checks' SQL.
pub(crate) trait Engine {
    /// At most `limit` rows of a read-only query: the column names and each value as text
    /// (`None` for NULL).
    async fn rows(&self, sql: &str, limit: usize) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), String>;
}

/// How the checks' SQL names what it reads.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The staged rows (a table name; `{{ this }}` in an `sql:` check).
    pub this: String,
    /// What they replace, for `row_count_change`: a table or a parenthesized query with an
    /// alias, and how it is called in the detail (`dt=2019-10-01`).
    pub previous: Option<(String, String)>,
    /// The staged quarantine, for `quarantine_rate`.
    pub quarantine: Option<String>,
    /// `{{ previous }}` in an `sql:` check: what the staged rows replace, or no rows with their
    /// columns.
    pub previous_or_empty: String,
}

/// Runs `checks` in order. A check whose query fails (a column that does not exist) fails, with
/// the error as its detail.
pub(crate) async fn run<E: Engine>(
    engine: &E,
    checks: &[Check],
    names: &Names,
    template: &template::Context,
    interval_end: DateTime<Utc>,
) -> Vec<CheckResult> {
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        let (passed, detail, sample) = match one(engine, c, names, template, interval_end).await {
            Ok(r) => r,
            Err(e) => (false, format!("the check's query failed: {e}"), Vec::new()),
        };
        out.push(CheckResult { name: c.name.clone(), severity: c.severity, passed, detail, sample });
    }
    out
}

/// The first value of the first row of a query, as text.
async fn scalar<E: Engine>(engine: &E, sql: &str) -> Result<Option<String>, String> {
    let (_, rows) = engine.rows(sql, 1).await?;
    Ok(rows.into_iter().next().and_then(|row| row.into_iter().next()).flatten())
}

/// The number of staged rows.
async fn staged_rows<E: Engine>(engine: &E, this: &str) -> Result<u64, String> {
    count(engine, &format!("SELECT count(*) FROM {this}")).await
}

async fn count<E: Engine>(engine: &E, sql: &str) -> Result<u64, String> {
    let v = scalar(engine, sql).await?;
    v.as_deref().unwrap_or("0").parse::<u64>().map_err(|_| format!("a count was not a number: {v:?}"))
}

/// At most [`SAMPLE_ROWS`] rows of a query, each as `column=value, …`.
async fn sample<E: Engine>(engine: &E, sql: &str) -> Result<Vec<String>, String> {
    let (columns, rows) = engine.rows(sql, SAMPLE_ROWS).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let text = columns
                .iter()
                .zip(row)
                .map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL")))
                .collect::<Vec<_>>()
                .join(", ");
            super::clip(&text, 300)
        })
        .collect())
}

type Outcome = (bool, String, Vec<String>);

async fn one<E: Engine>(
    engine: &E,
    c: &Check,
    names: &Names,
    template: &template::Context,
    interval_end: DateTime<Utc>,
) -> Result<Outcome, String> {
    let this = names.this.as_str();
    Ok(match &c.spec {
        Spec::RowCount { min, max } => {
            let n = staged_rows(engine, this).await?;
            let ok = min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
            let bounds = match (min, max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => "any number".into(),
            };
            (ok, format!("{n} rows staged; {bounds} required"), Vec::new())
        }
        Spec::RowCountChange { max_pct } => {
            let n = staged_rows(engine, this).await?;
            match &names.previous {
                None => (true, format!("{n} rows staged; no previous partition to compare with"), Vec::new()),
                Some((prev, label)) => {
                    let p = count(engine, &format!("SELECT count(*) FROM {prev}")).await?;
                    let change = if p == 0 {
                        if n == 0 { 0.0 } else { f64::INFINITY }
                    } else {
                        (n as f64 - p as f64) / p as f64 * 100.0
                    };
                    let ok = change.abs() <= *max_pct;
                    (
                        ok,
                        format!("{n} rows staged against {p} in {label}: {change:+.1}%; at most ±{max_pct}% allowed"),
                        Vec::new(),
                    )
                }
            }
        }
        Spec::NotNull(cols) => {
            let cond = cols.iter().map(|c| format!("{} IS NULL", ident(c))).collect::<Vec<_>>().join(" OR ");
            let bad = count(engine, &format!("SELECT count(*) FROM {this} WHERE {cond}")).await?;
            let s = if bad > 0 { sample(engine, &format!("SELECT * FROM {this} WHERE {cond}")).await? } else { vec![] };
            (bad == 0, format!("{bad} rows with a null in {}", cols.join(", ")), s)
        }
        Spec::Unique(cols) => {
            let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let nn = cols.iter().map(|c| format!("{} IS NOT NULL", ident(c))).collect::<Vec<_>>().join(" AND ");
            let dups =
                format!("SELECT {list}, count(*) AS copies FROM {this} WHERE {nn} GROUP BY {list} HAVING count(*) > 1");
            let bad = count(engine, &format!("SELECT count(*) FROM ({dups}) AS d")).await?;
            let s = if bad > 0 { sample(engine, &format!("{dups} ORDER BY copies DESC")).await? } else { vec![] };
            (bad == 0, format!("{bad} values of ({}) on more than one row", cols.join(", ")), s)
        }
        Spec::AcceptedValues { column, values } => {
            let col = ident(column);
            let set = values.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", ");
            let cond = format!("{col} IS NOT NULL AND CAST({col} AS VARCHAR) NOT IN ({set})");
            let bad = count(engine, &format!("SELECT count(*) FROM {this} WHERE {cond}")).await?;
            let s = if bad > 0 {
                let q = format!(
                    "SELECT CAST({col} AS VARCHAR) AS {col}, count(*) AS \"rows\" FROM {this} WHERE {cond} GROUP BY 1 ORDER BY 2 DESC, 1"
                );
                sample(engine, &q).await?
            } else {
                vec![]
            };
            (bad == 0, format!("{bad} rows with a {column} not in [{}]", values.join(", ")), s)
        }
        Spec::Freshness { column, max_age } => {
            let col = ident(column);
            let cutoff = chrono::Duration::from_std(*max_age)
                .ok()
                .and_then(|d| interval_end.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let cut = cutoff.format("%Y-%m-%d %H:%M:%S").to_string();
            let newest = scalar(engine, &format!("SELECT max(CAST({col} AS TIMESTAMP)) FROM {this}")).await?;
            let fresh = count(
                engine,
                &format!("SELECT count(*) FROM {this} WHERE CAST({col} AS TIMESTAMP) >= TIMESTAMP '{cut}'"),
            )
            .await?;
            (
                fresh > 0,
                format!(
                    "newest {column} {}; one at or after {cut} ({} before the interval's end) required",
                    newest.as_deref().unwrap_or("none (no rows)"),
                    age(*max_age)
                ),
                Vec::new(),
            )
        }
        Spec::QuarantineRate { max_pct } => {
            let Some(q_table) = &names.quarantine else {
                return Err("the task staged no quarantine".into());
            };
            let q = count(engine, &format!("SELECT count(*) FROM {q_table}")).await?;
            let n = staged_rows(engine, this).await?;
            let rate = if q + n == 0 { 0.0 } else { q as f64 / (q + n) as f64 * 100.0 };
            let ok = rate <= *max_pct;
            let s = if ok {
                vec![]
            } else {
                let by_reason =
                    format!("SELECT reason, count(*) AS \"rows\" FROM {q_table} GROUP BY reason ORDER BY 2 DESC, 1");
                sample(engine, &by_reason).await?
            };
            (ok, format!("{q} of {} rows quarantined ({rate:.1}%); at most {max_pct}% allowed", q + n), s)
        }
        Spec::Sql(text) => {
            let sql = template
                .render(&sql_template(text, this, &names.previous_or_empty), Escaping::Sql)
                .map_err(|e| e.to_string())?;
            let sql = sql.trim().trim_end_matches(';').trim_end().to_string();
            let bad = count(engine, &format!("SELECT count(*) FROM ({sql}) AS failing")).await?;
            let s = if bad > 0 { sample(engine, &sql).await? } else { vec![] };
            (bad == 0, format!("the query returned {bad} rows (it must return none)"), s)
        }
    })
}
