//! The pages that show: the DAGs, a DAG's grid, a run, a task instance and its logs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::html::{self, Nav, badge, esc, hidden, seg, state_class, table, when};
use super::{PageError, Ui, check_id, check_run_id, load_dags, svg};
use crate::dag::Dag;
use crate::engine::state::{AttemptState, RunState};
use crate::engine::store::{AttemptRow, AuditRow, GridQuery, RunRow, TaskRow};
use crate::schedule::DataInterval;

/// How much of a log a page shows inline (the rest is one click away).
const LOG_INLINE: u64 = 256 * 1024;

/// Attempts with the log path of those still running filled in: the store records it when an
/// attempt ends, and the live tail needs it before.
fn with_live_logs(s: &crate::engine::store::RunStore, run: &RunRow, mut attempts: Vec<AttemptRow>) -> Vec<AttemptRow> {
    for a in &mut attempts {
        if a.log_path.is_none() && a.state == AttemptState::Running {
            a.log_path =
                Some(s.attempt_log_path(&run.dag_id, &run.run_id, &a.task_id, a.attempt).display().to_string());
        }
    }
    attempts
}

fn ok_html(s: String) -> Html<String> {
    Html(s)
}

// ---------------------------------------------------------------------------------------------
// DAGs

/// `GET /`: every DAG, its schedule, what is due next, its last runs; the compile errors.
pub(super) async fn dags(State(ui): State<Arc<Ui>>) -> Result<Html<String>, PageError> {
    let set = load_dags(&ui).await?;
    let ids: Vec<String> = set.dags.keys().cloned().collect();
    let (recent, stored, paused) = ui
        .with_store(move |s| {
            let mut recent = HashMap::new();
            for id in &ids {
                // The newest runs, and the latest interval that has a run (what the scheduler
                // decides what is due from).
                recent.insert(id.clone(), (s.runs(Some(id.as_str()), 14)?, s.last_run_start(id)?));
            }
            Ok((recent, s.dag_ids()?, s.paused()?))
        })
        .await?;
    let now = crate::schedule::clock::now();
    let mut rows = Vec::new();
    for dag in set.dags.values() {
        let (runs, last) = recent.get(&dag.id).cloned().unwrap_or_default();
        let due = crate::engine::scheduler::due(dag, last, now);
        let next = if matches!(dag.schedule, crate::schedule::Schedule::Manual) {
            "manual (run or backfill it)".to_string()
        } else if paused.contains_key(&dag.id) {
            match due.first() {
                Some(first) => format!("paused: {} would be due ({} interval(s)) once unpaused", first.ds(), due.len()),
                None => "paused: no scheduled runs".to_string(),
            }
        } else if let Some(first) = due.first() {
            let more = if due.len() >= crate::engine::scheduler::DUE_AT_MOST { "+" } else { "" };
            format!("{} due now ({}{more} interval(s))", first.ds(), due.len())
        } else {
            dag.schedule
                .tick_after(now, dag.timezone)
                .map(|t| format!("next run at {} UTC", when(Some(t))))
                .unwrap_or_else(|| "no more intervals".into())
        };
        let (state, button) = match paused.get(&dag.id) {
            Some((at, who)) => (
                format!(
                    r#"<span class="badge s-skipped">paused</span> <span class="meta">{} by {}</span>"#,
                    esc(&when(*at)),
                    esc(who)
                ),
                ("0", "Unpause"),
            ),
            None => (r#"<span class="badge s-success">active</span>"#.to_string(), ("1", "Pause")),
        };
        let toggle = format!(
            r#"<form class="inline" method="post" action="/pause">{}{}{}<button id="pause-{}">{}</button></form>"#,
            hidden("csrf", &ui.csrf),
            hidden("dag", &dag.id),
            hidden("paused", button.0),
            esc(&dag.id),
            button.1
        );
        rows.push(vec![
            format!(r#"<a href="{}">{}</a>"#, html::dag_href(&dag.id), esc(&dag.id)),
            esc(&dag.description),
            format!("<code>{}</code>", esc(&dag.schedule.to_string())),
            esc(&dag.timezone.to_string()),
            esc(&next),
            marks(&runs),
            format!("{} task(s)", dag.tasks.len()),
            format!("{state} {toggle}"),
        ]);
    }
    for (id, file) in &set.failed_ids {
        rows.push(vec![
            format!(r#"<a href="{}">{}</a>"#, html::dag_href(id), esc(id)),
            format!(r##"<a href="#problems">{} does not compile</a>"##, esc(&file.display().to_string())),
            String::new(),
            String::new(),
            r#"<span class="badge s-failed">does not compile</span>"#.into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    for id in stored.iter().filter(|id| !set.dags.contains_key(*id) && !set.failed_ids.contains_key(*id)) {
        rows.push(vec![
            format!(r#"<a href="{}">{}</a>"#, html::dag_href(id), esc(id)),
            "runs in the store, no DAG file any more".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let mut body = table(
        "list",
        &["DAG", "description", "schedule", "timezone", "next", "last runs", "tasks", "scheduling"],
        rows,
    );
    if !set.diagnostics.is_empty() {
        let _ = write!(
            body,
            r#"<h2 id="problems">Problems ({}) — as <code>cartflow validate</code> prints them</h2><pre class="error problems">"#,
            set.diagnostics.len()
        );
        for d in &set.diagnostics {
            let _ = writeln!(body, "{}", esc(&d.to_string()));
        }
        body.push_str("</pre>");
    }
    Ok(ok_html(html::page(&ui.frame(false), Nav::Dags, "DAGs", &body)))
}

/// Coloured marks for runs, oldest left, each a link to its run.
fn marks(runs: &[RunRow]) -> String {
    let mut out = String::from(r#"<span class="marks">"#);
    for r in runs.iter().rev() {
        let _ = write!(
            out,
            r#"<a class="mark {}" href="{}" title="{} {}"></a>"#,
            state_class(r.state.name()),
            html::run_href(&r.run_id),
            esc(&when(Some(r.interval_start))),
            r.state.name()
        );
    }
    out.push_str("</span>");
    out
}

// ---------------------------------------------------------------------------------------------
// Grid

/// The grid's filters.
#[derive(Debug, Deserialize, Default)]
pub(super) struct GridParams {
    /// First date (YYYY-MM-DD) shown.
    #[serde(default)]
    from: Option<String>,
    /// Last date shown (inclusive).
    #[serde(default)]
    to: Option<String>,
    /// Only runs in this state.
    #[serde(default)]
    state: Option<String>,
    /// Page: intervals starting before this (RFC 3339).
    #[serde(default)]
    before: Option<String>,
    /// Columns per page.
    #[serde(default)]
    limit: Option<usize>,
}

fn parse_day(s: &str, what: &str) -> Result<chrono::NaiveDate, PageError> {
    crate::schedule::parse_ymd(s)
        .ok_or_else(|| PageError::BadRequest(format!("{what} `{s}` is not a date (YYYY-MM-DD, years 0001 to 9999)")))
}

/// `GET /dags/{dag}`: data intervals × tasks, one cell per task instance, the run on top.
pub(super) async fn grid(
    State(ui): State<Arc<Ui>>,
    Path(dag_id): Path<String>,
    Query(p): Query<GridParams>,
) -> Result<Html<String>, PageError> {
    check_id("DAG", &dag_id)?;
    let set = load_dags(&ui).await?;
    let dag = set.dags.get(&dag_id).cloned();
    let tz = dag.as_ref().map_or(chrono_tz::UTC, |d| d.timezone);
    let empty = |o: &Option<String>| o.as_deref().filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_string());
    let (from_s, to_s, state_s) = (empty(&p.from), empty(&p.to), empty(&p.state));
    let limit = p.limit.unwrap_or(90).clamp(1, 366);
    // One more than shown: whether there is an older page.
    let mut q = GridQuery { limit: limit + 1, ..GridQuery::default() };
    if let Some(f) = &from_s {
        q.from = Some(crate::schedule::local_midnight(parse_day(f, "from")?, tz));
    }
    if let Some(t) = &to_s {
        let to = parse_day(t, "to")?;
        if let Some(f) = &from_s
            && parse_day(f, "from")? > to
        {
            return Err(PageError::BadRequest(format!("the range {f} .. {t} ends before it starts")));
        }
        // (After 9999-12-31 there is no bound: stored times have four-digit years.)
        if let Some(next) = to.succ_opt().filter(|n| chrono::Datelike::year(n) <= 9999) {
            q.before = Some(crate::schedule::local_midnight(next, tz));
        }
    }
    if let Some(b) = p.before.as_deref().filter(|s| !s.is_empty()) {
        let b = DateTime::parse_from_rfc3339(b)
            .map_err(|_| PageError::BadRequest(format!("`before` {b} is not a timestamp")))?
            .with_timezone(&Utc);
        q.before = Some(q.before.map_or(b, |x| x.min(b)));
    }
    if let Some(s) = &state_s {
        q.state = Some(RunState::parse(s).ok_or_else(|| PageError::BadRequest(format!("`{s}` is not a run state")))?);
    }
    let id = dag_id.clone();
    let qq = q.clone();
    let (runs, known, first, last) = ui
        .with_store(move |s| Ok((s.grid(&id, &qq)?, s.dag_ids()?, s.first_run_start(&id)?, s.last_run_start(&id)?)))
        .await?;
    // The columns: the runs, and — for a scheduled DAG, unless a run state is asked for — the
    // schedule's intervals between the DAG's first and last run that have no run (a missing
    // partition of the lake), newest `limit` of them all.
    let mut cols: Vec<Column<'_>> = runs.iter().map(Column::Run).collect();
    if let (Some(d), None, Some(first), Some(last)) = (&dag, q.state, first, last)
        && !matches!(d.schedule, crate::schedule::Schedule::Manual)
    {
        let newest = last.checked_add_signed(chrono::Duration::seconds(1)).unwrap_or(last);
        let before = q.before.map_or(newest, |b| b.min(newest));
        let not_before = q.from.map_or(first, |f| f.max(first));
        // An interval a run covers (its own, or one it overlaps: a run made under an earlier
        // schedule or timezone) is that run's column, not a missing one.
        let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            runs.iter().map(|r| (r.interval_start, r.interval_end)).collect();
        for i in d.schedule.last_intervals(before, not_before, limit + 1, d.timezone) {
            if !spans.iter().any(|(s, e)| *s < i.end && *e > i.start) {
                cols.push(Column::Missing(i));
            }
        }
        cols.sort_by_key(Column::start);
    }
    let more = cols.len() > limit;
    if more {
        cols.drain(..cols.len() - limit);
    }
    let runs: Vec<&crate::engine::store::GridRun> =
        cols.iter().filter_map(|c| if let Column::Run(r) = c { Some(*r) } else { None }).collect();
    if dag.is_none() && !set.failed_ids.contains_key(&dag_id) && !known.contains(&dag_id) {
        return Err(PageError::NotFound(format!("there is no DAG `{dag_id}`")));
    }
    // Rows: the DAG's tasks in order, then any task only the store still knows.
    let mut tasks: Vec<String> =
        dag.as_ref().map(|d| d.tasks.iter().map(|t| t.id.clone()).collect()).unwrap_or_default();
    for r in &runs {
        for (t, _) in &r.tasks {
            if !tasks.contains(t) {
                tasks.push(t.clone());
            }
        }
    }
    let mut body = String::new();
    if let Some(file) = set.failed_ids.get(&dag_id) {
        let _ = write!(body, r#"<pre class="error problems">"#);
        for d in set.diagnostics.iter().filter(|d| &d.file == file) {
            let _ = writeln!(body, "{}", esc(&d.to_string()));
        }
        body.push_str("</pre>");
    }
    if let Some(d) = &dag {
        let _ = write!(
            body,
            r#"<p class="meta">{} · schedule <code>{}</code> · {} · {} task(s) · <code>{}</code></p>"#,
            esc(&d.description),
            esc(&d.schedule.to_string()),
            esc(&d.timezone.to_string()),
            d.tasks.len(),
            esc(&d.file.display().to_string())
        );
        body.push_str(&run_form(&ui, d));
    }
    // Filters.
    let _ = write!(
        body,
        r#"<form class="filters" method="get" action="{}">from <input name="from" type="date" value="{}"> to <input name="to" type="date" value="{}"> state <select name="state"><option value="">any</option>"#,
        html::dag_href(&dag_id),
        esc(from_s.as_deref().unwrap_or("")),
        esc(to_s.as_deref().unwrap_or("")),
    );
    for s in ["success", "failed", "running", "cancelled"] {
        let sel = if state_s.as_deref() == Some(s) { " selected" } else { "" };
        let _ = write!(body, r#"<option{sel}>{s}</option>"#);
    }
    body.push_str(r#"</select> <button>Show</button></form>"#);
    if cols.is_empty() {
        body.push_str(r#"<p class="empty">No runs match.</p>"#);
    } else {
        body.push_str(&grid_table(&cols, &tasks, tz));
        // Paging: older than the oldest column shown, or back to the newest.
        let mut keep = String::new();
        for (k, v) in [("from", &from_s), ("to", &to_s), ("state", &state_s)] {
            if let Some(v) = v {
                let _ = write!(keep, "&{k}={}", html::qv(v));
            }
        }
        if p.limit.is_some() {
            let _ = write!(keep, "&limit={limit}");
        }
        let href = html::dag_href(&dag_id);
        let older = if more {
            let b = html::qv(&cols[0].start().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            format!(r#"<a class="older" href="{href}?before={b}{keep}">← older</a> · "#)
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<p class="paging">{older}<a href="{href}?{keep}">newest</a> · {n} interval(s) shown</p>"#,
            keep = keep.trim_start_matches('&'),
            n = cols.len(),
        );
    }
    Ok(ok_html(html::page(&ui.frame(runs.iter().any(|r| r.state == RunState::Running)), Nav::Dags, &dag_id, &body)))
}

/// A column of the grid: a run, or an interval of the schedule that has none.
enum Column<'a> {
    Run(&'a crate::engine::store::GridRun),
    Missing(DataInterval),
}

impl Column<'_> {
    fn start(&self) -> DateTime<Utc> {
        match self {
            Column::Run(r) => r.interval_start,
            Column::Missing(i) => i.start,
        }
    }
}

fn grid_table(cols: &[Column<'_>], tasks: &[String], tz: chrono_tz::Tz) -> String {
    let mut out = String::with_capacity(200 + cols.len() * tasks.len() * 90);
    out.push_str(r#"<div class="gridwrap"><table class="grid"><thead><tr><th class="corner">task \ interval</th>"#);
    for c in cols {
        let ds = c.start().with_timezone(&tz).format("%Y-%m-%d").to_string();
        let _ = match c {
            Column::Run(r) => write!(
                out,
                r#"<th><a class="runmark {}" href="{}" title="{} {}"></a><span class="ds">{}</span></th>"#,
                state_class(r.state.name()),
                html::run_href(&r.run_id),
                ds,
                r.state.name(),
                ds
            ),
            Column::Missing(_) => write!(
                out,
                r#"<th class="missing"><span class="runmark s-none" title="{ds}: no run"></span><span class="ds">{ds}</span></th>"#
            ),
        };
    }
    out.push_str("</tr></thead><tbody>");
    for t in tasks {
        let _ = write!(out, r#"<tr><th class="task">{}</th>"#, esc(t));
        let tseg = seg(t);
        for c in cols {
            let Column::Run(r) = c else {
                out.push_str(r#"<td><span class="cell s-none" title="no run"></span></td>"#);
                continue;
            };
            match r.tasks.iter().find(|(id, _)| id == t) {
                Some((_, state)) => {
                    let _ = write!(
                        out,
                        r#"<td><a class="cell {}" href="/runs/{}/tasks/{}" title="{}"></a></td>"#,
                        state_class(state),
                        seg(&r.run_id),
                        tseg,
                        esc(state)
                    );
                }
                None => out.push_str(r#"<td><span class="cell s-none"></span></td>"#),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The "run an interval" form of a DAG (it leads to a preview).
fn run_form(ui: &Ui, dag: &Dag) -> String {
    format!(
        r#"<form class="action" method="post" action="/preview">{}{}{}<label>Run the interval of <input name="date" type="date" required></label> <button>Preview…</button></form>"#,
        hidden("csrf", &ui.csrf),
        hidden("action", "run"),
        hidden("dag", &dag.id)
    )
}

// ---------------------------------------------------------------------------------------------
// Run

struct RunView {
    run: RunRow,
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
    facts: Vec<(String, String, String)>,
    /// What people did to this run by hand (marks, reruns, cancels), newest first.
    audit: Vec<AuditRow>,
    live: bool,
}

async fn run_view(ui: &Arc<Ui>, run_id: &str) -> Result<RunView, PageError> {
    check_run_id(run_id)?;
    let id = run_id.to_string();
    let view = ui
        .with_store(move |s| {
            let Some(run) = s.run(&id)? else { return Ok(None) };
            let live = s.live_runs(&run.dag_id)?.contains(&id);
            let attempts = with_live_logs(s, &run, s.attempts(&id, None)?);
            let audit = s.audit(Some(&id), 100)?;
            Ok(Some(RunView { tasks: s.tasks(&id)?, attempts, facts: s.run_facts(&id)?, audit, run, live }))
        })
        .await?;
    view.ok_or_else(|| PageError::NotFound(format!("there is no run `{run_id}`")))
}

/// `GET /runs/{run}`: the graph with task states, the Gantt of attempts, each task's facts,
/// the actions.
pub(super) async fn run(State(ui): State<Arc<Ui>>, Path(run_id): Path<String>) -> Result<Html<String>, PageError> {
    let v = run_view(&ui, &run_id).await?;
    let set = load_dags(&ui).await?;
    let dag = set.dags.get(&v.run.dag_id).cloned();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="meta">DAG <a href="{}">{}</a> · interval {} → {} UTC · {} · trigger {} · started {} · ended {}{}</p>"#,
        html::dag_href(&v.run.dag_id),
        esc(&v.run.dag_id),
        when(Some(v.run.interval_start)),
        when(Some(v.run.interval_end)),
        badge(v.run.state.name()),
        v.run.trigger,
        when(v.run.started_at),
        when(v.run.ended_at),
        if v.live { " · <strong>running now</strong>" } else { "" }
    );
    body.push_str(&super::actions::run_actions(&ui, &v.run, &v.tasks, v.live));
    let states: HashMap<&str, &str> = v.tasks.iter().map(|t| (t.task_id.as_str(), t.state.name())).collect();
    body.push_str("<h2>Graph</h2>");
    body.push_str(&svg::graph(&v.run.run_id, dag.as_deref(), &v.tasks, &states));
    body.push_str("<h2>Attempts</h2>");
    body.push_str(&svg::gantt(&v.run, &v.tasks, &v.attempts, crate::schedule::clock::now()));
    body.push_str("<h2>Tasks</h2>");
    let region = ui.aws_region();
    let mut facts: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (t, k, val) in &v.facts {
        facts.entry(t.as_str()).or_default().push((k.as_str(), val.as_str()));
    }
    let rows = v.tasks.iter().map(|t| {
        let last = v.attempts.iter().rfind(|a| a.task_id == t.task_id);
        let mut f = String::new();
        if let Some(s) = last.and_then(|a| a.summary.as_deref()) {
            let _ = write!(f, "{}", esc(s));
        }
        for (k, val) in facts.get(t.task_id.as_str()).into_iter().flatten() {
            if *k == crate::checks::FACT {
                let _ = write!(f, "<br>{}", checks_summary(val));
                continue;
            }
            let _ = write!(f, r#"<br><code>{}</code> = <code>{}</code>"#, esc(k), esc(val));
            let config = dag.as_deref().and_then(|d| rendered(d, &v.run, &t.task_id));
            if let Some(region) = &region
                && let Some(url) = console_link(region, k, val, config.as_ref())
            {
                let _ = write!(
                    f,
                    r#" <a class="console" href="{}" rel="noreferrer" target="_blank">AWS console</a>"#,
                    esc(&url)
                );
            }
        }
        vec![
            format!(r#"<a href="{}">{}</a>"#, html::task_href(&v.run.run_id, &t.task_id), esc(&t.task_id)),
            badge(t.state.name()),
            t.attempts.to_string(),
            last.map(|a| duration(a.started_at, a.ended_at)).unwrap_or_default(),
            f,
            last.and_then(|a| a.error.as_deref())
                .map(|e| format!(r#"<span class="err">{}</span>"#, esc(&clip(e, 300))))
                .unwrap_or_default(),
        ]
    });
    body.push_str(&table("list", &["task", "state", "attempts", "last attempt", "facts", "error"], rows));
    body.push_str(&by_hand(&v.audit, None));
    let live = v.live || v.run.state == RunState::Running;
    Ok(ok_html(html::page(&ui.frame(live), Nav::Dags, &v.run.run_id, &body)))
}

/// The check results of a task instance (its `checks` fact).
fn check_results(json: &str) -> Vec<crate::checks::CheckResult> {
    serde_json::from_str(json).unwrap_or_default()
}

/// `checks: 3 passed, 1 failed`, the failed count marked.
fn checks_summary(json: &str) -> String {
    let results = check_results(json);
    let failed = results.iter().filter(|r| !r.passed).count();
    let passed = results.len() - failed;
    if failed == 0 {
        format!("checks: {passed} passed")
    } else {
        format!(r#"checks: {passed} passed, <span class="err">{failed} failed</span>"#)
    }
}

/// The data checks of a task instance as a table, or nothing.
fn checks_table(facts: &[(String, String, String)], task_id: &str) -> String {
    let Some((_, _, json)) = facts.iter().find(|(t, k, _)| t == task_id && k == crate::checks::FACT) else {
        return String::new();
    };
    let rows = check_results(json).into_iter().map(|r| {
        vec![
            esc(&r.name),
            esc(&r.severity.to_string()),
            if r.passed {
                format!(r#"<span class="badge {}">passed</span>"#, state_class("success"))
            } else {
                format!(r#"<span class="badge {}">FAILED</span>"#, state_class("failed"))
            },
            esc(&r.detail),
            esc(&r.sample.join("\n")),
        ]
    });
    format!(
        "<h2>Data checks</h2>{}",
        table("list checks", &["check", "severity", "result", "detail", "failing rows"], rows)
    )
}

/// The audit entries of a run (or of one of its tasks) as a table, or nothing.
fn by_hand(audit: &[AuditRow], task: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = audit
        .iter()
        .filter(|a| task.is_none_or(|t| a.task_id == t))
        .map(|a| vec![when(a.at), esc(&a.who), esc(&a.action), esc(&a.task_id), esc(&a.detail)])
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!("<h2>By hand</h2>{}", table("list", &["when", "who", "action", "task", "detail"], rows))
}

fn duration(a: DateTime<Utc>, b: Option<DateTime<Utc>>) -> String {
    match b {
        Some(b) => crate::duration::humanize((b - a).to_std().unwrap_or_default()),
        None => "running".into(),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

// ---------------------------------------------------------------------------------------------
// Task instance and logs

/// Which attempt a task page shows.
#[derive(Debug, Deserialize)]
pub(super) struct TaskParams {
    #[serde(default)]
    attempt: Option<u32>,
}

/// `GET /runs/{run}/tasks/{task}`: the task instance, its attempts, the log of one (live while
/// it runs), its rendered config, its actions.
pub(super) async fn task(
    State(ui): State<Arc<Ui>>,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(p): Query<TaskParams>,
) -> Result<Html<String>, PageError> {
    check_id("task", &task_id)?;
    let v = run_view(&ui, &run_id).await?;
    let Some(t) = v.tasks.iter().find(|t| t.task_id == task_id) else {
        return Err(PageError::NotFound(format!("run `{run_id}` has no task `{task_id}`")));
    };
    let attempts: Vec<&AttemptRow> = v.attempts.iter().filter(|a| a.task_id == task_id).collect();
    let shown = match p.attempt {
        Some(n) => Some(
            *attempts.iter().find(|a| a.attempt == n).ok_or_else(|| PageError::NotFound(format!("no attempt {n}")))?,
        ),
        None => attempts.last().copied(),
    };
    let set = load_dags(&ui).await?;
    let dag = set.dags.get(&v.run.dag_id).cloned();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="meta">run <a href="{}">{}</a> · {} · {} attempt(s)</p>"#,
        html::run_href(&run_id),
        esc(&run_id),
        badge(t.state.name()),
        t.attempts
    );
    if let Some(d) = &dag {
        body.push_str(&super::actions::task_actions(&ui, d, &v.run, t, v.live));
    }
    if !attempts.is_empty() {
        let rows = attempts.iter().map(|a| {
            vec![
                format!(
                    r#"<a href="{}?attempt={n}">attempt {n}</a>"#,
                    html::task_href(&run_id, &task_id),
                    n = a.attempt
                ),
                badge(a.state.name()),
                when(Some(a.started_at)),
                duration(a.started_at, a.ended_at),
                a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                esc(a.error.as_deref().or(a.summary.as_deref()).unwrap_or("")),
            ]
        });
        body.push_str(&table("list", &["attempt", "state", "started", "duration", "exit", "error / summary"], rows));
    }
    body.push_str(&checks_table(&v.facts, &task_id));
    if let Some(a) = shown {
        let _ = write!(body, "<h2>Log of attempt {}</h2>", a.attempt);
        let base = format!("{}/attempts/{}/log", html::task_href(&run_id, &task_id), a.attempt);
        let (text, cut, len) = match &a.log_path {
            Some(path) => read_tail(path, LOG_INLINE).await,
            None => ("(this attempt wrote no log)".to_string(), false, 0),
        };
        if cut {
            let _ = write!(body, r#"<p>The last {} KiB; <a href="{base}">the whole log</a>.</p>"#, LOG_INLINE / 1024);
        } else {
            let _ = write!(body, r#"<p><a href="{base}">plain text</a></p>"#);
        }
        let stream = if a.state == AttemptState::Running && a.log_path.is_some() {
            format!(r#" data-stream="{base}/stream" data-offset="{len}""#)
        } else {
            String::new()
        };
        let _ = write!(body, r#"<pre class="log" id="log"{stream}>{}</pre>"#, esc(&text));
        if let Some(e) = &a.error {
            let _ = write!(body, r#"<pre class="error">{}</pre>"#, esc(e));
        }
    } else {
        body.push_str(r#"<p class="empty">This task has not started an attempt in this run.</p>"#);
    }
    body.push_str(&by_hand(&v.audit, Some(&task_id)));
    if let Some(d) = &dag
        && let Some(task) = d.tasks.iter().find(|x| x.id == task_id)
    {
        let interval = DataInterval { start: v.run.interval_start, end: v.run.interval_end, tz: d.timezone };
        let ctx = crate::template::Context::new(&d.id, &run_id, &interval, &d.params).for_task(&task_id);
        let rendered = match task.config.render_json(&ctx) {
            Ok(mut j) => {
                hide_secrets(&mut j);
                serde_json::to_string_pretty(&j).unwrap_or_default()
            }
            Err(e) => format!("does not render: {e}"),
        };
        let _ = write!(
            body,
            r#"<h2>Config</h2><p class="meta">{} · rendered for this interval with the DAG's own params (a run's <code>-p</code> overrides are not kept)</p><pre class="config">{}</pre>"#,
            esc(task.kind()),
            esc(&rendered)
        );
    }
    let live = t.state.name() == "running" || v.live;
    Ok(ok_html(html::page(
        &ui.frame(live && shown.is_none_or(|a| a.state != AttemptState::Running)),
        Nav::Dags,
        &format!("{task_id} · {run_id}"),
        &body,
    )))
}

/// The task's config rendered for the run's interval with the DAG's params.
fn rendered(dag: &Dag, run: &RunRow, task_id: &str) -> Option<serde_json::Value> {
    let task = dag.tasks.iter().find(|x| x.id == task_id)?;
    let interval = DataInterval { start: run.interval_start, end: run.interval_end, tz: dag.timezone };
    let ctx = crate::template::Context::new(&dag.id, &run.run_id, &interval, &dag.params).for_task(task_id);
    task.config.render_json(&ctx).ok()
}

/// What the config on a task page shows in place of a value that may be a secret.
const HIDDEN: &str = "(hidden)";

/// Hides, in a rendered config, every value of an `env:` map (a command's environment is where
/// credentials are passed) and every value whose key names a secret (`password`, `token`,
/// `secret`, `credential`, `api_key`, `access_key`, …), at any depth.
fn hide_secrets(v: &mut serde_json::Value) {
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        ["secret", "password", "passwd", "token", "credential", "api_key", "apikey", "access_key", "private_key"]
            .iter()
            .any(|s| k.contains(s))
    }
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "env" && val.is_object() {
                    if let serde_json::Value::Object(env) = val {
                        for e in env.values_mut() {
                            *e = serde_json::Value::String(HIDDEN.into());
                        }
                    }
                } else if secret_key(k) && !val.is_null() {
                    *val = serde_json::Value::String(HIDDEN.into());
                } else {
                    hide_secrets(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide_secrets),
        _ => {}
    }
}

/// The AWS console page of what a fact names: a Glue job run, a DataBrew job's runs, an Athena
/// query (the kinds' fact keys), in `region`.
fn console_link(region: &str, key: &str, value: &str, config: Option<&serde_json::Value>) -> Option<String> {
    let r = html::qv(region);
    let job = || config.and_then(|c| c.get("job_name")).and_then(serde_json::Value::as_str).map(html::qv);
    match key {
        "glue_job_run_id" => Some(format!(
            "https://{r}.console.aws.amazon.com/gluestudio/home?region={r}#/job/{}/run/{}",
            job()?,
            html::qv(value)
        )),
        "databrew_run_id" => Some(format!(
            "https://{r}.console.aws.amazon.com/databrew/home?region={r}#job-details?job={}&tab=history",
            job()?
        )),
        "athena_ctas" => {
            let record: serde_json::Value = serde_json::from_str(value).ok()?;
            let id = record.get("query_id")?.as_str()?;
            Some(format!(
                "https://{r}.console.aws.amazon.com/athena/home?region={r}#/query-editor/history/{}",
                html::qv(id)
            ))
        }
        _ => None,
    }
}

/// The last `max` bytes of a log (whole lines), whether it was cut, and the length read up to.
async fn read_tail(path: &str, max: u64) -> (String, bool, u64) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&path) else { return ("(the log file is gone)".to_string(), false, 0) };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let cut = len > max;
        if cut && f.seek(SeekFrom::Start(len - max)).is_err() {
            return ("(the log cannot be read)".to_string(), false, 0);
        }
        let mut buf = Vec::new();
        let _ = f.take(max).read_to_end(&mut buf);
        let read = len.saturating_sub(max).min(len) + buf.len() as u64;
        let read = if cut { read } else { buf.len() as u64 };
        let mut s = String::from_utf8_lossy(&buf).into_owned();
        if cut && let Some(i) = s.find('\n') {
            s.drain(..=i);
        }
        (s, cut, read)
    })
    .await
    .unwrap_or_else(|_| ("(the log cannot be read)".to_string(), false, 0))
}

async fn attempt_of(ui: &Arc<Ui>, run_id: &str, task_id: &str, attempt: &str) -> Result<AttemptRow, PageError> {
    check_run_id(run_id)?;
    check_id("task", task_id)?;
    let n: u32 = attempt.parse().map_err(|_| PageError::NotFound(format!("there is no attempt `{attempt}`")))?;
    let (r, t) = (run_id.to_string(), task_id.to_string());
    let rows = ui
        .with_store(move |s| {
            let Some(run) = s.run(&r)? else { return Ok(Vec::new()) };
            Ok(with_live_logs(s, &run, s.attempts(&r, Some(&t))?))
        })
        .await?;
    rows.into_iter()
        .find(|a| a.attempt == n)
        .ok_or_else(|| PageError::NotFound(format!("task `{task_id}` of run `{run_id}` has no attempt {n}")))
}

/// `GET …/attempts/{n}` (the link a notification carries): the task page showing that attempt.
pub(super) async fn attempt(
    State(ui): State<Arc<Ui>>,
    Path((run_id, task_id, attempt)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let a = attempt_of(&ui, &run_id, &task_id, &attempt).await?;
    let to = format!("{}?attempt={}", html::task_href(&run_id, &task_id), a.attempt);
    Ok((axum::http::StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
}

/// `GET …/attempts/{n}/log`: the whole log as text.
pub(super) async fn log_text(
    State(ui): State<Arc<Ui>>,
    Path((run_id, task_id, attempt)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let a = attempt_of(&ui, &run_id, &task_id, &attempt).await?;
    let text = match &a.log_path {
        Some(p) => tokio::fs::read(p)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| "(the log file is gone)\n".into()),
        None => "(this attempt wrote no log)\n".into(),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Where the stream of a log is.
#[derive(Debug, Deserialize)]
pub(super) struct StreamParams {
    #[serde(default)]
    offset: Option<u64>,
}

/// `GET …/attempts/{n}/log/stream`: server-sent events, one `data` per chunk of new lines from
/// `offset` on, until the attempt ends (then an `end` event).
pub(super) async fn log_stream(
    State(ui): State<Arc<Ui>>,
    Path((run_id, task_id, attempt)): Path<(String, String, String)>,
    Query(p): Query<StreamParams>,
) -> Result<Response, PageError> {
    let a = attempt_of(&ui, &run_id, &task_id, &attempt).await?;
    let Some(path) = a.log_path.clone() else { return Err(PageError::NotFound("this attempt wrote no log".into())) };
    struct Tail {
        ui: Arc<Ui>,
        path: String,
        offset: u64,
        run: String,
        task: String,
        attempt: u32,
        first: bool,
        done: bool,
    }
    let start = Tail {
        ui: ui.clone(),
        path,
        offset: p.offset.unwrap_or(0),
        run: run_id,
        task: task_id,
        attempt: a.attempt,
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            if !t.first {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(400)) => {}
                    _ = t.ui.shutdown.cancelled() => return None,
                }
            }
            t.first = false;
            let (r, k) = (t.run.clone(), t.task.clone());
            let ended =
                t.ui.with_store(move |s| s.attempts(&r, Some(&k)))
                    .await
                    .map(|rows| rows.iter().any(|x| x.attempt == t.attempt && x.state != AttemptState::Running))
                    .unwrap_or(true);
            let (chunk, read) = read_from(&t.path, t.offset, ended).await;
            if read > 0 {
                // The offset moves by the bytes read (not the text made of them), so a line is
                // neither skipped nor sent twice.
                t.offset += read;
                // SSE cannot carry a carriage return; the page adds the line break after each
                // event, so exactly one trailing one is dropped (blank lines stay).
                let data = chunk.strip_suffix('\n').unwrap_or(&chunk).replace('\r', "");
                return Some((Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)), t));
            }
            if ended {
                t.done = true;
                return Some((Ok(SseEvent::default().event("end").data("ended")), t));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// New bytes of a log from `offset` (at most 1 MiB), as text, and how many bytes that is: whole
/// lines only while it is still written, unless a line is longer than the whole chunk.
async fn read_from(path: &str, offset: u64, all: bool) -> (String, u64) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&path) else { return (String::new(), 0) };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return (String::new(), 0);
        }
        const CHUNK: u64 = 1 << 20;
        let mut buf = Vec::new();
        let _ = f.take(CHUNK).read_to_end(&mut buf);
        let full = buf.len() as u64 == CHUNK;
        if !all || full {
            match buf.iter().rposition(|b| *b == b'\n') {
                Some(i) => buf.truncate(i + 1),
                // A line longer than a chunk is sent in pieces rather than never.
                None if full => {}
                None => buf.clear(),
            }
        }
        (String::from_utf8_lossy(&buf).into_owned(), buf.len() as u64)
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{console_link, hide_secrets};

    #[test]
    fn a_rendered_config_hides_env_values_and_secret_keys() {
        let mut v = serde_json::json!({
            "program": "sh",
            "args": ["-c", "echo $WHO"],
            "env": {"WHO": "cartflow", "DB_URL": "postgres://u:pw@h/db"},
            "output": {"s3_key": "lake/x", "api_key": "k-123", "nested": [{"Password": "p"}]},
            "partition_key": "dt",
            "token": null
        });
        hide_secrets(&mut v);
        let text = v.to_string();
        for secret in ["cartflow\"", "postgres://", "k-123", "\"p\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["env"]["WHO"], "(hidden)");
        assert_eq!(v["output"]["s3_key"], "lake/x", "a key that names no secret is shown");
        assert_eq!(v["partition_key"], "dt");
        assert_eq!(v["args"][1], "echo $WHO");
        assert!(v["token"].is_null());
    }

    #[test]
    fn facts_link_to_the_console_page_of_what_they_name() {
        let glue = serde_json::json!({"job_name": "ecommerce-clean-events"});
        assert_eq!(
            console_link("eu-west-1", "glue_job_run_id", "jr_0a1b", Some(&glue)).as_deref(),
            Some(
                "https://eu-west-1.console.aws.amazon.com/gluestudio/home?region=eu-west-1#/job/ecommerce-clean-events/run/jr_0a1b"
            )
        );
        assert!(console_link("eu-west-1", "glue_job_run_id", "jr_0a1b", None).is_none(), "no job name, no link");
        let q = r#"{"token":"t","query_id":"q-1<x>"}"#;
        assert_eq!(
            console_link("us-east-1", "athena_ctas", q, None).as_deref(),
            Some(
                "https://us-east-1.console.aws.amazon.com/athena/home?region=us-east-1#/query-editor/history/q-1%3Cx%3E"
            )
        );
        assert!(console_link("us-east-1", "athena_ctas", "not json", None).is_none());
        assert!(console_link("us-east-1", "stage_report", "{}", None).is_none());
        let brew = serde_json::json!({"job_name": "ecommerce-enrich-events"});
        assert!(
            console_link("us-east-1", "databrew_run_id", "db_1", Some(&brew))
                .is_some_and(|u| u.contains("job=ecommerce-enrich-events"))
        );
    }
}
