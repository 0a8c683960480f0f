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
use super::{PageError, Ui};
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
    /// The result being paged through (kept by the server: a page or a CSV of it does not run
    /// the query again — on Athena that would scan, and bill, the data again).
    #[serde(default)]
    result: Option<String>,
}

/// Results kept for paging and download.
const KEPT: usize = 8;

/// The kept results: (id, SQL, result), newest last.
pub(super) type Kept = std::collections::VecDeque<(String, String, Arc<flows::sql::QueryResult>)>;

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
    super::require_csrf(&ui, &f.csrf)?;
    let kept = f.result.as_deref().and_then(|id| {
        let list = ui.results.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().find(|(i, sql, _)| i == id && *sql == f.sql).map(|(i, _, r)| (i.clone(), r.clone()))
    });
    let mut body = form(&ui, &f.sql, &saved_list(&ui));
    let reused = kept.is_some();
    let result = match kept {
        Some(k) => Ok(k),
        None => {
            let request = flows::sql::Request { sql: f.sql.clone(), limit: MAX_ROWS };
            // Stopped when the server stops, when the request is dropped (the connection closed
            // while it ran), or at the time limit.
            let cancel = ui.shutdown.child_token();
            let _stop_if_dropped = cancel.clone().drop_guard();
            let running = flows::sql::query(&ui.env, &request, &cancel);
            tokio::pin!(running);
            let ran = tokio::select! {
                r = &mut running => r,
                () = tokio::time::sleep(ui.query_timeout) => {
                    // Cancelled, then waited for: an Athena query is stopped, not left running.
                    cancel.cancel();
                    let _ = running.await;
                    Err(FlowError::Step(format!(
                        "the query ran longer than {} (`cartflow ui --query-timeout`) and was stopped",
                        crate::duration::humanize(ui.query_timeout)
                    )))
                }
            };
            ran.map(|r| {
                let (id, r) = (super::random_hex(8), Arc::new(r));
                let mut list = ui.results.lock().unwrap_or_else(|p| p.into_inner());
                list.push_back((id.clone(), f.sql.clone(), r.clone()));
                while list.len() > KEPT {
                    list.pop_front();
                }
                (id, r)
            })
        }
    };
    let (result_id, r) = match result {
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
        // Byte for byte what `cartflow sql --format csv` prints.
        let mut csv = flows::sql::csv_line(r.columns.iter().map(|c| Some(c.as_str())));
        csv.push('\n');
        for row in &r.rows {
            csv.push_str(&flows::sql::csv_line(row.iter().map(Option::as_deref)));
            csv.push('\n');
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
        flows::sql::human_bytes(r.bytes_scanned),
        r.elapsed.as_secs_f64() * 1e3,
        match r.backend {
            crate::env::Backend::Local => "DataFusion (local)",
            crate::env::Backend::Aws => "Athena",
        },
        r.query_id.as_deref().map(|q| format!(" · query id <code>{}</code>", esc(q))).unwrap_or_default()
    );
    if reused {
        body.push_str(r#"<p class="meta" id="kept">The result kept from its run above: this page did not run the query again.</p>"#);
    }
    let _ = write!(
        body,
        r#"<form class="inline" method="post" action="/query">{}{}{}{}<button id="csv-result">Download these {} row(s) as CSV</button></form>"#,
        hidden("csrf", &ui.csrf),
        hidden("sql", &f.sql),
        hidden("result", &result_id),
        hidden("format", "csv"),
        r.rows.len()
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
                    r#"<form class="inline" method="post" action="/query">{}{}{}{}<button>{p}</button></form> "#,
                    hidden("csrf", &ui.csrf),
                    hidden("sql", &f.sql),
                    hidden("page", &p.to_string()),
                    hidden("result", &result_id),
                );
            }
        }
        body.push_str("</div>");
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Query, "Query", &body)).into_response())
}
