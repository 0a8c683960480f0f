//! The AWS half of the alert handler (feature `aws`): the alerts table on DynamoDB (a
//! conditional put on the deterministic id), notifications on SNS, and metrics as CloudWatch
//! embedded-metric-format log lines (a Lambda's stdout becomes metrics without an API call).
//!
//! The SDK is async and [`crate::handler::handle`] is not: these types block on a runtime
//! handle, so call them from a blocking thread (`tokio::task::spawn_blocking`).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::alert::{Alert, format_ms};
use crate::handler::{
    AlertStore, Change, Diff, HandlerError, Metrics, Notifier, Put, RangeStore, Stored, plan_replace,
};

fn aws_err(call: &'static str, resource: &str, e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Aws { call, resource: resource.to_string(), message: e.to_string() }
}

/// The alerts table on DynamoDB (partition key `id`, a string).
#[derive(Debug, Clone)]
pub struct DynamoAlerts {
    client: aws_sdk_dynamodb::Client,
    table: String,
    rt: tokio::runtime::Handle,
}

impl DynamoAlerts {
    /// The table `table` through `client`; futures run on `rt`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, rt: tokio::runtime::Handle) -> Self {
        DynamoAlerts { client, table: table.to_string(), rt }
    }

    /// The item of an alert.
    pub fn item(a: &Alert) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        HashMap::from([
            ("id".to_string(), s(&a.id())),
            ("rule".to_string(), s(&a.rule)),
            ("key_field".to_string(), s(&a.key_field)),
            ("key".to_string(), s(&a.key)),
            ("window_start".to_string(), s(&format_ms(a.window_start_ms))),
            ("window_end".to_string(), s(&format_ms(a.window_end_ms))),
            ("first_event".to_string(), s(&format_ms(a.first_event_ms))),
            ("value".to_string(), AttributeValue::N(a.value.to_string())),
            ("threshold".to_string(), AttributeValue::N(a.threshold.to_string())),
            ("severity".to_string(), s(a.severity.as_str())),
            ("status".to_string(), s("active")),
            ("notified".to_string(), AttributeValue::Bool(false)),
        ])
    }
}

impl AlertStore for DynamoAlerts {
    fn put_if_absent(&mut self, a: &Alert) -> Result<Put, HandlerError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(a)))
            .condition_expression("attribute_not_exists(id)")
            .send();
        match self.rt.block_on(put) {
            Ok(_) => Ok(Put::New),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                let get = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("id", AttributeValue::S(a.id()))
                    .consistent_read(true)
                    .send();
                let item = self.rt.block_on(get).map_err(|e| {
                    aws_err("DynamoDB GetItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))
                })?;
                let notified = item
                    .item()
                    .and_then(|i| i.get("notified"))
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false);
                Ok(Put::Duplicate { notified })
            }
            Err(e) => Err(aws_err("DynamoDB PutItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    fn mark_notified(&mut self, id: &str) -> Result<(), HandlerError> {
        let up = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_string()))
            .update_expression("SET notified = :t")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send();
        self.rt.block_on(up).map_err(|e| {
            aws_err("DynamoDB UpdateItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))
        })?;
        Ok(())
    }
}

