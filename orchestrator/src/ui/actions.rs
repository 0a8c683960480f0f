//! The actions: run an interval, rerun a task (and its downstream), rerun what failed, backfill
//! a range, cancel. Each is a form that leads to a preview (what would run, checked the way the
//! CLI checks it) and then to a start, which calls the same library functions as the CLI
//! ([`executor::execute`], [`flows::backfill`]) in this process. What was started here is listed
//! under Actions with who started it and when, and can be cancelled.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::html::{self, Nav, badge, esc, hidden, table, when};
use super::{PageError, Ui, check_run_id, load_dags};
use crate::dag::Dag;
use crate::engine::backfill::Reprocess;
use crate::engine::executor::{self, Event};
use crate::engine::state::{RunState, TaskState, Trigger};
use crate::engine::store::{RunRow, TaskRow};
use crate::flows::{self, FlowError};
use crate::schedule::DataInterval;

/// An action started from the UI.
#[derive(Debug)]
pub struct Action {
    /// Its number in this server's list.
    pub id: u64,
    /// What it does, in words.
    pub what: String,
    /// The run it runs (a run action), for the link.
    pub run_id: Option<String>,
    /// The DAG.
    pub dag_id: String,
    /// Who started it.
    pub who: String,
    /// When.
    pub started_at: DateTime<Utc>,
    cancel: CancellationToken,
    status: Mutex<Status>,
}

#[derive(Debug, Default, Clone)]
struct Status {
    state: String,
    ended_at: Option<DateTime<Utc>>,
    /// (ds, run id, planned action, final state) of a backfill's intervals.
    intervals: Vec<(String, String, String, Option<String>)>,
    lines: Vec<String>,
}

/// The fields of every action form (each action uses some).
#[derive(Debug, Deserialize, Default, Clone)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    dag: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    run: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    downstream: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    max_active_runs: String,
    #[serde(default)]
    tasks: String,
    #[serde(default)]
    params: String,
}

/// An action, checked and planned.
enum Planned {
    Run {
        dag: Arc<Dag>,
        interval: DataInterval,
        run_id: String,
        tasks: Vec<String>,
        downstream: bool,
        params: BTreeMap<String, String>,
        /// (task, its state now) of what will run.
        will_run: Vec<(String, String)>,
        title: String,
    },
    Backfill(Box<flows::backfill::Planned>),
}

fn bad(e: impl std::fmt::Display) -> PageError {
    PageError::BadRequest(format!("{e:#}"))
}

fn flow_err(e: FlowError) -> PageError {
    if e.is_usage() { PageError::BadRequest(format!("{e:#}")) } else { PageError::Internal(format!("{e:#}")) }
}

fn parse_params(text: &str) -> Result<Vec<(String, String)>, PageError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| bad(format!("param `{l}` is not NAME=VALUE")))
        })
        .collect()
}

