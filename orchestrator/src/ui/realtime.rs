//! The real-time stage's page: stream lag per shard, events and late events per day (from each
//! run of the stage), alerts per day and rule, the notifications sent, and the last reprocess's
//! diff (through [`flows::realtime`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use serde_json::Value;

use super::html::{self, Nav, esc, table};
use super::{PageError, Ui, load_dags};
use crate::flows::realtime::{self, Realtime};
use crate::kinds::streaming_stage::STAGE_REPORT_FACT;
use crate::task::Kind as _;

/// Stage runs shown, newest first.
const DAYS: usize = 60;

/// One run of the stage: its interval's day and what its report says.
struct StageDay {
    dag: String,
    task: String,
    run_id: String,
    day: String,
    report: Value,
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0)
}

/// The report's rules as (name, events, late, alerts).
fn rules(report: &Value) -> Vec<(String, u64, u64, u64)> {
    report
        .pointer("/detected/rules")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    let name = r.get(0)?.as_str()?.to_string();
                    let s = r.get(1)?;
                    Some((name, n(s, &["events"]), n(s, &["late"]), n(s, &["alerts"])))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /realtime`.
pub(super) async fn page(State(ui): State<Arc<Ui>>) -> Result<Html<String>, PageError> {
    let set = load_dags(&ui).await?;
    let stage_kind = crate::kinds::streaming_stage::StreamingStage::NAME;
    let stages: Vec<(String, String, chrono_tz::Tz)> = set
        .dags
        .values()
        .flat_map(|d| {
            d.tasks.iter().filter(|t| t.kind() == stage_kind).map(|t| (d.id.clone(), t.id.clone(), d.timezone))
        })
        .collect();
    let wanted = stages.clone();
    let history = ui
        .with_store(move |s| {
            let mut out = Vec::new();
            for (dag, task, tz) in wanted {
                for (run_id, start, value) in s.fact_history(&dag, &task, STAGE_REPORT_FACT)? {
                    let day = start.with_timezone(&tz).format("%Y-%m-%d").to_string();
                    let report = serde_json::from_str(&value).unwrap_or(Value::Null);
                    out.push(StageDay { dag: dag.clone(), task: task.clone(), run_id, day, report });
                }
            }
            Ok(out)
        })
        .await?;
    let project = ui.project.clone();
    let rt: Realtime = tokio::task::spawn_blocking(move || realtime::overview(&project))
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .map_err(|e| PageError::Internal(format!("{e:#}")))?;

    let mut body = String::new();
    if matches!(ui.backend, crate::env::Backend::Aws) {
        body.push_str(r#"<p class="meta">The local stage's streams and alerts (on the aws backend, Kinesis and DynamoDB are not read here).</p>"#);
    }
    if stages.is_empty() {
        body.push_str(r#"<p class="empty">No DAG has a <code>streaming_stage</code> task.</p>"#);
    } else {
        let names: Vec<String> = stages.iter().map(|(d, t, _)| format!("{}.{}", esc(d), esc(t))).collect();
        let _ = write!(body, r#"<p class="meta">The stage: {}</p>"#, names.join(", "));
    }

    body.push_str("<h2>Stream lag per shard</h2>");
    if rt.lag.is_empty() {
        body.push_str(r#"<p class="empty">No stream yet.</p>"#);
    } else {
        let consumers: BTreeSet<&str> = rt.lag.iter().flat_map(|l| l.behind.iter().map(|(c, _)| *c)).collect();
        let mut head = vec!["stream", "shard", "records"];
        head.extend(consumers.iter().copied());
        let rows = rt.lag.iter().map(|l| {
            let mut row = vec![l.stream.to_string(), l.shard.to_string(), l.records.to_string()];
            for c in &consumers {
                row.push(match l.behind.iter().find(|(x, _)| x == c) {
                    Some((_, 0)) => "0".into(),
                    Some((_, b)) => format!(r#"<b class="err">{b} behind</b>"#),
                    None => String::new(),
                });
            }
            row
        });
        body.push_str(&table("list lag", &head, rows));
        body.push_str(
            r#"<p class="meta">Records each consumer has not read yet (its checkpoint against the shard's end).</p>"#,
        );
    }

    body.push_str("<h2>Events and late events per day</h2>");
    if history.is_empty() {
        body.push_str(r#"<p class="empty">No run of the stage has recorded its report yet.</p>"#);
    } else {
        let rule_names: BTreeSet<String> = history.iter().flat_map(|h| rules(&h.report)).map(|r| r.0).collect();
        let mut head: Vec<String> =
            ["day", "run", "produced", "archived", "detected", "late"].iter().map(|s| s.to_string()).collect();
        head.extend(rule_names.iter().map(|r| format!("{r}: events / late / alerts")));
        let head: Vec<&str> = head.iter().map(String::as_str).collect();
        let rows = history.iter().rev().take(DAYS).map(|h| {
            let rs = rules(&h.report);
            let mut row = vec![
                esc(&h.day),
                format!(r#"<a href="{}">{}</a>"#, html::task_href(&h.run_id, &h.task), esc(&h.dag)),
                n(&h.report, &["produced", "appended"]).to_string(),
                n(&h.report, &["archived", "records"]).to_string(),
                n(&h.report, &["detected", "records"]).to_string(),
                rs.iter().map(|r| r.2).max().unwrap_or(0).to_string(),
            ];
            for name in &rule_names {
                row.push(match rs.iter().find(|r| &r.0 == name) {
                    Some((_, e, l, a)) => format!("{e} / {l} / {a}"),
                    None => String::new(),
                });
            }
            row
        });
        body.push_str(&table("list days", &head, rows));
        body.push_str(r#"<p class="meta">Late: events that came after their windows had closed (the most of any rule; each rule's own count on the right).</p>"#);
    }

    body.push_str("<h2>Alerts per day and rule</h2>");
    if rt.alerts.is_empty() {
        body.push_str(r#"<p class="empty">No alerts.</p>"#);
    } else {
        let rows = rt.alerts.iter().map(|a| {
            vec![esc(&a.day), esc(&a.rule), a.active.to_string(), a.notified.to_string(), a.retracted.to_string()]
        });
        body.push_str(&table("list alerts", &["day", "rule", "active", "notified", "retracted"], rows));
    }

    let _ = write!(body, "<h2>Notifications sent (the last {})</h2>", rt.notifications.len());
    if rt.notifications.is_empty() {
        body.push_str(r#"<p class="empty">None yet.</p>"#);
    } else {
        let _ = write!(body, r#"<pre class="notifications">{}</pre>"#, esc(&rt.notifications.join("\n")));
    }

    body.push_str("<h2>Last reprocess</h2>");
    match &rt.last_reprocess {
        None => body.push_str(
            r#"<p class="empty">No reprocess yet (<code>cartflow reprocess --stage detector --from … --to …</code>).</p>"#,
        ),
        Some(r) => {
            let _ = write!(
                body,
                r#"<p class="meta reprocess">{} to {} on {} · {}{} · {} raw record(s) read</p>"#,
                esc(&r.from),
                esc(&r.to),
                esc(&r.backend),
                esc(&r.at),
                if r.dry_run { " · dry run: nothing was changed" } else { "" },
                r.records
            );
            let rows = r.diffs.iter().flat_map(|(rule, days)| {
                days.iter().map(move |(day, m)| {
                    let g = |k: &str| m.get(k).copied().unwrap_or(0).to_string();
                    vec![esc(rule), esc(day), g("added"), g("changed"), g("retracted"), g("unchanged")]
                })
            });
            body.push_str(&table("list diff", &["rule", "day", "added", "changed", "retracted", "unchanged"], rows));
        }
    }
    Ok(Html(html::page(&ui.frame(false), Nav::Realtime, "Real-time stage", &body)))
}
