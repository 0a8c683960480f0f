//! The run page's pictures, drawn as SVG on the server: the DAG's graph with task states, and a
//! Gantt chart of the attempts (queue time, each attempt, the gaps of retries). Positions are
//! SVG attributes, so the page needs no inline style (the CSP allows none).

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::html::{esc, state_class, task_href};
use crate::dag::Dag;
use crate::engine::store::{AttemptRow, RunRow, TaskRow};

const BOX_W: i64 = 170;
const BOX_H: i64 = 30;
const COL: i64 = 210;
const ROW: i64 = 44;

/// The graph: tasks in layers by their longest path from a root, upstream edges as lines, each
/// box coloured by its state and linking to the task instance. Without the DAG (its file no
/// longer compiles) the tasks stand in one column, without edges.
pub fn graph(run_id: &str, dag: Option<&Dag>, tasks: &[TaskRow], states: &HashMap<&str, &str>) -> String {
    let ids: Vec<&str> = match dag {
        Some(d) => d.tasks.iter().map(|t| t.id.as_str()).collect(),
        None => tasks.iter().map(|t| t.task_id.as_str()).collect(),
    };
    let boxes: Vec<LayerBox> = ids
        .iter()
        .map(|id| {
            let state = states.get(id).copied().unwrap_or("none");
            LayerBox {
                label: id.to_string(),
                title: format!("{id} · {state}"),
                href: task_href(run_id, id),
                class: state_class(state),
            }
        })
        .collect();
    let upstream: Vec<Vec<usize>> = match dag {
        Some(d) => d.tasks.iter().map(|t| t.upstream.clone()).collect(),
        None => vec![Vec::new(); ids.len()],
    };
    layered("graph", "task graph", &boxes, &upstream)
}

/// One box of a [`layered`] picture.
#[derive(Debug, Clone)]
pub struct LayerBox {
    /// Its text (cut at 22 characters).
    pub label: String,
    /// Its tooltip.
    pub title: String,
    /// Where it links.
    pub href: String,
    /// Its CSS class (a state's colour).
    pub class: &'static str,
}

