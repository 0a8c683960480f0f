//! The lake and the insights: the lineage of the lake's zones and tables with each one's
//! partitions (rows, bytes, last written, the run that wrote it) and the quarantine's reasons
//! per day, all through [`flows::lake`]; and the dashboard of `cartflow dashboard` for a chosen
//! range, the same HTML from the same function, framed in the page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::html::{self, Nav, esc, seg, table, when};
use super::{PageError, Ui, load_dags};
use crate::dag::{Dag, DagSet};
use crate::engine::store::TaskSuccess;
use crate::flows::lake::{self, Lineage, PartitionView};
use crate::flows::sql::human_bytes;

/// Partitions the Lake page shows per node (the table's page shows them all, paged).
const RECENT: usize = 7;
/// Partitions per page of a table's page.
const PAGE: usize = 50;
/// Days of quarantine reasons the Lake page shows.
const QUARANTINE_DAYS: usize = 14;

/// Everything a lake page needs, read on a blocking thread.
struct LakeData {
    lineage: Lineage,
    /// Per node: every partition spec (newest first) and the views of those shown.
    parts: Vec<(usize, Vec<PartitionView>)>,
    quarantine: Vec<(NaiveDate, BTreeMap<String, u64>)>,
}

/// The writer tasks' successful runs, by (DAG, task).
type Successes = HashMap<(String, String), Vec<TaskSuccess>>;

async fn read_lake(
    ui: &Arc<Ui>,
    shown: impl Fn(usize, usize) -> std::ops::Range<usize> + Send + 'static,
    only: Option<String>,
) -> Result<(Arc<DagSet>, LakeData), PageError> {
    let dags = load_dags(ui).await?;
    let catalog_path = ui.project.catalog();
    let lake_dir = ui.project.lake();
    let set = dags.clone();
    let lineage = tokio::task::spawn_blocking(move || {
        let catalog = if catalog_path.exists() {
            Some(
                cartflow_jobs::catalog::Catalog::open(&catalog_path)
                    .map_err(|e| PageError::Internal(format!("the catalog: {e}")))?,
            )
        } else {
            None
        };
        let l = lake::lineage(&set, catalog.as_ref()).map_err(|e| PageError::Internal(format!("{e:#}")))?;
        Ok::<_, PageError>(l)
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))??;
    if let Some(name) = &only
        && !lineage.nodes.iter().any(|n| &n.name == name)
    {
        return Err(PageError::NotFound(format!("the lake has no table or zone `{name}`")));
    }
    let writers: Vec<(String, String)> = lineage.nodes.iter().filter_map(|n| n.writer.clone()).collect();
    let successes: Successes = ui
        .with_store(move |s| {
            let mut out = HashMap::new();
            for w in writers {
                let rows = s.task_successes(&w.0, &w.1)?;
                out.insert(w, rows);
            }
            Ok(out)
        })
        .await?;
    let catalog_path = ui.project.catalog();
    let set = dags.clone();
    let data = tokio::task::spawn_blocking(move || {
        let catalog =
            if catalog_path.exists() { cartflow_jobs::catalog::Catalog::open(&catalog_path).ok() } else { None };
        let mut parts = Vec::new();
        let mut days = Vec::new();
        for (i, node) in lineage.nodes.iter().enumerate() {
            if only.as_ref().is_some_and(|o| o != &node.name) {
                continue;
            }
            let specs = lake::partitions(node, catalog.as_ref(), &lake_dir)
                .map_err(|e| PageError::Internal(format!("{e:#}")))?;
            if node.name == cartflow_jobs::clean::QUARANTINE_EVENTS {
                days = specs.iter().filter_map(|p| p.day).take(QUARANTINE_DAYS).collect();
            }
            let dag: Option<&Dag> = node.writer.as_ref().and_then(|(d, _)| set.dags.get(d)).map(|d| &**d);
            let ok = node.writer.as_ref().and_then(|w| successes.get(w)).map(Vec::as_slice).unwrap_or(&[]);
            let range = shown(i, specs.len());
            let views: Vec<PartitionView> =
                specs.get(range).unwrap_or(&[]).iter().map(|p| lake::view(p, &lake_dir, dag, ok)).collect();
            parts.push((specs.len(), views));
        }
        let quarantine = if only.is_none() {
            lake::quarantine_reasons(&lake_dir, &days).map_err(|e| PageError::Internal(format!("{e:#}")))?
        } else {
            Vec::new()
        };
        Ok::<_, PageError>(LakeData { lineage, parts, quarantine })
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))??;
    Ok((dags, data))
}

