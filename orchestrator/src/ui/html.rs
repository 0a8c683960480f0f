//! HTML by hand: escaping, the page frame, and the small pieces every page uses. Every value
//! that comes from a DAG file, the store, a log or a request goes through [`esc`] (text and
//! attribute values) or [`seg`] (a URL path segment) — nothing is spliced raw.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// `s` escaped for HTML text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment: unreserved characters, `@` and `:` stay, everything else is
/// percent-encoded (so a `/` or `..` in a value can never change the path it lands in).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'~' | b'@' | b':')
            || (b == b'.' && s != "." && s != "..")
        {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `s` as a query-string value.
pub fn qv(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The link to a run.
pub fn run_href(run_id: &str) -> String {
    format!("/runs/{}", seg(run_id))
}

/// The link to a task instance.
pub fn task_href(run_id: &str, task_id: &str) -> String {
    format!("/runs/{}/tasks/{}", seg(run_id), seg(task_id))
}

/// The link to a DAG's grid.
pub fn dag_href(dag_id: &str) -> String {
    format!("/dags/{}", seg(dag_id))
}

/// A timestamp as the pages show it (UTC).
pub fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// A state name as a CSS class (`s-success`, ...); anything unknown is `s-none`.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "success" => "s-success",
        "failed" => "s-failed",
        "running" => "s-running",
        "queued" => "s-queued",
        "up_for_retry" => "s-up_for_retry",
        "upstream_failed" => "s-upstream_failed",
        "skipped" => "s-skipped",
        "cancelled" => "s-cancelled",
        "interrupted" | "timed_out" | "error" => "s-failed",
        _ => "s-none",
    }
}

/// A state as a coloured label.
pub fn badge(state: &str) -> String {
    format!(r#"<span class="badge {}">{}</span>"#, state_class(state), esc(state))
}

/// Which part of the site a page belongs to (its tab is highlighted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// DAGs, grids, runs.
    Dags,
    /// Backfills.
    Backfills,
    /// Actions started here.
    Actions,
    /// The lake's lineage and partitions.
    Lake,
    /// The dashboard's charts.
    Insights,
    /// The real-time stage.
    Realtime,
    /// The query page.
    Query,
    /// None of them (errors).
    None,
}

/// What every page shows in its frame.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The project folder.
    pub project: &'a str,
    /// The backend actions run on.
    pub backend: &'a str,
    /// Reload the page every few seconds (something is running).
    pub refresh: bool,
}

/// A whole page: head, navigation, `body`, footer.
pub fn page(frame: &Frame<'_>, nav: Nav, title: &str, body: &str) -> String {
    let tab = |n: Nav, href: &str, label: &str| {
        format!(r#"<a href="{href}"{}>{label}</a>"#, if n == nav { r#" class="here""# } else { "" })
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · cartflow</title><link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head>
<body{refresh}><header><a class="brand" href="/">cartflow</a><nav>{dags}{backfills}{lake}{insights}{realtime}{query}{actions}</nav><span class="where">{project} · backend {backend}</span></header>
<main>
<h1>{title}</h1>
{body}
</main></body></html>
"#,
        title = esc(title),
        refresh = if frame.refresh { r#" data-refresh="3""# } else { "" },
        dags = tab(Nav::Dags, "/", "DAGs"),
        backfills = tab(Nav::Backfills, "/backfills", "Backfills"),
        lake = tab(Nav::Lake, "/lake", "Lake"),
        insights = tab(Nav::Insights, "/insights", "Insights"),
        realtime = tab(Nav::Realtime, "/realtime", "Real-time"),
        query = tab(Nav::Query, "/query", "Query"),
        actions = tab(Nav::Actions, "/actions", "Actions"),
        project = esc(frame.project),
        backend = esc(frame.backend),
    )
}

/// A table: a header row and rows of already-escaped cells.
pub fn table(class: &str, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = format!(r#"<table class="{class}"><thead><tr>"#);
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(r#"<input type="hidden" name="{}" value="{}">"#, esc(name), esc(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_escape_their_text_attribute_or_path_segment() {
        assert_eq!(esc(r#"<script>"a"&'b'</script>"#), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;");
        assert_eq!(seg("../../etc/passwd"), "..%2F..%2Fetc%2Fpasswd");
        assert_eq!(seg(".."), "%2E%2E");
        assert_eq!(seg("daily@2019-10-01T00:00:00Z"), "daily@2019-10-01T00:00:00Z");
        assert_eq!(seg("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(qv("a&b=c"), "a%26b%3Dc");
    }
}