/// A reprocess on AWS: the range's alerts are read with a Scan (filtered on rule and first
/// event), then new ones are put, changed ones updated (their `notified` flag kept), and the
/// ones the fixed rules no longer raise marked `retracted`.
impl RangeStore for DynamoAlerts {
    fn replace_range(
        &mut self,
        rule: &str,
        from_ms: i64,
        to_ms: i64,
        fresh: &[Alert],
        dry_run: bool,
    ) -> Result<Diff, HandlerError> {
        let mut old = std::collections::BTreeMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#r = :r AND first_event >= :f AND first_event < :t")
                .expression_attribute_names("#r", "rule")
                .expression_attribute_values(":r", AttributeValue::S(rule.to_string()))
                .expression_attribute_values(":f", AttributeValue::S(format_ms(from_ms)))
                .expression_attribute_values(":t", AttributeValue::S(format_ms(to_ms)))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .send();
            let page = self
                .rt
                .block_on(scan)
                .map_err(|e| aws_err("DynamoDB Scan", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            for item in page.items() {
                let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let value = item.get("value").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
                old.insert(text("id"), Stored { value, status: text("status"), first_event: text("first_event") });
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let (diff, changes) = plan_replace(&old, fresh);
        if dry_run {
            return Ok(diff);
        }
        for c in changes {
            let call = match c {
                Change::Insert(a) => {
                    let put = self.client.put_item().table_name(&self.table).set_item(Some(Self::item(a))).send();
                    self.rt.block_on(put).map(|_| ()).map_err(|e| {
                        aws_err("DynamoDB PutItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))
                    })
                }
                Change::Update(a) => {
                    let up = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .key("id", AttributeValue::S(a.id()))
                        .update_expression("SET #v = :v, threshold = :th, severity = :sev, #s = :active")
                        .expression_attribute_names("#v", "value")
                        .expression_attribute_names("#s", "status")
                        .expression_attribute_values(":v", AttributeValue::N(a.value.to_string()))
                        .expression_attribute_values(":th", AttributeValue::N(a.threshold.to_string()))
                        .expression_attribute_values(":sev", AttributeValue::S(a.severity.as_str().to_string()))
                        .expression_attribute_values(":active", AttributeValue::S("active".into()))
                        .send();
                    self.rt.block_on(up).map(|_| ()).map_err(|e| {
                        aws_err("DynamoDB UpdateItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))
                    })
                }
                Change::Retract(id) => {
                    let up = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .key("id", AttributeValue::S(id))
                        .update_expression("SET #s = :retracted")
                        .expression_attribute_names("#s", "status")
                        .expression_attribute_values(":retracted", AttributeValue::S("retracted".into()))
                        .send();
                    self.rt.block_on(up).map(|_| ()).map_err(|e| {
                        aws_err("DynamoDB UpdateItem", &self.table, aws_sdk_dynamodb::error::DisplayErrorContext(e))
                    })
                }
            };
            call?;
        }
        Ok(diff)
    }
}

/// Notifications on an SNS topic: the alert's JSON as the message.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    rt: tokio::runtime::Handle,
}

impl SnsNotifier {
    /// Publishes to `topic_arn` through `client`; futures run on `rt`.
    pub fn new(client: aws_sdk_sns::Client, topic_arn: &str, rt: tokio::runtime::Handle) -> Self {
        SnsNotifier { client, topic_arn: topic_arn.to_string(), rt }
    }
}

/// The SNS message attribute (and the webhook header, `X-Cartflow-Dedupe-Key`) that carries the
/// alert's id: notifications are at least once, deduplicable by this key.
pub const DEDUPE_ATTRIBUTE: &str = "dedupe_key";

impl Notifier for SnsNotifier {
    fn notify(&mut self, a: &Alert) -> Result<(), HandlerError> {
        let subject = format!("cartflow {} alert: {} {}={}", a.severity.as_str(), a.rule, a.key_field, a.key);
        // Delivery is at least once (a crash between the publish and marking the alert notified
        // publishes again): the alert's deterministic id lets a subscriber drop the repeat.
        let dedupe = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(a.id())
            .build()
            .map_err(|e| HandlerError::Notify(format!("SNS message attribute: {e}")))?;
        let publish = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject.chars().take(100).collect::<String>())
            .message(a.to_json())
            .message_attributes(DEDUPE_ATTRIBUTE, dedupe)
            .send();
        self.rt
            .block_on(publish)
            .map_err(|e| aws_err("SNS Publish", &self.topic_arn, aws_sdk_sns::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

/// Metrics as CloudWatch embedded-metric-format lines on stdout.
#[derive(Debug, Default)]
pub struct EmfMetrics {
    /// Counter → value, since the last [`EmfMetrics::line`].
    pub counters: BTreeMap<String, u64>,
}

impl Metrics for EmfMetrics {
    fn count(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_string()).or_default() += n;
    }
}

impl EmfMetrics {
    /// One EMF JSON line for namespace `ns` with the counters (then cleared).
    pub fn line(&mut self, ns: &str, now_ms: i64) -> String {
        let counters = std::mem::take(&mut self.counters);
        let metrics: Vec<serde_json::Value> =
            counters.keys().map(|k| serde_json::json!({"Name": k, "Unit": "Count"})).collect();
        let mut root = serde_json::json!({
            "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{"Namespace": ns, "Dimensions": [[]], "Metrics": metrics}]}
        });
        for (k, v) in counters {
            root[k] = serde_json::json!(v);
        }
        root.to_string()
    }
}
