//! EventBridge rules for scheduled DAGs: list what exists, apply a sync plan.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::{
    AssignPublicIp, AwsVpcConfiguration, EcsParameters, LaunchType, NetworkConfiguration, RuleState, Tag, Target,
};

use super::AwsError;
use crate::schedule::eventbridge::{
    Change, CurrentRule, CurrentTarget, EventBridgeConfig, OWNER_TAG, RuleSpec, TARGET_ID,
};

/// An EventBridge client from the standard configuration chain.
pub async fn client() -> Client {
    Client::new(&super::sdk_config().await)
}

fn bus(cfg: &EventBridgeConfig) -> Option<String> {
    cfg.event_bus.clone()
}

/// The rules whose names start with the configured prefix, with their tags and cartflow's
/// target.
pub async fn list_rules(client: &Client, cfg: &EventBridgeConfig) -> Result<Vec<CurrentRule>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_rules()
            .name_prefix(&cfg.rule_prefix)
            .set_event_bus_name(bus(cfg))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| AwsError::new("events:ListRules", format!("rules with prefix {}", cfg.rule_prefix), e))?;
        for rule in page.rules() {
            let name = rule.name().unwrap_or_default().to_string();
            let arn = rule.arn().unwrap_or_default().to_string();
            let tags = client
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .map_err(|e| AwsError::new("events:ListTagsForResource", &arn, e))?;
            let managed = tags.tags().iter().any(|t| t.key() == OWNER_TAG.0 && t.value() == OWNER_TAG.1);
            let targets = client
                .list_targets_by_rule()
                .rule(&name)
                .set_event_bus_name(bus(cfg))
                .send()
                .await
                .map_err(|e| AwsError::new("events:ListTargetsByRule", &name, e))?;
            let target = targets.targets().iter().find(|t| t.id() == TARGET_ID).map(|t| CurrentTarget {
                id: t.id().to_string(),
                arn: t.arn().to_string(),
                input: t.input().map(str::to_string),
                role_arn: t.role_arn().map(str::to_string),
            });
            out.push(CurrentRule {
                name,
                schedule_expression: rule.schedule_expression().map(str::to_string),
                description: rule.description().map(str::to_string),
                state: rule.state().map(|s| s.as_str().to_string()),
                target,
                managed,
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn target(cfg: &EventBridgeConfig, spec: &RuleSpec) -> Result<Target, AwsError> {
    let build = |e: aws_sdk_eventbridge::error::BuildError| AwsError::new("events:PutTargets", &spec.name, e);
    let mut t = Target::builder()
        .id(TARGET_ID)
        .arn(&cfg.target.arn)
        .input(&spec.input)
        .set_role_arn(cfg.target.role_arn.clone());
    if let Some(ecs) = &cfg.target.ecs {
        let mut p = EcsParameters::builder()
            .task_definition_arn(&ecs.task_definition_arn)
            .task_count(1)
            .launch_type(LaunchType::Fargate);
        if !ecs.subnets.is_empty() {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(ecs.subnets.clone()))
                .set_security_groups(Some(ecs.security_groups.clone()))
                .assign_public_ip(if ecs.assign_public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled })
                .build()
                .map_err(build)?;
            p = p.network_configuration(NetworkConfiguration::builder().awsvpc_configuration(vpc).build());
        }
        t = t.ecs_parameters(p.build().map_err(build)?);
    }
    t.build().map_err(build)
}

async fn put(client: &Client, cfg: &EventBridgeConfig, spec: &RuleSpec) -> Result<(), AwsError> {
    let tags = [
        Tag::builder().key(OWNER_TAG.0).value(OWNER_TAG.1).build(),
        Tag::builder().key("cartflow-dag").value(&spec.dag_id).build(),
    ];
    let tags: Vec<Tag> =
        tags.into_iter().collect::<Result<_, _>>().map_err(|e| AwsError::new("events:PutRule", &spec.name, e))?;
    let rule = client
        .put_rule()
        .name(&spec.name)
        .schedule_expression(&spec.schedule_expression)
        .description(&spec.description)
        .state(RuleState::Enabled)
        .set_event_bus_name(bus(cfg))
        .set_tags(Some(tags.clone()))
        .send()
        .await
        .map_err(|e| AwsError::new("events:PutRule", &spec.name, e))?;
    // PutRule only tags new rules; tag existing ones explicitly.
    if let Some(arn) = rule.rule_arn() {
        client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| AwsError::new("events:TagResource", arn, e))?;
    }
    let out = client
        .put_targets()
        .rule(&spec.name)
        .set_event_bus_name(bus(cfg))
        .targets(target(cfg, spec)?)
        .send()
        .await
        .map_err(|e| AwsError::new("events:PutTargets", &spec.name, e))?;
    if out.failed_entry_count() > 0 {
        let why: Vec<String> = out
            .failed_entries()
            .iter()
            .map(|f| format!("{}: {}", f.error_code().unwrap_or("?"), f.error_message().unwrap_or("?")))
            .collect();
        return Err(AwsError { call: "events:PutTargets", resource: spec.name.clone(), message: why.join("; ") });
    }
    Ok(())
}

async fn delete(client: &Client, cfg: &EventBridgeConfig, name: &str) -> Result<(), AwsError> {
    let targets = client
        .list_targets_by_rule()
        .rule(name)
        .set_event_bus_name(bus(cfg))
        .send()
        .await
        .map_err(|e| AwsError::new("events:ListTargetsByRule", name, e))?;
    let ids: Vec<String> = targets.targets().iter().map(|t| t.id().to_string()).collect();
    if !ids.is_empty() {
        client
            .remove_targets()
            .rule(name)
            .set_event_bus_name(bus(cfg))
            .set_ids(Some(ids))
            .send()
            .await
            .map_err(|e| AwsError::new("events:RemoveTargets", name, e))?;
    }
    client
        .delete_rule()
        .name(name)
        .set_event_bus_name(bus(cfg))
        .send()
        .await
        .map_err(|e| AwsError::new("events:DeleteRule", name, e))?;
    Ok(())
}

/// Applies a sync plan.
pub async fn apply(client: &Client, cfg: &EventBridgeConfig, changes: &[Change]) -> Result<(), AwsError> {
    for c in changes {
        match c {
            Change::Create(spec) | Change::Update(spec, _) => put(client, cfg, spec).await?,
            Change::Delete(name) => delete(client, cfg, name).await?,
            Change::Unchanged(_) => {}
        }
    }
    Ok(())
}
