//! Keeping one EventBridge rule per scheduled DAG: what the rules should be, and the diff
//! against what exists. This module holds no AWS types; `aws::eventbridge` lists and applies.
//!
//! EventBridge rules evaluate cron in UTC. A DAG's schedule is evaluated on the wall clock of
//! its timezone, so the rule fires at **every UTC instant the local tick can fall on** (for a
//! DST zone, both offsets: `0 2 * * *` in Europe/Berlin becomes `cron(0 0,1 * * ? *)`). The
//! target runs `scheduler --once --dag ID`, which starts only what is due, so the extra firing
//! is a no-op and no run is ever an hour early or late. What cannot be expressed this way in
//! one rule (a shift across midnight with day-of-month or day-of-week set, both of those set,
//! minute/hour sets that do not stay a grid) is refused with a message.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::schedule::{Schedule, Scheduled};

/// The EventBridge part of `cartflow.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeConfig {
    /// Prefix of the rule names (`<prefix><dag id>`).
    #[serde(default = "default_prefix")]
    pub rule_prefix: String,
    /// The event bus (default: `default`).
    #[serde(default)]
    pub event_bus: Option<String>,
    /// What each rule starts.
    pub target: TargetConfig,
}

fn default_prefix() -> String {
    "cartflow-".to_string()
}

/// The target of every rule: a Lambda function, or an ECS task that runs cartflow.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The Lambda function ARN, or the ECS cluster ARN when `ecs` is set.
    pub arn: String,
    /// The IAM role EventBridge assumes to invoke the target (required for ECS).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// ECS task settings (then `arn` is the cluster).
    #[serde(default)]
    pub ecs: Option<EcsTarget>,
}

/// An ECS (Fargate) task that runs the cartflow image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EcsTarget {
    /// The task definition ARN.
    pub task_definition_arn: String,
    /// The container whose command is overridden.
    #[serde(default = "default_container")]
    pub container: String,
    /// Subnets of the task.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Security groups of the task.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Give the task a public IP.
    #[serde(default)]
    pub assign_public_ip: bool,
}

fn default_container() -> String {
    "cartflow".to_string()
}

/// The rule a DAG should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    /// Rule name.
    pub name: String,
    /// The DAG.
    pub dag_id: String,
    /// `cron(...)`.
    pub schedule_expression: String,
    /// Rule description.
    pub description: String,
    /// The target input (JSON text).
    pub input: String,
}

/// A rule as it exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentRule {
    /// Rule name.
    pub name: String,
    /// Its schedule expression.
    pub schedule_expression: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// `ENABLED` / `DISABLED`.
    pub state: Option<String>,
    /// The target cartflow put there: (target id, arn, input, role arn).
    pub target: Option<CurrentTarget>,
    /// Whether the rule carries cartflow's ownership tag.
    pub managed: bool,
}

/// A rule target as it exists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentTarget {
    /// Target id.
    pub id: String,
    /// Target ARN.
    pub arn: String,
    /// Input JSON.
    pub input: Option<String>,
    /// Role ARN.
    pub role_arn: Option<String>,
}

/// The id cartflow gives its target in every rule.
pub const TARGET_ID: &str = "cartflow";
/// The tag that marks a rule as owned by cartflow.
pub const OWNER_TAG: (&str, &str) = ("managed-by", "cartflow");

/// One step of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A rule to create.
    Create(RuleSpec),
    /// A rule to change, with what differs.
    Update(RuleSpec, Vec<String>),
    /// A cartflow rule whose DAG is gone (or no longer scheduled).
    Delete(String),
    /// Nothing to do.
    Unchanged(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create(r) => write!(f, "+ create {} {} (dag {})", r.name, r.schedule_expression, r.dag_id),
            Change::Update(r, what) => write!(f, "~ update {} ({})", r.name, what.join("; ")),
            Change::Delete(name) => write!(f, "- delete {name} (its DAG is gone or no longer scheduled)"),
            Change::Unchanged(name) => write!(f, "= unchanged {name}"),
        }
    }
}

/// A schedule EventBridge cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DAG `{dag}`: schedule `{schedule}` in {tz} cannot be expressed as one EventBridge rule: {why}")]
pub struct Unexpressible {
    /// The DAG.
    pub dag: String,
    /// Its schedule.
    pub schedule: String,
    /// Its timezone.
    pub tz: String,
    /// Why.
    pub why: String,
}

fn list(set: &BTreeSet<u32>, full: usize) -> String {
    if set.len() == full { "*".to_string() } else { set.iter().map(u32::to_string).collect::<Vec<_>>().join(",") }
}