fn short(name: &str) -> &str {
    name.strip_prefix("ecommerce.").unwrap_or(name)
}

fn lake_href(name: &str) -> String {
    format!("/lake/{}", seg(name))
}

fn time(t: Option<std::time::SystemTime>) -> String {
    when(t.map(DateTime::<Utc>::from))
}

fn rows(v: &PartitionView) -> String {
    match v.stats.rows {
        Some(n) if v.stats.files > 0 => n.to_string(),
        Some(_) => "—".into(),
        None => r#"<span class="meta" title="not Parquet: its rows are not counted">n/a</span>"#.into(),
    }
}

fn partition_rows(views: &[PartitionView], writer: Option<&(String, String)>) -> Vec<Vec<String>> {
    views
        .iter()
        .map(|v| {
            let run = match (&v.written_by, writer) {
                (Some(s), Some((_, task))) => format!(
                    r#"<a href="{}">{}</a> <span class="meta">{} at {}</span>"#,
                    html::task_href(&s.run_id, task),
                    esc(&s.run_id),
                    esc(task),
                    esc(&when(s.ended_at))
                ),
                _ => r#"<span class="meta">no run of its writer succeeded for it</span>"#.into(),
            };
            vec![
                if v.part.spec.is_empty() {
                    "(the whole table)".into()
                } else {
                    format!("<code>{}</code>", esc(&v.part.spec))
                },
                rows(v),
                v.stats.files.to_string(),
                human_bytes(v.stats.bytes),
                esc(&time(v.stats.modified)),
                run,
            ]
        })
        .collect()
}

const PART_HEAD: [&str; 6] = ["partition", "rows", "files", "bytes", "last written", "written by (run, task, when)"];

