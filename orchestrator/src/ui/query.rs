//! The query page (the seed's Athena console and Zeppelin notes): one read-only SELECT over the
//! catalog's tables through [`flows::sql::query`] — the same function as `cartflow sql`, with the
//! same refusals — its result paged, the bytes scanned and the time, a CSV download, and the
//! project's saved queries.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::html::{self, Nav, esc, hidden};
use super::{PageError, Ui, csrf_ok};
use crate::flows::{self, FlowError};

/// Rows a page shows.
const PAGE: usize = 100;
/// Rows a query may return to the page (and to the CSV).
const MAX_ROWS: usize = 10_000;

/// The page's fields.
#[derive(Debug, Deserialize, Default)]
pub(super) struct QueryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sql: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    saved: Option<String>,
}

fn form(ui: &Ui, sql: &str, saved: &[String]) -> String {
    let mut out = format!(
        r#"<form class="query" method="post" action="/query">{}<textarea name="sql" id="sql" rows="8" spellcheck="false" placeholder="SELECT dt, count(*) FROM enriched_events GROUP BY dt ORDER BY dt">{}</textarea>
<div><button class="go" id="run">Run</button> <button name="format" value="csv" id="csv">Download CSV</button> <span class="meta">One read-only SELECT; unqualified tables are in <code>ecommerce</code>.</span></div></form>"#,
        hidden("csrf", &ui.csrf),
        esc(sql)
    );
    if !saved.is_empty() {
        out.push_str(r#"<p class="meta">Saved queries (<code>queries/</code>): "#);
        for name in saved {
            let _ = write!(out, r#"<a href="/query?saved={}">{}</a> "#, html::qv(name), esc(name));
        }
        out.push_str("</p>");
    }
    out
}

fn saved_list(ui: &Ui) -> Vec<String> {
    flows::sql::list(&ui.project).unwrap_or_default()
}

/// `GET /query[?saved=NAME]`: the form (with a saved query in it).
pub(super) async fn page(State(ui): State<Arc<Ui>>, Query(q): Query<QueryForm>) -> Result<Html<String>, PageError> {
    let sql = match q.saved.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => flows::sql::load(&ui.project, name).map_err(|e| match e {
            e if e.is_usage() => PageError::NotFound(format!("{e:#}")),
            e => PageError::Internal(format!("{e:#}")),
        })?,
        None => String::new(),
    };
    let body = form(&ui, &sql, &saved_list(&ui));
    Ok(Html(html::page(&ui.frame(false), Nav::Query, "Query", &body)))
}

/// `POST /query`: runs it; a refused query is shown with the reason, nothing ran.
pub(super) async fn run(State(ui): State<Arc<Ui>>, Form(f): Form<QueryForm>) -> Result<Response, PageError> {
    if !csrf_ok(&ui, &f.csrf) {
        return Err(PageError::Forbidden("the form's CSRF token is missing or not this server's".into()));
    }
    let request = flows::sql::Request { sql: f.sql.clone(), limit: MAX_ROWS };
    let cancel = ui.shutdown.child_token();
    let result = flows::sql::query(&ui.env, &request, &cancel).await;
    let mut body = form(&ui, &f.sql, &saved_list(&ui));
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            let (cls, what) = match &e {
                e if e.is_usage() => ("refused", "Refused, nothing ran"),
                FlowError::Cancelled => ("error", "Cancelled"),
                _ => ("error", "The query failed"),
            };
            let _ = write!(
                body,
                r#"<h2>{what}</h2><pre class="error {cls}" id="query-error">{}</pre>"#,
                esc(&format!("{e:#}"))
            );
            let resp = Html(html::page(&ui.frame(false), Nav::Query, "Query", &body)).into_response();
            return Ok((
                if e.is_usage() { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK },
                resp,
            )
                .into_response());
        }
    };
    if f.format.as_deref() == Some("csv") {
        let mut csv = String::new();
        push_csv(&mut csv, r.columns.iter().map(|c| Some(c.as_str())));
        for row in &r.rows {
            push_csv(&mut csv, row.iter().map(Option::as_deref));
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"query.csv\""),
            ],
            csv,
        )
            .into_response());
    }
    let pages = r.rows.len().div_ceil(PAGE).max(1);
    let page = f.page.unwrap_or(1).clamp(1, pages);
    let _ = write!(
        body,
        r#"<p class="meta" id="query-stats">{} row(s){} · {} scanned · {:.0} ms · {}{}</p>"#,
        r.rows.len(),
        if r.truncated { format!(" (cut at {})", r.limit) } else { String::new() },
        bytes(r.bytes_scanned),
        r.elapsed.as_secs_f64() * 1e3,
        match r.backend {
            crate::env::Backend::Local => "DataFusion (local)",
            crate::env::Backend::Aws => "Athena",
        },
        r.query_id.as_deref().map(|q| format!(" · query id <code>{}</code>", esc(q))).unwrap_or_default()
    );
    let rows = r.rows.iter().skip((page - 1) * PAGE).take(PAGE).map(|row| {
        row.iter().map(|v| v.as_deref().map_or_else(|| r#"<span class="null">NULL</span>"#.to_string(), esc)).collect()
    });
    let head: Vec<&str> = r.columns.iter().map(String::as_str).collect();
    body.push_str(&html::table("list result", &head, rows));
    if pages > 1 {
        body.push_str(r#"<div class="paging">"#);
        for p in 1..=pages {
            if p == page {
                let _ = write!(body, "<strong>{p}</strong> ");
            } else {
                let _ = write!(
                    body,
                    r#"<form class="inline" method="post" action="/query">{}{}{}<button>{p}</button></form> "#,
                    hidden("csrf", &ui.csrf),
                    hidden("sql", &f.sql),
                    hidden("page", &p.to_string())
                );
            }
        }
        body.push_str("</div>");
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Query, "Query", &body)).into_response())
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// One CSV line (RFC 4180: a field with a comma, quote or line break is quoted; NULL is empty).
fn push_csv<'a>(out: &mut String, fields: impl Iterator<Item = Option<&'a str>>) {
    let mut first = true;
    for f in fields {
        if !first {
            out.push(',');
        }
        first = false;
        let f = f.unwrap_or("");
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_quotes_what_needs_it() {
        let mut s = String::new();
        super::push_csv(&mut s, [Some("a"), Some("b,c"), Some("say \"hi\""), None].into_iter());
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\r\n");
    }
}