/// The UTC offsets (in minutes) a zone uses over the coming years.
fn offsets(tz: Tz) -> BTreeSet<i32> {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).single().unwrap_or_else(Utc::now);
    (0..(366 * 8))
        .map(|d| {
            let t = start + Duration::days(d);
            tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc() / 60
        })
        .collect()
}

/// Translates a DAG's schedule into an EventBridge `cron(...)` expression.
pub fn eventbridge_cron(dag: Scheduled<'_>) -> Result<Option<String>, Unexpressible> {
    let Schedule::Cron { expr, parsed } = dag.schedule else { return Ok(None) };
    let refuse = |why: String| Unexpressible {
        dag: dag.id.to_string(),
        schedule: expr.clone(),
        tz: dag.timezone.name().to_string(),
        why,
    };
    let five = crate::schedule::expand_alias(expr).unwrap_or(expr);
    let f: Vec<&str> = five.split_whitespace().collect();
    let (Some(dom), Some(month)) = (f.get(2).copied(), f.get(3).copied()) else {
        return Err(refuse("expected five fields".into()));
    };
    let minutes: BTreeSet<u32> = parsed.minute_set().collect();
    let hours: BTreeSet<u32> = parsed.hour_set().collect();
    let dom_set = !parsed.day_of_month_is_star();
    let dow_set = !parsed.day_of_week_is_star();
    if dom_set && dow_set {
        return Err(refuse(
            "it restricts both day-of-month and day-of-week (cron runs on either; EventBridge needs one of them to be `?`)"
                .into(),
        ));
    }
    let mut pairs: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut day_shift = false;
    for off in offsets(dag.timezone) {
        for h in &hours {
            for m in &minutes {
                let utc = (*h as i32) * 60 + (*m as i32) - off;
                if !(0..1440).contains(&utc) {
                    day_shift = true;
                }
                let utc = utc.rem_euclid(1440) as u32;
                pairs.insert((utc / 60, utc % 60));
            }
        }
    }
    if day_shift && (dom_set || dow_set || month != "*") {
        return Err(refuse("in UTC some firings fall on another day, and the expression also sets day-of-month, month or day-of-week; \
             use `timezone: UTC` with the hours shifted yourself, or a schedule with `*` days".to_string()));
    }
    let uh: BTreeSet<u32> = pairs.iter().map(|p| p.0).collect();
    let um: BTreeSet<u32> = pairs.iter().map(|p| p.1).collect();
    if uh.len() * um.len() != pairs.len() {
        return Err(refuse(format!(
            "in UTC the firings ({}) are not a grid of minutes × hours",
            pairs.iter().map(|(h, m)| format!("{h:02}:{m:02}")).collect::<Vec<_>>().join(", ")
        )));
    }
    let (dom_out, dow_out) = if dow_set {
        // EventBridge counts 1-7 from Sunday.
        ("?".to_string(), parsed.day_of_week_set().map(|d| (d + 1).to_string()).collect::<Vec<_>>().join(","))
    } else {
        (if dom == "?" { "*".to_string() } else { dom.to_string() }, "?".to_string())
    };
    Ok(Some(format!("cron({} {} {} {} {} *)", list(&um, 60), list(&uh, 24), dom_out, month, dow_out)))
}

/// The rules the DAGs should have, and the DAGs that cannot have one.
pub fn desired_rules<'a>(
    dags: impl IntoIterator<Item = Scheduled<'a>>,
    cfg: &EventBridgeConfig,
) -> (Vec<RuleSpec>, Vec<Unexpressible>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for dag in dags {
        match eventbridge_cron(dag) {
            Ok(None) => {}
            Ok(Some(expr)) => rules.push(RuleSpec {
                name: rule_name(&cfg.rule_prefix, dag.id),
                dag_id: dag.id.to_string(),
                schedule_expression: expr,
                description: format!(
                    "cartflow: runs what is due of DAG {} (schedule `{}` in {})",
                    dag.id,
                    dag.schedule,
                    dag.timezone.name()
                ),
                input: target_input(&cfg.target, dag.id),
            }),
            Err(e) => errors.push(e),
        }
    }
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    (rules, errors)
}

/// `<prefix><dag id>`, cut to EventBridge's 64 characters.
pub fn rule_name(prefix: &str, dag_id: &str) -> String {
    let mut name = format!("{prefix}{dag_id}");
    name.truncate(64);
    name
}