/// `GET /lake`: the lineage, every node's newest partitions, the quarantine's reasons per day.
pub(super) async fn page(State(ui): State<Arc<Ui>>) -> Result<Html<String>, PageError> {
    let (_, d) = read_lake(&ui, |_, n| 0..n.min(RECENT), None).await?;
    let mut body = String::new();
    if d.lineage.nodes.is_empty() {
        body.push_str(r#"<p class="empty">No DAG names a table or a folder of the lake yet.</p>"#);
        return Ok(Html(html::page(&ui.frame(false), Nav::Lake, "Lake", &body)));
    }
    let _ = write!(
        body,
        r#"<p class="meta">The lake at <code>{}</code>, as the DAGs write it: each box is a zone or a catalog table, made from the boxes on its left. Rows are read from the Parquet footers, times from the files; the run is the one whose writer task succeeded for that day.{}</p>"#,
        esc(&ui.project.lake().display().to_string()),
        if matches!(ui.backend, crate::env::Backend::Aws) {
            " On the aws backend this is the local mirror (the Glue catalog and S3 are not listed here)."
        } else {
            ""
        }
    );
    let boxes: Vec<super::svg::LayerBox> = d
        .lineage
        .nodes
        .iter()
        .zip(&d.parts)
        .enumerate()
        .map(|(i, (n, (count, views)))| super::svg::LayerBox {
            label: short(&n.name).to_string(),
            title: format!("{} · {} · {count} partition(s)", n.name, n.location),
            href: format!("#node-{i}"),
            class: if views.iter().any(|v| v.stats.files > 0) { "s-success" } else { "s-none" },
        })
        .collect();
    let upstream: Vec<Vec<usize>> = d.lineage.nodes.iter().map(|n| n.inputs.clone()).collect();
    body.push_str(&super::svg::layered("graph lineage", "lineage of the lake", &boxes, &upstream));
    let summary = d.lineage.nodes.iter().zip(&d.parts).enumerate().map(|(i, (n, (count, views)))| {
        let newest = views.first();
        vec![
            format!(r##"<a href="#node-{i}">{}</a>"##, esc(&n.name)),
            match &n.table {
                Some(t) => format!("table · {}", esc(&t.format)),
                None => "zone".into(),
            },
            format!("<code>{}</code>", esc(&n.location)),
            n.writer
                .as_ref()
                .map(|(dag, task)| format!(r#"<a href="{}">{}</a>.{}"#, html::dag_href(dag), esc(dag), esc(task)))
                .unwrap_or_else(|| r#"<span class="meta">no DAG writes it</span>"#.into()),
            n.inputs.iter().map(|&j| esc(short(&d.lineage.nodes[j].name))).collect::<Vec<_>>().join(", "),
            count.to_string(),
            newest
                .map(|v| if v.part.spec.is_empty() { "(whole table)".into() } else { esc(&v.part.spec) })
                .unwrap_or_default(),
            newest.map(rows).unwrap_or_default(),
            newest.map(|v| esc(&time(v.stats.modified))).unwrap_or_default(),
        ]
    });
    body.push_str(&table(
        "list lake",
        &[
            "table or zone",
            "kind",
            "location",
            "written by",
            "made from",
            "partitions",
            "newest",
            "rows",
            "last written",
        ],
        summary,
    ));
    for (i, (n, (count, views))) in d.lineage.nodes.iter().zip(&d.parts).enumerate() {
        let _ = write!(body, r#"<h2 id="node-{i}">{}</h2>"#, esc(&n.name));
        if views.is_empty() {
            body.push_str(r#"<p class="empty">Nothing written yet.</p>"#);
            continue;
        }
        body.push_str(&table("list parts", &PART_HEAD, partition_rows(views, n.writer.as_ref())));
        if *count > views.len() {
            let _ = write!(body, r#"<p><a href="{}">All {count} partitions</a></p>"#, lake_href(&n.name));
        }
    }
    body.push_str(r#"<h2 id="quarantine">Quarantine reasons per day</h2>"#);
    if d.quarantine.is_empty() {
        body.push_str(r#"<p class="empty">No quarantine yet.</p>"#);
    } else {
        let reasons: std::collections::BTreeSet<&String> = d.quarantine.iter().flat_map(|(_, by)| by.keys()).collect();
        let mut head = vec!["day"];
        head.extend(reasons.iter().map(|r| r.as_str()));
        head.push("total");
        let rows = d.quarantine.iter().map(|(day, by)| {
            let mut row = vec![day.to_string()];
            row.extend(reasons.iter().map(|r| by.get(*r).copied().unwrap_or(0).to_string()));
            row.push(by.values().sum::<u64>().to_string());
            row
        });
        body.push_str(&table("list quarantine", &head, rows));
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Lake, "Lake", &body)))
}

/// A page number.
#[derive(Debug, Deserialize, Default)]
pub(super) struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

/// `GET /lake/{name}`: every partition of one table or zone, paged.
pub(super) async fn node(
    State(ui): State<Arc<Ui>>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let page: usize = match q.page.as_deref().filter(|p| !p.is_empty()) {
        None => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| PageError::BadRequest(format!("there is no page `{p}`")))?,
    };
    let start = (page - 1).saturating_mul(PAGE);
    let (_, d) =
        read_lake(&ui, move |_, n| start.min(n)..start.saturating_add(PAGE).min(n), Some(name.clone())).await?;
    let Some(i) = d.lineage.nodes.iter().position(|n| n.name == name) else {
        return Err(PageError::NotFound(format!("the lake has no table or zone `{name}`")));
    };
    let n = &d.lineage.nodes[i];
    let (count, views) = &d.parts[0];
    let mut body = format!(
        r#"<p class="meta"><a href="/lake#node-{}">Lake</a> · <code>{}</code> · {count} partition(s)</p>"#,
        i,
        esc(&n.location)
    );
    if let Some(t) = &n.table {
        let cols = t.columns.iter().map(|c| format!("{} {}", esc(&c.name), esc(&c.glue_type))).collect::<Vec<_>>();
        let _ = write!(
            body,
            r#"<p class="meta">{} · version {} · columns: {}</p>"#,
            esc(&t.format),
            t.version,
            cols.join(", ")
        );
    }
    if views.is_empty() {
        body.push_str(r#"<p class="empty">No partitions on this page.</p>"#);
    } else {
        body.push_str(&table("list parts", &PART_HEAD, partition_rows(views, n.writer.as_ref())));
    }
    let pages = count.div_ceil(PAGE).max(1);
    let mut nav = format!(r#"<p class="paging">page {page} of {pages}"#);
    if page > 1 {
        let _ = write!(nav, r#" · <a href="{}?page={}">newer</a>"#, lake_href(&name), page - 1);
    }
    if page < pages {
        let _ = write!(nav, r#" · <a href="{}?page={}">older</a>"#, lake_href(&name), page + 1);
    }
    nav.push_str("</p>");
    body.push_str(&nav);
    Ok(Html(html::page(&ui.frame(false), Nav::Lake, &name, &body)))
}

/// The range of the Insights page.
#[derive(Debug, Deserialize, Default)]
pub(super) struct Range {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

impl Range {
    /// The checked days (`YYYY-MM-DD`; empty is none).
    fn days(&self) -> Result<(Option<NaiveDate>, Option<NaiveDate>), PageError> {
        let day = |v: &Option<String>| -> Result<Option<NaiveDate>, PageError> {
            match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| PageError::BadRequest(format!("`{s}` is not a date (YYYY-MM-DD)"))),
            }
        };
        let (from, to) = (day(&self.from)?, day(&self.to)?);
        if let (Some(a), Some(b)) = (from, to)
            && a > b
        {
            return Err(PageError::BadRequest(format!("the range starts ({a}) after it ends ({b})")));
        }
        Ok((from, to))
    }
}

/// `GET /insights[?from=&to=]`: the dashboard's charts for a range.
pub(super) async fn insights(State(ui): State<Arc<Ui>>, Query(r): Query<Range>) -> Result<Html<String>, PageError> {
    let (from, to) = r.days()?;
    let v = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let mut body = format!(
        r#"<form class="filters" method="get" action="/insights"><label>from <input type="date" name="from" value="{}"></label> <label>to <input type="date" name="to" value="{}"></label> <button>Show</button> <span class="meta">empty: every day with data</span></form>"#,
        esc(&v(from)),
        esc(&v(to))
    );
    if !ui.project.catalog().exists() {
        body.push_str(r#"<p class="empty">No catalog yet: run <code>cartflow demo</code> or the daily DAG first.</p>"#);
    } else {
        let src = format!("/insights/dashboard?from={}&to={}", html::qv(&v(from)), html::qv(&v(to)));
        let _ = write!(
            body,
            r#"<p class="meta">What <code>cartflow dashboard{}{}</code> writes, from the insight tables of the local lake{} · <a href="{src}">open it alone</a></p><iframe class="dashboard" id="dashboard" title="eCommerce insights" src="{src}"></iframe>"#,
            from.map(|d| format!(" --from {d}")).unwrap_or_default(),
            to.map(|d| format!(" --to {d}")).unwrap_or_default(),
            if matches!(ui.backend, crate::env::Backend::Aws) {
                " (on the aws backend: as the dashboard task last mirrored them)"
            } else {
                ""
            },
            src = esc(&src),
        );
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Insights, "Insights", &body)))
}

/// `GET /insights/dashboard[?from=&to=]`: the dashboard document itself (its one inline style
/// sheet allowed, nothing else; framed only by this site).
pub(super) async fn dashboard(State(ui): State<Arc<Ui>>, Query(r): Query<Range>) -> Result<Response, PageError> {
    let (from, to) = r.days()?;
    let (from, to) = (from.map(|d| d.to_string()), to.map(|d| d.to_string()));
    let (doc, _) = crate::flows::demo::dashboard_html(&ui.project, from.as_deref(), to.as_deref())
        .await
        .map_err(|e| PageError::Internal(format!("{e:#}")))?;
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], doc).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; form-action 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    Ok(resp)
}
