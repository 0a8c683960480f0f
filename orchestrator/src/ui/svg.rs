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
        // A task up for retry waits until now: the axis reaches it.
        .chain(
            tasks.iter().any(|t| matches!(t.state, crate::engine::state::TaskState::UpForRetry { .. })).then_some(now),
        )
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
        // Between one attempt's end and the next one's start: the retry delay (or the wait for
        // a slot after it); after the last, while the task is up for retry, the wait so far.
        let next_starts = mine.iter().skip(1).map(|n| Some(n.started_at)).chain(std::iter::once(
            matches!(t.state, crate::engine::state::TaskState::UpForRetry { .. }).then_some(now),
        ));
        for (a, next) in mine.iter().zip(next_starts) {
            let (Some(ended), Some(next)) = (a.ended_at, next) else { continue };
            if next <= ended {
                continue;
            }
            let (x1, x2) = (x(ended), x(next));
            // The run was executed again in between (a rerun, a resume): not a retry's wait.
            let again = run.started_at.is_some_and(|s| ended < s && s <= next);
            let what = if again { "run again after attempt" } else { "waiting to retry after attempt" };
            let _ = write!(
                out,
                r#"<rect class="gap{}" x="{x1:.1}" y="{:.1}" width="{:.1}" height="14"><title>{} {what} {} · {}</title></rect>"#,
                if again { " again" } else { "" },
                y + 5.0,
                (x2 - x1).max(1.0),
                esc(&t.task_id),
                a.attempt,
                esc(&crate::duration::humanize((next - ended).to_std().unwrap_or_default()))
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::{AttemptOutcome, AttemptState, RunState, TaskState, Trigger};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("ts").with_timezone(&Utc)
    }

    fn attempt(task: &str, n: u32, from: &str, to: Option<&str>, outcome: AttemptOutcome) -> AttemptRow {
        AttemptRow {
            task_id: task.into(),
            attempt: n,
            state: if to.is_some() { AttemptState::Ended(outcome) } else { AttemptState::Running },
            started_at: at(from),
            ended_at: to.map(at),
            error: None,
            exit_code: None,
            summary: None,
            log_path: None,
        }
    }

    #[test]
    fn the_gantt_shows_the_queue_the_attempts_and_the_retry_gaps() {
        let run = RunRow {
            run_id: "d@2019-10-01T00:00:00Z".into(),
            dag_id: "d".into(),
            interval_start: at("2019-10-01T00:00:00Z"),
            interval_end: at("2019-10-02T00:00:00Z"),
            state: RunState::Running,
            trigger: Trigger::Manual,
            started_at: Some(at("2019-10-02T00:00:00Z")),
            ended_at: None,
        };
        let retry = TaskState::UpForRetry { attempt: 2, retry_at: at("2019-10-02T00:02:00Z"), error: "x".into() };
        let tasks = [
            TaskRow { task_id: "a".into(), state: TaskState::Queued, attempts: 1 },
            TaskRow { task_id: "b".into(), state: retry, attempts: 2 },
        ];
        let attempts = [
            attempt("a", 1, "2019-10-02T00:00:00Z", Some("2019-10-02T00:00:10Z"), AttemptOutcome::Success),
            attempt("b", 1, "2019-10-02T00:00:10Z", Some("2019-10-02T00:00:20Z"), AttemptOutcome::Failed),
            attempt("b", 2, "2019-10-02T00:00:50Z", Some("2019-10-02T00:01:00Z"), AttemptOutcome::Failed),
        ];
        let svg = gantt(&run, &tasks, &attempts, at("2019-10-02T00:01:30Z"));
        assert_eq!(svg.matches(r#"<rect class="bar"#).count(), 3, "{svg}");
        assert_eq!(svg.matches("<title>waiting 10.0s</title>").count(), 1, "b queued behind a: {svg}");
        // b: 30 s between its attempts; 30 s so far after the second (it is up for retry).
        assert!(svg.contains("<title>b waiting to retry after attempt 1 · 30.0s</title>"), "{svg}");
        assert!(svg.contains("<title>b waiting to retry after attempt 2 · 30.0s</title>"), "{svg}");
        assert_eq!(svg.matches(r#"<rect class="gap""#).count(), 2, "a has no gap: {svg}");
        // The wait so far ends at the chart's right edge (now), not past it: axis 00:00 .. 00:01:30.
        assert!(svg.contains(r#"<text class="axis end" x="900" y="14">+1m30s</text>"#), "{svg}");
        let last_gap = svg.rsplit(r#"<rect class="gap" x=""#).next().unwrap_or_default();
        let x: f64 = last_gap.split('"').next().and_then(|v| v.parse().ok()).expect("x");
        let w: f64 = last_gap
            .split(r#"width=""#)
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse().ok())
            .expect("w");
        assert!((x + w - 900.0).abs() < 0.2, "the wait ends at now: {x} + {w}");
        // Executed again (the run's last execution started at 00:00:40): b's first gap is that,
        // not a retry's wait.
        let again = RunRow { started_at: Some(at("2019-10-02T00:00:40Z")), ..run };
        let svg = gantt(&again, &tasks, &attempts, at("2019-10-02T00:01:30Z"));
        assert!(
            svg.contains(r#"<rect class="gap again""#) && svg.contains("b run again after attempt 1 · 30.0s"),
            "{svg}"
        );
    }
}