/// Boxes in layers by their longest path from a root, `upstream[i]` (all before `i`) joined to
/// box `i` by lines: the task graph of a run and the lineage of the lake.
pub fn layered(class: &str, aria: &str, boxes: &[LayerBox], upstream: &[Vec<usize>]) -> String {
    let mut layer = vec![0i64; boxes.len()];
    for i in 0..boxes.len() {
        layer[i] = upstream.get(i).into_iter().flatten().filter(|&&u| u < i).map(|&u| layer[u] + 1).max().unwrap_or(0);
    }
    let mut row_in_layer: HashMap<i64, i64> = HashMap::new();
    let pos: Vec<(i64, i64)> = layer
        .iter()
        .map(|&l| {
            let r = row_in_layer.entry(l).or_insert(0);
            let p = (10 + l * COL, 10 + *r * ROW);
            *r += 1;
            p
        })
        .collect();
    let width = pos.iter().map(|p| p.0 + BOX_W + 10).max().unwrap_or(200);
    let height = pos.iter().map(|p| p.1 + BOX_H + 10).max().unwrap_or(50);
    let mut out = format!(
        r#"<svg class="{class}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{aria}">"#,
        class = esc(class),
        aria = esc(aria),
    );
    for (i, ups) in upstream.iter().enumerate().take(boxes.len()) {
        for &u in ups.iter().filter(|&&u| u < i) {
            let (x1, y1) = (pos[u].0 + BOX_W, pos[u].1 + BOX_H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + BOX_H / 2);
            let _ = write!(out, r#"<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>"#);
        }
    }
    for (b, &(x, y)) in boxes.iter().zip(&pos) {
        let label: String = if b.label.chars().count() > 22 {
            format!("{}…", b.label.chars().take(21).collect::<String>())
        } else {
            b.label.clone()
        };
        let _ = write!(
            out,
            r#"<a href="{href}"><g class="node {cls}"><title>{title}</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5"/><text x="{tx}" y="{ty}">{label}</text></g></a>"#,
            href = esc(&b.href),
            cls = b.class,
            title = esc(&b.title),
            tx = x + 8,
            ty = y + 20,
            label = esc(&label),
        );
    }
    out.push_str("</svg>");
    out
}

/// The Gantt chart: one row per task; a pale bar from the run's start to the task's first
/// attempt (waiting for upstream tasks, a slot or a retry), then one bar per attempt coloured by
/// how it ended; a running attempt extends to `now`.
pub fn gantt(run: &RunRow, tasks: &[TaskRow], attempts: &[AttemptRow], now: DateTime<Utc>) -> String {
    if attempts.is_empty() {
        return r#"<p class="empty">No attempt has started.</p>"#.into();
    }
    let t0 = run.started_at.into_iter().chain(attempts.iter().map(|a| a.started_at)).min().unwrap_or(now);
    let t1 = attempts
        .iter()
        .map(|a| a.ended_at.unwrap_or(now))
        .chain(run.ended_at)
        .max()
        .unwrap_or(now)
        .max(t0 + chrono::Duration::milliseconds(1));
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let (label_w, plot_w, row_h) = (180.0, 720.0, 22.0);
    let x = |t: DateTime<Utc>| label_w + plot_w * ((t - t0).num_milliseconds().max(0) as f64 / span);
    let height = 30.0 + row_h * tasks.len() as f64;
    let width = label_w + plot_w + 10.0;
    let mut out = format!(
        r#"<svg class="gantt" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="attempts over time">"#
    );
    let _ = write!(
        out,
        r#"<text class="axis" x="{label_w}" y="14">{}</text><text class="axis end" x="{}" y="14">+{}</text>"#,
        t0.format("%H:%M:%S"),
        label_w + plot_w,
        crate::duration::humanize((t1 - t0).to_std().unwrap_or_default())
    );
    for (row, t) in tasks.iter().enumerate() {
        let y = 22.0 + row_h * row as f64;
        let _ = write!(out, r#"<text class="label" x="4" y="{}">{}</text>"#, y + 13.0, esc(&t.task_id));
        let mine: Vec<&AttemptRow> = attempts.iter().filter(|a| a.task_id == t.task_id).collect();
        if let Some(first) = mine.first() {
            let (a, b) = (x(t0), x(first.started_at));
            if b - a >= 1.0 {
                let _ = write!(
                    out,
                    r#"<rect class="wait" x="{a:.1}" y="{:.1}" width="{:.1}" height="14"><title>waiting {}</title></rect>"#,
                    y + 2.0,
                    b - a,
                    esc(&crate::duration::humanize((first.started_at - t0).to_std().unwrap_or_default()))
                );
            }
        }
        for a in mine {
            let end = a.ended_at.unwrap_or(now);
            let (x1, x2) = (x(a.started_at), x(end));
            let _ = write!(
                out,
                r#"<rect class="bar {}" x="{x1:.1}" y="{:.1}" width="{:.1}" height="14"><title>{} attempt {} · {} · {}</title></rect>"#,
                state_class(attempt_class(a)),
                y + 2.0,
                (x2 - x1).max(2.0),
                esc(&t.task_id),
                a.attempt,
                a.state,
                esc(&crate::duration::humanize((end - a.started_at).to_std().unwrap_or_default()))
            );
        }
    }
    out.push_str("</svg>");
    out
}

fn attempt_class(a: &AttemptRow) -> &'static str {
    use crate::engine::state::{AttemptOutcome, AttemptState};
    match a.state {
        AttemptState::Running => "running",
        AttemptState::Ended(AttemptOutcome::Success) => "success",
        AttemptState::Ended(AttemptOutcome::Skipped) => "skipped",
        AttemptState::Ended(AttemptOutcome::Cancelled) => "cancelled",
        AttemptState::Ended(_) => "failed",
    }
}
