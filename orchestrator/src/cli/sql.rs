//! `cartflow sql`: one read-only SELECT over the catalog's tables (DataFusion locally, Athena
//! with `--backend aws`), its rows as a table, CSV or JSON, the bytes scanned and the time.
//! The work is [`cartflow::flows::sql`]; this parses, calls it and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::flows::sql::{self as flow, DEFAULT_LIMIT, QueryResult, Request, csv_line, human_bytes};
use cartflow::project::Project;

use super::{BackendArg, table, usage, with_signals};

const EXAMPLES: &str = "\
Examples:
  cartflow sql \"SELECT dt, count(*) AS events FROM ecommerce.enriched_events GROUP BY dt ORDER BY dt\"
  cartflow sql --file q.sql --format csv > out.csv
  cartflow sql \"SELECT brand, count(*) AS n FROM enriched_events GROUP BY brand\" --save brands
  cartflow sql --saved brands --limit 20
  cartflow sql --list
  cartflow sql --backend aws \"SELECT count(*) FROM ecommerce.enriched_events\"";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for the terminal; NULL shown as `NULL`; the summary below it.
    Table,
    /// RFC 4180 CSV with a header row: NULL is an empty field, an empty string `""`; the
    /// summary goes to stderr.
    Csv,
    /// One JSON object: `columns`, `rows` (arrays of strings and nulls), `truncated`, `limit`,
    /// `bytes_scanned`, `elapsed_ms`, `backend`, `query_id`.
    Json,
}

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["query", "file", "saved", "list"])))]
pub struct Args {
    /// The query: one SELECT (or WITH … SELECT) over the catalog's tables; `table` alone means
    /// `ecommerce.table`. Anything else (CREATE, INSERT, COPY, DROP, SET, two statements) is
    /// refused before it runs (exit 2).
    query: Option<String>,
    /// Read the query from this file.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Run the saved query `queries/NAME.sql` of the project.
    #[arg(long, value_name = "NAME", conflicts_with = "save")]
    saved: Option<String>,
    /// Save the query as `queries/NAME.sql` of the project (replacing one of that name), then
    /// run it. NAME: letters, digits, `_` and `-`.
    #[arg(long, value_name = "NAME")]
    save: Option<String>,
    /// List the saved queries.
    #[arg(long, conflicts_with_all = ["save", "format"])]
    list: bool,
    /// Show at most N rows (the output says when the result has more).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = parse_limit)]
    limit: usize,
    /// How rows are printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    backend: BackendArg,
}

fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a row limit (a whole number, at least 1)")),
    }
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    if a.list {
        for name in flow::list(p)? {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sql = match (&a.query, &a.file, &a.saved) {
        (Some(q), _, _) => q.clone(),
        (_, Some(f), _) => std::fs::read_to_string(p.dir.join(f))
            .map_err(|e| usage(format!("reading the query from {}: {e}", f.display())))?,
        (_, _, Some(name)) => flow::load(p, name)?,
        _ => return Err(usage("give a query, --file FILE or --saved NAME")),
    };
    if let Some(name) = &a.save {
        let saved = flow::save(p, name, &sql)?;
        eprintln!("{} query `{name}` as {}", if saved.replaced { "replaced" } else { "saved" }, saved.path.display());
    }
    let request = Request { sql, limit: a.limit };
    let backend = a.backend.backend;
    let result = with_signals(|cancel| async move {
        let env = p.env(backend).await?;
        flow::query(&env, &request, &cancel).await
    })??;
    match a.format {
        Format::Table => {
            let mut t = table::new(&result.columns.iter().map(String::as_str).collect::<Vec<_>>());
            for row in &result.rows {
                t.add_row(row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect::<Vec<_>>());
            }
            if !result.columns.is_empty() {
                println!("{t}");
            }
            println!("{}", summary(&result));
        }
        Format::Csv => {
            println!("{}", csv_line(result.columns.iter().map(|c| Some(c.as_str()))));
            for row in &result.rows {
                println!("{}", csv_line(row.iter().map(Option::as_deref)));
            }
            eprintln!("{}", summary(&result));
        }
        Format::Json => {
            let v = serde_json::json!({
                "columns": result.columns,
                "rows": result.rows,
                "truncated": result.truncated,
                "limit": result.limit,
                "bytes_scanned": result.bytes_scanned,
                "elapsed_ms": result.elapsed.as_secs_f64() * 1000.0,
                "backend": result.backend,
                "query_id": result.query_id,
            });
            println!("{v}");
            eprintln!("{}", summary(&result));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `6 rows · 1.2 MB scanned (1234567 bytes) · 0.31 s`, and what was cut.
fn summary(r: &QueryResult) -> String {
    let rows = match (r.rows.len(), r.truncated) {
        (n, true) => format!("first {n} rows shown: the result has more (raise --limit to see them)"),
        (1, false) => "1 row".to_string(),
        (n, false) => format!("{n} rows"),
    };
    let mut s = format!(
        "{rows} · {} scanned ({} bytes) · {:.2} s",
        human_bytes(r.bytes_scanned),
        r.bytes_scanned,
        r.elapsed.as_secs_f64()
    );
    if let Some(id) = &r.query_id {
        s.push_str(&format!(" · Athena query {id}"));
    }
    s
}