/// Checks and plans what a form asks for, as the CLI would (nothing runs).
async fn plan(ui: &Arc<Ui>, f: &ActionForm) -> Result<Planned, PageError> {
    let set = load_dags(ui).await?;
    let find = |id: &str| {
        set.dags.get(id).cloned().ok_or_else(|| match set.failed_ids.get(id) {
            Some(file) => bad(format!("DAG `{id}` does not compile ({}): fix it first", file.display())),
            None => PageError::NotFound(format!("there is no DAG `{id}`")),
        })
    };
    match f.action.as_str() {
        "run" | "rerun" | "rerun_failed" => {
            let (dag, interval, existing) = if f.run.is_empty() {
                let dag = find(&f.dag)?;
                let interval = flows::interval_for(&dag, &f.date).map_err(flow_err)?;
                (dag, interval, None)
            } else {
                check_run_id(&f.run)?;
                let id = f.run.clone();
                let run = ui
                    .with_store(move |s| s.run(&id))
                    .await?
                    .ok_or_else(|| PageError::NotFound(format!("there is no run `{}`", f.run)))?;
                let dag = find(&run.dag_id)?;
                let interval = DataInterval { start: run.interval_start, end: run.interval_end, tz: dag.timezone };
                (dag, interval, Some(run))
            };
            let run_id = crate::engine::store::run_id(&dag.id, interval.start);
            let (rid, did) = (run_id.clone(), dag.id.clone());
            let (states, live, by_hand) = ui
                .with_store(move |s| Ok((s.tasks(&rid)?, s.live_runs(&did)?.contains(&rid), s.marked_skipped(&rid)?)))
                .await?;
            if live {
                return Err(bad(format!(
                    "run {run_id} is running now (started here or by another cartflow process): wait for it to end, or cancel it from its page"
                )));
            }
            let states: BTreeMap<String, TaskState> = states.into_iter().map(|t| (t.task_id, t.state)).collect();
            let params = flows::merged_params(&dag, &parse_params(&f.params)?).map_err(flow_err)?;
            let (tasks, downstream) = if f.action == "rerun" {
                flows::check_tasks(&dag, std::slice::from_ref(&f.task)).map_err(flow_err)?;
                (vec![f.task.clone()], f.downstream.is_some())
            } else {
                (Vec::new(), false)
            };
            flows::check_render(&dag, &interval, &params).map_err(flow_err)?;
            let selected = dag.select(&tasks, downstream).map_err(bad)?;
            // What the executor runs: the selected tasks that did not succeed or skip (all of
            // them when tasks are named), and a skipped one whose upstream runs again.
            let mut runs: Vec<bool> = dag
                .tasks
                .iter()
                .zip(&selected)
                .map(|(t, sel)| {
                    *sel && (!tasks.is_empty()
                        || !states
                            .get(&t.id)
                            .is_some_and(|s| matches!(s, TaskState::Success { .. } | TaskState::Skipped)))
                })
                .collect();
            loop {
                let again: Vec<usize> = (0..runs.len())
                    .filter(|&i| {
                        !runs[i]
                            && selected[i]
                            && states.get(&dag.tasks[i].id) == Some(&TaskState::Skipped)
                            && !by_hand.contains(&dag.tasks[i].id)
                            && dag.tasks[i].upstream.iter().any(|&u| runs[u])
                    })
                    .collect();
                if again.is_empty() {
                    break;
                }
                for i in again {
                    runs[i] = true;
                }
            }
            let will_run: Vec<(String, String)> = dag
                .tasks
                .iter()
                .zip(&runs)
                .filter(|(_, r)| **r)
                .map(|(t, _)| (t.id.clone(), states.get(&t.id).map_or("(new)", TaskState::name).to_string()))
                .collect();
            let title = match (f.action.as_str(), &existing) {
                ("rerun", _) => {
                    format!("Rerun `{}`{} in {run_id}", f.task, if downstream { " and its downstream" } else { "" })
                }
                (_, Some(_)) => format!("Run again what did not succeed in {run_id}"),
                _ if states.is_empty() => format!("Run {} for {}", dag.id, interval.ds()),
                _ => format!("Resume {run_id}"),
            };
            Ok(Planned::Run { dag, interval, run_id, tasks, downstream, params, will_run, title })
        }
        "backfill" => {
            let dag = find(&f.dag)?;
            let mut req = flows::backfill::Request::new(dag, f.from.trim(), f.to.trim());
            req.mode = match f.mode.as_str() {
                "" | "none" => Reprocess::None,
                "failed" => Reprocess::Failed,
                "completed" => Reprocess::Completed,
                other => return Err(bad(format!("reprocess mode `{other}` is none, failed or completed"))),
            };
            if !f.max_active_runs.trim().is_empty() {
                let n: usize = f.max_active_runs.trim().parse().map_err(|_| bad("max active runs is a number"))?;
                if !(1..=64).contains(&n) {
                    return Err(bad("max active runs is between 1 and 64"));
                }
                req.max_active_runs = Some(n);
            }
            req.tasks =
                f.tasks.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
            req.downstream = f.downstream.is_some() && !req.tasks.is_empty();
            req.params = parse_params(&f.params)?;
            let project = ui.project.clone();
            let planned = tokio::task::spawn_blocking(move || flows::backfill::plan(&project, req))
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?
                .map_err(flow_err)?;
            Ok(Planned::Backfill(Box::new(planned)))
        }
        other => Err(bad(format!("unknown action `{other}`"))),
    }
}

/// The form's fields again, hidden, for the Start button of a preview.
fn carry(f: &ActionForm) -> String {
    let mut out = String::new();
    for (k, v) in [
        ("action", &f.action),
        ("dag", &f.dag),
        ("date", &f.date),
        ("run", &f.run),
        ("task", &f.task),
        ("from", &f.from),
        ("to", &f.to),
        ("mode", &f.mode),
        ("max_active_runs", &f.max_active_runs),
        ("tasks", &f.tasks),
        ("params", &f.params),
    ] {
        if !v.is_empty() {
            out.push_str(&hidden(k, v));
        }
    }
    if f.downstream.is_some() {
        out.push_str(&hidden("downstream", "on"));
    }
    out
}

fn check_csrf(ui: &Ui, f: &ActionForm) -> Result<(), PageError> {
    super::require_csrf(ui, &f.csrf)
}

