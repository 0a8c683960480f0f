//! Ad-hoc SQL over the catalog's tables (the seed's Athena console and Zeppelin notes): one
//! read-only SELECT, run by DataFusion on the local backend and by Athena on the aws backend,
//! its result as text rows (at most a limit of them), the bytes it scanned and the time it took.
//! `cartflow sql` and the web UI's query page call [`query`]; saved queries are files of the
//! project, `queries/NAME.sql` ([`save`], [`load`], [`list`]).
//!
//! What may run is checked before anything runs, twice: cartflow's SQL lexer (the one that checks
//! the insight SQL files: one statement, starting with `SELECT`, `WITH`, `VALUES` or `(`) and
//! DataFusion's SQL parser ([`cartflow_jobs::sql::statement_problem`]: no `CREATE`, `INSERT`,
//! `COPY`, `DROP`, `UPDATE`, `DELETE`, `SET`, `WITH … INSERT`, `SELECT … INTO`). Locally,
//! DataFusion then also verifies the plan reads only. A refusal is [`FlowError::Usage`] (exit 2).
//! A query that is allowed but fails (an unknown table or column, Athena's FAILED) is
//! [`FlowError::Step`] (exit 1).
//!
//! Unqualified table names resolve in the `ecommerce` database (as in `cartflow catalog`);
//! `database.table` always works.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{FlowError, usage};
use crate::env::{Backend, Env};
use crate::project::Project;

/// Rows shown when no limit is given.
pub const DEFAULT_LIMIT: usize = 1000;

/// Where unqualified table names resolve.
pub const DEFAULT_DATABASE: &str = "ecommerce";

/// The folder of saved queries, in the project.
pub const QUERIES_DIR: &str = "queries";

/// The longest saved-query name.
const MAX_NAME: usize = 100;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The SQL text: one SELECT (or `WITH … SELECT`, `VALUES`), a trailing `;` allowed.
    pub sql: String,
    /// At most this many rows are returned (at least 1).
    pub limit: usize,
}

impl Request {
    /// `sql` with the default limit.
    pub fn new(sql: impl Into<String>) -> Request {
        Request { sql: sql.into(), limit: DEFAULT_LIMIT }
    }
}

/// A query's result, ready to show: every value as text.
///
/// Values are text as the engine shows them — DataFusion's Arrow display locally (timestamps
/// `2019-10-01 00:00:04`, dates `2019-10-01`, floats in their shortest round-tripping form),
/// Athena's `VarCharValue` on AWS (`2019-10-01 00:00:04.000`) — and `None` for NULL (an empty
/// string is `Some("")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, at most [`Request::limit`] of them, each with one value per column.
    pub rows: Vec<Vec<Option<String>>>,
    /// Whether the query had more rows than the limit (they were not read).
    pub truncated: bool,
    /// The limit the rows were cut at.
    pub limit: usize,
    /// Bytes the query scanned. Locally: DataFusion's `bytes_scanned` metric of its Parquet
    /// scans (the column chunks read after pruning, not the files' size; 0 for a query that
    /// only needs row counts, which come from the footers read when the table was registered); on AWS:
    /// Athena's `DataScannedInBytes` (what it bills).
    pub bytes_scanned: u64,
    /// Wall time from the start to the last row read (opening the catalog and, on AWS, waiting
    /// in Athena's queue included).
    pub elapsed: Duration,
    /// The backend that ran it.
    pub backend: Backend,
    /// Athena's query execution id (aws backend only).
    pub query_id: Option<String>,
}

/// Refuses anything but one read-only query, before anything runs (exit code 2): the lexer
/// check of the insight SQL files and DataFusion's parser; see the module documentation.
pub fn check(sql: &str) -> Result<(), FlowError> {
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(usage("refused before running: the query is empty; give one SELECT"));
    }
    // The lexer reads `{{ … }}` as template placeholders, which ad-hoc SQL has none of (it is
    // run as written): braces are blanked so that the check sees plain SQL. Braces are not
    // quotes, comment marks or `;`, and the byte positions stay the same.
    let plain = sql.replace(['{', '}'], " ");
    let mut problems: Vec<String> = crate::template::check_sql(&plain)
        .into_iter()
        .map(|p| p.replace("the SQL file must be one SELECT", "a query must be one SELECT"))
        .collect();
    if problems.is_empty()
        && let Some(why) = cartflow_jobs::sql::statement_problem(sql)
    {
        problems.push(format!("a query must be one SELECT (or WITH … SELECT); {why}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(usage(format!(
        "refused before running: `cartflow sql` runs one read-only SELECT\n{}",
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )))
}