/// The JSON the target receives: for Lambda the command line; for ECS a container override.
pub fn target_input(target: &TargetConfig, dag_id: &str) -> String {
    let command = vec!["scheduler".to_string(), "--once".into(), "--dag".into(), dag_id.to_string()];
    let v = match &target.ecs {
        Some(ecs) => serde_json::json!({ "containerOverrides": [{ "name": ecs.container, "command": command }] }),
        None => serde_json::json!({ "dag": dag_id, "args": command }),
    };
    v.to_string()
}

/// The changes that make `current` match `desired`. Rules without cartflow's tag are never
/// touched; a name clash with such a rule is reported as an update that will fail loudly.
pub fn plan_sync(desired: &[RuleSpec], current: &[CurrentRule], target: &TargetConfig) -> Vec<Change> {
    let by_name: BTreeMap<&str, &CurrentRule> = current.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = Vec::new();
    for want in desired {
        match by_name.get(want.name.as_str()) {
            None => out.push(Change::Create(want.clone())),
            Some(have) => {
                let mut what = Vec::new();
                if have.schedule_expression.as_deref() != Some(want.schedule_expression.as_str()) {
                    what.push(format!(
                        "schedule {} -> {}",
                        have.schedule_expression.as_deref().unwrap_or("none"),
                        want.schedule_expression
                    ));
                }
                if have.description.as_deref() != Some(want.description.as_str()) {
                    what.push("description".into());
                }
                if have.state.as_deref() != Some("ENABLED") {
                    what.push(format!("state {} -> ENABLED", have.state.as_deref().unwrap_or("none")));
                }
                if !have.managed {
                    what.push("add the managed-by=cartflow tag".into());
                }
                let t = have.target.as_ref();
                if t.map(|t| t.arn.as_str()) != Some(target.arn.as_str())
                    || t.and_then(|t| t.input.as_deref()) != Some(want.input.as_str())
                    || t.and_then(|t| t.role_arn.clone()) != target.role_arn
                {
                    what.push("target".into());
                }
                if what.is_empty() {
                    out.push(Change::Unchanged(want.name.clone()));
                } else {
                    out.push(Change::Update(want.clone(), what));
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    for have in current {
        if have.managed && !wanted.contains(have.name.as_str()) {
            out.push(Change::Delete(have.name.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A DAG's schedule: (id, schedule, timezone).
    fn dag(id: &str, schedule: &str, tz: &str) -> (String, Schedule, Tz) {
        (id.to_string(), Schedule::parse(schedule).expect("schedule"), tz.parse().expect("tz"))
    }

    fn scheduled((id, schedule, timezone): &(String, Schedule, Tz)) -> Scheduled<'_> {
        Scheduled { id, schedule, timezone: *timezone }
    }

    fn cron(schedule: &str, tz: &str) -> Result<Option<String>, Unexpressible> {
        eventbridge_cron(scheduled(&dag("d", schedule, tz)))
    }

    #[test]
    fn utc_schedules_translate_exactly() {
        assert_eq!(cron("@daily", "UTC").expect("ok").as_deref(), Some("cron(0 0 * * ? *)"));
        assert_eq!(cron("0 2 * * *", "UTC").expect("ok").as_deref(), Some("cron(0 2 * * ? *)"));
        assert_eq!(cron("*/15 * * * *", "UTC").expect("ok").as_deref(), Some("cron(0,15,30,45 * * * ? *)"));
        assert_eq!(cron("0 2 1 * *", "UTC").expect("ok").as_deref(), Some("cron(0 2 1 * ? *)"));
        assert_eq!(cron("@hourly", "UTC").expect("ok").as_deref(), Some("cron(0 * * * ? *)"));
        assert_eq!(cron("@Daily", "UTC").expect("ok").as_deref(), Some("cron(0 0 * * ? *)"), "aliases in any case");
    }

    #[test]
    fn day_of_week_uses_eventbridge_numbering_and_the_question_mark_rule() {
        // Unix 1-5 = Monday..Friday = EventBridge 2-6; Sunday 0/7 = 1.
        assert_eq!(cron("0 2 * * 1-5", "UTC").expect("ok").as_deref(), Some("cron(0 2 ? * 2,3,4,5,6 *)"));
        assert_eq!(cron("0 0 * * 0", "UTC").expect("ok").as_deref(), Some("cron(0 0 ? * 1 *)"));
        assert_eq!(cron("0 0 * * 7", "UTC").expect("ok").as_deref(), Some("cron(0 0 ? * 1 *)"));
        assert_eq!(cron("0 0 * * MON,fri", "UTC").expect("ok").as_deref(), Some("cron(0 0 ? * 2,6 *)"));
        let e = cron("0 0 1 * 1", "UTC").expect_err("both set");
        assert!(e.to_string().contains("both day-of-month and day-of-week"), "{e}");
    }

    #[test]
    fn dst_zones_fire_at_both_utc_times() {
        assert_eq!(cron("0 2 * * *", "Europe/Berlin").expect("ok").as_deref(), Some("cron(0 0,1 * * ? *)"));
        assert_eq!(cron("30 6 * * *", "America/New_York").expect("ok").as_deref(), Some("cron(30 10,11 * * ? *)"));
        // A fixed-offset zone is exact, minutes included.
        assert_eq!(cron("0 8 * * *", "Asia/Kolkata").expect("ok").as_deref(), Some("cron(30 2 * * ? *)"));
        // Hourly in a whole-hour DST zone is every hour in UTC too.
        assert_eq!(cron("@hourly", "Europe/Berlin").expect("ok").as_deref(), Some("cron(0 * * * ? *)"));
    }

    #[test]
    fn what_cannot_be_expressed_is_refused_with_a_reason() {
        // Midnight Berlin on weekdays is 22:00/23:00 UTC the day before.
        let e = cron("0 0 * * 1-5", "Europe/Berlin").expect_err("day shift");
        assert!(e.to_string().contains("fall on another day"), "{e}");
        // Midnight Berlin every day is fine: no day restriction to shift.
        assert_eq!(cron("@daily", "Europe/Berlin").expect("ok").as_deref(), Some("cron(0 22,23 * * ? *)"));
        assert_eq!(cron("none", "UTC").expect("manual"), None);
    }

    fn cfg() -> EventBridgeConfig {
        EventBridgeConfig {
            rule_prefix: "cartflow-".into(),
            event_bus: None,
            target: TargetConfig { arn: "arn:aws:lambda:us-east-1:123:function:run".into(), role_arn: None, ecs: None },
        }
    }

    #[test]
    fn sync_plans_create_update_delete_and_leaves_foreign_rules_alone() {
        let dags = [dag("a", "@daily", "UTC"), dag("b", "0 3 * * *", "UTC"), dag("m", "none", "UTC")];
        let (desired, errors) = desired_rules(dags.iter().map(scheduled), &cfg());
        assert!(errors.is_empty());
        assert_eq!(desired.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["cartflow-a", "cartflow-b"]);
        let t = &cfg().target;
        let same_a = CurrentRule {
            name: "cartflow-a".into(),
            schedule_expression: Some(desired[0].schedule_expression.clone()),
            description: Some(desired[0].description.clone()),
            state: Some("ENABLED".into()),
            target: Some(CurrentTarget {
                id: TARGET_ID.into(),
                arn: t.arn.clone(),
                input: Some(desired[0].input.clone()),
                role_arn: None,
            }),
            managed: true,
        };
        let current = vec![
            same_a.clone(),
            CurrentRule { name: "cartflow-gone".into(), managed: true, ..CurrentRule::default() },
            CurrentRule { name: "cartflow-someone-elses".into(), managed: false, ..CurrentRule::default() },
        ];
        let plan = plan_sync(&desired, &current, t);
        let text: Vec<String> = plan.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "= unchanged cartflow-a".to_string(),
                "+ create cartflow-b cron(0 3 * * ? *) (dag b)".to_string(),
                "- delete cartflow-gone (its DAG is gone or no longer scheduled)".to_string(),
            ]
        );
        let changed = CurrentRule { schedule_expression: Some("cron(0 1 * * ? *)".into()), ..same_a };
        let plan = plan_sync(&desired[..1], &[changed], t);
        assert_eq!(plan[0].to_string(), "~ update cartflow-a (schedule cron(0 1 * * ? *) -> cron(0 0 * * ? *))");
    }

    #[test]
    fn ecs_targets_get_a_container_override() {
        let mut c = cfg();
        c.target.ecs = Some(EcsTarget {
            task_definition_arn: "arn:td".into(),
            container: "cartflow".into(),
            subnets: vec![],
            security_groups: vec![],
            assign_public_ip: false,
        });
        let input: serde_json::Value = serde_json::from_str(&target_input(&c.target, "daily")).expect("json");
        assert_eq!(
            input["containerOverrides"][0]["command"],
            serde_json::json!(["scheduler", "--once", "--dag", "daily"])
        );
    }
}