/// `POST /preview`: what the action would do; nothing runs.
pub(super) async fn preview(State(ui): State<Arc<Ui>>, Form(f): Form<ActionForm>) -> Result<Html<String>, PageError> {
    check_csrf(&ui, &f)?;
    let planned = plan(&ui, &f).await?;
    let mut body = String::new();
    let title = match &planned {
        Planned::Run { title, will_run, params, dag, .. } => {
            if will_run.is_empty() {
                body.push_str(r#"<p class="empty">Nothing to run: every selected task already succeeded.</p>"#);
            } else {
                let _ = write!(body, "<p>{} task(s) will run, in this order:</p>", will_run.len());
                body.push_str(&table(
                    "list preview",
                    &["task", "state now"],
                    will_run.iter().map(|(t, s)| vec![esc(t), badge(s)]),
                ));
            }
            let changed: Vec<String> = params
                .iter()
                .filter(|(k, v)| dag.params.get(*k) != Some(*v))
                .map(|(k, v)| format!("<code>{}={}</code>", esc(k), esc(v)))
                .collect();
            if !changed.is_empty() {
                let _ = write!(body, "<p>With params {}.</p>", changed.join(", "));
            }
            title.clone()
        }
        Planned::Backfill(p) => {
            let to_run = p.to_run();
            let _ = write!(
                body,
                r#"<p class="plan-summary">{} interval(s) from {} to {} (reprocess: {}): <strong>{to_run} to run</strong>, {} skipped{}.</p>"#,
                p.plan.items.len(),
                esc(&p.request.from),
                esc(&p.request.to),
                p.request.mode,
                p.plan.items.len() - to_run,
                if p.plan.incomplete > 0 {
                    format!(", {} not complete yet (not planned)", p.plan.incomplete)
                } else {
                    String::new()
                }
            );
            if let Some(job) = &p.plan.continues {
                let _ =
                    write!(body, "<p>This continues backfill job <code>{}</code>, which did not finish.</p>", esc(job));
            }
            body.push_str(&table(
                "list plan",
                &["ds", "interval start", "run id", "action"],
                p.plan.items.iter().map(|i| {
                    vec![esc(&i.interval.ds()), esc(&i.interval.start_rfc3339()), esc(&i.run_id), esc(&i.action.name())]
                }),
            ));
            format!("Backfill {}", p.request.dag.id)
        }
    };
    let nothing = match &planned {
        Planned::Run { will_run, .. } => will_run.is_empty(),
        Planned::Backfill(p) => p.to_run() == 0,
    };
    if !nothing {
        let _ = write!(
            body,
            r#"<form class="action" method="post" action="/start">{}{}<button class="go" id="start">Start</button> <a href="javascript:history.back()">Back</a></form>"#,
            hidden("csrf", &ui.csrf),
            carry(&f)
        );
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Actions, &format!("Preview: {title}"), &body)))
}

/// `POST /start`: plans again (the store may have moved since the preview) and starts it.
pub(super) async fn start(State(ui): State<Arc<Ui>>, Form(f): Form<ActionForm>) -> Result<Response, PageError> {
    check_csrf(&ui, &f)?;
    let planned = plan(&ui, &f).await?;
    let who = ui.who();
    let cancel = ui.shutdown.child_token();
    let (what, run_id) = match &planned {
        Planned::Run { title, run_id, .. } => (title.clone(), Some(run_id.clone())),
        Planned::Backfill(p) => (
            format!(
                "Backfill {} from {} to {} (reprocess: {})",
                p.request.dag.id, p.request.from, p.request.to, p.request.mode
            ),
            None,
        ),
    };
    // In the audit log before it starts (a start that cannot be recorded does not start).
    let (kind, dag_id) = match &planned {
        Planned::Run { dag, .. } => (f.action.as_str(), dag.id.clone()),
        Planned::Backfill(p) => ("backfill", p.request.dag.id.clone()),
    };
    audit(&ui, kind, &dag_id, run_id.as_deref().unwrap_or_default(), "", &what).await?;
    // The id is taken and the action listed under one lock: two starts at once get two ids.
    let mut list = ui.actions.lock().unwrap_or_else(|p| p.into_inner());
    let id = list.len() as u64 + 1;
    let action = Arc::new(Action {
        id,
        what: what.clone(),
        run_id: run_id.clone(),
        dag_id: dag_id.clone(),
        who: who.clone(),
        started_at: Utc::now(),
        cancel: cancel.clone(),
        status: Mutex::new(Status { state: "running".into(), ..Status::default() }),
    });
    list.push(action.clone());
    drop(list);
    info!(action = id, who = %who, what = %what, "ui: action started");
    let ui2 = ui.clone();
    match planned {
        Planned::Run { dag, interval, tasks, downstream, params, .. } => {
            tokio::spawn(async move {
                let mut opts = ui2.project.exec_options(ui2.env.clone(), Trigger::Manual);
                opts.params = params;
                opts.tasks = tasks;
                opts.downstream = downstream;
                let a = action.clone();
                let mut observer = move |e: Event<'_>| {
                    if let Event::Task { task, state } = e {
                        let mut s = a.status.lock().unwrap_or_else(|p| p.into_inner());
                        s.lines.push(format!("{} {task}: {}", Utc::now().format("%H:%M:%S"), state.name()));
                    }
                };
                let r = executor::execute(
                    dag,
                    interval,
                    &ui2.project.state,
                    ui2.pools.clone(),
                    &opts,
                    cancel,
                    &mut observer,
                )
                .await;
                let mut s = action.status.lock().unwrap_or_else(|p| p.into_inner());
                s.ended_at = Some(Utc::now());
                match r {
                    Ok(report) => s.state = report.state.name().to_string(),
                    Err(e) => {
                        s.state = "error".into();
                        s.lines.push(format!("{e:#}"));
                    }
                }
                info!(action = action.id, state = %s.state, "ui: action ended");
            });
            Ok(see_other(&html::run_href(run_id.as_deref().unwrap_or_default())))
        }
        Planned::Backfill(planned) => {
            {
                let mut s = action.status.lock().unwrap_or_else(|p| p.into_inner());
                s.intervals = planned
                    .plan
                    .items
                    .iter()
                    .map(|i| (i.interval.ds(), i.run_id.clone(), i.action.name().to_string(), None))
                    .collect();
            }
            tokio::spawn(async move {
                let a = action.clone();
                let mut on_done = move |o: &crate::engine::backfill::Outcome| {
                    let mut s = a.status.lock().unwrap_or_else(|p| p.into_inner());
                    let state = o
                        .state
                        .map(|s| s.name().to_string())
                        .or_else(|| o.error.clone().map(|e| format!("error: {e}")));
                    if let Some(row) = s.intervals.iter_mut().find(|r| r.1 == o.planned.run_id) {
                        row.3 = state.or(Some("skipped".into()));
                    }
                };
                let r = flows::backfill::run(&ui2.project, ui2.env.clone(), &planned, cancel, &mut on_done).await;
                let mut s = action.status.lock().unwrap_or_else(|p| p.into_inner());
                s.ended_at = Some(Utc::now());
                s.state = match r {
                    Ok(outcomes) if flows::all_succeeded(&outcomes) => "success".into(),
                    Ok(_) if action.cancel.is_cancelled() => "cancelled".into(),
                    Ok(_) => "failed".into(),
                    Err(e) => {
                        s.lines.push(format!("{e:#}"));
                        "error".into()
                    }
                };
                info!(action = action.id, state = %s.state, "ui: action ended");
            });
            Ok(see_other(&format!("/actions/{id}")))
        }
    }
}