/// Runs one read-only query on `env` (the project's backend: [`Project::env`]; checked first
/// by [`check`]) and returns at most
/// `request.limit` rows. A cancel (Ctrl-C; the web UI's time limit, a dropped request) stops
/// it: locally the DataFusion work is dropped, on AWS the Athena query is stopped.
pub async fn query(env: &Env, request: &Request, cancel: &CancellationToken) -> Result<QueryResult, FlowError> {
    check(&request.sql)?;
    if request.limit == 0 {
        return Err(usage("the limit must be at least 1"));
    }
    let started = Instant::now();
    match env {
        Env::Local(local) => {
            let (lake, catalog) = (local.lake.clone(), local.catalog.clone());
            let (sql, limit, cancel) = (request.sql.clone(), request.limit, cancel.clone());
            let out = cartflow_jobs::sql::run_isolated(move || async move {
                use cartflow_jobs::sql::SqlEngine;
                // No catalog yet: no tables (and nothing is created by looking).
                let engine = if catalog.exists() {
                    SqlEngine::open(&lake, &catalog).await?
                } else {
                    SqlEngine::new(&lake, Vec::new()).await?
                };
                tokio::select! {
                    r = engine.query_text(&sql, limit, Some(DEFAULT_DATABASE)) => r.map(Some),
                    () = cancel.cancelled() => Ok(None),
                }
            })
            .await
            .map_err(|e| match e {
                cartflow_jobs::sql::SqlError::Refused(m) => usage(format!("refused before running: {m}")),
                other => FlowError::Step(format!("the query failed: {other}")),
            })?;
            let Some(out) = out else { return Err(FlowError::Cancelled) };
            Ok(QueryResult {
                columns: out.columns,
                rows: out.rows,
                truncated: out.truncated,
                limit: request.limit,
                bytes_scanned: out.bytes_scanned,
                elapsed: started.elapsed(),
                backend: Backend::Local,
                query_id: None,
            })
        }
        #[cfg(feature = "aws")]
        Env::Aws(aws) => {
            use crate::aws::athena_query::{self, QueryError};
            let log = |l: &str| tracing::info!("{l}");
            let answer = athena_query::run(aws, &request.sql, DEFAULT_DATABASE, request.limit, &log, cancel)
                .await
                .map_err(|e| match e {
                    QueryError::Cancelled(_) => FlowError::Cancelled,
                    other => FlowError::Step(other.to_string()),
                })?;
            Ok(QueryResult {
                columns: answer.columns,
                rows: answer.rows,
                truncated: answer.truncated,
                limit: request.limit,
                bytes_scanned: answer.bytes_scanned,
                elapsed: started.elapsed(),
                backend: Backend::Aws,
                query_id: Some(answer.query_id),
            })
        }
    }
}

/// Refuses a saved-query name that is not 1 to 100 of `A-Z a-z 0-9 _ -` (so that it names one
/// file of the queries folder and nothing else).
pub fn check_name(name: &str) -> Result<(), FlowError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(40).flat_map(char::escape_debug).collect();
    Err(usage(format!("`{shown}` is not a saved-query name: use 1 to {MAX_NAME} letters, digits, `_` and `-`")))
}

/// The file of saved query `name`: `queries/NAME.sql` in the project.
pub fn saved_path(project: &Project, name: &str) -> Result<PathBuf, FlowError> {
    check_name(name)?;
    Ok(project.dir.join(QUERIES_DIR).join(format!("{name}.sql")))
}

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The file written.
    pub path: PathBuf,
    /// Whether it replaced an earlier query of that name.
    pub replaced: bool,
}

/// Saves `sql` as query `name` (after [`check`]: a refused query is not saved), replacing an
/// earlier one of that name. The file is written whole or not at all (a temporary file,
/// renamed).
pub fn save(project: &Project, name: &str, sql: &str) -> Result<Saved, FlowError> {
    let path = saved_path(project, name)?;
    check(sql)?;
    let io = |what: &str, e: std::io::Error| FlowError::Step(format!("{what} {}: {e}", path.display()));
    let dir = project.dir.join(QUERIES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the folder of", e))?;
    let replaced = path.exists();
    let mut text = sql.trim_end().to_string();
    text.push('\n');
    let tmp = dir.join(format!(".{name}.sql.tmp"));
    std::fs::write(&tmp, text).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("writing", e))?;
    Ok(Saved { path, replaced })
}

/// The text of saved query `name`.
pub fn load(project: &Project, name: &str) -> Result<String, FlowError> {
    let path = saved_path(project, name)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let names = list(project).unwrap_or_default();
            let hint = crate::yaml::hint(name, names.iter().map(String::as_str));
            let known = if names.is_empty() {
                " (there are none yet: save one with `cartflow sql \"SELECT …\" --save NAME`)".to_string()
            } else {
                format!(" (saved: {})", names.join(", "))
            };
            Err(usage(format!("no saved query `{name}` in {}{hint}{known}", project.dir.join(QUERIES_DIR).display())))
        }
        Err(e) => Err(FlowError::Step(format!("reading {}: {e}", path.display()))),
    }
}