/// Records in the run store's audit log that this UI's user did `action`.
async fn audit(
    ui: &Arc<Ui>,
    action: &str,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    detail: &str,
) -> Result<(), PageError> {
    let who = ui.who();
    let (action, dag_id, run_id, task_id, detail) =
        (action.to_string(), dag_id.to_string(), run_id.to_string(), task_id.to_string(), detail.to_string());
    ui.with_store(move |s| {
        s.record_audit(&crate::engine::store::NewAudit {
            who: &who,
            action: &action,
            dag_id: &dag_id,
            run_id: &run_id,
            task_id: &task_id,
            detail: &detail,
        })
    })
    .await
}

/// The fields of the pause form.
#[derive(Debug, Deserialize, Default)]
pub(super) struct PauseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dag: String,
    #[serde(default)]
    paused: String,
}

/// `POST /pause`: pause (`paused=1`) or unpause (`paused=0`) a DAG's scheduled runs, recorded
/// with who and when; back to the DAGs.
pub(super) async fn pause(State(ui): State<Arc<Ui>>, Form(f): Form<PauseForm>) -> Result<Response, PageError> {
    super::require_csrf(&ui, &f.csrf)?;
    super::check_id("DAG", &f.dag)?;
    let paused = match f.paused.as_str() {
        "1" => true,
        "0" => false,
        other => return Err(PageError::BadRequest(format!("`paused` is 1 or 0, not `{other}`"))),
    };
    let set = load_dags(&ui).await?;
    if !set.dags.contains_key(&f.dag) && !set.failed_ids.contains_key(&f.dag) {
        return Err(PageError::NotFound(format!("there is no DAG `{}`", f.dag)));
    }
    let (who, path, dag) = (ui.who(), ui.project.state.clone(), f.dag.clone());
    tokio::task::spawn_blocking(move || crate::engine::store::RunStore::open(&path)?.set_paused(&dag, paused, &who))
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .map_err(|e| PageError::Internal(e.to_string()))?;
    info!(dag = %f.dag, paused, "ui: DAG pause changed");
    Ok(see_other("/"))
}

/// The fields of the mark form.
#[derive(Debug, Deserialize, Default)]
pub(super) struct MarkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    run: String,
    #[serde(default)]
    task: String,
    #[serde(default, rename = "as")]
    to: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /mark`: mark a finished task instance success or skipped — first a preview of what
/// changes, then (with `confirm`) the change, recorded with who and when.
pub(super) async fn mark(State(ui): State<Arc<Ui>>, Form(f): Form<MarkForm>) -> Result<Response, PageError> {
    use crate::engine::store::{Mark, MarkError};
    super::require_csrf(&ui, &f.csrf)?;
    check_run_id(&f.run)?;
    super::check_id("task", &f.task)?;
    let to = match f.to.as_str() {
        "success" => Mark::Success,
        "skipped" => Mark::Skipped,
        other => return Err(PageError::BadRequest(format!("a task is marked `success` or `skipped`, not `{other}`"))),
    };
    let (run_id, task_id) = (f.run.clone(), f.task.clone());
    if f.confirm.is_none() {
        let (r, t) = (run_id.clone(), task_id.clone());
        let (run, tasks) = ui.with_store(move |s| Ok((s.run(&r)?, s.tasks(&r)?))).await?;
        let run = run.ok_or_else(|| PageError::NotFound(format!("there is no run `{run_id}`")))?;
        let task = tasks
            .iter()
            .find(|x| x.task_id == t)
            .ok_or_else(|| PageError::NotFound(format!("run `{run_id}` has no task `{task_id}`")))?;
        let mut body = format!(
            r#"<p class="meta preview">Task <code>{}</code> of run <code>{}</code>: {} → {}. Nothing runs now; the run's state follows its tasks' (it is {} now). Recorded with who ({}) and when.</p>"#,
            esc(&task_id),
            esc(&run_id),
            badge(task.state.name()),
            badge(to.name()),
            badge(run.state.name()),
            esc(&ui.who()),
        );
        let _ = write!(
            body,
            r#"<form class="action" method="post" action="/mark">{}{}{}{}{}<button class="go" id="start">Mark {}</button> <a href="{}">Back</a></form>"#,
            hidden("csrf", &ui.csrf),
            hidden("run", &run_id),
            hidden("task", &task_id),
            hidden("as", to.name()),
            hidden("confirm", "1"),
            to.name(),
            html::task_href(&run_id, &task_id),
        );
        return Ok(Html(html::page(
            &ui.frame(false),
            Nav::Dags,
            &format!("Preview: mark {task_id} {}", to.name()),
            &body,
        ))
        .into_response());
    }
    let who = ui.who();
    let store_path = ui.project.state.clone();
    let (r, t) = (run_id.clone(), task_id.clone());
    let marked = tokio::task::spawn_blocking(move || {
        let mut store = crate::engine::store::RunStore::open(&store_path).map_err(MarkError::Store)?;
        store.mark(&r, &t, to, &who)
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?;
    match marked {
        Ok(m) => {
            info!(run = %run_id, task = %task_id, from = m.from, to = to.name(), "ui: task marked");
            Ok(see_other(&html::task_href(&run_id, &task_id)))
        }
        Err(e) if e.is_usage() => Err(PageError::BadRequest(e.to_string())),
        Err(e) => Err(PageError::Internal(e.to_string())),
    }
}

/// The fields of the form that cancels a run another process runs.
#[derive(Debug, Deserialize, Default)]
pub(super) struct CancelRunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    run: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /cancel`: cancel a run that another process runs (the scheduler, a `cartflow run`) —
/// first a preview of what stops, then (with `confirm`) the request, which that process reads
/// with its heartbeat ([`crate::engine::store::RunStore::request_cancel`], as `cartflow cancel`).
pub(super) async fn cancel_run(State(ui): State<Arc<Ui>>, Form(f): Form<CancelRunForm>) -> Result<Response, PageError> {
    use crate::engine::store::{CANCEL_LATENCY, CancelError, RunStore, StoreError};
    super::require_csrf(&ui, &f.csrf)?;
    check_run_id(&f.run)?;
    let run_id = f.run.clone();
    if f.confirm.is_none() {
        let r = run_id.clone();
        let (run, tasks, live) = ui
            .with_store(move |s| {
                let run = s.run(&r)?;
                let live = match &run {
                    Some(run) => s.live_runs(&run.dag_id)?.contains(&r),
                    None => false,
                };
                Ok((run, s.tasks(&r)?, live))
            })
            .await?;
        let run = run.ok_or_else(|| PageError::NotFound(format!("there is no run `{run_id}`")))?;
        if !live {
            return Err(PageError::BadRequest(format!(
                "run `{run_id}` is {} and no process runs it now: there is nothing to cancel",
                run.state.name()
            )));
        }
        let group = |pick: fn(&TaskState) -> bool| -> String {
            let names: Vec<String> =
                tasks.iter().filter(|t| pick(&t.state)).map(|t| format!("<code>{}</code>", esc(&t.task_id))).collect();
            if names.is_empty() { "none".into() } else { names.join(", ") }
        };
        let mut body = format!(
            r#"<p class="meta preview">Run <code>{}</code> is {}. Another cartflow process runs it; it is asked to stop and does so within {} s, as on Ctrl-C there: no new task starts, the running tasks are stopped, the run ends {} (a later <code>cartflow run</code> resumes it). Recorded with who ({}) and when.</p>"#,
            esc(&run_id),
            badge(run.state.name()),
            CANCEL_LATENCY.as_secs(),
            badge("cancelled"),
            esc(&ui.who()),
        );
        let _ = write!(
            body,
            "<p>Running now (stopped): {}. Waiting (not started): {}.</p>",
            group(|s| matches!(s, TaskState::Running { .. })),
            group(|s| matches!(s, TaskState::Queued | TaskState::UpForRetry { .. })),
        );
        let _ = write!(
            body,
            r#"<form class="action" method="post" action="/cancel">{}{}{}<button class="stop" id="start">Cancel the run</button> <a href="{}">Back</a></form>"#,
            hidden("csrf", &ui.csrf),
            hidden("run", &run_id),
            hidden("confirm", "1"),
            html::run_href(&run_id),
        );
        return Ok(
            Html(html::page(&ui.frame(false), Nav::Dags, &format!("Preview: cancel {run_id}"), &body)).into_response()
        );
    }
    let who = ui.who();
    let store_path = ui.project.state.clone();
    let r = run_id.clone();
    let asked = tokio::task::spawn_blocking(move || {
        let mut store = RunStore::open(&store_path).map_err(CancelError::Store)?;
        store.request_cancel(&r, &who)
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?;
    match asked {
        Ok(a) => {
            info!(run = %run_id, pid = %a.pid, "ui: cancel asked for");
            Ok(see_other(&html::run_href(&run_id)))
        }
        Err(CancelError::Store(StoreError::NoSuchRun { .. })) => {
            Err(PageError::NotFound(format!("there is no run `{run_id}`")))
        }
        Err(e) if e.is_usage() => Err(PageError::BadRequest(e.to_string())),
        Err(e) => Err(PageError::Internal(e.to_string())),
    }
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn find(ui: &Ui, id: &str) -> Result<Arc<Action>, PageError> {
    let n: u64 = id.parse().map_err(|_| PageError::NotFound(format!("there is no action `{id}`")))?;
    ui.actions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|a| a.id == n)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("there is no action `{id}`")))
}