/// The names of the saved queries, sorted (files of the queries folder whose name is a valid
/// query name followed by `.sql`).
pub fn list(project: &Project) -> Result<Vec<String>, FlowError> {
    let dir = project.dir.join(QUERIES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FlowError::Step(format!("reading {}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sql").map(str::to_string))
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// One CSV field as `cartflow sql --format csv` and the query page's download write it: NULL
/// is empty, an empty string is `""` (so the two stay apart), and a field with a comma, quote,
/// line break or surrounding spaces is quoted (RFC 4180).
pub fn csv_field(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.is_empty() || s.contains([',', '"', '\n', '\r']) || s.trim() != s => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Some(s) => s.to_string(),
    }
}

/// One CSV line of [`csv_field`]s, without its line end.
pub fn csv_line<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    values.into_iter().map(csv_field).collect::<Vec<_>>().join(",")
}

/// A size as Athena's console shows the data scanned (decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_keep_null_and_empty_apart_and_quote_what_needs_it() {
        assert_eq!(csv_field(None), "");
        assert_eq!(csv_field(Some("")), "\"\"");
        assert_eq!(csv_field(Some("acme")), "acme");
        assert_eq!(csv_field(Some("a,b")), "\"a,b\"");
        assert_eq!(csv_field(Some("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(Some("two\nlines")), "\"two\nlines\"");
        assert_eq!(csv_field(Some(" padded")), "\" padded\"");
        assert_eq!(csv_line([Some("a"), None, Some("")]), "a,,\"\"");
    }

    #[test]
    fn sizes_read_like_athena_shows_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(5_000_000_000), "5.0 GB");
    }

    fn refused(sql: &str) -> String {
        match check(sql) {
            Err(e @ FlowError::Usage(_)) => e.to_string(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn only_one_select_passes_the_check() {
        for ok in [
            "SELECT 1",
            "select brand, count(*) from ecommerce.enriched_events group by brand;",
            "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
            "-- a comment\nSELECT '{{ not a placeholder }}' AS s",
            "SELECT 'DROP TABLE x; --' AS s",
            "VALUES (1)",
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
        for (bad, says) in [
            ("CREATE TABLE t AS SELECT 1", "starts with `CREATE`"),
            ("INSERT INTO ecommerce.clean_events VALUES (1)", "starts with `INSERT`"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "starts with `COPY`"),
            ("DROP TABLE ecommerce.clean_events", "starts with `DROP`"),
            ("UPDATE t SET a = 1", "starts with `UPDATE`"),
            ("DELETE FROM t", "starts with `DELETE`"),
            ("SET datafusion.execution.batch_size = 1", "starts with `SET`"),
            ("SELECT 1; SELECT 2", "more than one statement"),
            ("SELECT 1; DROP TABLE t", "more than one statement"),
            ("WITH a AS (SELECT 1 AS x) INSERT INTO t SELECT x FROM a", "INSERT"),
            ("SELECT 1 AS a INTO t", "INTO"),
            ("/* {{ */ DROP TABLE t", "starts with `DROP`"),
            ("  ;  ", "empty"),
        ] {
            let why = refused(bad);
            assert!(why.contains(says) && why.contains("refused before running"), "{bad}: {why}");
        }
    }

    #[test]
    fn saved_query_names_name_one_file_of_the_queries_folder() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = Project::open(dir.path().to_path_buf(), None, None).expect("project");
        let long = "a".repeat(101);
        for bad in ["", "../x", "a/b", "a.b", "a b", "x\0", "é", long.as_str()] {
            assert!(matches!(check_name(bad), Err(FlowError::Usage(_))), "{bad:?}");
        }
        let s = save(&p, "per_day", "SELECT 1\n\n").expect("save");
        assert_eq!((s.path.clone(), s.replaced), (dir.path().join("queries/per_day.sql"), false));
        assert_eq!(load(&p, "per_day").expect("load"), "SELECT 1\n");
        assert!(save(&p, "per_day", "SELECT 2").expect("again").replaced);
        assert!(matches!(save(&p, "bad", "DROP TABLE t"), Err(FlowError::Usage(_))), "refused, not saved");
        save(&p, "Brands-2", "SELECT 3").expect("save");
        assert_eq!(list(&p).expect("list"), ["Brands-2", "per_day"]);
        let missing = load(&p, "per_dya").expect_err("missing").to_string();
        assert!(missing.contains("did you mean `per_day`") || missing.contains("per_day"), "{missing}");
        assert!(matches!(load(&p, "../cartflow"), Err(FlowError::Usage(_))));
    }
}