/// `GET /actions/{id}`: an action's progress.
pub(super) async fn show(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Result<Html<String>, PageError> {
    let a = find(&ui, &id)?;
    let s = a.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="meta">{} · started {} by {} · ended {}</p>"#,
        badge(&s.state),
        when(Some(a.started_at)),
        esc(&a.who),
        when(s.ended_at)
    );
    if let Some(run) = &a.run_id {
        let _ = write!(body, r#"<p><a href="{}">The run {}</a></p>"#, html::run_href(run), esc(run));
    }
    if !s.intervals.is_empty() {
        let count = |f: &dyn Fn(&Option<String>) -> bool| s.intervals.iter().filter(|r| f(&r.3)).count();
        let planned = s.intervals.iter().filter(|r| !r.2.starts_with("skip")).count();
        let done = count(&|x| x.as_deref() == Some("success"));
        let failed = count(&|x| x.as_ref().is_some_and(|x| x != "success" && x != "skipped"));
        let running = if s.state == "running" { planned.saturating_sub(done + failed) } else { 0 };
        let _ = write!(
            body,
            r#"<p class="progress" id="progress">planned {planned} · running or waiting {running} · done {done} · failed {failed}</p>"#
        );
        body.push_str(&table(
            "list plan",
            &["ds", "run", "planned", "result"],
            s.intervals.iter().map(|(ds, run, act, st)| {
                vec![
                    esc(ds),
                    format!(r#"<a href="{}">{}</a>"#, html::run_href(run), esc(run)),
                    esc(act),
                    st.as_deref().map(badge).unwrap_or_default(),
                ]
            }),
        ));
    }
    if !s.lines.is_empty() {
        let _ = write!(body, r#"<pre class="log">{}</pre>"#, esc(&s.lines.join("\n")));
    }
    if s.state == "running" {
        let _ = write!(
            body,
            r#"<form class="action" method="post" action="/actions/{}/cancel">{}<button class="stop" id="cancel-action">Cancel…</button></form>"#,
            a.id,
            hidden("csrf", &ui.csrf)
        );
    }
    Ok(Html(html::page(&ui.frame(s.state == "running"), Nav::Actions, &a.what, &body)))
}

/// `GET /actions`: what was started here, newest first.
pub(super) async fn list(State(ui): State<Arc<Ui>>) -> Result<Html<String>, PageError> {
    let actions: Vec<Arc<Action>> =
        ui.actions.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect();
    let mut running = false;
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            let s = a.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            running |= s.state == "running";
            vec![
                format!(r#"<a href="/actions/{}">{}</a>"#, a.id, esc(&a.what)),
                badge(&s.state),
                esc(&a.who),
                when(Some(a.started_at)),
                when(s.ended_at),
            ]
        })
        .collect();
    let mut body = if rows.is_empty() {
        r#"<p class="empty">Nothing was started from this UI yet.</p>"#.to_string()
    } else {
        table("list", &["action", "state", "who", "started", "ended"], rows)
    };
    let log = ui.with_store(|s| s.audit(None, 200)).await?;
    body.push_str(r#"<h2>Audit log (the run store: every UI, every <code>cartflow mark</code>)</h2>"#);
    if log.is_empty() {
        body.push_str(r#"<p class="empty">Nothing done by hand yet.</p>"#);
    } else {
        body.push_str(&table(
            "list audit",
            &["when", "who", "what", "run", "task", "detail"],
            log.iter().map(|a| {
                vec![
                    esc(&when(a.at)),
                    esc(&a.who),
                    esc(&a.action),
                    if a.run_id.is_empty() {
                        esc(&a.dag_id)
                    } else {
                        format!(r#"<a href="{}">{}</a>"#, html::run_href(&a.run_id), esc(&a.run_id))
                    },
                    esc(&a.task_id),
                    esc(&a.detail),
                ]
            }),
        ));
    }
    Ok(Html(html::page(&ui.frame(running), Nav::Actions, "Actions", &body)))
}

/// The fields of an action's cancel form.
#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /actions/{id}/cancel`: first a preview of what stops, then (with `confirm`) the
/// cancel, in the audit log with who and when.
pub(super) async fn cancel(
    State(ui): State<Arc<Ui>>,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    super::require_csrf(&ui, &f.csrf)?;
    let a = find(&ui, &id)?;
    let status = a.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if status.state != "running" {
        return Err(PageError::BadRequest(format!(
            "action {} has ended ({}): there is nothing to cancel",
            a.id, status.state
        )));
    }
    if f.confirm.is_none() {
        let what = if status.intervals.is_empty() {
            format!(
                "its run {} stops now: no new task starts, the running tasks are stopped, the run ends {} (a later run resumes it).",
                a.run_id.as_deref().map(|r| format!("<code>{}</code>", esc(r))).unwrap_or_default(),
                badge("cancelled")
            )
        } else {
            let done = status.intervals.iter().filter(|i| i.3.is_some()).count();
            format!(
                "the backfill stops now: of its {} interval(s) not ended yet, the running ones are cancelled (as a run's cancel) and the others are not started; the {done} that ended stay as they are.",
                status.intervals.len().saturating_sub(done)
            )
        };
        let body = format!(
            r#"<p class="meta preview">{} (started by {} at {}): {what} Recorded with who ({}) and when.</p><form class="action" method="post" action="/actions/{}/cancel">{}{}<button class="stop" id="start">Cancel it</button> <a href="/actions/{}">Back</a></form>"#,
            esc(&a.what),
            esc(&a.who),
            when(Some(a.started_at)),
            esc(&ui.who()),
            a.id,
            hidden("csrf", &ui.csrf),
            hidden("confirm", "1"),
            a.id,
        );
        return Ok(Html(html::page(&ui.frame(false), Nav::Actions, &format!("Preview: cancel {}", a.what), &body))
            .into_response());
    }
    a.cancel.cancel();
    info!(action = a.id, "ui: action cancelled");
    if let Err(e) = audit(&ui, "cancel", &a.dag_id, a.run_id.as_deref().unwrap_or_default(), "", &a.what).await {
        // The cancel happened; say so, and that it is not in the audit log.
        tracing::warn!(action = a.id, error = ?e, "ui: the cancel could not be written to the audit log");
    }
    Ok(see_other(&format!("/actions/{}", a.id)))
}

/// Cancels every action still running (the server stops) and waits a little for them.
pub(super) async fn cancel_all(ui: &Ui) {
    let actions: Vec<Arc<Action>> = ui.actions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for a in &actions {
        a.cancel.cancel();
    }
    for _ in 0..100 {
        if actions.iter().all(|a| a.status.lock().unwrap_or_else(|p| p.into_inner()).state != "running") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `GET /backfills`: the form, and the backfill jobs of the store.
pub(super) async fn backfills(State(ui): State<Arc<Ui>>) -> Result<Html<String>, PageError> {
    let set = load_dags(&ui).await?;
    let jobs = ui.with_store(|s| s.backfills(100)).await?;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<form class="action backfill" method="post" action="/preview">{}{}<label>DAG <select name="dag">"#,
        hidden("csrf", &ui.csrf),
        hidden("action", "backfill")
    );
    for id in set.dags.keys() {
        let _ = write!(body, "<option>{}</option>", esc(id));
    }
    body.push_str(
        r#"</select></label> <label>from <input name="from" type="date" required></label> <label>to <input name="to" type="date" required></label>
<label>reprocess <select name="mode"><option value="none">none</option><option value="failed">failed</option><option value="completed">completed</option></select></label>
<label>max active runs <input name="max_active_runs" type="number" min="1" max="64" size="3"></label>
<label>tasks <input name="tasks" placeholder="all (or: a, b)"></label> <label><input name="downstream" type="checkbox"> and downstream</label>
<label class="wide">params <textarea name="params" rows="2" placeholder="NAME=VALUE, one per line"></textarea></label>
<button>Preview…</button></form>"#,
    );
    body.push_str("<h2>Backfill jobs</h2>");
    if jobs.is_empty() {
        body.push_str(r#"<p class="empty">No backfill has run here yet.</p>"#);
    } else {
        body.push_str(&table(
            "list",
            &["job", "DAG", "created", "finished", "planned", "succeeded", "failed"],
            jobs.iter().map(|j| {
                vec![
                    format!("<code>{}</code>", esc(&j.backfill_id)),
                    format!(r#"<a href="{}">{}</a>"#, html::dag_href(&j.dag_id), esc(&j.dag_id)),
                    when(j.created_at),
                    if j.finished_at.is_some() { when(j.finished_at) } else { badge("running") },
                    j.planned.to_string(),
                    j.succeeded.to_string(),
                    j.failed.to_string(),
                ]
            }),
        ));
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Backfills, "Backfills", &body)))
}

/// The actions of a run page: run again what did not succeed; cancel it if it runs from here.
pub(super) fn run_actions(ui: &Ui, run: &RunRow, tasks: &[TaskRow], live: bool) -> String {
    let mut out = String::from(r#"<div class="actions">"#);
    let unfinished = tasks.iter().any(|t| !matches!(t.state, TaskState::Success { .. } | TaskState::Skipped));
    if !live && unfinished && run.state != RunState::Running {
        let _ = write!(
            out,
            r#"<form class="action" method="post" action="/preview">{}{}{}<button>Rerun what failed…</button></form>"#,
            hidden("csrf", &ui.csrf),
            hidden("action", "rerun_failed"),
            hidden("run", &run.run_id)
        );
    }
    let mine: Option<Arc<Action>> = ui
        .actions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
        .find(|a| {
            a.run_id.as_deref() == Some(&run.run_id)
                || a.status.lock().unwrap_or_else(|p| p.into_inner()).intervals.iter().any(|i| i.1 == run.run_id)
        })
        .cloned();
    if let Some(a) = mine.filter(|a| a.status.lock().unwrap_or_else(|p| p.into_inner()).state == "running") {
        let _ = write!(
            out,
            r#"<form class="action" method="post" action="/actions/{}/cancel">{}<button class="stop" id="cancel-run">Cancel (started here)…</button></form>"#,
            a.id,
            hidden("csrf", &ui.csrf)
        );
    } else if live {
        let _ = write!(
            out,
            r#"<form class="action" method="post" action="/cancel">{}{}<button class="stop" id="cancel-run">Cancel…</button> <span class="meta">another cartflow process runs it</span></form>"#,
            hidden("csrf", &ui.csrf),
            hidden("run", &run.run_id)
        );
    }
    out.push_str("</div>");
    out
}

/// The actions of a task page: rerun it, alone or with its downstream.
pub(super) fn task_actions(ui: &Ui, dag: &Dag, run: &RunRow, task: &TaskRow, live: bool) -> String {
    if live {
        return r#"<div class="actions"><p class="meta">The run is running now: it can be rerun or marked once it has ended (or cancel it from the run page).</p></div>"#.into();
    }
    let downstream = dag.task_index(&task.task_id).is_some_and(|i| !dag.tasks[i].downstream.is_empty());
    let mut out = format!(
        r#"<div class="actions"><form class="action" method="post" action="/preview">{}{}{}{}{}<button>Rerun this task…</button></form>"#,
        hidden("csrf", &ui.csrf),
        hidden("action", "rerun"),
        hidden("run", &run.run_id),
        hidden("task", &task.task_id),
        if downstream {
            r#"<label><input type="checkbox" name="downstream" checked> and everything downstream</label> "#
        } else {
            ""
        }
    );
    // Mark by hand: a finished task of a run nothing executes now.
    if !live && task.state.is_terminal() {
        for to in ["success", "skipped"].into_iter().filter(|to| *to != task.state.name()) {
            let _ = write!(
                out,
                r#"<form class="action mark" method="post" action="/mark">{}{}{}{}<button id="mark-{to}">Mark {to}…</button></form>"#,
                hidden("csrf", &ui.csrf),
                hidden("run", &run.run_id),
                hidden("task", &task.task_id),
                hidden("as", to),
            );
        }
    }
    out.push_str("</div>");
    out
}
